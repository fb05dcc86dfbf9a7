"""jobs/kd.py on a real local Ray and a real MLflow store: the run tree, resume after a real SIGKILL, the CLI."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.kd import KDJobConfig, main, run
from kd_core.cli import run_cli
from tests.helpers import job_tree, wait_for

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(synthetic_size=240, teachers=2, teacher_epochs=2, epochs=3, batch_size=16)
CLI_TINY = ["--synthetic-size", "240", "--teachers", "2", "--teacher-epochs", "2", "--epochs", "3",
            "--batch-size", "16"]
STEPS = {"teacher-0", "teacher-1", "knowledge-0", "knowledge-1", "knowledge", "student", "student-no-kd",
         "eval-teacher", "eval-student", "eval-student-no-kd"}


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("kd")
    uri = f"sqlite:///{root}/mlflow.db"
    return run(KDJobConfig(**TINY, run_dir=str(root / "run"), tracking_uri=uri)), uri


def test_kd_job_end_to_end_with_one_mlflow_run_per_step(uninterrupted):
    summary, uri = uninterrupted
    assert summary["task"] == "sentiment" and summary["primary_metric"] == "accuracy"
    assert summary["task_definition"]["labels"] == ["negative", "positive"]
    assert set(summary["models"]) == {"teacher", "student", "student_no_kd"}
    assert len(summary["models"]["teacher"]["dev"]) == 2  # two members, one ensemble on test
    assert summary["models"]["student"]["parameters"] < summary["models"]["teacher"]["parameters"]
    assert (Path(summary["run_dir"]) / "summary_table.txt").read_text().startswith("model")
    client, parent, children = job_tree(uri, summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kd.method"] == "kd"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.json", "summary_table.txt"}
    assert sorted(r.data.tags["kd.step"] for r in children) == sorted(STEPS)
    assert all(r.info.status == "FINISHED" and r.data.tags["kd.task"] == "sentiment" for r in children)
    student = next(r for r in children if r.data.tags["kd.step"] == "student")
    assert student.data.tags["kd.role"] == "student"
    assert len(client.get_metric_history(student.info.run_id, "loss/kd")) >= 3  # per step, from the worker
    assert student.data.metrics["dev/accuracy"] == summary["models"]["student"]["dev"][0]
    assert "model/model.safetensors" in {a.path for a in client.list_artifacts(student.info.run_id, "model")}
    evaluation = next(r for r in children if r.data.tags["kd.step"] == "eval-student")
    assert evaluation.data.metrics["test/accuracy"] == summary["models"]["student"]["test"]


@pytest.mark.slow
def test_a_job_whose_driver_is_killed_resumes_to_the_uninterrupted_result(uninterrupted, ray_session, tmp_path):
    expected, _ = uninterrupted
    address = ray_session.get_runtime_context().gcs_address
    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "jobs/kd.py", *CLI_TINY, "--run-dir", str(run_dir),
                                 "--tracking-uri", uri, "--address", address],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        # Kill the driver while the student trains (its first epoch's checkpoint is on disk).
        wait_for(lambda: (run_dir / "steps/student/checkpoint/state.json").exists(), proc, 300, log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (run_dir / "summary.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in (run_dir / "steps").rglob("result.json")}
    assert {p.parent.name for p in done_before} >= {"teacher-0", "teacher-1", "knowledge"}
    parent_id = json.loads((run_dir / "state.json").read_text())["parent_run_id"]

    refused = subprocess.run([sys.executable, "jobs/kd.py", "--resume", str(run_dir), "--tau", "3"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--tau" in refused.stderr and "2.0" in refused.stderr
    resumed = subprocess.run([sys.executable, "jobs/kd.py", "--resume", str(run_dir), "--teachers", "2",
                              "--address", address, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["models"] == expected["models"]  # the same numbers as the uninterrupted job
    assert summary["mlflow_run_id"] == parent_id
    assert set(summary["reused_steps"]) == {p.parent.name for p in done_before}
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in done_before.items())
    assert json.loads((run_dir / "steps/student/result.json").read_text())["resumed_from_step"] > 0

    _, parent, children = job_tree(uri, parent_id)
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.tags["kd.step"] for r in children) == sorted(STEPS)


def test_help_and_check_without_cluster_work(tmp_path, monkeypatch, capsys):
    result = subprocess.run([sys.executable, "jobs/kd.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "--teacher-model" in result.stdout and "--lr" in result.stdout
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "kd.yaml"
    config.write_text("task: rating\nsynthetic_size: 60\n")
    assert run_cli(main, ["--config", str(config), "--alpha", "0.7", "--check"]) == 0
    assert "ok" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--alpha", "1.5"], "--alpha"),
    (["--tau", "0"], "--tau"),
    (["--task", "poetry"], "unknown synthetic task"),
    (["--task", "span_qa", "--student-vocab-size", "300"], "--student-vocab-size"),
    (["--max-concurrency", "0"], "--max-concurrency"),
    (["--tracking-uri", "file:///tmp/x"], "--tracking-uri"),
    (["--teacher-model", "/nonexistent/model"], "/nonexistent/model"),
    (["--resume", "/nonexistent/run"], "state.json"),
])
def test_bad_options_exit_2_with_one_line_before_cluster_work(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, [*args, "--synthetic-size", "60", "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
