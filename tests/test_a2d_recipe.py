"""The A2D recipe's Table 5 variants as planned steps, and one stage-wise run end to end."""

import json
from pathlib import Path

import pytest

from jobs.distill import DistillConfig, workspace
from kd_core.engine.local import run_locally
from kd_core.engine.steps import MergeStep, TrainStep
from kd_core.io.config_files import read_config_file
from kd_core.io.errors import ConfigError
from kd_core.methods.a2d import A2DSettings, a2d_recipe
from tests.helpers import write_squad_file

TINY = {"synthetic_size": 12, "vocab_size": 400, "teacher_epochs": 1.0, "epochs": 1.0}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(DistillConfig(**TINY, run_dir=str(tmp_path_factory.mktemp("a2d-plan"))))


def _plan(settings: A2DSettings, ws) -> list:
    """Every step the recipe plans, stage after stage, as if each stage had finished."""
    recipe, done, steps = a2d_recipe(settings, ws), {}, []
    while stage := recipe(done):
        steps += stage
        done |= {step.name: {} for step in stage}
    return steps


def _terms(step: TrainStep) -> dict[str, float]:
    return {spec.kind: spec.weight for spec in step.objective if spec.active}


def test_the_joint_student_has_every_term_and_the_merge_the_papers_confusing_rule(ws):
    steps = {step.name: step for step in _plan(A2DSettings(members=1, tau=3.0, gamma=0.3, delta=0.1), ws)}
    assert _terms(steps["student"]) == {"hard": 1.0, "soft": 1.0, "answer_margin": 0.3, "attention": 0.1}
    merge = steps["knowledge"]
    assert isinstance(merge, MergeStep) and dict(merge.options) == {"confusing": "question"}


def test_ablations_are_options(ws):
    no_kd_term = {s.name: s for s in _plan(A2DSettings(members=1, alpha=0.0), ws)}["student"]
    assert _terms(no_kd_term) == {"hard": 1.0, "answer_margin": 0.3, "attention": 0.1}
    window = {s.name: s for s in _plan(A2DSettings(members=1, confusing="window"), ws)}["knowledge"]
    assert dict(window.options) == {"confusing": "window"}
    names = [step.name for step in _plan(A2DSettings(members=1, stagewise=True, baseline=True), ws)]
    assert names.index("student-attention") < names.index("student")
    steps = {step.name: step for step in _plan(A2DSettings(members=1, stagewise=True, student_layers=1), ws)}
    warm, student = steps["student-attention"], steps["student"]
    assert _terms(warm) == {"attention": 0.1} and warm.keep_layers == (0,)
    assert _terms(student) == {"hard": 1.0, "soft": 1.0, "answer_margin": 0.3}
    assert student.model == "@student-attention" and student.keep_layers is None


@pytest.mark.parametrize("kwargs, field", [
    ({"alpha": -1.0}, "alpha"), ({"confusing": "ensemble"}, "confusing"),
    ({"stagewise": True, "delta": 0.0}, "stagewise"), ({"stagewise": True, "no_kd": True}, "stagewise"),
    ({"alpha": 0.0, "gamma": 0.0, "delta": 0.0}, "alpha"), ({"attention_epochs": 0.0}, "attention_epochs"),
])
def test_impossible_variants_are_refused(kwargs, field):
    with pytest.raises(ConfigError) as err:
        A2DSettings(**kwargs)
    assert err.value.where == field


def test_stagewise_training_runs_attention_then_the_other_losses(ws):
    results = run_locally(a2d_recipe(A2DSettings(members=1, teacher_epochs=1.0, epochs=1.0, stagewise=True), ws), ws)
    warm, student = results["student-attention"]["last_metrics"], results["student"]["last_metrics"]
    assert set(k for k in warm if k.startswith("loss/")) == {"loss/att"}
    assert set(k for k in student if k.startswith("loss/")) == {"loss/ce", "loss/kd", "loss/ans"}
    assert 0 <= results["eval-student-dev"]["scores"]["f1"] <= 100


def _squad_v2(path, seed):
    """Synthetic questions as SQuAD v2 JSON, half of them made unanswerable (asked about another context)."""
    from kd_core.data.synthetic import generate

    ds = generate(n_per_domain=12, seed=seed)
    paragraphs = []
    for i, ex in enumerate(ds):
        other = ds[(i + 7) % len(ds)]
        if i % 2 and ex["domain"] != other["domain"]:
            qa = {"id": f"u{seed}-{i}", "question": ex["question"], "answers": [], "is_impossible": True}
            paragraphs.append({"context": other["context"], "qas": [qa]})
        else:
            answers = [{"text": t, "answer_start": s} for t, s in zip(ex["answers"]["text"],
                                                                      ex["answers"]["answer_start"])]
            paragraphs.append({"context": ex["context"], "qas": [{"id": f"a{seed}-{i}", "question": ex["question"],
                                                                 "answers": answers}]})
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "v2", "paragraphs": paragraphs}]}))
    return str(path)


def test_squad_v2_extra_splits_apply_the_null_threshold_chosen_on_dev(tmp_path):
    config = DistillConfig(train=_squad_v2(tmp_path / "train.json", 0), dev=_squad_v2(tmp_path / "dev.json", 1),
                           eval=(_squad_v2(tmp_path / "extra.json", 2),), vocab_size=400, teacher_epochs=1.0,
                           epochs=1.0, run_dir=str(tmp_path / "run"))
    ws = workspace(config)
    results = run_locally(a2d_recipe(A2DSettings(members=1, teacher_epochs=1.0, epochs=1.0), ws), ws)
    for who in ("ensemble", "student"):
        dev, extra = results[f"eval-{who}-dev"]["scores"], results[f"eval-{who}-extra.json"]["scores"]
        assert {"HasAns_f1", "NoAns_f1", "best_f1", "best_f1_threshold"} <= set(dev)
        assert dev["null_threshold"] == 0.0 and extra["null_threshold"] == dev["best_f1_threshold"]
        assert results[f"eval-{who}-test"]["scores"]["null_threshold"] == dev["best_f1_threshold"]
    # A member and the no-KD student chose theirs on dev when they trained: test applies it.
    for trained, evaluation in (("member-0", "eval-member-0-test"), ("student-no-kd", "eval-student-no-kd-test")):
        chosen = results[trained]["scores"]["dev"]["best_f1_threshold"]
        assert results[evaluation]["scores"]["null_threshold"] == chosen


def test_test_is_split_off_by_context_before_dev_and_read_by_evaluations_only(ws, tmp_path):
    contexts = {name: set(ws.examples(name)["context"]) for name in ("train", "dev", "test")}
    assert not (contexts["train"] & contexts["test"]) and not (contexts["dev"] & contexts["test"])
    assert not contexts["train"] & contexts["dev"]
    sizes = {name: len(ws.examples(name)) for name in ("train", "dev", "test")}
    assert abs(sizes["test"] - sizes["dev"]) <= 0.1 * sum(sizes.values()) and sizes["train"] > 2 * sizes["test"]
    steps = _plan(A2DSettings(members=2, baseline=True), ws)
    readers = {step.name for step in steps if getattr(step, "split", None) == "test"}
    assert readers == {"eval-ensemble-test", "eval-student-test", "eval-member-0-test", "eval-member-1-test",
                       "eval-student-no-kd-test"}
    assert all(step.eval_split == "dev" for step in steps if isinstance(step, TrainStep))  # choices on dev only
    given = _squad_v2(tmp_path / "test.json", 3)
    with_file = workspace(DistillConfig(train=_squad_v2(tmp_path / "train.json", 0), test=given, vocab_size=400,
                                        run_dir=str(tmp_path / "run")))
    questions = len(json.loads(Path(given).read_text())["data"][0]["paragraphs"])  # one question each
    assert len(with_file.examples("test")) == questions and len(with_file.examples("train")) + len(
        with_file.examples("dev")) == questions  # the file is test; dev is carved from the training file alone
    # A test file that shares contexts with the training file: their questions leave train and dev.
    from kd_core.data.loaders import load_examples

    pool = load_examples(_squad_v2(tmp_path / "pool.json", 5))
    shared = write_squad_file(tmp_path / "shared.json", [{**ex, "id": f"t{i}"} for i, ex in enumerate(pool.select(range(4)))])
    leaked = {" ".join(c.split()) for c in pool.select(range(4))["context"]}
    clean = workspace(DistillConfig(train=str(tmp_path / "pool.json"), test=str(shared), vocab_size=400,
                                    max_train_examples=20, run_dir=str(tmp_path / "clean")))
    for split in ("train", "dev"):
        assert not {" ".join(c.split()) for c in clean.examples(split)["context"]} & leaked
    remaining = sum(" ".join(c.split()) not in leaked for c in pool["context"])
    assert len(clean.examples("train")) <= 20 < remaining - len(clean.examples("dev"))  # the limit cut train
    kept = {s.name: s for s in _plan(A2DSettings(members=1, keep_best=True), ws)}
    assert kept["student"].keep_best and kept["student-no-kd"].keep_best and not kept["member-0"].keep_best
    for bad, field in (({"test": given}, "train"), ({"dev_fraction": 0.5, "test_fraction": 0.45}, "dev_fraction"),
                       ({"eval": ("x/test",)}, "eval")):
        with pytest.raises(ConfigError) as err:
            DistillConfig(**bad)
        assert err.value.where == field


@pytest.mark.parametrize("changes", [{}, {"stagewise": True, "baseline": True}, {"no_kd": True},
                                     {"teacher_epochs": 0.0, "members": 2}])
def test_the_planned_stage_count_is_the_stages_a_run_goes_through(ws, changes):
    recipe, done, stages = a2d_recipe(A2DSettings(**changes), ws), {}, 0
    while stage := recipe(done):
        stages += 1
        done |= {step.name: {} for step in stage}
    assert (recipe.planned, recipe.at_most) == (stages, False)


def test_the_papers_setting_plans_twelve_members_and_a_student_of_their_architecture(ws):
    values = read_config_file(Path(__file__).resolve().parents[1] / "configs" / "a2d_paper.yaml")
    steps = {step.name: step for step in _plan(A2DSettings(**values), ws)}
    members = [steps[f"member-{i}"] for i in range(12)]
    assert "member-12" not in steps and len({m.seed for m in members}) == 12  # they differ by seed only
    student = steps["student"]
    assert student.model == members[0].model == values["teacher_model"] and student.keep_layers is None
    assert {m.model for m in members} == {student.model}  # every member and the student start from one model
