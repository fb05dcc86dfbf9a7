"""Objectives assemble the loss terms with their weights and schedules (built from a step's term specs)."""

import pytest
import torch

from kd_core import losses
from kd_core.errors import ConfigError
from kd_core.models import QAOutput
from kd_core.engine.execute import objective_for
from kd_core.engine.steps import TermSpec
from kd_core.methods.a2d import A2DSettings
from kd_core.objectives import Complement, Constant, Linear, parse_schedule
from kd_core.tasks import SpanQATask

A2D = (TermSpec("hard"), TermSpec("soft", 1.0, 3.0), TermSpec("answer_margin", 0.3), TermSpec("attention", 0.1))
IMM = (TermSpec("hard", Linear(0.0, 1.0)), TermSpec("prediction_mse", Complement(Linear(0.0, 1.0))))


def _batch_and_outputs():
    torch.manual_seed(3)
    b, s, q = 4, 7, 3
    span_mask = torch.ones(b, s, dtype=torch.bool)
    span_mask[:, -2:] = False
    passage = span_mask.clone()
    passage[:, :2] = False
    batch = {
        "start_position": torch.tensor([2, 3, 0, 4]),
        "end_position": torch.tensor([3, 4, 0, 4]),
        "span_mask": span_mask,
        "passage_mask": passage,
        "teacher_start_logits": torch.randn(b, 2, s),
        "teacher_end_logits": torch.randn(b, 2, s),
        "confusing_start": torch.tensor([4, -1, 3, 2]),
        "confusing_end": torch.tensor([4, -1, 4, 3]),
        "teacher_attention": torch.softmax(torch.randn(b, s, q), -1),
    }
    out = QAOutput(torch.randn(b, s), torch.randn(b, s), torch.softmax(torch.randn(b, s, q), -1))
    return out, batch


def test_a2d_objective_is_ce_plus_kd_plus_gamma_ans_plus_delta_att():
    out, b = _batch_and_outputs()
    total, parts = objective_for(A2D, SpanQATask())(out, b, progress=0.0)
    ce = losses.span_ce_loss(out.start_logits, out.end_logits, b["start_position"], b["end_position"], b["span_mask"])
    kd = losses.span_kd_loss(out.start_logits, out.end_logits, b["teacher_start_logits"], b["teacher_end_logits"], b["span_mask"], 3.0)
    ans = losses.answer_margin_loss(out.start_logits, out.end_logits, b["start_position"], b["end_position"], b["confusing_start"], b["confusing_end"])
    att = losses.attention_mse_loss(out.attention, b["teacher_attention"], b["passage_mask"])
    expected = ce.mean() + kd.mean() + 0.3 * ans.mean() + 0.1 * att.mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {f"{k}/{n}" for k in ("loss", "weight") for n in ("ce", "kd", "ans", "att")}
    assert parts["weight/ans"] == 0.3


def test_zero_weights_are_dropped():
    objective = objective_for((*A2D[:2], TermSpec("answer_margin", 0.0), TermSpec("attention", 0.0)), SpanQATask())
    assert [t.name for t in objective.terms] == ["ce", "kd"]
    assert not objective.needs_attention


def test_imm_objective_anneals_lambda_and_uses_example_weights():
    out, b = _batch_and_outputs()
    b["weight"] = torch.tensor([0.5, 0.25, 0.25, 0.0])
    objective = objective_for(IMM, SpanQATask())
    ce = losses.span_ce_loss(out.start_logits, out.end_logits, b["start_position"], b["end_position"], b["span_mask"])
    mse = losses.prediction_mse_loss(out.start_logits, out.end_logits, b["teacher_start_logits"], b["teacher_end_logits"], b["span_mask"])
    for progress, lam in ((0.0, 0.0), (0.25, 0.25), (1.0, 1.0)):
        total, parts = objective(out, b, progress)
        expected = lam * losses.weighted_mean(ce, b["weight"]) + (1 - lam) * losses.weighted_mean(mse, b["weight"])
        assert total.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-9)
        assert parts["weight/ce"] == pytest.approx(lam)
        assert parts["weight/mse"] == pytest.approx(1 - lam)


def test_schedules_and_their_parsing():
    assert Linear(0.0, 1.0)(0.3) == pytest.approx(0.3)
    assert Linear(1.0, 0.0)(2.0) == 0.0  # clamped to the end of training
    assert Complement(Linear(0.0, 1.0))(0.3) == pytest.approx(0.7)
    assert parse_schedule("linear:0:1") == Linear(0.0, 1.0)
    assert parse_schedule("0.5") == Constant(0.5)
    assert parse_schedule(2) == Constant(2.0)
    with pytest.raises(ConfigError, match="cannot read schedule"):
        parse_schedule("cosine:0:1")


@pytest.mark.parametrize(
    "kwargs, field",
    [({"tau": 0.0}, "tau"), ({"tau": -1.0}, "tau"), ({"gamma": -0.1}, "gamma"), ({"delta": -1.0}, "delta"), ({"top_k": 0}, "top_k")],
)
def test_invalid_a2d_hyperparameters_are_refused(kwargs, field):
    with pytest.raises(ConfigError) as err:
        A2DSettings(**kwargs)
    assert err.value.where == field
    assert str(err.value).startswith("a2d: ")
