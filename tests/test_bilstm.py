"""The BiLSTM student: Hugging Face save/load, masking, the word tokenizer, teacher embeddings, learning."""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kd_core.io.errors import ConfigError
from kd_core.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification, init_embeddings_from_teacher
from kd_core.models.tokenizers import SPECIAL_TOKENS, train_word_tokenizer, train_wordpiece_tokenizer

TEXTS = ["the cat sat", "the dog sat", "a cat ran"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny LSTMs on 2 threads of a busy CPU run ~300x slower (thread contention): use one, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(tokenizer, seed=0, num_labels=3, **sizes):
    shape = {"embedding_dim": 8, "hidden_size": 6, "classifier_hidden": 10, "dropout": 0.0, **sizes}
    config = BiLSTMConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=num_labels,
                          **shape)
    torch.manual_seed(seed)
    return BiLSTMForSequenceClassification(config).eval()


def _encode(tokenizer, a, b=None, max_length=16, padding="max_length"):
    enc = tokenizer(a, b, truncation=True, max_length=max_length, padding=padding, return_token_type_ids=True,
                    return_tensors="pt")
    return {name: enc[name] for name in ("input_ids", "attention_mask", "token_type_ids")}


def test_word_tokenizer_vocabulary_and_pair_encoding_by_hand(tmp_path):
    tok = train_word_tokenizer(TEXTS)
    # Counts: cat 2, sat 2, the 2, then a 1, dog 1, ran 1 (ties alphabetical), after the 5 specials.
    expected = {**{t: i for i, t in enumerate(SPECIAL_TOKENS)}, "cat": 5, "sat": 6, "the": 7, "a": 8, "dog": 9, "ran": 10}
    assert tok.get_vocab() == expected
    enc = tok("The cat ran.", "a DOG sat", return_token_type_ids=True)
    # "." is not a word of the vocabulary: [UNK] = 1; [SEP] = 3; no [CLS].
    assert enc["input_ids"] == [7, 5, 10, 1, 3, 8, 9, 6]
    assert enc["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert tok("zebra sat")["input_ids"] == [1, 6]
    padded = tok(["the cat sat"], truncation=True, max_length=5, padding="max_length", return_token_type_ids=True)
    assert padded["input_ids"] == [[7, 5, 6, 0, 0]] and padded["attention_mask"] == [[1, 1, 1, 0, 0]]
    cut = tok(["the cat sat"], ["a dog ran"], truncation=True, max_length=5, padding="max_length")
    assert cut["input_ids"] == [[7, 5, 3, 8, 9]]
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    again = loaded("The cat ran.", "a DOG sat", return_token_type_ids=True)
    assert again["input_ids"] == enc["input_ids"] and again["token_type_ids"] == enc["token_type_ids"]
    assert loaded.pad_token_id == 0 and loaded.unk_token_id == 1


def test_word_tokenizer_vocab_size_caps_and_is_checked():
    assert len(train_word_tokenizer(TEXTS, vocab_size=7)) == 7  # specials + cat, sat
    with pytest.raises(ConfigError):
        train_word_tokenizer(TEXTS, vocab_size=5)


def test_save_and_auto_load_round_trip_gives_identical_logits(tmp_path):
    tok = train_word_tokenizer(TEXTS)
    model = _model(tok)
    batch = _encode(tok, ["the cat sat", "a dog"], ["a cat ran", "the"])
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is BiLSTMForSequenceClassification
    for (name, saved), (name2, back) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == name2 and torch.equal(saved, back), name
    with torch.no_grad():
        assert torch.equal(model(**batch, return_dict=True).logits, loaded(**batch, return_dict=True).logits)
    # The engine's reload with another head keeps the encoder and re-initialises the head.
    other = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=1, problem_type="regression",
                                                               ignore_mismatched_sizes=True)
    assert torch.equal(other.bilstm.lstm.weight_hh_l0, model.bilstm.lstm.weight_hh_l0)
    assert other.classifier[-1].out_features == 1


def test_fresh_model_is_seeded_and_initialised():
    tok = train_word_tokenizer(TEXTS)
    a, b, c = _model(tok, seed=3), _model(tok, seed=3), _model(tok, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.bilstm.embeddings.weight, c.bilstm.embeddings.weight)
    assert a.bilstm.embeddings.weight[tok.pad_token_id].abs().sum() == 0
    bias, hidden = a.bilstm.lstm.bias_ih_l0, a.config.hidden_size
    assert torch.equal(bias[hidden:2 * hidden], torch.ones(hidden))  # forget gate
    assert a.get_input_embeddings() is a.bilstm.embeddings


def test_padding_does_not_change_logits():
    tok = train_word_tokenizer(TEXTS)
    model = _model(tok, num_layers=2)
    a, b = ["the cat sat", "a"], ["a dog ran the cat", "dog"]
    with torch.no_grad():
        short = model(**_encode(tok, a, b, max_length=12)).logits
        long = model(**_encode(tok, a, b, max_length=40)).logits
        # Each row alone, with no padding at all: the padded rows of the batch must match it.
        alone = torch.cat([model(**_encode(tok, [x], [y], padding=False)).logits for x, y in zip(a, b)])
        # Left padding: the same real tokens at the end of the row.
        batch = _encode(tok, a, b, max_length=12)
        shift = (batch["attention_mask"] == 0).sum(1)
        left = {k: torch.stack([row.roll(int(s)) for row, s in zip(v, shift)]) for k, v in batch.items()}
        left_logits = model(**left).logits
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum() < 12  # both rows padded
    torch.testing.assert_close(short, long, rtol=0, atol=1e-6)
    torch.testing.assert_close(short, alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(short, left_logits, rtol=0, atol=1e-6)


def test_single_real_token_gives_finite_logits_equal_to_that_token_alone():
    tok = train_word_tokenizer(TEXTS)
    model = _model(tok)
    ids = torch.tensor([[7, 0, 0, 0], [7, 5, 6, 0], [0, 0, 0, 0]])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    model.train()  # dropout 0: same numbers, and the gradient path is exercised
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    alone = model(input_ids=torch.tensor([[7]])).logits
    torch.testing.assert_close(out.logits[0], alone[0], rtol=0, atol=1e-6)


def test_losses_match_their_definitions():
    tok = train_word_tokenizer(TEXTS)
    batch = _encode(tok, ["the cat sat", "a dog"])
    classifier = _model(tok, num_labels=3)
    labels = torch.tensor([2, 0])
    out = classifier(**batch, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    loss, logits = classifier(**batch, labels=labels, return_dict=False)
    torch.testing.assert_close(loss, out.loss)
    regressor = _model(tok, num_labels=1)
    scores = torch.tensor([0.5, 3.0])
    out = regressor(**batch, labels=scores)
    assert out.logits.shape == (2, 1)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits[:, 0], scores))


@pytest.mark.parametrize("bad", [{"hidden_size": 0}, {"embedding_dim": -3}, {"num_layers": 0},
                                 {"classifier_hidden": 0}, {"dropout": 1.0}, {"dropout": -0.1},
                                 {"vocab_size": 0}, {"pad_token_id": 50}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        BiLSTMConfig(**{"vocab_size": 20, **bad})


def test_init_embeddings_from_teacher():
    teacher_tok = train_wordpiece_tokenizer(["the cat sat on the mat", "a dog ran"], vocab_size=60)

    def split(word):
        return teacher_tok.convert_ids_to_tokens(teacher_tok(word, add_special_tokens=False)["input_ids"])

    assert split("cat") == ["cat"] and split("cats") == ["cat", "##s"] and split("zebra") == ["[UNK]"]
    student_tok = train_word_tokenizer(["the cats sat", "zebra the"])
    torch.manual_seed(0)
    teacher = torch.randn(len(teacher_tok), 8)
    student = _model(student_tok)
    before = student.get_input_embeddings().weight.detach().clone()
    count = init_embeddings_from_teacher(student, student_tok, teacher, teacher_tok)
    rows = student.get_input_embeddings().weight.detach()
    sid, tid = student_tok.convert_tokens_to_ids, teacher_tok.convert_tokens_to_ids
    assert count == 3 + 4  # the, sat, cats; [UNK] [CLS] [SEP] [MASK]
    assert torch.equal(rows[sid("the")], teacher[tid("the")])
    assert torch.equal(rows[sid("sat")], teacher[tid("sat")])
    torch.testing.assert_close(rows[sid("cats")], (teacher[tid("cat")] + teacher[tid("##s")]) / 2)
    assert torch.equal(rows[sid("zebra")], before[sid("zebra")])  # the teacher knows it only as [UNK]
    for token in ("[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        assert torch.equal(rows[sid(token)], teacher[tid(token)])
    assert rows[sid("[PAD]")].abs().sum() == 0
    with pytest.raises(ConfigError, match="8.*16|16.*8"):
        init_embeddings_from_teacher(student, student_tok, torch.randn(len(teacher_tok), 16), teacher_tok)


def test_training_lowers_the_loss_on_a_separable_task():
    fillers = ["the cat", "a dog", "the mat", "a cat ran", "dog sat", "the", "cat on mat", "a"]
    texts = [f"{f} good" if i % 2 else f"bad {f}" for i, f in enumerate(fillers * 2)]
    labels = torch.tensor([i % 2 for i in range(len(texts))])
    tok = train_word_tokenizer(texts)
    model = _model(tok, num_labels=2, embedding_dim=16, hidden_size=16, classifier_hidden=16).train()
    batch = _encode(tok, texts, max_length=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(40):
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1)
    assert losses[-1] < 0.2 * losses[0]
    assert torch.equal(predicted, labels)
