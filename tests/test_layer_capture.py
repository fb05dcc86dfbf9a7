"""LayerCapture on a tiny BERT: captured tensors equal the model's own outputs (attention maps: a separate eager
copy's), and carry gradients; the model stays on its attention implementation."""

from copy import deepcopy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from kd_core.io.errors import ConfigError
from kd_core.models.layer_capture import LayerCapture
from kd_core.objectives.layer_losses import hidden_mse_loss


def tiny_config(**overrides) -> BertConfig:
    settings = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    settings.update(overrides)
    return BertConfig(**settings)


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(tiny_config()).eval()


def batch():
    torch.manual_seed(1)
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0  # the second example is padded
    return ids, mask


def test_captured_hidden_states_equal_output_hidden_states():
    model = tiny_bert()
    ids, mask = batch()
    with LayerCapture(model, [0, 1], {"hidden"}) as capture:
        out = model(ids, attention_mask=mask, output_hidden_states=True)
        assert sorted(capture.hidden) == [0, 1]
        for i in (0, 1):
            assert capture.hidden[i].shape == (2, 6, 32)
            torch.testing.assert_close(capture.hidden[i], out.hidden_states[i + 1])
        assert capture.attention == {} and capture.query == {}


def eager_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A separate copy of ``model`` on eager attention, the implementation that returns attention maps."""
    copy = deepcopy(model)
    copy.set_attn_implementation("eager")
    return copy


def test_captured_attention_needs_no_output_attentions_and_equals_eager_attentions():
    model = tiny_bert()
    assert model.config._attn_implementation == "sdpa"  # the transformers 5 default: no probabilities
    reference_model = eager_copy(model)
    ids, mask = batch()
    reference = reference_model(ids, attention_mask=mask, output_attentions=True).attentions
    with LayerCapture(model, [0, 1], {"attention"}) as capture:
        model(ids, attention_mask=mask)  # an ordinary call, no output_attentions
        assert model.config._attn_implementation == "sdpa"  # the model was not switched
        for i in (0, 1):
            assert capture.attention[i].shape == (2, 2, 6, 6) and capture.attention[i].dtype == torch.float32
            torch.testing.assert_close(capture.attention[i], reference[i], rtol=0, atol=1e-5)
        # probabilities: rows sum to 1, padded keys of the second example get exactly 0
        torch.testing.assert_close(capture.attention[0].sum(-1), torch.ones(2, 2, 6))
        assert capture.attention[0][1, :, :, 4:].abs().max().item() == 0.0
        model(ids, mask)  # the attention mask given positionally is read too
        torch.testing.assert_close(capture.attention[1], reference[1], rtol=0, atol=1e-5)
    assert model.config._attn_implementation == "sdpa"


def test_captures_leave_the_attention_implementation_alone():
    ids, mask = batch()
    for implementation in ("sdpa", "eager"):
        model = tiny_bert()
        model.set_attn_implementation(implementation)
        first = LayerCapture(model, [0], {"attention"})
        second = LayerCapture(model, [1], {"attention"})
        assert model.config._attn_implementation == implementation
        model(ids, attention_mask=mask)
        assert set(first.attention) == {0} and set(second.attention) == {1}
        first.remove()
        second.remove()
        assert model.config._attn_implementation == implementation


def test_captured_attention_is_taken_before_attention_dropout():
    torch.manual_seed(0)
    model = BertModel(tiny_config(attention_probs_dropout_prob=0.5)).train()
    ids, mask = batch()
    # layer 0 reads the embeddings (no hidden dropout), so its map does not depend on the dropout
    expected = eager_copy(model).eval()(ids, attention_mask=mask, output_attentions=True).attentions[0]
    dropped = eager_copy(model)(ids, attention_mask=mask, output_attentions=True).attentions[0]
    assert (dropped - expected).abs().max() > 0.1  # eager in training mode returns the dropped-out map
    with LayerCapture(model, [0], {"attention"}) as capture:
        model(ids, attention_mask=mask)
        torch.testing.assert_close(capture.attention[0], expected, rtol=0, atol=1e-5)


def test_attention_under_bf16_autocast_is_float32():
    model = tiny_bert()
    ids, mask = batch()
    reference = eager_copy(model)(ids, attention_mask=mask, output_attentions=True).attentions[0]
    with LayerCapture(model, [0], {"attention", "query"}) as capture, torch.autocast("cpu", torch.bfloat16):
        model(ids, attention_mask=mask)
        assert capture.query[0].dtype == torch.bfloat16  # the projections come out in bf16
        assert capture.attention[0].dtype == torch.float32
        torch.testing.assert_close(capture.attention[0].sum(-1), torch.ones(2, 2, 6))
        torch.testing.assert_close(capture.attention[0], reference, rtol=0, atol=3e-2)


def test_attention_of_a_decoder_is_refused():
    model = BertModel(tiny_config(is_decoder=True))
    with pytest.raises(ConfigError, match="cannot compute the attention maps"):
        LayerCapture(model, [0], {"attention"})
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_captured_query_key_value_equal_the_linear_modules_on_the_layer_input():
    model = tiny_bert()
    ids, mask = batch()
    with LayerCapture(model, [1], {"query", "key", "value"}) as capture:
        out = model(ids, attention_mask=mask, output_hidden_states=True)
        attention = model.encoder.layer[1].attention.self
        layer_input = out.hidden_states[1]  # the input of layer 1 is the output of layer 0
        for name in ("query", "key", "value"):
            captured = getattr(capture, name)
            assert set(captured) == {1}
            assert captured[1].shape == (2, 6, 32)
            torch.testing.assert_close(captured[1], getattr(attention, name)(layer_input))


def test_capture_through_a_task_model_and_gradients_reach_the_parameters():
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config(num_labels=3)).train()
    ids, mask = batch()
    with LayerCapture(model, [0, 1], {"hidden", "attention", "query"}) as capture:
        logits = model(ids, attention_mask=mask).logits  # no extra arguments
        assert logits.shape == (2, 3)
        assert set(capture.hidden) == set(capture.attention) == set(capture.query) == {0, 1}
        target = torch.zeros(2, 6, 32)
        loss = hidden_mse_loss(capture.hidden[0], target, mask.bool()).mean() + capture.attention[1].pow(2).mean()
        loss.backward()
    layer0 = model.bert.encoder.layer[0]
    assert layer0.output.dense.weight.grad is not None and layer0.output.dense.weight.grad.abs().sum() > 0
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    # the attention loss of layer 1 reaches its query projection
    assert model.bert.encoder.layer[1].attention.self.query.weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad is None  # the classifier was not in the loss


def test_each_forward_replaces_the_previous_tensors_and_clear_drops_them():
    model = tiny_bert()
    ids, mask = batch()
    capture = LayerCapture(model, [0], {"hidden"})
    model(ids, attention_mask=mask)
    first = capture.hidden[0]
    model(ids[:1], attention_mask=mask[:1])
    assert capture.hidden[0].shape[0] == 1 and capture.hidden[0] is not first
    capture.clear()
    assert capture.hidden == {}
    capture.remove()


def test_remove_stops_capturing():
    model = tiny_bert()
    ids, mask = batch()
    capture = LayerCapture(model, [0, 1], {"hidden", "attention", "query", "key", "value"})
    model(ids, attention_mask=mask)
    assert set(capture.hidden) == {0, 1}
    capture.remove()
    assert capture.hidden == {} and capture.attention == {}
    model(ids, attention_mask=mask)
    assert capture.hidden == {} and capture.attention == {} and capture.query == {}
    # no hook of ours is left on the model
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    capture.remove()  # idempotent


def test_a_model_without_transformer_layers_is_refused():
    with pytest.raises(ConfigError, match="has no transformer layers"):
        LayerCapture(torch.nn.LSTM(4, 4), [0], {"hidden"})


def test_out_of_range_layers_and_unknown_kinds_are_refused():
    model = tiny_bert()
    with pytest.raises(ConfigError, match="2 layers") as error:
        LayerCapture(model, [2], {"hidden"})
    assert error.value.source == "layers"
    with pytest.raises(ConfigError, match="2 layers"):
        LayerCapture(model, [-1], {"hidden"})
    with pytest.raises(ConfigError, match="can capture only"):
        LayerCapture(model, [0], {"hidden", "logits"})
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_an_empty_what_captures_nothing_and_leaves_attention_alone():
    model = tiny_bert()
    ids, mask = batch()
    with LayerCapture(model, [0], set()) as capture:
        model(ids, attention_mask=mask)
        assert capture.hidden == {} and capture.attention == {}
        assert model.config._attn_implementation == "sdpa"
