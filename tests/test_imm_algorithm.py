"""IMM's pieces without Ray: similarity weights, up-sampling, the weighted loss, keep-the-best, plans, resume."""

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from kd_core import losses
from kd_core.data.schema import examples_to_dataset
from kd_core.data.split import limit_by_context
from kd_core.errors import ConfigError
from kd_core.imm import (
    CurrentModel, IMMSettings, RunLayout, SourcePart, baseline_plans, initial_plans, keep_new, mixture_arrays,
    run_plan, similarity_weights, transfer_plans, upsample_indices,
)
from kd_core.data.domains import DataSettings, DomainData, parse_domain, prepare_domains
from kd_core.knowledge.span import member_table
from kd_core.knowledge.table import write_knowledge
from kd_core.models import QAOutput
from kd_core.objectives import Linear, imm_objective

from tests.helpers import example


def test_similarity_weights_rows_sum_to_one_and_uniform_ablation():
    questions = {"a": ["who won the cup", "who won the final"], "b": ["who won the league cup"],
                 "c": ["what dose is given to adults"]}
    s = similarity_weights(questions)
    assert np.allclose(np.diag(s), 0) and np.allclose(s.sum(axis=1), 1)
    assert s[0, 1] > s[0, 2]  # "a" shares more words with "b" than with "c"
    uniform = similarity_weights(questions, uniform=True)
    assert np.allclose(uniform, [[0, .5, .5], [.5, 0, .5], [.5, .5, 0]])


def test_upsampling_repeats_every_row_equally_then_samples_the_rest():
    rows = upsample_indices(3, 8, seed=0)
    counts = np.bincount(rows, minlength=3)
    assert len(rows) == 8 and sorted(counts) == [2, 3, 3]
    assert np.array_equal(rows, upsample_indices(3, 8, seed=0))
    assert np.array_equal(upsample_indices(5, 5, seed=1), np.arange(5))
    with pytest.raises(ValueError):
        upsample_indices(5, 4, seed=0)


def _domain(name: str, size: int, seq: int = 6) -> DomainData:
    rng = np.random.default_rng(len(name) + size)
    span_mask = np.ones((size, seq), bool)
    arrays = {
        "input_ids": rng.integers(5, 50, (size, seq)), "start_position": rng.integers(0, seq, size),
        "end_position": rng.integers(0, seq, size), "span_mask": span_mask,
    }
    features = Dataset.from_dict({"feature_id": [f"{name}{i}#0" for i in range(size)]})
    return DomainData(name, features, features, features, features, arrays, arrays)


def test_mixture_upsamples_every_domain_to_the_largest_and_carries_weights_and_knowledge(tmp_path):
    domains = {"a": _domain("a", 5), "b": _domain("b", 2)}
    logits = np.arange(2 * 6, dtype=np.float32).reshape(2, 6)
    table = member_table(["b1#0", "b0#0"], logits, -logits, np.zeros((2, 1)), np.zeros((2, 1)), np.zeros((2, 1)))
    write_knowledge(table, tmp_path / "b.parquet")
    (tmp_path / "a.parquet").write_bytes(b"")

    plain = mixture_arrays([SourcePart("a", 0.7), SourcePart("b", 0.3)], domains, seed=0)
    assert len(plain["input_ids"]) == 10  # both domains at 5 rows
    assert np.allclose(plain["weight"], [0.7] * 5 + [0.3] * 5)
    assert sorted(np.bincount([int(i) for i in plain["input_ids"][5:, 0]]).nonzero()[0]) == sorted(
        set(int(i) for i in domains["b"].train_arrays["input_ids"][:, 0]))

    single = mixture_arrays([SourcePart("b", 1.0, str(tmp_path / "b.parquet"))], domains, seed=0)
    assert len(single["input_ids"]) == 2  # one source: no up-sampling
    # Knowledge is matched by feature id, not by row order of the table.
    assert np.array_equal(single["teacher_start_logits"], logits[::-1])
    with pytest.raises(ConfigError, match="every source"):
        mixture_arrays([SourcePart("a"), SourcePart("b", 1.0, str(tmp_path / "b.parquet"))], domains, seed=0)


def test_phi_loss_is_the_similarity_weighted_mean_of_lambda_nll_plus_mse():
    torch.manual_seed(0)
    b, s = 4, 5
    batch = {
        "start_position": torch.tensor([1, 2, 0, 3]), "end_position": torch.tensor([2, 2, 0, 4]),
        "span_mask": torch.ones(b, s, dtype=torch.bool),
        "teacher_start_logits": torch.randn(b, s), "teacher_end_logits": torch.randn(b, s),
        "weight": torch.tensor([0.6, 0.6, 0.4, 0.4]),  # two rows from domain j (s_ij = .6), two from j' (.4)
    }
    out = QAOutput(torch.randn(b, s), torch.randn(b, s))
    progress = 0.25  # lambda = 0.25 on the linear 0 -> 1 schedule
    total, _ = imm_objective(Linear(0.0, 1.0))(out, batch, progress)
    nll = losses.span_ce_loss(out.start_logits, out.end_logits, batch["start_position"], batch["end_position"],
                              batch["span_mask"])
    mse = losses.prediction_mse_loss(out.start_logits, out.end_logits, batch["teacher_start_logits"],
                                     batch["teacher_end_logits"], batch["span_mask"])
    w = batch["weight"]
    expected = (w * (0.25 * nll + 0.75 * mse)).sum() / w.sum()
    assert float(total) == pytest.approx(float(expected), rel=1e-6)


def test_keep_the_best_keeps_the_new_model_only_if_strictly_better():
    assert keep_new(None, 0.0)
    assert keep_new(50.0, 50.1)
    assert not keep_new(50.0, 50.0)
    assert not keep_new(50.0, 49.0)


def test_transfer_plans_follow_the_algorithm_and_the_ablations(tmp_path):
    layout = RunLayout(tmp_path)
    names = ["a", "b", "c"]
    s = np.array([[0, .7, .3], [.5, 0, .5], [.2, .8, 0]])
    current = {"a": CurrentModel(1, "ma", 40.0), "b": CurrentModel(0, "mb", 30.0), "c": CurrentModel(1, "mc", 20.0)}
    plans = transfer_plans(layout, IMMSettings(epochs=3, transfer_epochs=2), names, "tiny-bert", s, current, 1)
    plan = plans[0]
    assert (plan.method, plan.iteration, plan.domain, plan.init, plan.previous_f1) == ("imm", 2, "a", "tiny-bert", 40.0)
    phi, theta = plan.stages
    assert [(p.domain, p.weight) for p in phi.parts] == [("b", .7), ("c", .3)] and phi.epochs == 2
    # Knowledge of each source comes from that domain's *current* model (b was not improved: theta_b^(0)).
    assert phi.parts[0].knowledge == str(layout.knowledge_path("b", 0))
    assert phi.parts[1].knowledge == str(layout.knowledge_path("c", 1))
    assert [(p.domain, p.knowledge) for p in theta.parts] == [("a", str(layout.knowledge_path("a", 1)))]
    assert theta.epochs == 3

    ablated = transfer_plans(layout, IMMSettings(no_kd1=True, no_kd2=True, phi_init="theta"), names, "tiny-bert", s,
                             current, 0)[1]
    assert ablated.init == "mb" and not any(stage.uses_knowledge for stage in ablated.stages)
    assert len({plan.init_seed for plan in plans}) == 3  # every domain model has its own seed


def test_baseline_plans():
    layout = RunLayout(Path("/run"))
    settings = IMMSettings()
    names = ["a", "b", "c"]
    single = baseline_plans(layout, settings, names, "m", "single")
    assert [(p.domain, [s.parts[0].domain for s in p.stages]) for p in single] == [("a", ["a"]), ("b", ["b"]), ("c", ["c"])]
    assert [s.init_seed for s in single] == [s.init_seed for s in initial_plans(layout, settings, names, "m")]
    (mix,) = baseline_plans(layout, settings, names, "m", "mix")
    assert [p.domain for p in mix.stages[0].parts] == names and mix.eval_domains == tuple(names)
    ft = baseline_plans(layout, settings, names, "m", "ft")[1]
    assert [[p.domain for p in s.parts] for s in ft.stages] == [["a", "c"], ["b"]]
    mft = baseline_plans(layout, settings, names, "m", "mft")[1]
    assert [[p.domain for p in s.parts] for s in mft.stages] == [["a", "c"], ["a", "b", "c"]]
    assert not any(s.uses_knowledge for p in [*single, mix, ft, mft] for s in p.stages)


class Crash(Exception):
    pass


def test_a_completed_plan_is_not_run_again_and_an_interrupted_one_resumes(tmp_path):
    tokenizer, domains = prepare_domains(DataSettings(synthetic_domains=("sports", "finance"), synthetic_per_domain=12,
                                                      vocab_size=400))
    settings = IMMSettings(epochs=4, batch_size=2)
    plan = initial_plans(RunLayout(tmp_path / "whole"), settings, list(domains), "tiny-bert")[0]
    first = run_plan(plan, domains, tokenizer, settings=settings)
    assert first.kept and Path(first.model_dir, "model.safetensors").exists()
    assert first.stage_metrics["initial"]["resumed_from_step"] == 0
    assert not Path(plan.checkpoint_dir).exists()  # checkpoints are dropped once the result is stored
    stamp = plan.result_path.stat().st_mtime_ns
    assert run_plan(plan, domains, tokenizer, settings=settings) == first
    assert plan.result_path.stat().st_mtime_ns == stamp

    # The same plan crashing at step 10 (after an epoch-end checkpoint) and run again.
    twin = initial_plans(RunLayout(tmp_path / "killed"), settings, list(domains), "tiny-bert")[0]

    def crash(metrics):
        if metrics["step"] == 10:
            raise Crash

    with pytest.raises(Crash):
        run_plan(twin, domains, tokenizer, settings=settings, callbacks_for=lambda stage: [crash])
    assert not twin.result_path.exists() and (Path(twin.checkpoint_dir) / "initial" / "state.json").exists()
    resumed = run_plan(twin, domains, tokenizer, settings=settings)
    assert resumed.stage_metrics["initial"]["resumed_from_step"] > 0
    assert resumed.f1 == first.f1  # exact resume: the same model as the uninterrupted plan


def test_domain_specs_and_limits(tmp_path):
    assert parse_domain("wiki=a.json,b.json", "/data") == parse_domain("wiki=/data/a.json,/data/b.json")
    assert parse_domain("x=hf:squad", "/data").train == "hf:squad"
    for bad in ("wiki", "=a.json", "wiki=", "wiki=a,b,c", "wiki=a,"):
        with pytest.raises(ConfigError):
            parse_domain(bad)
    with pytest.raises(ConfigError, match="at least 2"):
        prepare_domains(DataSettings(domains=("only=x.json",)))
    with pytest.raises(ConfigError, match="duplicate"):
        prepare_domains(DataSettings(domains=("a=x.json", "a=y.json")))

    ds = examples_to_dataset([example(f"q{i}", f"Context {i // 2} says 1{i // 2}.", "What?", f"1{i // 2}")
                              for i in range(10)])
    limited = limit_by_context(ds, 5, seed=0)
    assert len(limited) == 4  # whole contexts of 2 questions: 2 contexts fit in 5
    assert len(set(limited["context"])) == 2
    assert limit_by_context(ds, 50, seed=0) is ds


def test_invalid_imm_hyperparameters_are_refused():
    for kwargs, field in [({"iterations": -1}, "iterations"), ({"phi_init": "x"}, "phi_init"),
                          ({"lambda_schedule": "cosine"}, "lambda_schedule"), ({"transfer_epochs": 0}, "transfer_epochs"),
                          ({"epochs": 0}, "epochs")]:
        with pytest.raises(ConfigError, match=field):
            IMMSettings(**kwargs)
