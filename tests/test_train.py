"""The training loop: it learns, is deterministic, checkpoints and resumes to the same weights."""

import json

import pytest
import torch

from kd_core.data.batches import feature_arrays
from kd_core.data.features import FeatureConfig, featurize
from kd_core.data.synthetic import generate
from kd_core.io.errors import ConfigError
from kd_core.models.build import build_preset_model
from kd_core.models.tokenizers import train_wordpiece_tokenizer
from kd_core.objectives.terms import Objective, ce_term, kd_term
from kd_core.training.loop import TrainConfig, train


@pytest.fixture(scope="module")
def data():
    ds = generate(n_per_domain=16, seed=0)
    tok = train_wordpiece_tokenizer(list(ds["context"]) + list(ds["question"]), vocab_size=600)
    return tok, feature_arrays(featurize(ds, tok, FeatureConfig(max_length=96, doc_stride=32)))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_goes_down_and_callbacks_see_each_term(data):
    tok, arrays = data
    model = build_preset_model("tiny-bert", tok, seed=0)
    seen = []
    train(model, arrays, Objective((ce_term(),)),
          TrainConfig(epochs=6, batch_size=16, learning_rate=3e-3, log_every=5), callbacks=[seen.append], progress=False)
    assert seen[0]["step"] == 5 and "loss/ce" in seen[0] and "lr" in seen[0]
    assert seen[-1]["loss"] < 0.7 * seen[0]["loss"]


def test_same_seed_gives_identical_weights(data):
    tok, arrays = data
    cfg = TrainConfig(epochs=1, batch_size=16, seed=3)
    runs = []
    for _ in range(2):
        model = build_preset_model("tiny-bert", tok, seed=1)
        train(model, arrays, Objective((ce_term(),)), cfg, progress=False)
        runs.append(_weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_the_learning_rate_warms_up_from_zero_then_decays_linearly_and_resumes_on_schedule(data, tmp_path):
    tok, arrays = data
    cfg = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-3, warmup_ratio=0.25, log_every=1,
                      checkpoint_every=3)
    seen = []
    train(build_preset_model("tiny-bert-1l", tok, seed=0), arrays, Objective((ce_term(),)), cfg,
          callbacks=[seen.append], progress=False)
    total = len(seen)
    warmup = round(0.25 * total)
    # By hand: lr_t = base * t / W during the warm-up, then base * (T - t) / (T - W) (step t counts from 0).
    expected = [1e-3 * (t / warmup if t < warmup else (total - t) / (total - warmup)) for t in range(total)]
    assert [m["lr"] for m in seen] == pytest.approx(expected, rel=1e-12, abs=1e-15)

    def stop_at_5(metrics):
        if metrics["step"] == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(build_preset_model("tiny-bert-1l", tok, seed=0), arrays, Objective((ce_term(),)), cfg,
              callbacks=[stop_at_5], checkpoint_dir=tmp_path / "ckpt", progress=False)
    resumed = []
    train(build_preset_model("tiny-bert-1l", tok, seed=0), arrays, Objective((ce_term(),)), cfg,
          callbacks=[resumed.append], checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert [m["lr"] for m in resumed] == [m["lr"] for m in seen[3:]]  # resumed at the step-3 checkpoint


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted_run(data, tmp_path):
    tok, arrays = data
    cfg = TrainConfig(epochs=2, batch_size=16, seed=4, log_every=1, checkpoint_every=3)
    objective = Objective((ce_term(),))
    reference = build_preset_model("tiny-bert", tok, seed=2)
    train(reference, arrays, objective, cfg, progress=False)

    def stop_at_step_5(metrics):
        if metrics["step"] == 5:
            raise Interrupt

    interrupted = build_preset_model("tiny-bert", tok, seed=2)
    with pytest.raises(Interrupt):
        train(interrupted, arrays, objective, cfg, checkpoint_dir=tmp_path / "ckpt", callbacks=[stop_at_step_5], progress=False)
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert state["step"] == 3
    assert not (tmp_path / "ckpt.partial").exists()

    resumed = build_preset_model("tiny-bert", tok, seed=99)  # weights come from the checkpoint
    result = train(resumed, arrays, objective, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert result.resumed_from_step == 3
    ref, res = _weights(reference), _weights(resumed)
    assert all(torch.allclose(ref[k], res[k], atol=1e-6) for k in ref)


def test_a_run_resumed_at_its_last_step_reports_the_losses_it_logged(data, tmp_path):
    tok, arrays = data
    cfg = TrainConfig(epochs=1, batch_size=16, seed=4, log_every=2)
    first = train(build_preset_model("tiny-bert-1l", tok, seed=2), arrays, Objective((ce_term(),)), cfg,
                  checkpoint_dir=tmp_path / "ckpt", progress=False)
    again = train(build_preset_model("tiny-bert-1l", tok, seed=2), arrays, Objective((ce_term(),)), cfg,
                  checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert again.resumed_from_step == first.steps and first.last_metrics["loss/ce"] > 0
    assert again.last_metrics == first.last_metrics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_a_gpu_restores_the_cuda_rng_so_dropout_repeats(data, tmp_path):
    tok, arrays = data
    cfg = TrainConfig(epochs=2, batch_size=16, seed=4, log_every=1, checkpoint_every=3)
    objective = Objective((ce_term(),))
    reference = build_preset_model("tiny-bert", tok, seed=2).cuda()
    train(reference, arrays, objective, cfg, progress=False)

    def stop_at_step_5(metrics):
        if metrics["step"] == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(build_preset_model("tiny-bert", tok, seed=2).cuda(), arrays, objective, cfg,
              checkpoint_dir=tmp_path / "ckpt", callbacks=[stop_at_step_5], progress=False)
    # train() seeds every device at its start; without the saved CUDA state, dropout after step 3 would differ.
    resumed = build_preset_model("tiny-bert", tok, seed=99).cuda()
    train(resumed, arrays, objective, cfg, checkpoint_dir=tmp_path / "ckpt", progress=False)
    ref, res = _weights(reference), _weights(resumed)
    assert all(torch.allclose(ref[k], res[k], atol=1e-5) for k in ref)


def test_knowledge_objective_without_knowledge_and_bad_settings_are_refused(data):
    tok, arrays = data
    model = build_preset_model("tiny-bert", tok, seed=0)
    with pytest.raises(ConfigError, match="knowledge"):
        train(model, arrays, Objective((ce_term(), kd_term(2.0))), TrainConfig(epochs=1), progress=False)
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"learning_rate": -1.0}, {"warmup_ratio": 1.0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)
