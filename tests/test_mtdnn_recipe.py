"""The MT-DNN recipe's plan: teacher stages, students and baselines, fine-tuning, what a sweep shares."""

from __future__ import annotations

import pytest

from kd_core.engine.prepare import MultiTaskData, build_multitask_workspace
from kd_core.engine.steps import TrainStep
from kd_core.io.errors import ConfigError
from kd_core.methods.mtdnn import MTDNNSettings, mtdnn_recipe
from kd_core.methods.registry import METHODS

TASKS = """tasks:
  - {name: sentiment, synthetic: sentiment, kind: classification, labels: [negative, positive], size: 40}
  - {name: rating, synthetic: rating, kind: regression, teacher: false, size: 40}
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtdnn-plan")
    (root / "tasks.yaml").write_text(TASKS)
    return build_multitask_workspace(MultiTaskData(tasks=str(root / "tasks.yaml"), vocab_size=200), "tiny-bert",
                                     "tiny-bert", root / "run")


def plan(settings: MTDNNSettings, ws) -> list[list]:
    """The recipe's stages, each planned once the ones before it have finished."""
    recipe, done, stages = mtdnn_recipe(settings, ws), {}, []
    while stage := recipe(done):
        stages.append(stage)
        done |= {step.name: {} for step in stage}
    return stages


def test_members_are_mt_dnn_models_fine_tuned_per_task_with_their_own_dropout(ws):
    stages = plan(MTDNNSettings(members=2, candidates=0, member_dropouts=(0.1, 0.3)), ws)
    pretrain, members = stages[0], stages[1]
    assert [s.name for s in pretrain] == ["teacher-mt-0", "teacher-mt-1"]
    assert all(s.task is None and s.config.sampler == "tasks" and s.teacher for s in pretrain)
    assert [(s.name, s.model, s.task, s.dropout) for s in members] == [
        ("sentiment-member-0", "@teacher-mt-0", "sentiment", 0.1), ("sentiment-member-1", "@teacher-mt-1", "sentiment", 0.3)]
    assert len({s.seed for s in pretrain}) == 2  # members differ by seed
    single = plan(MTDNNSettings(members=2, candidates=0, teacher_multitask=False), ws)
    assert [(s.name, s.model) for s in single[0]] == [("sentiment-member-0", "tiny-bert"), ("sentiment-member-1", "tiny-bert")]


def test_a_teacher_pool_keeps_the_candidates_best_on_dev_as_the_ensemble(ws):
    settings = MTDNNSettings(members=3, candidates=6)
    recipe, done = mtdnn_recipe(settings, ws), {}
    pretrain = recipe(done)
    assert [s.dropout for s in pretrain] == [0.1, 0.2, 0.3, 0.1, 0.2, 0.3] and len({s.seed for s in pretrain}) == 6
    done |= {s.name: {} for s in pretrain}
    candidates = recipe(done)
    assert [s.name for s in candidates] == [f"sentiment-member-{m}" for m in range(6)]
    dev = [61.0, 75.0, 58.0, 75.0, 80.0, 40.0]  # candidates 4, 1 and 3 are the best three (1 before 3 on a tie)
    done |= {s.name: {"primary": f1} for s, f1 in zip(candidates, dev)}
    collects = recipe(done)
    assert [s.name for s in collects] == ["sentiment-knowledge-1", "sentiment-knowledge-3", "sentiment-knowledge-4"]
    done |= {s.name: {} for s in collects}
    (merge,) = recipe(done)
    assert merge.members == ("sentiment-knowledge-1", "sentiment-knowledge-3", "sentiment-knowledge-4")
    while stage := recipe(done):
        last = stage
        done |= {s.name: {} for s in stage}
    evaluations = {s.name: s for s in last}
    assert evaluations["eval-sentiment-ensemble"].models == tuple(f"@sentiment-member-{m}" for m in (1, 3, 4))
    assert {f"eval-sentiment-member-{m}" for m in range(6)} <= set(evaluations)  # every candidate on test
    assert recipe.planned == len(plan(settings, ws))
    assert MTDNNSettings(members=2, candidates=3, member_dropouts=(0.0, 0.1, 0.2)).dropout(2) == 0.2
    default = MTDNNSettings()  # the paper's pool is the default (chosen on dev, docs/results.md)
    assert (default.candidates, default.members, [default.dropout(m) for m in range(6)]) == (
        6, 3, [0.1, 0.2, 0.3, 0.1, 0.2, 0.3])


def test_students_share_initialisation_and_schedule_and_only_the_kd_student_reads_teachers(ws):
    stages = plan(MTDNNSettings(members=2, single_task=True, fine_tune_epochs=1), ws)
    students = next(stage for stage in stages if any(s.name == "student" for s in stage))
    by_name = {s.name: s for s in students}
    kd, vanilla = by_name["student"], by_name["student-vanilla"]
    assert kd.knowledge == ("sentiment-knowledge",) and vanilla.knowledge is None  # rating has no teacher
    assert (kd.model, kd.seed, kd.config) == (vanilla.model, vanilla.seed, vanilla.config)
    assert [t.describe() for t in kd.objective] == ["0.5*hard", "0.5*soft(tau=1)"]
    assert {by_name["sentiment-single"].task, by_name["rating-single"].task} == {"sentiment", "rating"}
    fine_tuned = {s.name: s for s in stages[stages.index(students) + 1]}
    assert set(fine_tuned) == {"sentiment-student-ft", "rating-student-ft", "sentiment-vanilla-ft", "rating-vanilla-ft"}
    assert fine_tuned["rating-student-ft"].model == "@student" and fine_tuned["rating-student-ft"].task == "rating"
    evaluations = {s.name for s in stages[-1]}
    assert {"eval-sentiment-ensemble", "eval-student", "eval-rating-single", "eval-rating-student-ft"} <= evaluations
    assert "eval-rating-ensemble" not in evaluations


def test_a_sweep_shares_the_teacher_stages_and_refuses_teacher_settings(ws):
    spec = METHODS["mtdnn"]
    shared = spec.teacher_plan(MTDNNSettings(members=2, candidates=0), ws)
    assert [s.name for s in shared] == ["teacher-mt-0", "teacher-mt-1", "sentiment-member-0", "sentiment-member-1",
                                        "sentiment-knowledge-0", "sentiment-knowledge-1", "sentiment-knowledge"]
    for name, value in (("alpha", 0.3), ("tau", 2.0), ("learning_rate", 5e-4)):
        spec.check_searchable(MTDNNSettings(members=2), ws, name, value)
    with pytest.raises(ConfigError, match="changes the teacher steps"):
        spec.check_searchable(MTDNNSettings(members=2), ws, "teacher_learning_rate", 5e-4)


@pytest.mark.parametrize("bad, message", [
    ({"members": 0}, "members"), ({"alpha": -0.1}, "alpha"), ({"tau": 0.0}, "tau"),
    ({"members": 2, "candidates": 0, "member_dropouts": (0.1,)}, "one rate per member"),
    ({"candidates": 3, "member_dropouts": (0.1, 0.2, 1.0)}, "[0, 1)"),
    ({"fine_tune_epochs": -1.0}, "fine_tune_epochs"),
    ({"members": 3, "candidates": 2}, "at least 3"), ({"members": 8}, "--candidates 0: no pool"),
    ({"candidates": 4, "member_dropouts": (0.1, 0.2, 0.3)}, "per candidate"),
])
def test_invalid_settings_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        MTDNNSettings(**bad)


def test_a_train_step_refuses_a_dropout_outside_0_1():
    from kd_core.engine.steps import TermSpec
    from kd_core.training.loop import TrainConfig

    with pytest.raises(ConfigError, match="dropout"):
        TrainStep("x", "tiny-bert", 0, "t", (TermSpec("hard"),), TrainConfig(), dropout=1.0)


@pytest.mark.parametrize("changes", [{}, {"teacher_multitask": True, "baseline": True, "fine_tune_epochs": 0.0},
                                     {"single_task": True, "members": 1}])
def test_the_planned_stage_count_is_the_stages_a_run_goes_through(ws, changes):
    settings = MTDNNSettings(**changes)
    assert mtdnn_recipe(settings, ws).planned == len(plan(settings, ws))
