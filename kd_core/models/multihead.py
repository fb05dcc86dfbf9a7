"""The multi-task student of MT-DNN (Liu et al. 2019): one shared BERT encoder, one output layer per task.

:class:`BertForMultiTask` reads a sentence (pair) as BERT does and sends the pooled
``[CLS]`` vector ``h`` through the head of the example's task ``t``:

    z = W_t dropout(h) + b_t,      W_t in R^{C_t x H}

(``C_t`` classes, or 1 for a regression task). A batch may mix tasks: every head is applied
(they are single linear layers) and each row keeps its own task's output, left-aligned in a
``[B, C_max]`` tensor whose other columns are 0. The task heads are stored in the
configuration (``task_heads``: name -> outputs), so the model saves and loads in Hugging Face
``save_pretrained`` form with this class (no remote code).

:func:`single_task_from_multitask` turns one head of a saved multi-task model into a plain
``BertForSequenceClassification`` (the encoder and that head): the per-task fine-tuning
that the paper runs after multi-task training starts from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertPreTrainedModel

from kd_core.io.errors import ConfigError, ModelError


class BertForMultiTask(BertPreTrainedModel):
    """A shared BERT encoder with one linear head per task (module doc)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        heads: Mapping[str, int] = getattr(config, "task_heads", None) or {}
        if not heads:
            raise ConfigError("models", "task_heads", "a multi-task model needs at least one task head")
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout if config.classifier_dropout is not None
                                  else config.hidden_dropout_prob)
        self.heads = nn.ModuleDict({name: nn.Linear(config.hidden_size, outputs) for name, outputs in heads.items()})
        self.widest = max(heads.values())
        self.post_init()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, task_index: Tensor,
                token_type_ids: Tensor | None = None) -> Tensor:
        """``[B, C_max]``: row ``b`` holds head ``task_index[b]``'s outputs in its first ``C_t`` columns, then 0."""
        pooled = self.dropout(self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids).pooler_output)
        per_head = [nn.functional.pad(head(pooled), (0, self.widest - head.out_features)) for head in self.heads.values()]
        stacked = torch.stack(per_head)  # [T, B, C_max]
        return stacked[task_index.long(), torch.arange(pooled.shape[0], device=pooled.device)]


def multitask_config(base: BertConfig, task_heads: Mapping[str, int]) -> BertConfig:
    """``base`` with the task heads set (and the architecture named, so the saved folder says what it is)."""
    config = BertConfig.from_dict({**base.to_dict(), "task_heads": dict(task_heads),
                                   "architectures": ["BertForMultiTask"]})
    return config


def load_multitask_model(source: str, seed: int, task_heads: Mapping[str, int]) -> BertForMultiTask:
    """A multi-task model from a saved one (its heads must be ``task_heads``) or from any BERT encoder.

    A plain BERT checkpoint (e.g. a pretrained encoder) gives the encoder; the heads are new,
    initialised from ``seed``.
    """
    try:
        base = BertConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise ModelError(source, "config.json", f"cannot read a BERT configuration: {err}") from err
    if base.model_type != "bert":
        raise ModelError(source, "model_type", f"the multi-task student needs a BERT encoder, got {base.model_type!r}")
    saved = getattr(base, "task_heads", None)
    if saved is not None and dict(saved) != dict(task_heads):
        raise ModelError(source, "task_heads", f"the model has heads {dict(saved)}, the tasks need {dict(task_heads)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForMultiTask.from_pretrained(source, config=multitask_config(base, task_heads), use_safetensors=True)


def is_multitask_checkpoint(source: str) -> bool:
    """Whether ``source`` is a saved :class:`BertForMultiTask` folder (a local one: jobs save them; no hub lookup)."""
    config = Path(source) / "config.json"
    if not config.is_file():
        return False
    try:
        return "task_heads" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def single_task_from_multitask(source: str, task: str, outputs: int) -> BertForSequenceClassification:
    """The encoder of the saved multi-task model ``source`` with head ``task`` as a one-task classifier."""
    multi = BertForMultiTask.from_pretrained(source, use_safetensors=True)
    if task not in multi.heads or multi.heads[task].out_features != outputs:
        raise ModelError(source, "task_heads", f"has no head for task {task!r} with {outputs} outputs")
    config = BertConfig.from_dict({key: value for key, value in multi.config.to_dict().items()
                                   if key not in ("task_heads", "architectures")})
    config.num_labels = outputs
    config.problem_type = "regression" if outputs == 1 else "single_label_classification"
    single = BertForSequenceClassification(config)
    single.bert.load_state_dict(multi.bert.state_dict())
    single.classifier.load_state_dict(multi.heads[task].state_dict())
    return single
