"""Ray Tune sweeps: search-space parsing, refusal of bad options, and an A2D sweep end to end on a real Ray."""

import json
from pathlib import Path

import pytest
import torch
from ray import tune
from safetensors.torch import load_file

from jobs.sweep import SWEEP, main
from kd_core.io.cli import run_cli
from kd_core.io.errors import ConfigError, DataError
from tests.helpers import KD_TINY, job_tree
from tuning.config import SweepConfig, prepare
from tuning.spaces import DEFAULT_SPACES, Param, param_space, parse_space
from tuning.sweep import run_sweep

JOB = {"synthetic_size": 16, "teacher_epochs": 2, "epochs": 3, "vocab_size": 400}


def test_default_spaces_follow_the_papers_and_overrides_replace_entries():
    space = parse_space("a2d")
    assert space["tau"] == Param("tau", "choice", (1.0, 2.0, 3.0, 5.0))
    assert space["gamma"].kind == "loguniform" and space["gamma"].values[0] < 0.3 < space["gamma"].values[1]
    assert space["delta"].kind == "loguniform" and space["delta"].values[0] < 0.1 < space["delta"].values[1]
    custom = parse_space("a2d", {"tau": {"grid": [1, 2]}, "learning_rate": {"loguniform": [1e-4, 1e-2]}})
    assert custom["tau"] == Param("tau", "grid", (1, 2)) and custom["gamma"] == space["gamma"]
    assert set(parse_space("imm")) == set(DEFAULT_SPACES["imm"]) == {"lambda_schedule", "iterations"}

    domains = param_space(custom, "random")
    assert domains["tau"] == tune.grid_search([1, 2])
    assert isinstance(domains["gamma"], tune.search.sample.Float)
    grid = param_space(parse_space("imm"), "grid")
    assert grid["iterations"] == tune.grid_search([1, 2, 3])


@pytest.mark.parametrize("override, search, message", [
    ({"tau": {"beta": [1, 2]}}, "random", "unknown kind"),
    ({"tau": {"choice": []}}, "random", "at least one value"),
    ({"gamma": {"loguniform": [0, 1]}}, "random", "low > 0"),
    ({"gamma": {"uniform": [2, 1]}}, "random", "low < high"),
    ({"gamma": {"uniform": [1]}}, "random", "[low, high]"),
    ({"gamma": 0.3}, "random", "expected one of"),
    ({}, "grid", "grid search needs listed values"),
    ({"tau": {"grid": [1, 2]}}, "optuna", "Optuna cannot search grid"),
])
def test_bad_spaces_are_refused(override, search, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        param_space(parse_space("a2d", override), search)


def test_invalid_values_and_options_are_refused_before_cluster_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="tau"):
        prepare(SweepConfig(space={"tau": {"choice": [0.0, 2.0]}}, job=JOB))  # tau = 0 is not a temperature
    with pytest.raises(ConfigError, match="changes the teacher steps"):
        prepare(SweepConfig(space={"top_k": {"choice": [2, 4]}}, job=JOB))  # top-K is collected once, by the teachers
    with pytest.raises(ConfigError, match="iterations"):
        prepare(SweepConfig(method="imm", space={"iterations": {"choice": [-1, 1]}}, job={"synthetic_size": 8}))
    for args, message in [(["--method", "distil"], "must be one of kd, a2d, imm, mtdnn, students"), (["--num-samples", "0"], "--num-samples"),
                          (["--set", "epochs=-1"], "epochs"), (["--knowledge-from", str(tmp_path)], "no finished a2d teacher step"),
                          (["--set", "no_such_option=1"], "no_such_option")]:
        assert run_cli(main, [*args, "--set", "synthetic_size=8", "--check"]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], errors
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_the_sweep_takes_the_methods_own_job_options_as_fixed_settings(tmp_path, monkeypatch, capsys):
    """``--epochs 2 --members 3`` as the a2d job spells them; ``--set`` and the sweep's own options beside them."""
    config = SWEEP.config(SWEEP.parse(["--method", "a2d", "--epochs", "2", "--members", "3", "--num-samples", "4",
                                       "--no-baseline", "--student-layers", "1", "--set", "tau=3", "--seed", "5",
                                       "--max-concurrency", "2"]))
    assert (config.method, config.num_samples, config.seed, config.max_concurrency) == ("a2d", 4, 5, 2)
    assert config.job == {"epochs": 2.0, "members": 3, "baseline": False, "student_layers": 1, "tau": 3}
    config = SWEEP.config(SWEEP.parse(["--method", "students", "--students", "scratch,bilstm", "--alpha", "0.5"]))
    assert config.job == {"students": ("scratch", "bilstm"), "alpha": 0.5}
    path = tmp_path / "sweep.yaml"
    path.write_text("method: kd\njob: {epochs: 4, members: 2}\n")  # the method from the file picks the parser
    assert SWEEP.config(SWEEP.parse(["--config", str(path), "--members", "1"])).job == {"epochs": 4, "members": 1}

    monkeypatch.chdir(tmp_path)
    assert run_cli(main, ["--method", "a2d", "--synthetic-size", "8", "--epochs", "2", "--members", "3",
                          "--num-samples", "4", "--check"]) == 0
    assert "ok: options, search space and data are valid" in capsys.readouterr().out
    for argv, message in [(["--epoch", "2"], "sweep: --epoch: not an option of the sweep, nor a setting or data "
                                             "option of the a2d job"),
                          (["--epochs", "two"], "sweep: --epochs: invalid float value: 'two'"),
                          (["--register-as", "x"], "sweep: --register-as: not an option"),  # a job's, not a setting
                          (["--method", "kd", "--gamma", "1"], "sweep: --gamma: not an option"),  # a2d's, not kd's
                          (["--kd-weight", "0.5"], "sweep: --kd-weight: is now --alpha"),
                          (["--members", "0"], "a2d: members: must be >= 1"),
                          (["--method", "distil", "--epochs", "2"], "--method: must be one of")]:
        assert run_cli(main, [*argv, "--synthetic-size", "8", "--check"]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], (argv, errors)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a2d_sweep_runs_teachers_once_and_asha_stops_trials(ray_session, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = run_sweep(SweepConfig(num_samples=6, max_concurrency=2, job=JOB, run_dir=str(tmp_path / "sweep"),
                                    tracking_uri=uri, precision="bf16"))
    assert summary["teacher_passes"] == 1 and summary["trials"] == 6 and summary["failed"] == 0
    assert summary["stopped_early"] >= 1  # ASHA cut some trials before their 3rd epoch
    assert {t["reports"] for t in summary["trial_results"]} - {1, 2, 3} == set()
    assert set(summary["best_config"]) == {"tau", "gamma", "delta"}
    best = Path(summary["best_model"])
    assert (best / "model.safetensors").exists() and (best / "config.json").exists()
    run_dir = Path(summary["run_dir"])
    assert len((run_dir / "trials.csv").read_text().strip().splitlines()) == 7
    # The sweep's precision reached the teacher step on a Ray worker and the Tune trials' students (a student's
    # checkpoint names its precision too; a trial ASHA stopped after its first epoch may have left neither).
    students = [p for trial in (run_dir / "trials").iterdir()
                for p in (trial / "steps/student/result.json", trial / "steps/student/checkpoint/state.json")
                if p.exists()]
    trained = [run_dir / "teachers/steps/member-0/result.json", *students]
    assert len(students) >= 2 and {json.loads(p.read_text())["precision"] for p in trained} == {"bf16"}

    client, parent, children = job_tree(uri, summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["teacher_passes"] == 1
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "plots")} == {"plots/metric_vs_hyperparameters.png"}
    assert "trials.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    roles = [r.data.tags.get("kd.role") for r in children]
    assert roles.count("teacher") == 1 and roles.count("trial") == 6  # one teacher run, one run per trial
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    # The best trial, found again from what each trial logged to MLflow: its best dev metric and its parameters.
    trials = [r for r in children if r.data.tags["kd.role"] == "trial"]
    logged = {r.info.run_id: max(m.value for m in client.get_metric_history(r.info.run_id, "dev_metric")) for r in trials}
    top = max(logged.values())
    assert summary["best_metric"] == pytest.approx(top)
    configs = [{k: float(r.data.params[k]) for k in summary["best_config"]} for r in trials if logged[r.info.run_id] == top]
    assert any(c == pytest.approx(summary["best_config"]) for c in configs)
    teacher = next(r for r in children if r.data.tags.get("kd.role") == "teacher")
    knowledge_written = (run_dir / "teachers/steps/knowledge/knowledge.arrow").stat().st_mtime
    assert len(list(run_dir.rglob("steps/member-0/model"))) == 1  # the teacher trained once
    assert all(r.info.start_time / 1000 >= knowledge_written - 1 for r in children if r.data.tags["kd.role"] == "trial")
    assert teacher.info.end_time / 1000 <= min(r.info.start_time for r in children if r.data.tags["kd.role"] == "trial") / 1000

    # A second sweep reuses that knowledge: no teacher runs at all.
    again = run_sweep(SweepConfig(num_samples=1, job=JOB, knowledge_from=str(run_dir), search="optuna",
                                  run_dir=str(tmp_path / "again"), tracking_uri=uri))
    assert again["teacher_passes"] == 0 and again["trials"] == 1
    _, _, children = job_tree(uri, again["mlflow_run_id"])
    assert [r.data.tags.get("kd.role") for r in children] == ["trial"]


KD_JOB = {"synthetic_size": 160, "teacher_epochs": 2, "epochs": 2, "batch_size": 16}


@pytest.mark.slow
def test_a_recipe_sweep_reuses_a_jobs_teachers_and_searches_the_students_settings(kd_job, tmp_path):
    """Sweeping kd from a finished job: no teacher step runs again; each trial trains its own student from the job's
    knowledge. (A recipe sweep that trains its teachers once: tests/test_mlflow_server.py, the mtdnn and students
    sweeps below.)"""
    job, uri = kd_job
    summary = run_sweep(SweepConfig(method="kd", num_samples=2, max_concurrency=2, job=KD_TINY,
                                    knowledge_from=job["run_dir"], run_dir=str(tmp_path / "sweep"), tracking_uri=uri))
    assert summary["teacher_passes"] == 0 and summary["trials"] == 2 and summary["failed"] == 0
    assert summary["metric"] == "dev_metric" and set(summary["best_config"]) == {"tau", "alpha"}
    assert (Path(summary["best_model"]) / "model.safetensors").exists()
    assert not list((tmp_path / "sweep").rglob("teacher-*/model"))  # the job's teachers, not new ones
    assert not list((tmp_path / "sweep").rglob("steps/student-no-kd"))  # no baseline in the trials
    _, _, children = job_tree(uri, summary["mlflow_run_id"])
    assert [r.data.tags.get("kd.role") for r in children] == ["trial", "trial"]
    # Trials with different settings computed different students from the same teacher.
    students = [load_file(str(p)) for p in (tmp_path / "sweep" / "trials").glob("*/output/model.safetensors")]
    assert len(students) == 2
    assert not all(torch.equal(a, b) for a, b in zip(students[0].values(), students[1].values()))
    with pytest.raises(DataError, match="made for data fingerprint"):
        prepare(SweepConfig(method="kd", job={**KD_TINY, "synthetic_size": 200}, knowledge_from=job["run_dir"],
                            run_dir=str(tmp_path / "other")))


def test_a_recipe_setting_that_changes_the_teachers_cannot_be_searched(tmp_path):
    with pytest.raises(ConfigError, match="space.teacher_epochs: changes the teacher steps"):
        prepare(SweepConfig(method="kd", job=KD_JOB, space={"teacher_epochs": {"choice": [1, 2]}},
                            run_dir=str(tmp_path / "s")))
    with pytest.raises(ConfigError, match="space.gamma: not a setting of kd"):
        prepare(SweepConfig(method="kd", job=KD_JOB, space={"gamma": {"choice": [1.0]}}, run_dir=str(tmp_path / "s")))
    with pytest.raises(ConfigError, match="alpha"):
        prepare(SweepConfig(method="kd", job=KD_JOB, space={"alpha": {"uniform": [0.5, 1.5]}},
                            run_dir=str(tmp_path / "s")))


MT_TASKS = """tasks:
  - {name: sentiment, synthetic: sentiment, kind: classification, labels: [negative, positive], size: 60}
  - {name: rating, synthetic: rating, kind: regression, teacher: false, size: 40}
"""


@pytest.mark.slow
def test_an_mtdnn_sweep_runs_the_teacher_ensembles_once(ray_session, tmp_path):
    (tmp_path / "tasks.yaml").write_text(MT_TASKS)
    job = {"tasks": str(tmp_path / "tasks.yaml"), "members": 2, "candidates": 0, "teacher_epochs": 1,
           "teacher_fine_tune_epochs": 1, "epochs": 2, "batch_size": 16, "max_length": 32, "vocab_size": 300}
    summary = run_sweep(SweepConfig(method="mtdnn", num_samples=2, max_concurrency=2, job=job,
                                    run_dir=str(tmp_path / "sweep"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    assert summary["teacher_passes"] == 1 and summary["trials"] == 2 and summary["failed"] == 0
    assert set(summary["best_config"]) == {"alpha", "tau", "learning_rate"}
    assert len(list((tmp_path / "sweep").rglob("steps/teacher-mt-0/model"))) == 1  # pre-trained once
    assert len(list((tmp_path / "sweep").rglob("steps/sentiment-knowledge/knowledge.arrow"))) == 1  # merged once
    assert not list((tmp_path / "sweep").rglob("steps/student-vanilla"))  # no baseline in the trials


ST_TASKS = """tasks:
  - {name: sentiment, synthetic: sentiment, kind: classification, labels: [negative, positive], size: 80}
"""


@pytest.mark.slow
def test_a_students_sweep_trains_the_teacher_once_and_searches_the_kd_settings(ray_session, tmp_path):
    (tmp_path / "tasks.yaml").write_text(ST_TASKS)
    job = {"tasks": str(tmp_path / "tasks.yaml"), "teacher_model": "tiny-bert", "teacher_epochs": 1,
           "teacher_restarts": 2, "scratch_layers": 1, "scratch_hidden": 16, "scratch_intermediate": 32, "epochs": 2,
           "batch_size": 16, "max_length": 32, "vocab_size": 300, "word_vocab_size": 200, "speed_examples": 8,
           "speed_repeats": 1}
    space = {"loss": {"grid": ["mse", "hard"]}, "noise": {"grid": [0.0, 0.5]}, "alpha": {"choice": [0.7]},
             "tau": {"choice": [2.0]}}
    summary = run_sweep(SweepConfig(method="students", search="grid", num_samples=1, max_concurrency=2, job=job,
                                    space=space, run_dir=str(tmp_path / "sweep"),
                                    tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    assert summary["teacher_passes"] == 1 and summary["trials"] == 4 and summary["failed"] == 0
    assert set(summary["best_config"]) == {"loss", "noise", "alpha", "tau"}
    assert len(list((tmp_path / "sweep").rglob("steps/teacher-1/model"))) == 1  # trained once for all trials
    assert len(list((tmp_path / "sweep").rglob("steps/knowledge/knowledge.arrow"))) == 1
    assert not list((tmp_path / "sweep").rglob("steps/scratch-no-kd"))  # no baseline in the trials
    # every trial's setting changed what it computed: four different students
    students = [load_file(str(p)) for p in (tmp_path / "sweep" / "trials").glob("*/output/model.safetensors")]
    assert len(students) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert not all(torch.equal(students[i][k], students[j][k]) for k in students[i])


@pytest.mark.parametrize("method", ["a2d", "imm", "kd", "mtdnn", "students"])
def test_every_parameter_of_the_default_spaces_changes_what_a_trial_computes(method, tmp_path):
    (tmp_path / "mt.yaml").write_text(MT_TASKS)
    (tmp_path / "st.yaml").write_text(ST_TASKS)
    jobs = {"a2d": JOB, "imm": {"synthetic_size": 8, "vocab_size": 300}, "kd": KD_JOB,
            "mtdnn": {"tasks": str(tmp_path / "mt.yaml"), "max_length": 32, "vocab_size": 300},
            "students": {"tasks": str(tmp_path / "st.yaml"), "max_length": 32, "vocab_size": 300,
                         "word_vocab_size": 200}}
    # prepare() plans the trial of every searched value; a parameter none of whose values changes it is refused.
    prepared = prepare(SweepConfig(method=method, job=jobs[method], run_dir=str(tmp_path / "s")))
    assert set(prepared.space) == set(DEFAULT_SPACES[method])


def test_a_parameter_that_changes_nothing_a_trial_computes_is_refused(tmp_path):
    # The attention stage's epochs only act with stage-wise training.
    with pytest.raises(ConfigError, match="space.attention_epochs: .* would change nothing"):
        prepare(SweepConfig(space={"attention_epochs": {"choice": [1.0, 2.0]}}, job=JOB, run_dir=str(tmp_path / "a")))
    prepare(SweepConfig(space={"attention_epochs": {"choice": [1.0, 2.0]}}, job={**JOB, "stagewise": True},
                        run_dir=str(tmp_path / "b")))
    # IMM's similarity ablation changes the transfer's example weights: it may be searched.
    prepare(SweepConfig(method="imm", space={"no_similarity": {"choice": [False, True]}},
                        job={"synthetic_size": 8, "vocab_size": 300}, run_dir=str(tmp_path / "c")))
