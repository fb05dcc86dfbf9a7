"""`ray job submit --working-dir . -- python jobs/{a2d,imm,mtdnn,students}.py` against a real `ray start --head` on 127.0.0.1."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import stop_processes_mentioning

pytestmark = pytest.mark.slow  # a cluster of its own and whole jobs submitted to it
ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
# Ports of our own, so that this cluster does not collide with the test session's local one; all below Linux's
# ephemeral range (32768-60999), where any outgoing connection may already hold one.
GCS_PORT, DASHBOARD_PORT, AGENT_PORT, AGENT_GRPC_PORT, RUNTIME_ENV_PORT, METRICS_PORT = 6391, 8291, 29391, 29392, 29393, 29394


@pytest.fixture(scope="module")
def head_node():
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's unix sockets live under it
    # Jobs run with the cluster's environment: no tracking URI that an earlier test left in this process's.
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    try:  # a failed start still leaves processes behind: stopped below too
        started = subprocess.run(
            [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(GCS_PORT),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(DASHBOARD_PORT), "--num-cpus", "2",
             "--dashboard-agent-listen-port", str(AGENT_PORT), "--dashboard-agent-grpc-port", str(AGENT_GRPC_PORT),
             "--runtime-env-agent-port", str(RUNTIME_ENV_PORT), "--metrics-export-port", str(METRICS_PORT),
             "--object-store-memory", "300000000", "--temp-dir", temp_dir, "--disable-usage-stats"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield {**env, "RAY_ADDRESS": f"http://127.0.0.1:{DASHBOARD_PORT}"}
    finally:
        stop_processes_mentioning(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(entrypoint: str, env: dict, submit_options: list[str] | None = None) -> list[dict]:
    """Submit the shell command ``entrypoint`` with the repository as working dir; return the JSON summaries it
    printed, in order. (``ray job submit`` quotes each word after ``--``: a command list goes through ``bash -c``.)"""
    for _ in range(60):  # the dashboard's job agent comes up a few seconds after `ray start` returns
        result = subprocess.run([RAY, "job", "submit", "--working-dir", ".", *(submit_options or []), "--",
                                 "bash", "-c", entrypoint],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in result.stderr:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_imm_job_submitted_without_path_options_keeps_its_results_in_the_results_folder(head_node, tmp_path):
    """No --run-dir, no --tracking-uri: outputs go to $KD_RESULTS_DIR (~/kd_results), not into Ray's temporary copy."""
    results = tmp_path / "kd_results"
    runtime_env = json.dumps({"env_vars": {"KD_RESULTS_DIR": str(results)}})
    summary, = _submit(f"{sys.executable} jobs/imm.py --synthetic-size 16 --epochs 1 --iterations 1 "
                       f"--baselines single --vocab-size 400 --json", head_node,
                       ["--runtime-env-json", runtime_env])
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == results / "runs" / "imm" and run_dir.name.startswith("raysubmit_")
    assert summary["tracking_uri"] == f"sqlite:///{results}/mlflow.db"
    assert set(summary["iterations_f1"]) == set(summary["test_f1"]) == {"sports", "medicine", "finance"}
    assert (run_dir / "summary.json").exists()
    assert (run_dir / "steps" / "theta-sports-1" / "model" / "model.safetensors").exists()
    runs = MlflowClient(summary["tracking_uri"]).search_runs(
        [MlflowClient(summary["tracking_uri"]).get_experiment_by_name("imm").experiment_id])
    assert summary["mlflow_run_id"] in {run.info.run_id for run in runs} and len(runs) > 1
    assert "_ray_pkg_" not in summary["run_dir"] + summary["tracking_uri"]


def test_a2d_mtdnn_and_students_jobs_run_unchanged_under_ray_job_submit(head_node, tmp_path):
    """One submission whose entrypoint runs the three jobs one after the other (one submission's start-up, not
    three): each is the same command a user submits."""
    (tmp_path / "mtdnn.yaml").write_text(
        "tasks:\n  - {name: sentiment, synthetic: sentiment, kind: classification, labels: [negative, positive], "
        "size: 60}\n  - {name: rating, synthetic: rating, kind: regression, teacher: false, size: 40}\n")
    (tmp_path / "students.yaml").write_text(
        "tasks:\n  - {name: sentiment, synthetic: sentiment, kind: classification, labels: [negative, positive], "
        "size: 60}\n")
    tracking = f"--tracking-uri sqlite:///{tmp_path}/mlflow.db --json"
    a2d, mtdnn, students = _submit(
        f"{sys.executable} jobs/a2d.py --synthetic-size 12 --teacher-epochs 1 --epochs 1 --vocab-size 400 "
        f"--no-baseline --run-dir {tmp_path}/a2d {tracking} && "
        f"{sys.executable} jobs/mtdnn.py --tasks {tmp_path}/mtdnn.yaml --members 2 --candidates 0 --teacher-epochs 1 "
        f"--teacher-fine-tune-epochs 1 --epochs 1 --fine-tune-epochs 0 --vocab-size 300 --no-baseline "
        f"--run-dir {tmp_path}/mtdnn {tracking} && "
        f"{sys.executable} jobs/students.py --tasks {tmp_path}/students.yaml --teacher-model tiny-bert "
        f"--teacher-epochs 1 --teacher-restarts 1 --epochs 1 --vocab-size 300 --word-vocab-size 200 "
        f"--speed-examples 8 --speed-repeats 1 --no-baseline --run-dir {tmp_path}/students {tracking}", head_node)
    assert a2d["run_dir"] == f"{tmp_path}/a2d" and len(a2d["members_f1"]) == 2
    assert (tmp_path / "a2d" / "steps" / "student" / "model" / "model.safetensors").exists()
    assert mtdnn["run_dir"] == f"{tmp_path}/mtdnn" and mtdnn["method"] == "mtdnn"
    assert mtdnn["with_teacher"] == ["sentiment"] and set(mtdnn["tasks"]) == {"sentiment", "rating"}
    assert (tmp_path / "mtdnn" / "steps" / "student" / "model" / "model.safetensors").exists()
    assert students["run_dir"] == f"{tmp_path}/students" and students["method"] == "students"
    assert set(students["models"]) == {"teacher", "layers", "scratch", "bilstm"}
    assert (tmp_path / "students" / "steps" / "bilstm" / "model" / "model.safetensors").exists()
    runs = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()])
    assert {a2d["mlflow_run_id"], mtdnn["mlflow_run_id"], students["mlflow_run_id"]} <= {r.info.run_id for r in runs}
