"""A BiLSTM sentence(-pair) classifier student, after Tang et al. (2019), in Hugging Face form.

Tang et al., *Distilling Task-Specific Knowledge from BERT into Simple Neural Networks*,
distil a fine-tuned BERT into a one-layer bidirectional LSTM over word embeddings whose
max-pooled states feed a small ReLU MLP. :class:`BiLSTMForSequenceClassification` is that
student; it is a :class:`~transformers.PreTrainedModel` with its own configuration
(``model_type = "kd-bilstm"``), registered with ``AutoConfig`` and
``AutoModelForSequenceClassification`` when this module is imported, so the engine builds,
trains, saves (``save_pretrained``, safetensors) and loads it
(``AutoModelForSequenceClassification.from_pretrained(folder)``, no remote code) like a BERT,
and calls it the same way: ``model(input_ids=..., attention_mask=..., token_type_ids=...).logits``.

For a sequence of ``n`` real tokens ``w_1..w_n`` (those with ``attention_mask = 1``):

    e_t = E[w_t]                                   (embedding, row of [PAD] is 0)
    h_t = [LSTM_fwd(e_1..e_t) ; LSTM_bwd(e_t..e_n)] in R^{2H}
    p_k = max_{1 <= t <= n} h_{t,k}                (max over time, real positions only)
    z   = W_2 dropout(ReLU(W_1 p + b_1)) + b_2     in R^{C}

Padding never enters the computation: the LSTM reads the packed real tokens only
(``pack_padded_sequence``), and before the maximum every padded position is set to the
dtype's most negative finite value (not ``-inf``, which would give ``NaN`` gradients), so a
row with one real token pools exactly that token's state. A row with no real token is read
as if its first token were real (``n`` is clamped to 1) so the output stays finite.
``attention_mask=None`` means every position is real, as in Hugging Face encoders.

Departures from Tang et al.:

* **Pairs.** The paper encodes the two sentences of a pair with a siamese BiLSTM and classifies
  the concatenation ``[h1, h2, h1 * h2, |h1 - h2|]``. Here a pair is **one** sequence
  ``a [SEP] b`` read by one BiLSTM (the word tokenizer of :func:`~kd_core.models.tokenizers.train_word_tokenizer` builds it;
  ``token_type_ids`` are accepted and ignored), so the student has the same interface and
  featurisation as a BERT and the engine needs no special case.
* **Vocabulary.** The paper uses word2vec vectors; here the vocabulary is built from the task
  data (:func:`~kd_core.models.tokenizers.train_word_tokenizer`) and the vectors are random or taken from the teacher's
  own word-piece embeddings (:func:`init_embeddings_from_teacher`).
* **Loss heads.** Regression (``num_labels = 1`` or ``problem_type = "regression"``) gives MSE,
  classification cross-entropy, as the Hugging Face sequence classifiers do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from kd_core.io.errors import ConfigError

MODEL_TYPE = "kd-bilstm"


class BiLSTMConfig(PreTrainedConfig):
    """Shape of a :class:`BiLSTMForSequenceClassification` (``num_labels`` / ``problem_type`` as usual).

    * ``embedding_dim``: word vector size (300 in Tang et al.);
    * ``hidden_size``: LSTM state size **per direction** (the pooled vector has ``2 * hidden_size``);
    * ``num_layers``: stacked BiLSTM layers (``dropout`` also applies between them when > 1);
    * ``classifier_hidden``: hidden units of the ReLU MLP (200 in Tang et al.);
    * ``dropout``: dropout rate in ``[0, 1)`` of the MLP (and between LSTM layers);
    * ``initializer_range``: standard deviation of the random word vectors.
    """

    model_type = MODEL_TYPE

    vocab_size: int = 10000
    embedding_dim: int = 300
    hidden_size: int = 150
    num_layers: int = 1
    classifier_hidden: int = 200
    dropout: float = 0.1
    initializer_range: float = 0.1
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers", "classifier_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("bilstm", name, f"must be a positive integer, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError("bilstm", "dropout", f"must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.initializer_range, bool) or not isinstance(self.initializer_range, (int, float)) \
                or not self.initializer_range > 0:
            raise ConfigError("bilstm", "initializer_range", f"must be > 0, got {self.initializer_range!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError("bilstm", "pad_token_id", f"must be in [0, {self.vocab_size}), got {self.pad_token_id}")
        if self.num_labels is None or self.num_labels < 1:
            raise ConfigError("bilstm", "num_labels", f"must be >= 1, got {self.num_labels}")


class BiLSTMEncoder(nn.Module):
    """Embedding, BiLSTM over the real tokens, max-pooling over time: ``[B, S]`` ids -> ``[B, 2H]``."""

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
                            batch_first=True, bidirectional=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        real = attention_mask.bool()
        lengths = real.sum(dim=1).clamp(min=1)
        # Real tokens first, in their order (a no-op for right padding; also handles left padding).
        order = torch.argsort((~real).int(), dim=1, stable=True)
        embedded = self.embeddings(input_ids.gather(1, order))
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)  # [B, max n, 2H]
        steps = torch.arange(states.shape[1], device=states.device)
        padded = steps.unsqueeze(0) >= lengths.to(states.device).unsqueeze(1)
        states = states.masked_fill(padded.unsqueeze(-1), torch.finfo(states.dtype).min)
        return states.max(dim=1).values


class BiLSTMForSequenceClassification(PreTrainedModel):
    """Tang et al.'s BiLSTM student with a ReLU MLP head (module doc); called like a BERT classifier."""

    config_class = BiLSTMConfig
    base_model_prefix = "bilstm"
    main_input_name = "input_ids"

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bilstm = BiLSTMEncoder(config)
        self.classifier = nn.Sequential(
            nn.Linear(2 * config.hidden_size, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, config.num_labels),
        )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Word vectors ``N(0, initializer_range^2)`` with a zero [PAD] row; LSTM input weights Glorot-uniform,
        recurrent weights orthogonal, biases 0 but the forget gates' 1; linear layers Glorot-uniform, bias 0.

        Only ``transformers.initialization`` functions touch whole parameters (they skip a parameter
        loaded by ``from_pretrained``, which carries ``_is_hf_initialized``); the slices written here
        (the [PAD] row, the forget-gate biases) check that flag themselves, as a slice does not carry it.
        """
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=float(self.config.initializer_range))
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LSTM):
            for name, param in module.named_parameters(recurse=False):
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)
                elif name.startswith("bias"):
                    init.zeros_(param)
                    # Gates are stacked (input, forget, cell, output); b_ih + b_hh gives the forget gate bias 1.
                    if name.startswith("bias_ih") and not getattr(param, "_is_hf_initialized", False):
                        param[module.hidden_size:2 * module.hidden_size].fill_(1.0)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.bilstm.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.bilstm.embeddings = value

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        return_dict: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple[Tensor, ...]:
        """``[B, num_labels]`` logits; with ``labels`` also the loss (MSE for regression, else cross-entropy).

        ``token_type_ids`` (a pair is one sequence here), ``output_hidden_states`` and
        ``output_attentions`` are accepted for the engine's sake and ignored.
        """
        if input_ids is None:
            raise ValueError("BiLSTMForSequenceClassification needs input_ids")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        pooled = self.bilstm(input_ids, attention_mask)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = self._loss(logits, labels.to(logits.device))
        if return_dict is None:
            return_dict = self.config.return_dict if self.config.return_dict is not None else True
        if not return_dict:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        problem = self.config.problem_type
        if problem == "regression" or (problem is None and self.num_labels == 1):
            return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
        if problem == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return F.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1).long())


# exist_ok: re-importing the module (a reload, a worker that imports it twice) re-registers the classes.
AutoConfig.register(MODEL_TYPE, BiLSTMConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)


_SPECIAL_ROLES = ("unk", "cls", "sep", "mask")


def init_embeddings_from_teacher(
    student: BiLSTMForSequenceClassification,
    student_tokenizer: PreTrainedTokenizerFast,
    teacher_embeddings: Tensor,
    teacher_tokenizer: PreTrainedTokenizerFast,
) -> int:
    """Set the student's word vectors from the teacher's word-piece embeddings; return how many rows were set.

    With ``T`` the teacher's embedding matrix (``[V_teacher, d]``, e.g. a BERT's
    ``get_input_embeddings().weight``) and ``pieces(w) = (p_1..p_m)`` the teacher tokenizer's ids
    for the word ``w`` alone (no special tokens), the student's row of every non-special word is

        E[w] = 1/m sum_{i=1..m} T[p_i],

    the mean of its pieces' vectors. Words the teacher spells with its unknown token only (or
    with no piece at all) keep their random vector. Special tokens: ``[PAD]`` is set to 0;
    ``[UNK]``, ``[CLS]``, ``[SEP]`` and ``[MASK]`` take the row of the teacher's own special
    token of that role (``unk_token``, ``cls_token``, ...) when the teacher has one. The count
    returned is the number of rows copied from the teacher (words and special tokens; not the
    zeroed ``[PAD]``). Requires ``student.config.embedding_dim == T.shape[1]``.
    """
    embedding = student.get_input_embeddings()
    teacher = teacher_embeddings.detach()
    if teacher.dim() != 2:
        raise ConfigError("bilstm", "teacher_embeddings", f"must be [vocab, dim], got shape {tuple(teacher.shape)}")
    if student.config.embedding_dim != teacher.shape[1]:
        raise ConfigError("bilstm", "embedding_dim",
                          f"student embedding_dim {student.config.embedding_dim} != teacher embedding size "
                          f"{teacher.shape[1]}")
    vocab = student_tokenizer.get_vocab()
    if len(vocab) > embedding.num_embeddings:
        raise ConfigError("bilstm", "vocab_size", f"tokenizer has {len(vocab)} tokens, the student's embeddings "
                          f"{embedding.num_embeddings}")
    rows: list[int] = []
    vectors: list[Tensor] = []
    for role in _SPECIAL_ROLES:
        student_id = getattr(student_tokenizer, f"{role}_token_id", None)
        teacher_id = getattr(teacher_tokenizer, f"{role}_token_id", None)
        if student_id is not None and teacher_id is not None and 0 <= teacher_id < teacher.shape[0]:
            rows.append(student_id)
            vectors.append(teacher[teacher_id])
    special_ids = set(student_tokenizer.all_special_ids)
    words = sorted((i, word) for word, i in vocab.items() if i not in special_ids)
    if words:
        pieces = teacher_tokenizer([word for _, word in words], add_special_tokens=False)["input_ids"]
        teacher_unk = teacher_tokenizer.unk_token_id
        for (i, word), ids in zip(words, pieces):
            if not ids or all(p == teacher_unk for p in ids):
                continue
            if max(ids) >= teacher.shape[0]:
                raise ConfigError("bilstm", "teacher_embeddings",
                                  f"teacher id {max(ids)} of {word!r} is past its {teacher.shape[0]} embedding rows")
            rows.append(i)
            vectors.append(teacher[ids].float().mean(dim=0))
    weight = embedding.weight
    with torch.no_grad():
        if rows:
            weight[torch.tensor(rows, device=weight.device)] = torch.stack(vectors).to(weight.device, weight.dtype)
        pad_id = student_tokenizer.pad_token_id
        if pad_id is not None:
            weight[pad_id].zero_()
    return len(rows)
