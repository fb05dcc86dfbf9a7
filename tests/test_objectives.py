"""Objectives assemble the loss terms with their weights and schedules (built from a step's term specs)."""

import math

import pytest
import torch

from kd_core.engine.inputs import objective_for
from kd_core.engine.steps import TermSpec
from kd_core.io.errors import ConfigError
from kd_core.methods.a2d import A2DSettings
from kd_core.models.forward import QAOutput
from kd_core.objectives.schedules import Complement, Constant, Linear, parse_schedule
from kd_core.tasks.span_qa import SpanQATask

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


def test_a2d_objective_is_eq1_computed_by_hand():
    # One window, S = 3 (all legal), passage = positions 1, 2, Q = 2, tau = 2, gold (1, 2), confusing (2, 2).
    # Student: a = [0, ln2, 0] -> p_start = [1/4, 1/2, 1/4]; b = [0, 0, ln2] -> p_end = [1/4, 1/4, 1/2].
    ln2, r2 = math.log(2.0), math.sqrt(2.0)
    out = QAOutput(torch.tensor([[0.0, ln2, 0.0]]), torch.tensor([[0.0, 0.0, ln2]]),
                   torch.tensor([[[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]]))
    batch = {"start_position": torch.tensor([1]), "end_position": torch.tensor([2]),
             "span_mask": torch.ones(1, 3, dtype=torch.bool), "passage_mask": torch.tensor([[False, True, True]]),
             "teacher_start_logits": torch.tensor([[[0.0, 2 * math.log(3.0), 0.0]]]),
             "teacher_end_logits": torch.zeros(1, 1, 3),
             "confusing_start": torch.tensor([2]), "confusing_end": torch.tensor([2]),
             "teacher_attention": torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.2, 0.8]]])}
    # L_CE = -log p_start(1) - log p_end(2) = 2 ln2
    ce = 2 * ln2
    # L_KD at tau = 2: q_start = softmax([0, ln3, 0]) = [1/5, 3/5, 1/5], p_start = [1, r2, 1] / (2 + r2);
    # q_end = [1/3, 1/3, 1/3], p_end = [1, 1, r2] / (2 + r2); each soft CE = -sum q log p.
    kd_start = -(0.4 * math.log(1 / (2 + r2)) + 0.6 * math.log(r2 / (2 + r2)))
    kd_end = -(2 / 3 * math.log(1 / (2 + r2)) + 1 / 3 * math.log(r2 / (2 + r2)))
    kd = kd_start + kd_end
    # L_ANS = max(0, 1 - a_1 + a_2) + max(0, 1 - b_2 + b_2) = (1 - ln2) + 1
    ans = (1 - ln2) + 1.0
    # L_ATT = 1/2 sum over passage rows j of ||D_j - E_j||^2 = 1/2 [(1 - .5)^2 + (0 - .5)^2 + 0] (row 0 ignored)
    att = 0.5 * 0.5
    for alpha in (1.0, 0.5):
        specs = (TermSpec("hard"), TermSpec("soft", alpha, 2.0), TermSpec("answer_margin", 0.3),
                 TermSpec("attention", 0.1))
        total, parts = objective_for(specs, SpanQATask())(out, batch, progress=0.0)
        expected = ce + alpha * 4 * kd + 0.3 * ans + 0.1 * att
        assert total.item() == pytest.approx(expected, rel=1e-5)
        assert parts["loss/ce"] == pytest.approx(ce, rel=1e-5) and parts["loss/att"] == pytest.approx(att)


def test_zero_weights_are_dropped():
    objective = objective_for((*A2D[:2], TermSpec("answer_margin", 0.0), TermSpec("attention", 0.0)), SpanQATask())
    assert [t.name for t in objective.terms] == ["ce", "kd"]
    assert not objective.needs_attention


def test_imm_objective_anneals_lambda_and_uses_example_weights():
    # L = lambda(p) * mean_v L_CE + (1 - lambda(p)) * mean_v L_MSE with lambda(p) = p; S = 2, gold (0, 1).
    ln3 = math.log(3.0)
    out = QAOutput(torch.tensor([[0.0, 0.0], [ln3, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, ln3]]))
    batch = {"start_position": torch.tensor([0, 0]), "end_position": torch.tensor([1, 1]),
             "span_mask": torch.ones(2, 2, dtype=torch.bool),
             "teacher_start_logits": torch.tensor([[ln3, 0.0], [ln3, 0.0]]),
             "teacher_end_logits": torch.tensor([[0.0, 0.0], [0.0, ln3]]), "weight": torch.tensor([0.5, 1.5])}
    # Example A: p = [1/2, 1/2] twice: CE = 2 ln2; q_start = [3/4, 1/4], q_end = p: MSE = 2 (1/4)^2 = 1/8.
    # Example B: p_start = [3/4, 1/4], p_end = [1/4, 3/4]: CE = -2 ln(3/4); the teacher agrees: MSE = 0.
    ce = (0.5 * 2 * math.log(2.0) + 1.5 * -2 * math.log(0.75)) / 2.0
    mse = (0.5 * 0.125 + 1.5 * 0.0) / 2.0
    objective = objective_for(IMM, SpanQATask())
    for progress in (0.0, 0.25, 1.0):
        total, parts = objective(out, batch, progress)
        assert total.item() == pytest.approx(progress * ce + (1 - progress) * mse, rel=1e-6, abs=1e-9)
        assert parts["weight/ce"] == pytest.approx(progress) and parts["weight/mse"] == pytest.approx(1 - progress)


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
