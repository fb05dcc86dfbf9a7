"""Every loss against a value computed by hand (the arithmetic is in the comments)."""

import math

import pytest
import torch

from kd_core.objectives import losses

LN3 = math.log(3.0)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_span_ce_matches_hand_value_and_ignores_masked_positions():
    # start: logits [1, 2, 0], gold 1: -log p = log(e + e^2 + 1) - 2 = 2.407606 - 2 = 0.407606
    # end: logits [0, 0, 0], gold 2: -log(1/3) = 1.098612;  L = 0.407606 + 1.098612 = 1.506218
    start = t([1.0, 2.0, 0.0, 100.0])
    end = t([0.0, 0.0, 0.0, -50.0])
    mask = torch.tensor([[True, True, True, False]])
    value = losses.span_ce_loss(start, end, torch.tensor([1]), torch.tensor([2]), mask)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(1.506218, abs=1e-5)


def test_span_kd_soft_cross_entropy_with_tau_squared():
    # tau = 2. start: teacher [2 ln3, 0] -> q = softmax([ln3, 0]) = [3/4, 1/4];
    # student [0, 2 ln3] -> p = [1/4, 3/4]; CE = 3/4 ln4 + 1/4 ln(4/3) = 1.111642.
    # end: both zeros -> CE = ln 2 = 0.693147.  L = tau^2 * (1.111642 + 0.693147) = 7.219156
    mask = torch.ones(1, 2, dtype=torch.bool)
    value = losses.span_kd_loss(t([0.0, 2 * LN3]), t([0.0, 0.0]), t([2 * LN3, 0.0]), t([0.0, 0.0]), mask, tau=2.0)
    assert value.item() == pytest.approx(7.219156, abs=1e-5)


def test_ensemble_teachers_average_probabilities_not_logits():
    # members at tau=1: [ln3, 0] -> [3/4, 1/4] and [0, 0] -> [1/2, 1/2]; average [5/8, 3/8]
    # (averaging logits would give softmax([ln3/2, 0]) = [0.634, 0.366]).
    mask = torch.ones(1, 2, dtype=torch.bool)
    members = torch.tensor([[[LN3, 0.0], [0.0, 0.0]]])
    q = losses.teacher_probabilities(members, mask)
    assert q[0].tolist() == pytest.approx([0.625, 0.375], abs=1e-6)
    # Student p = [1/4, 3/4]: CE = 5/8 ln4 + 3/8 ln(4/3) = 0.974315 for start and end; tau = 1;
    # L = 2 * 0.974315 = 1.948630.
    value = losses.span_kd_loss(t([0.0, LN3]), t([0.0, LN3]), members, members, mask, tau=1.0)
    assert value.item() == pytest.approx(1.948630, abs=1e-5)


def test_answer_margin_hinge_on_logits():
    # ex 0: a = [0, 1, 2, 0], b = [0, 0, 1, 2], gold (1, 3), confusing (2, 2):
    #   max(0, 1 - a1 + a2) = 2, max(0, 1 - b3 + b2) = 0 -> 2
    # ex 1: gold beats confusing by more than the margin -> 0
    # ex 2: no confusing answer (-1) -> 0
    a = t([0.0, 1.0, 2.0, 0.0], [0.0, 3.0, 1.0, 0.0], [0.0, 0.0, 9.0, 0.0])
    b = t([0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 9.0, 0.0])
    gold_s, gold_e = torch.tensor([1, 1, 1]), torch.tensor([3, 3, 3])
    conf_s, conf_e = torch.tensor([2, 2, -1]), torch.tensor([2, 2, -1])
    value = losses.answer_margin_loss(a, b, gold_s, gold_e, conf_s, conf_e)
    assert value.tolist() == pytest.approx([2.0, 0.0, 0.0])


def test_attention_mse_sums_over_passage_rows_only():
    # row 0 is not passage (ignored); row 1: (1-.5)^2 + (0-.5)^2 = 0.5; row 2 equal -> 0.  L = 0.5 * 0.5
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.2, 0.8]]])
    student = torch.tensor([[[0.0, 1.0], [0.5, 0.5], [0.2, 0.8]]])
    passage = torch.tensor([[False, True, True]])
    assert losses.attention_mse_loss(student, teacher, passage).item() == pytest.approx(0.25)


def test_prediction_mse_between_distributions():
    # start: p = [1/2, 1/2], q = softmax([ln3, 0]) = [3/4, 1/4]: 2 * (1/4)^2 = 0.125; end equal -> 0; L = 0.125
    mask = torch.ones(1, 2, dtype=torch.bool)
    value = losses.prediction_mse_loss(t([0.0, 0.0]), t([0.0, 0.0]), t([LN3, 0.0]), t([0.0, 0.0]), mask)
    assert value.item() == pytest.approx(0.125, abs=1e-6)


def test_classification_and_regression_losses():
    assert losses.hard_classification_loss(t([1.0, 2.0, 0.0]), torch.tensor([1])).item() == pytest.approx(0.407606, abs=1e-5)
    # q = [3/4, 1/4], p = [1/4, 3/4]: 3/4 ln4 + 1/4 ln(4/3) = 1.111642
    assert losses.soft_classification_loss(t([0.0, LN3]), t([LN3, 0.0])).item() == pytest.approx(1.111642, abs=1e-5)
    # tau = 2 with logits doubled gives the same distributions, times tau^2 = 4
    soft2 = losses.soft_classification_loss(t([0.0, 2 * LN3]), t([2 * LN3, 0.0]), tau=2.0)
    assert soft2.item() == pytest.approx(4 * 1.111642, abs=1e-4)
    assert losses.regression_mse_loss(torch.tensor([1.5, 2.0]), torch.tensor([1.0, 4.0])).tolist() == [0.25, 4.0]


def test_weighted_mean():
    values = torch.tensor([1.0, 2.0, 3.0])
    assert losses.weighted_mean(values).item() == pytest.approx(2.0)
    assert losses.weighted_mean(values, torch.tensor([1.0, 0.0, 3.0])).item() == pytest.approx(2.5)


def test_masked_positions_never_give_nan_or_inf_even_with_extreme_logits():
    torch.manual_seed(0)
    start = torch.randn(3, 6, requires_grad=True)
    end = torch.randn(3, 6, requires_grad=True)
    mask = torch.tensor([[True, False, False, True, True, False]] * 3)
    teacher = torch.full((3, 2, 6), float("-inf"))
    teacher[:, :, [0, 3, 4]] = torch.tensor([50.0, -50.0, 0.0])
    total = (
        losses.span_ce_loss(start, end, torch.tensor([3, 0, 4]), torch.tensor([4, 0, 4]), mask)
        + losses.span_kd_loss(start, end, teacher, teacher, mask, tau=0.5)
        + losses.prediction_mse_loss(start, end, teacher, teacher, mask)
    ).sum()
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(start.grad).all() and torch.isfinite(end.grad).all()
    assert start.grad[:, [1, 2, 5]].abs().max() == 0  # masked positions get no gradient


def test_invalid_temperature_is_refused():
    mask = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError):
        losses.span_kd_loss(t([0.0, 0.0]), t([0.0, 0.0]), t([0.0, 0.0]), t([0.0, 0.0]), mask, tau=0.0)


def test_gold_prediction_mse_compares_the_probabilities_of_the_gold_positions():
    # Gold (0, 1). start: p = [1/2, 1/2], q = softmax([ln3, 0]) = [3/4, 1/4]: (1/2 - 3/4)^2 = 1/16;
    # end: p = softmax([0, ln3]) = [1/4, 3/4], q = [1/2, 1/2]: (3/4 - 1/2)^2 = 1/16.  L = 1/8
    mask = torch.ones(1, 2, dtype=torch.bool)
    value = losses.gold_prediction_mse_loss(t([0.0, 0.0]), t([0.0, LN3]), t([LN3, 0.0]), t([0.0, 0.0]),
                                            torch.tensor([0]), torch.tensor([1]), mask)
    assert value.item() == pytest.approx(0.125, abs=1e-6)


def test_span_logit_mse_averages_squared_logit_errors_over_legal_positions():
    # legal positions 0, 1 (2 is masked). start: (1 - 0)^2 + (2 - 4)^2 = 5 over 2 -> 2.5;
    # end: teacher ensemble mean of [0, 2] and [2, 2] = [1, 2]; student [1, 0]: (0 + 4) / 2 = 2.  L = 4.5
    mask = torch.tensor([[True, True, False]])
    teacher_end = torch.tensor([[[0.0, 2.0, 9.0], [2.0, 2.0, 9.0]]])
    value = losses.span_logit_mse_loss(t([1.0, 2.0, 50.0]), t([1.0, 0.0, -50.0]), t([0.0, 4.0, 0.0]),
                                       teacher_end, mask)
    assert value.item() == pytest.approx(4.5)
