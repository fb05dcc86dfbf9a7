"""How steps use the hardware: bf16 on CPU, gradient accumulation, dynamic padding, deferred NaN checks."""

import json

import numpy as np
import pytest
import torch

from kd_core.data.batches import batch_at, feature_arrays
from kd_core.data.features import FeatureConfig, featurize
from kd_core.data.synthetic import generate
from kd_core.evaluation.predict import run_model, window_log_probabilities
from kd_core.io.errors import ConfigError
from kd_core.models.build import build_preset_model, set_dropout
from kd_core.models.forward import qa_forward
from kd_core.models.tokenizers import train_wordpiece_tokenizer
from kd_core.objectives.terms import Objective, ce_term, kd_term
from kd_core.training.compute import Compute
from kd_core.training.loop import TrainConfig, micro_batches, train


@pytest.fixture(scope="module")
def data():
    ds = generate(n_per_domain=16, seed=0)
    tok = train_wordpiece_tokenizer(list(ds["context"]) + list(ds["question"]), vocab_size=600)
    arrays = feature_arrays(featurize(ds, tok, FeatureConfig(max_length=96, doc_stride=32)))
    return tok, arrays


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_difference(a, b):
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_compute_settings_are_validated():
    for bad in ({"precision": "int8"}, {"accumulate_steps": 0}, {"accumulate_steps": 2.5}):
        with pytest.raises(ConfigError):
            Compute(**bad)
    assert Compute().resolved("cpu") == "fp32" and Compute(precision="bf16").resolved("cpu") == "bf16"


def test_the_synthetic_windows_have_padding_to_cut(data):
    _, arrays = data
    lengths = arrays["attention_mask"].sum(1)
    assert lengths.min() < arrays["input_ids"].shape[1]  # otherwise the padding tests below test nothing


def test_a_cut_batch_gives_the_same_logits_and_attention_on_its_real_positions(data):
    tok, arrays = data
    model = build_preset_model("tiny-bert", tok, seed=0).eval()
    rows = np.argsort(arrays["attention_mask"].sum(1), kind="stable")[:24]  # the shortest windows
    full, cut = batch_at(arrays, rows), batch_at(arrays, rows, trim=True)
    length = cut["input_ids"].shape[1]
    assert length < full["input_ids"].shape[1] and cut["attention_mask"][:, -1].any()
    with torch.no_grad():
        a, b = qa_forward(model, full), qa_forward(model, cut)
    real = full["attention_mask"].bool()[:, :length]
    assert full["attention_mask"][:, length:].sum() == 0
    torch.testing.assert_close(a.start_logits[:, :length][real], b.start_logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(a.end_logits[:, :length][real], b.end_logits[real], atol=1e-5, rtol=0)
    # run_model cuts every batch and pads its outputs back to the window width
    outputs = run_model(model, {k: v[rows] for k, v in arrays.items()}, batch_size=8, num_question_tokens=6)
    assert outputs.start_logits.shape == (24, arrays["input_ids"].shape[1])
    mask = arrays["attention_mask"][rows].astype(bool)
    np.testing.assert_allclose(outputs.start_logits[mask], a.start_logits.numpy()[mask], atol=1e-5)
    with torch.no_grad():
        reference = qa_forward(model, full, 6).attention.numpy()
    # attention comes back as float16 (what knowledge tables store): the float32 maps rounded, nothing more
    assert outputs.attention.dtype == np.float16
    np.testing.assert_allclose(outputs.attention.astype(np.float32), reference.astype(np.float16).astype(np.float32),
                               atol=1e-3)


def test_training_on_cut_batches_ends_with_the_weights_of_full_padding(data):
    tok, arrays = data
    cfg = TrainConfig(epochs=1, batch_size=16, seed=1, learning_rate=1e-3)
    runs = {}
    for padding in (False, True):
        model = build_preset_model("tiny-bert", tok, seed=3)
        set_dropout(model, 0.0)  # dropout draws depend on the tensor shapes; without them the runs must agree
        train(model, arrays, Objective((ce_term(),)), cfg, progress=False, compute=Compute(dynamic_padding=padding))
        runs[padding] = _weights(model)
    assert _max_difference(runs[False], runs[True]) < 1e-5


def test_micro_batches_share_the_example_weight():
    rows = np.arange(10)
    weights = np.array([1, 1, 1, 1, 1, 3, 3, 3, 0, 0], np.float32)
    parts = micro_batches(rows, 3, weights)
    assert [list(p) for p, _ in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [share for _, share in parts] == pytest.approx([4 / 14, 7 / 14, 3 / 14])
    assert [share for _, share in micro_batches(rows, 4, None)] == pytest.approx([0.3, 0.3, 0.2, 0.2])


@pytest.mark.parametrize("weighted", [False, True])
def test_accumulated_micro_batches_train_like_one_batch_of_the_product_size(data, weighted):
    tok, arrays = data
    arrays = dict(arrays)
    if weighted:  # IMM-style example weights: a micro-batch counts by its weight, not its rows
        arrays["weight"] = np.random.default_rng(0).uniform(0.1, 2.0, len(arrays["input_ids"])).astype(np.float32)
    runs = []
    for batch, steps in ((32, 1), (8, 4)):
        model = build_preset_model("tiny-bert", tok, seed=5)
        set_dropout(model, 0.0)
        seen = []
        result = train(model, arrays, Objective((ce_term(),)),
                       TrainConfig(epochs=2, batch_size=batch, seed=2, learning_rate=1e-3, log_every=1),
                       callbacks=[seen.append], progress=False, compute=Compute(accumulate_steps=steps))
        outputs = run_model(model, arrays)
        runs.append(([window_log_probabilities(o, arrays["span_mask"]) for o in (outputs.start_logits,
                                                                                  outputs.end_logits)],
                     result.steps, [m["loss"] for m in seen]))
    (big, big_steps, big_losses), (acc, acc_steps, acc_losses) = runs
    assert big_steps == acc_steps == 2 * -(-len(arrays["input_ids"]) // 32)
    assert acc_losses == pytest.approx(big_losses, rel=1e-5)  # the logged loss is the whole step's
    # The models' span distributions, not their weights: a shift of every start (end) logit changes no softmax,
    # so the QA head's bias and the last LayerNorm's bias have a true gradient of 0, and AdamW turns the
    # rounding noise in theirs into steps of about the learning rate (the weights differ there by ~5e-4).
    mask = arrays["span_mask"].astype(bool)
    for a, b in zip(big, acc):
        assert float(np.abs(a - b)[mask].max()) < 1e-4


def test_bf16_training_on_cpu_is_finite_and_close_to_fp32(data):
    tok, arrays = data
    rng = np.random.default_rng(0)
    arrays = {**arrays, "teacher_start_logits": rng.normal(size=arrays["input_ids"].shape).astype(np.float32),
              "teacher_end_logits": rng.normal(size=arrays["input_ids"].shape).astype(np.float32)}
    objective = Objective((ce_term(), kd_term(2.0)))
    cfg = TrainConfig(epochs=4, batch_size=16, seed=0, learning_rate=3e-3, log_every=1)
    seen: dict[str, list] = {}
    models = {}
    for precision in ("fp32", "bf16"):
        seen[precision] = []
        models[precision] = build_preset_model("tiny-bert", tok, seed=0)
        train(models[precision], arrays, objective, cfg, callbacks=[seen[precision].append], progress=False,
              compute=Compute(precision=precision))
    assert all(np.isfinite(m["loss"]) for m in seen["bf16"])
    # bf16 keeps 8 bits of mantissa: the same run, losses within a few percent (fp32 CE itself falls by over 30%)
    fp32, bf16 = seen["fp32"], seen["bf16"]
    assert fp32[-1]["loss/ce"] < 0.7 * fp32[0]["loss/ce"], (fp32[0], fp32[-1])
    assert bf16[-1]["loss"] == pytest.approx(fp32[-1]["loss"], rel=0.05)
    assert all(p.dtype == torch.float32 for p in models["bf16"].parameters())  # autocast: fp32 weights
    # the scores the two models give agree: same argmax on most windows
    a = run_model(models["fp32"], arrays).start_logits.argmax(1)
    with Compute(precision="bf16").autocast("cpu"):
        b = run_model(models["bf16"], arrays).start_logits.argmax(1)
    assert (a == b).mean() > 0.8


def test_a_bf16_run_resumed_ends_equal_to_an_uninterrupted_bf16_run(data, tmp_path):
    tok, arrays = data
    cfg = TrainConfig(epochs=2, batch_size=16, seed=4, log_every=1, checkpoint_every=3)
    compute = Compute(precision="bf16")
    reference = build_preset_model("tiny-bert", tok, seed=2)
    train(reference, arrays, Objective((ce_term(),)), cfg, progress=False, compute=compute)

    class Interrupt(Exception):
        pass

    def stop_at_step_5(metrics):
        if metrics["step"] == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(build_preset_model("tiny-bert", tok, seed=2), arrays, Objective((ce_term(),)), cfg, progress=False,
              checkpoint_dir=tmp_path / "ckpt", callbacks=[stop_at_step_5], compute=compute)
    resumed = build_preset_model("tiny-bert", tok, seed=99)
    result = train(resumed, arrays, Objective((ce_term(),)), cfg, progress=False, checkpoint_dir=tmp_path / "ckpt",
                   compute=compute)
    assert result.resumed_from_step == 3
    assert _max_difference(_weights(reference), _weights(resumed)) < 1e-6


def test_knowledge_read_in_bf16_is_close_to_fp32(data):
    tok, arrays = data
    model = build_preset_model("tiny-bert", tok, seed=0)
    fp32 = run_model(model, arrays, num_question_tokens=8)
    with Compute(precision="bf16").autocast("cpu"):
        bf16 = run_model(model, arrays, num_question_tokens=8)
    mask = arrays["span_mask"].astype(bool)
    scale = float(np.abs(fp32.start_logits[mask]).max())
    # bf16 rounds to 2^-8 relative; a 2-layer model stays within a few of those of the logits' scale
    assert float(np.abs(bf16.start_logits - fp32.start_logits)[mask].max()) < 0.05 * scale
    assert float(np.abs(bf16.end_logits - fp32.end_logits)[mask].max()) < 0.05 * scale
    assert float(np.abs(bf16.attention - fp32.attention).max()) < 0.02  # rows of probabilities


def test_a_non_finite_loss_stops_training_at_the_next_check_before_any_checkpoint(data, tmp_path):
    tok, arrays = data
    rng = np.random.default_rng(0)
    arrays = {**arrays, "teacher_start_logits": rng.normal(size=arrays["input_ids"].shape).astype(np.float32),
              "teacher_end_logits": rng.normal(size=arrays["input_ids"].shape).astype(np.float32)}
    calls = []

    def poison_the_third_batch(batch, epoch, rows):
        calls.append(1)
        if len(calls) == 3:
            batch = {**batch, "teacher_start_logits": torch.full_like(batch["teacher_start_logits"], float("nan"))}
        return batch

    cfg = TrainConfig(epochs=3, batch_size=4, seed=0, log_every=5, checkpoint_every=20)
    seen = []
    with pytest.raises(FloatingPointError, match="between steps 1 and 5"):
        train(build_preset_model("tiny-bert-1l", tok, seed=0), arrays, Objective((ce_term(), kd_term(2.0))), cfg,
              progress=False, checkpoint_dir=tmp_path / "ckpt", perturb=poison_the_third_batch,
              callbacks=[seen.append])
    assert seen == [] and not (tmp_path / "ckpt").exists()  # nothing was logged or saved from the bad steps


def test_fp16_keeps_its_gradient_scaler_in_checkpoints(data, tmp_path):
    tok, arrays = data
    cfg = TrainConfig(epochs=1, batch_size=16, seed=0, log_every=1)
    result = train(build_preset_model("tiny-bert-1l", tok, seed=0), arrays, Objective((ce_term(),)), cfg,
                   progress=False, checkpoint_dir=tmp_path / "ckpt", compute=Compute(precision="fp16"))
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert state["scaler"]["scale"] > 0 and np.isfinite(result.last_metrics["loss"])


def test_a_noisy_teacher_perturbs_a_cut_batch_as_the_first_positions_of_the_full_one(data):
    from kd_core.objectives.noise import noisy_teacher

    _, arrays = data
    rng = np.random.default_rng(0)
    arrays = {**arrays, "teacher_start_logits": rng.normal(size=arrays["input_ids"].shape).astype(np.float32)}
    rows = np.argsort(arrays["attention_mask"].sum(1), kind="stable")[:8]
    perturb = noisy_teacher(arrays, 0.5, seed=1)
    full = perturb(batch_at(arrays, rows), 0, rows)["teacher_start_logits"]
    cut = perturb(batch_at(arrays, rows, trim=True), 0, rows)["teacher_start_logits"]
    assert cut.shape[1] < full.shape[1]
    torch.testing.assert_close(cut, full[:, :cut.shape[1]])
