"""Models: presets, local checkpoints, unknown names, the question-passage attention (SDPA hook, eager fallback)."""

from copy import deepcopy

import pytest
import torch
from transformers import DistilBertConfig, DistilBertForQuestionAnswering

from kd_core.data.batches import batch_at, feature_arrays, num_question_tokens
from kd_core.data.features import FeatureConfig, featurize
from kd_core.io.errors import ConfigError, ModelError
from kd_core.models.build import build_preset_model, load_qa_model, load_sequence_model, save_model
from kd_core.models.forward import qa_forward, question_passage_attention
from tests.helpers import toy_examples, toy_tokenizer


def test_question_passage_attention_hand_case():
    # S = 4 tokens: 0 [CLS], 1-2 question, 3 passage. Two heads; row 3 of each head:
    # head 1 [0.1, 0.2, 0.3, 0.4], head 2 [0.3, 0.2, 0.1, 0.4] -> mean [0.2, 0.2, 0.2, 0.4]
    # question columns 1, 2 -> [0.2, 0.2] -> renormalised [0.5, 0.5]; Q = 3 pads a zero column.
    att = torch.zeros(1, 2, 4, 4)
    att[0, 0, 3] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    att[0, 1, 3] = torch.tensor([0.3, 0.2, 0.1, 0.4])
    att[0, :, 0] = 0.25  # [CLS] row: not passage, must be zero in the result
    qmask = torch.tensor([[False, True, True, False]])
    pmask = torch.tensor([[False, False, False, True]])
    out = question_passage_attention(att, qmask, pmask, num_question_tokens=3)
    assert out.shape == (1, 4, 3)
    assert out[0, 3].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert out[0, :3].abs().sum() == 0


def _batch():
    tok = toy_tokenizer()
    arrays = feature_arrays(featurize(toy_examples(), tok, FeatureConfig(max_length=40, doc_stride=8)))
    return tok, arrays


def test_preset_forward_attention_rows_sum_to_one_on_passage():
    tok, arrays = _batch()
    model = build_preset_model("tiny-bert", tok, seed=0)
    batch = batch_at(arrays, torch.arange(3).numpy())
    out = qa_forward(model.eval(), batch, num_question_tokens=12)
    assert out.start_logits.shape == (3, 40)
    sums = out.attention.sum(-1)
    passage = batch["passage_mask"]
    assert torch.allclose(sums[passage], torch.ones(int(passage.sum())), atol=1e-5)
    assert sums[~passage].abs().max() == 0


def _eager_reference(model, batch, q):
    """Logits and question-passage attention of a separate eager copy of ``model``, from the maps it returns."""
    eager = deepcopy(model)
    eager.set_attn_implementation("eager")
    out = eager(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}, output_attentions=True)
    attention = question_passage_attention(out.attentions[-1], batch["question_mask"].bool(),
                                           batch["passage_mask"].bool(), q)
    return out.start_logits, attention


def test_question_passage_attention_on_sdpa_equals_eager_attention():
    tok, arrays = _batch()
    batch = batch_at(arrays, torch.arange(3).numpy())
    q = num_question_tokens(arrays)
    assert batch["attention_mask"].sum(1).unique().numel() == 3  # padded, to different lengths
    assert batch["question_mask"].sum(1).unique().numel() == 2  # questions of different lengths
    for name in ("tiny-bert", "small-bert"):
        model = build_preset_model(name, tok, seed=0).eval()
        start_logits, expected = _eager_reference(model, batch, q)
        out = qa_forward(model, batch, num_question_tokens=q)
        assert model.config._attn_implementation == "sdpa"  # not switched
        assert out.attention.shape == (3, 40, q) and out.attention.dtype == torch.float32
        assert expected.abs().sum() > 0
        torch.testing.assert_close(out.attention, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(out.start_logits, start_logits, rtol=0, atol=1e-5)


def test_gradients_flow_through_the_hooked_attention_into_the_last_query_and_key():
    tok, arrays = _batch()
    batch = batch_at(arrays, torch.arange(3).numpy())
    q = num_question_tokens(arrays)
    model = build_preset_model("tiny-bert", tok, seed=0).train()
    target = torch.rand(3, 40, q)
    torch.manual_seed(0)
    out = qa_forward(model, batch, num_question_tokens=q)
    (out.attention - target).pow(2).sum().backward()
    last = model.bert.encoder.layer[-1].attention.self
    for module in (last.query, last.key):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    assert last.value.weight.grad is None  # the map does not read the values
    assert model.config._attn_implementation == "sdpa"


def test_models_without_query_key_modules_fall_back_to_eager_attention():
    tok, arrays = _batch()
    batch = {k: v for k, v in batch_at(arrays, torch.arange(3).numpy()).items() if k != "token_type_ids"}
    config = DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)
    torch.manual_seed(0)
    model = DistilBertForQuestionAnswering(config).eval()
    assert model.config._attn_implementation == "sdpa"
    out = qa_forward(model, batch, num_question_tokens=num_question_tokens(arrays))
    assert model.config._attn_implementation == "eager"  # the fallback switched it
    sums = out.attention.sum(-1)
    passage = batch["passage_mask"]
    torch.testing.assert_close(sums[passage], torch.ones(int(passage.sum())))
    assert sums[~passage].abs().max() == 0


def test_same_seed_same_model_and_local_checkpoint_round_trip(tmp_path):
    tok, arrays = _batch()
    a = build_preset_model("tiny-bert", tok, seed=5).eval()
    b = build_preset_model("tiny-bert", tok, seed=5).eval()
    batch = batch_at(arrays, torch.arange(3).numpy())
    assert torch.equal(qa_forward(a, batch).start_logits, qa_forward(b, batch).start_logits)
    save_model(a, tok, tmp_path / "student")
    assert (tmp_path / "student" / "model.safetensors").exists()
    loaded, loaded_tok = load_qa_model(str(tmp_path / "student"), seed=0)
    assert loaded_tok("who won")["input_ids"] == tok("who won")["input_ids"]
    assert torch.allclose(qa_forward(loaded.eval(), batch).start_logits, qa_forward(a, batch).start_logits, atol=1e-6)


def test_unknown_model_names_raise_model_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_qa_model("no-such-org/no-such-model-xyz", seed=0)
    assert str(err.value).startswith("no-such-org/no-such-model-xyz: ")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        load_qa_model(str(tmp_path / "empty"), seed=0)
    with pytest.raises(ConfigError):
        load_qa_model("tiny-bert", seed=0)  # a preset needs the data's tokenizer


def test_pickled_weights_are_never_loaded(tmp_path):
    """A folder whose weights are a pickle (``pytorch_model.bin``) is refused in one line; safetensors only."""
    tok, _ = _batch()
    model = build_preset_model("tiny-bert", tok, seed=1)
    save_model(model, tok, tmp_path / "pickled")
    (tmp_path / "pickled" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    with pytest.raises(ModelError, match="safetensors") as err:
        load_qa_model(str(tmp_path / "pickled"), seed=0)
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="safetensors"):
        load_sequence_model(str(tmp_path / "pickled"), seed=0, num_labels=2)


def test_shallower_student_copies_exactly_the_chosen_teacher_layers():
    from kd_core.models.build import keep_layers
    from kd_core.models.presets import every_other_layer

    tok, arrays = _batch()
    teacher = build_preset_model("bert-L4-H32-A2-I64", tok, seed=3)
    teacher_layers = [{k: v.clone() for k, v in block.state_dict().items()} for block in teacher.bert.encoder.layer]
    others = {k: v.clone() for k, v in teacher.state_dict().items() if ".encoder.layer." not in k}
    chosen = every_other_layer(4)
    assert chosen == (0, 2)
    for wanted in (chosen, (3, 1)):
        student = keep_layers(build_preset_model("bert-L4-H32-A2-I64", tok, seed=3), wanted)
        assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
        for position, index in enumerate(wanted):
            block = student.bert.encoder.layer[position].state_dict()
            assert all(torch.equal(v, block[k]) for k, v in teacher_layers[index].items())
        rest = {k: v for k, v in student.state_dict().items() if ".encoder.layer." not in k}
        assert rest.keys() == others.keys() and all(torch.equal(v, rest[k]) for k, v in others.items())
        assert qa_forward(student.eval(), batch_at(arrays, torch.arange(3).numpy())).start_logits.shape == (3, 40)
    for bad in ((4,), (1, 1), ()):
        with pytest.raises(ConfigError, match="layer indices"):
            keep_layers(build_preset_model("bert-L4-H32-A2-I64", tok, seed=3), bad)


def test_shape_names_build_bert_and_bilstm_models():
    from kd_core.models.build import load_sequence_model
    from kd_core.models.presets import is_preset

    tok, _ = _batch()
    model, _ = load_sequence_model("bert-L3-H48-A4-I96", 0, 2, tok)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads,
            model.config.intermediate_size) == (3, 48, 4, 96)
    lstm, _ = load_sequence_model("bilstm-E24-H16", 0, 3, tok)
    assert type(lstm).__name__ == "BiLSTMForSequenceClassification" and lstm.config.embedding_dim == 24
    assert not is_preset("bert-L2-H64") and not is_preset("bilstm-E24")
    with pytest.raises(ConfigError, match="divisible"):
        load_sequence_model("bert-L2-H50-A4-I96", 0, 2, tok)


def test_tokenizer_building_is_deterministic_and_spells_unknown_words():
    from kd_core.models.tokenizers import train_wordpiece_tokenizer

    texts = ["Lyon Rovers won the cup", "the dose is 200 mg", "Who won the cup?"] * 3
    a, b = train_wordpiece_tokenizer(texts, vocab_size=60), train_wordpiece_tokenizer(list(reversed(texts)), vocab_size=60)
    assert a.get_vocab() == b.get_vocab()
    assert a.tokenize("the cup") == ["the", "cup"]
    assert a.tokenize("dune") == ["d", "##u", "##n", "##e"]  # unseen word: spelt with known characters
