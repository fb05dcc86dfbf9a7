"""jobs/mtdnn.py on a real local Ray and a real MLflow store: the run tree, per-task table, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.mtdnn import JOB, MTDNNJobConfig, main, run
from kd_core.io.cli import run_cli
from tests.helpers import help_text, job_tree, logged_model_files, wait_for

ROOT = Path(__file__).resolve().parents[1]
TASKS = """tasks:
  - {name: sentiment, synthetic: sentiment, kind: classification, labels: [negative, positive], size: 80}
  - {name: preference, synthetic: preference, kind: regression, pair: true, size: 80}
  - {name: rating, synthetic: rating, kind: regression, teacher: false, size: 40}
"""
TINY = dict(members=2, candidates=0, teacher_epochs=1, teacher_fine_tune_epochs=1, epochs=2, fine_tune_epochs=1,
            batch_size=16, vocab_size=300, max_length=40)
CLI_TINY = ["--members", "2", "--candidates", "0", "--teacher-epochs", "1", "--teacher-fine-tune-epochs", "1",
            "--epochs", "2", "--fine-tune-epochs", "1", "--batch-size", "16", "--vocab-size", "300", "--max-length", "40"]
TAUGHT = ("sentiment", "preference")
ALL = (*TAUGHT, "rating")
STEPS = ({f"teacher-mt-{m}" for m in range(2)} | {f"{t}-member-{m}" for t in TAUGHT for m in range(2)}
         | {f"{t}-knowledge-{m}" for t in TAUGHT for m in range(2)}
         | {f"{t}-knowledge" for t in TAUGHT} | {"student", "student-vanilla"}
         | {f"{t}-{s}-ft" for t in ALL for s in ("student", "vanilla")})
STEPS |= {f"eval-{s}" for s in STEPS if "member-" in s or s.startswith("student") or s.endswith("-ft")}
STEPS |= {f"eval-{t}-ensemble" for t in TAUGHT}


@pytest.fixture(scope="module")
def tasks_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tasks") / "tasks.yaml"
    path.write_text(TASKS)
    return path


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory, tasks_file):
    root = tmp_path_factory.mktemp("mtdnn")
    uri = f"sqlite:///{root}/mlflow.db"
    return run(MTDNNJobConfig(**TINY, tasks=str(tasks_file), run_dir=str(root / "run"), tracking_uri=uri)), uri


@pytest.mark.slow
def test_mtdnn_job_end_to_end_with_the_per_task_table_in_mlflow(uninterrupted):
    summary, uri = uninterrupted
    assert summary["with_teacher"] == sorted(TAUGHT)
    assert list(summary["tasks"]) == list(ALL)
    rating = summary["tasks"]["rating"]
    assert not rating["teacher"] and "ensemble" not in rating["test"] and "members_test" not in rating
    for name in TAUGHT:
        row = summary["tasks"][name]
        assert set(row["test"]) == {"vanilla_mt", "mt_kd", "vanilla_mt_ft", "mt_kd_ft", "ensemble"}
        assert len(row["members_test"]) == 2 and len(row["members_dev"]) == 2
    assert summary["tasks"]["preference"]["primary_metric"] == "pearson"
    assert set(summary["tasks"]["preference"]["test_scores"]["mt_kd"]) == {"pearson", "spearman"}
    for label in ("vanilla_mt", "mt_kd"):
        assert summary["average_test"][label] == pytest.approx(
            sum(row["test"][label] for row in summary["tasks"].values()) / 3)
    table = (Path(summary["run_dir"]) / "summary_table.txt").read_text()
    assert table.startswith("task") and "rating" in table and "average" in table
    printed = JOB.table(summary).splitlines()  # what the job prints: the saved models' paths in one column
    listed = printed[printed.index(next(line for line in printed if line.startswith("models ("))) + 1:][
        :len(summary["saved_models"])]
    assert len({line.index(str(Path(summary["run_dir"]) / "models")) for line in listed}) == 1
    assert any(len(name) > 28 for name in summary["saved_models"])  # longer than the old fixed column
    assert set(summary["students"]) == {"student", "student-vanilla", "student-ft", "student-vanilla-ft"}
    steps = Path(summary["run_dir"]) / "steps"
    fine_tuned_dev = [json.loads((steps / f"{t}-student-ft" / "result.json").read_text())["primary"] for t in ALL]
    assert summary["students"]["student-ft"]["dev_average"] == pytest.approx(sum(fine_tuned_dev) / 3)

    client, parent, children = job_tree(uri, summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kd.method"] == "mtdnn"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "summary_table.txt", "per_task_table.json"} <= artifacts
    assert "plots/tasks.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert parent.data.metrics["test_average/mt_kd"] == pytest.approx(summary["average_test"]["mt_kd"])
    assert sorted(r.data.tags["kd.step"] for r in children) == sorted(STEPS)
    assert all(r.info.status == "FINISHED" for r in children)
    by_step = {r.data.tags["kd.step"]: r for r in children}
    assert by_step["preference-member-1"].data.tags["kd.task"] == "preference"
    assert by_step["preference-member-1"].data.tags["kd.role"] == "teacher"
    assert by_step["teacher-mt-1"].data.params["model"] == "tiny-bert"  # members: MT-DNN pre-training, then
    assert by_step["preference-member-1"].data.params["model"] == "@teacher-mt-1"  # per-task fine-tuning
    student = by_step["student"]
    assert student.data.tags["kd.task"] == "multitask"
    # per-task dev metrics after every epoch (logged at steps 1, 2; the final score again with the result)
    curve = sorted(client.get_metric_history(student.info.run_id, "dev/rating/pearson"), key=lambda m: m.step)
    assert [m.step for m in curve] == [0, 1, 2] and curve[0].value == curve[2].value
    assert len(client.get_metric_history(student.info.run_id, "loss/soft")) >= 2
    assert "model/model.safetensors" in logged_model_files(client, student)
    evaluation = by_step["eval-student"]
    assert evaluation.data.metrics["test/preference/pearson"] == summary["tasks"]["preference"]["test"]["mt_kd"]


@pytest.mark.slow
def test_students_share_initialisation_and_the_kd_student_reads_every_teacher(uninterrupted):
    summary, _ = uninterrupted
    run_dir = Path(summary["run_dir"])
    student = json.loads((run_dir / "steps/student/result.json").read_text())
    vanilla = json.loads((run_dir / "steps/student-vanilla/result.json").read_text())
    assert student["parameters"] == vanilla["parameters"] and student["steps"] == vanilla["steps"]
    assert student["last_metrics"]["weight/soft"] == 0.5 and "loss/soft" not in vanilla["last_metrics"]
    config = json.loads((run_dir / "steps/student/model/config.json").read_text())
    assert config["task_heads"] == {"sentiment": 2, "preference": 1, "rating": 1}


@pytest.mark.slow
def test_a_killed_mtdnn_driver_resumes_to_the_uninterrupted_result(uninterrupted, ray_session, tmp_path, tasks_file,
                                                                   capsys):
    expected, _ = uninterrupted
    address = ray_session.get_runtime_context().gcs_address
    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    log = tmp_path / "killed.log"
    common = [*CLI_TINY, "--tasks", str(tasks_file), "--run-dir", str(run_dir), "--tracking-uri", uri,
              "--address", address]
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "jobs/mtdnn.py", *common], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: (run_dir / "steps/student/checkpoint/state.json").exists(), proc, 300, log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (run_dir / "summary.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in (run_dir / "steps").rglob("result.json")}
    assert {p.parent.name for p in done_before} >= {"sentiment-knowledge", "preference-knowledge"}
    # The new driver runs in this process (already on the cluster): the same main and exit codes.
    assert run_cli(main, ["--resume", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tasks"] == expected["tasks"]  # the same numbers as the uninterrupted job
    assert set(summary["reused_steps"]) == {p.parent.name for p in done_before}
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in done_before.items())


def test_help_and_check_without_cluster_work(tmp_path, monkeypatch, capsys, tasks_file):
    text = help_text(main)
    assert "--member-dropouts" in text and "--tasks" in text
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mtdnn.yaml"
    config.write_text(f"tasks: {tasks_file}\nalpha: 0.3\n")
    assert run_cli(main, ["--config", str(config), "--tau", "2", "--check"]) == 0
    assert "ok" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


BAD_TASKS = {
    "unknown kind": ("- {name: a, kind: ranking, train: a.tsv, dev: a.tsv, columns: {text_a: 0, label: 1}}",
                     "unknown kind 'ranking'"),
    "listed twice": ("- {name: a, synthetic: rating, kind: regression}\n  - {name: a, synthetic: rating, "
                     "kind: regression}", "listed twice"),
    "missing file": ("- {name: a, kind: classification, labels: [x, y], train: nowhere.tsv, dev: nowhere.tsv, "
                     "header: false, columns: {text_a: 0, label: 1}}", "nowhere.tsv: file: no such file"),
    "label not in set": ("- {name: a, kind: classification, labels: [x, y], train: a.tsv, dev: a.tsv, "
                         "header: false, columns: {text_a: 0, label: 1}}", "line 2: label 'z' is not in the label set"),
    "unknown metric": ("- {name: a, synthetic: rating, kind: regression, metrics: [accuracy]}",
                       "unknown regression metric"),
}


@pytest.mark.parametrize("case", sorted(BAD_TASKS))
def test_bad_task_definitions_exit_2_with_one_line_before_cluster_work(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    entries, expected = BAD_TASKS[case]
    (tmp_path / "a.tsv").write_text("good film\tx\nbad film\tz\n")
    (tmp_path / "tasks.yaml").write_text(f"tasks:\n  {entries}\n")
    assert run_cli(main, ["--tasks", str(tmp_path / "tasks.yaml"), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--alpha", "1.5"], "--alpha"),
    (["--members", "3", "--member-dropouts", "0.1,0.2"], "--member-dropouts"),
    (["--tasks", "nowhere.yaml"], "no such task definitions file"),
    (["--only", "poetry"], "no task 'poetry'"),
    (["--without-teacher", "poetry"], "no task 'poetry'"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, [*args, "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
