"""Logit and intermediate-layer losses against values computed by hand (the arithmetic is in the comments)."""

import math

import pytest
import torch

from kd_core.objectives import layer_losses, losses

LN3 = math.log(3.0)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def mask(*rows):
    return torch.tensor(rows, dtype=torch.bool)


# ---------------------------------------------------------------- logit matching / hard distillation


def test_logit_mse_sums_squared_errors_over_classes():
    # z = [1, 2, 3], t = [0, 2, 5]: 1 + 0 + 4 = 5;  z = [0, 0, 0], t = [1, 1, 1]: 3
    value = losses.logit_mse_loss(t([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]), t([0.0, 2.0, 5.0], [1.0, 1.0, 1.0]))
    assert value.shape == (2,)
    assert value.tolist() == pytest.approx([5.0, 3.0])


def test_logit_mse_with_an_ensemble_of_two_targets_the_mean_logits():
    # members [1, 2] and [3, 0]: zbar = [2, 1]; z = [0, 0]: 4 + 1 = 5
    # (the mean of the members' losses would be (1 + 4 + 9 + 0) / 2 = 7)
    members = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])
    assert losses.logit_mse_loss(t([0.0, 0.0]), members).item() == pytest.approx(5.0)


def test_hard_distillation_with_one_teacher_is_ce_to_its_argmax():
    # teacher argmax = class 2; z = [1, 2, 0]: -log softmax(z)_2 = log(e + e^2 + 1) - 0 = 2.407606
    value = losses.hard_distillation_loss(t([1.0, 2.0, 0.0]), t([0.0, 1.0, 5.0]))
    assert value.item() == pytest.approx(2.407606, abs=1e-5)


def test_hard_distillation_uses_the_mean_probability_argmax_not_the_mean_logit_argmax():
    # Members given as log-probabilities, so softmax(t_n) = p_n exactly:
    #   p_1 = [0.30, 0.02, 0.68],  p_2 = [0.30, 0.69, 0.01]
    #   mean probabilities q = [0.300, 0.355, 0.345]  -> argmax class 1
    #   mean logits: [ln .3, (ln .02 + ln .69)/2, (ln .68 + ln .01)/2] = [-1.204, -2.142, -2.496] -> argmax class 0
    p1 = [0.30, 0.02, 0.68]
    p2 = [0.30, 0.69, 0.01]
    members = torch.tensor([[[math.log(x) for x in p1], [math.log(x) for x in p2]]])
    assert members.mean(dim=1).argmax().item() == 0  # the construction: mean logits pick class 0
    # student z = [0, ln 2, 0] -> p = [1/4, 1/2, 1/4]: CE to class 1 = ln 2 (to class 0 it would be ln 4)
    value = losses.hard_distillation_loss(t([0.0, math.log(2.0), 0.0]), members)
    assert value.item() == pytest.approx(math.log(2.0), abs=1e-6)


# ---------------------------------------------------------------- hidden states


def test_hidden_mse_averages_over_real_tokens_and_teacher_width():
    # token 0: [1, 2] vs [1, 0] -> 4; token 1: [3, 4] vs [3, 3] -> 1;  L = (4 + 1) / (2 tokens * 2 dims) = 1.25
    student = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [3.0, 3.0]]])
    value = layer_losses.hidden_mse_loss(student, teacher, mask([True, True]))
    assert value.shape == (1,)
    assert value.item() == pytest.approx(1.25)


def test_hidden_mse_ignores_padding_even_extreme_values():
    student = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [3.0, 3.0]]])
    base = layer_losses.hidden_mse_loss(student, teacher, mask([True, True]))
    # two more padded positions, one of them with huge (but finite) values: same loss
    padded_s = torch.cat([student, torch.tensor([[[1e30, -1e30], [7.0, 7.0]]])], dim=1)
    padded_t = torch.cat([teacher, torch.tensor([[[-1e30, 1e30], [0.0, 0.0]]])], dim=1)
    padded = layer_losses.hidden_mse_loss(padded_s, padded_t, mask([True, True, False, False]))
    assert padded.item() == pytest.approx(base.item())
    # only the first token real: 4 / (1 * 2) = 2
    assert layer_losses.hidden_mse_loss(student, teacher, mask([True, False])).item() == pytest.approx(2.0)


def test_hidden_mse_with_a_projection_and_different_widths():
    # W: Linear(1 -> 2) with weight [[2], [-1]] and bias [1, 0]: W h = [2h + 1, -h]
    # h^S = [1] -> [3, -1] vs h^T = [3, 1]: 0 + 4 = 4;  h^S = [2] -> [5, -2] vs [4, -2]: 1
    # L = (4 + 1) / (2 tokens * Ht = 2) = 1.25
    projection = torch.nn.Linear(1, 2)
    with torch.no_grad():
        projection.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        projection.bias.copy_(torch.tensor([1.0, 0.0]))
    student = torch.tensor([[[1.0], [2.0]]], requires_grad=True)
    teacher = torch.tensor([[[3.0, 1.0], [4.0, -2.0]]])
    value = layer_losses.hidden_mse_loss(student, teacher, mask([True, True]), projection)
    assert value.item() == pytest.approx(1.25)
    value.sum().backward()
    assert projection.weight.grad is not None and student.grad is not None


def test_hidden_losses_without_projection_need_equal_widths():
    with pytest.raises(ValueError, match="projection"):
        layer_losses.hidden_mse_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), mask([True, True]))
    with pytest.raises(ValueError, match="projection"):
        layer_losses.hidden_cosine_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), mask([True, True]))


def test_hidden_cosine_loss_by_hand():
    # token 0: [1, 0] vs [1, 1]: cos = 1/sqrt(2) -> 1 - 0.707107 = 0.292893
    # token 1: [0, 1] vs [0, -2]: cos = -1 -> 2;  token 2 padded
    # L = (0.292893 + 2) / 2 = 1.146447
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[1.0, 1.0], [0.0, -2.0], [-5.0, 5.0]]])
    value = layer_losses.hidden_cosine_loss(student, teacher, mask([True, True, False]))
    assert value.item() == pytest.approx(1.146447, abs=1e-5)
    # scaling either side does not change a cosine
    scaled = layer_losses.hidden_cosine_loss(3 * student, 0.5 * teacher, mask([True, True, False]))
    assert scaled.item() == pytest.approx(1.146447, abs=1e-5)


def test_hidden_cosine_with_projection():
    # W = Linear(1 -> 2, no bias) with weight [[1], [1]]: h = [2] -> [2, 2] vs [1, 0]: cos = 1/sqrt(2)
    projection = torch.nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        projection.weight.copy_(torch.tensor([[1.0], [1.0]]))
    value = layer_losses.hidden_cosine_loss(torch.tensor([[[2.0]]]), torch.tensor([[[1.0, 0.0]]]), mask([True]), projection)
    assert value.item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)


def test_hidden_losses_with_one_real_token_and_all_padding_stay_finite():
    torch.manual_seed(0)
    student = torch.randn(2, 4, 3, requires_grad=True)
    teacher = torch.randn(2, 4, 3)
    m = mask([True, False, False, False], [False, False, False, False])
    total = (layer_losses.hidden_mse_loss(student, teacher, m) + layer_losses.hidden_cosine_loss(student, teacher, m))
    assert torch.isfinite(total).all()
    assert total[1].item() == 0.0  # no real token: 0, not 0/0
    total.sum().backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[:, 1:].abs().max() == 0  # padded positions get no gradient


# ---------------------------------------------------------------- attention maps


def test_attention_map_mse_by_hand_with_padding():
    # one head, 2 real tokens (third padded):
    #   student rows [1, 0], [.5, .5]; teacher rows [.5, .5], [.5, .5]
    #   squared errors: .25 + .25 + 0 + 0 = 0.5;  L = 0.5 / (h=1 * n^2=4) = 0.125
    student = torch.tensor([[[[1.0, 0.0, 9.0], [0.5, 0.5, 9.0], [9.0, 9.0, 9.0]]]])
    teacher = torch.tensor([[[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]]])
    value = layer_losses.attention_map_mse_loss(student, teacher, mask([True, True, False]))
    assert value.shape == (1,)
    assert value.item() == pytest.approx(0.125)
    unpadded = layer_losses.attention_map_mse_loss(student[..., :2, :2], teacher[..., :2, :2], mask([True, True]))
    assert unpadded.item() == pytest.approx(0.125)


def test_attention_map_mse_averages_over_heads_when_counts_match():
    # 2 heads, 1 real token each: head 0 error (1 - 0)^2 = 1, head 1 error 0 -> L = 1 / (2 * 1) = 0.5
    student = torch.tensor([[[[1.0]], [[0.5]]]])
    teacher = torch.tensor([[[[0.0]], [[0.5]]]])
    assert layer_losses.attention_map_mse_loss(student, teacher, mask([True])).item() == pytest.approx(0.5)


def test_attention_map_mse_with_different_head_counts_compares_head_averages():
    # student: 1 head [[1, 0], [0, 1]]; teacher: 2 heads [[1, 0], [1, 0]] and [[0, 1], [0, 1]]
    # teacher average [[.5, .5], [.5, .5]]: 4 errors of .25 -> 1.0;  L = 1.0 / (h=1 * 4) = 0.25
    student = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    teacher = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    value = layer_losses.attention_map_mse_loss(student, teacher, mask([True, True]))
    assert value.item() == pytest.approx(0.25)
    # the student equal to the teacher's average gives 0
    average = torch.full((1, 3, 2, 2), 0.5)
    assert layer_losses.attention_map_mse_loss(average, teacher, mask([True, True])).item() == pytest.approx(0.0)


def test_attention_map_mse_one_real_token_stays_finite():
    student = torch.rand(1, 2, 4, 4, requires_grad=True)
    teacher = torch.rand(1, 2, 4, 4)
    value = layer_losses.attention_map_mse_loss(student, teacher, mask([True, False, False, False]))
    # only the (0, 0) entry of each head counts: mean over the 2 heads of its squared error
    expected = sum((student[0, h, 0, 0].item() - teacher[0, h, 0, 0].item()) ** 2 for h in range(2)) / 2
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.sum().backward()
    assert torch.isfinite(student.grad).all()


# ---------------------------------------------------------------- MiniLMv2 relations


def reference_relation_kl(student, teacher, real, heads):
    """The formula with plain python loops over one example: lists of vectors, a list of bools."""
    def relations(x):
        width = len(x[0]) // heads
        out = []
        for a in range(heads):
            rows = []
            for i in range(len(x)):
                scores = {j: sum(x[i][a * width + d] * x[j][a * width + d] for d in range(width)) / math.sqrt(width)
                          for j in range(len(x)) if real[j]}
                top = max(scores.values())
                total = sum(math.exp(s - top) for s in scores.values())
                rows.append({j: math.exp(s - top) / total for j, s in scores.items()})
            out.append(rows)
        return out

    rs, rt = relations(student), relations(teacher)
    n = sum(real)
    total = 0.0
    for a in range(heads):
        for i in range(len(real)):
            if real[i]:
                total += sum(p * math.log(p / rs[a][i][j]) for j, p in rt[a][i].items())
    return total / (heads * n)


def test_relation_kl_by_hand_one_head():
    # student d = 1, both tokens 0: every relation row uniform [1/2, 1/2]
    # teacher d_r = 4: t_1 = [sqrt(2 ln 3), 0, 0, 0], t_2 = 0: scores / sqrt(4) = [[ln 3, 0], [0, 0]]
    #   rows softmax([ln 3, 0]) = [3/4, 1/4] and [1/2, 1/2]
    # KL(row 1) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.304099 - 0.173287 = 0.130812; KL(row 2) = 0
    # L = 0.130812 / (1 head * 2 tokens) = 0.065406
    student = torch.zeros(1, 2, 1)
    teacher = torch.tensor([[[math.sqrt(2 * LN3), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    value = layer_losses.relation_kl_loss(student, teacher, mask([True, True]), relation_heads=1)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(0.065406, abs=1e-5)
    # a padded third token (with large values) changes nothing
    student_p = torch.cat([student, torch.full((1, 1, 1), 50.0)], dim=1)
    teacher_p = torch.cat([teacher, torch.full((1, 1, 4), 30.0)], dim=1)
    padded = layer_losses.relation_kl_loss(student_p, teacher_p, mask([True, True, False]), relation_heads=1)
    assert padded.item() == pytest.approx(0.065406, abs=1e-5)


def test_relation_kl_against_a_loop_reference_with_two_heads_and_different_widths():
    torch.manual_seed(1)
    student = torch.randn(2, 5, 4)  # d_r = 2
    teacher = torch.randn(2, 5, 6)  # d_r = 3
    m = mask([True, True, True, True, True], [True, True, True, False, False])
    value = layer_losses.relation_kl_loss(student, teacher, m, relation_heads=2)
    for b in range(2):
        expected = reference_relation_kl(student[b].tolist(), teacher[b].tolist(), m[b].tolist(), heads=2)
        assert value[b].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_relation_kl_zero_for_identical_inputs_and_positive_otherwise():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 6)
    m = mask([True, True, True, False], [True, True, True, True])
    same = layer_losses.relation_kl_loss(x, x.clone(), m, relation_heads=3)
    assert same.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    other = layer_losses.relation_kl_loss(x, torch.randn(2, 4, 6), m, relation_heads=3)
    assert (other > 1e-4).all()


def test_relation_kl_zero_when_a_wider_teacher_has_the_same_relations():
    # Teacher head a = c * [X_a, X_a] (width 2 d_r) with c = 2^(-1/4):
    #   c^2 * 2 X_a X_a^T / sqrt(2 d_r) = X_a X_a^T / sqrt(d_r): the same relations, so KL = 0.
    torch.manual_seed(3)
    student = torch.randn(1, 4, 6)  # 2 heads of 3
    heads = student.reshape(1, 4, 2, 3)
    c = 2 ** -0.25
    teacher = (c * torch.cat([heads, heads], dim=-1)).reshape(1, 4, 12)  # 2 heads of 6
    m = mask([True, True, True, False])
    assert layer_losses.relation_kl_loss(student, teacher, m, relation_heads=2).item() == pytest.approx(0.0, abs=1e-6)
    # without the scale the relations differ (sharper by sqrt 2): KL > 0
    assert layer_losses.relation_kl_loss(student, teacher / c, m, relation_heads=2).item() > 1e-4


def test_relation_kl_one_real_token_is_finite_with_finite_gradients():
    torch.manual_seed(4)
    student = (10 * torch.randn(2, 4, 4)).requires_grad_()
    teacher = 10 * torch.randn(2, 4, 8)
    m = mask([True, False, False, False], [False, False, False, False])
    value = layer_losses.relation_kl_loss(student, teacher, m, relation_heads=2)
    # one real key: both relations are [1] -> KL 0; no real token -> 0
    assert value.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    value.sum().backward()
    assert torch.isfinite(student.grad).all()


def test_relation_kl_refuses_widths_not_divisible_by_the_heads():
    with pytest.raises(ValueError, match="divisible"):
        layer_losses.relation_kl_loss(torch.zeros(1, 2, 5), torch.zeros(1, 2, 4), mask([True, True]), relation_heads=2)
    with pytest.raises(ValueError, match="divisible"):
        layer_losses.relation_kl_loss(torch.zeros(1, 2, 4), torch.zeros(1, 2, 6), mask([True, True]), relation_heads=4)
