"""A job against a real `mlflow server` (HTTP tracking, artifacts proxied by the server), queried over HTTP."""

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from jobs.kd import KDJobConfig, run
from tests.helpers import job_tree, logged_model, logged_model_files, mlflow_tracking, running_mlflow_server, s3_server
from tuning.config import SweepConfig
from tuning.sweep import run_sweep

TINY = dict(synthetic_size=120, members=2, teacher_epochs=1, epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a SQLite backend; artifacts live where the *server* puts them."""
    root = tmp_path_factory.mktemp("server")
    with running_mlflow_server(root) as port:
        yield f"http://127.0.0.1:{port}", root


@pytest.mark.slow
def test_a_job_logs_its_run_tree_and_models_to_a_tracking_server(mlflow_server, ray_session, tmp_path):
    url, server_root = mlflow_server
    summary = run(KDJobConfig(**TINY, baseline=False, run_dir=str(tmp_path / "run"), tracking_uri=url,
                              experiment="served"))
    assert summary["tracking_uri"] == url

    client, parent, children = job_tree(url, summary["mlflow_run_id"])  # every query below goes over HTTP
    assert parent.info.status == "FINISHED" and parent.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {"summary.json", "summary_table.txt"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    downloaded = Path(client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path)))
    assert json.loads(downloaded.read_text())["models"] == summary["models"]
    assert {r.data.tags["kd.step"] for r in children} >= {"teacher-0", "teacher-1", "knowledge", "student"}
    student = next(r for r in children if r.data.tags["kd.step"] == "student")
    assert client.get_metric_history(student.info.run_id, "loss/kd")  # logged by the Ray worker, over HTTP
    assert "model/model.safetensors" in logged_model_files(client, student)
    assert list((server_root / "artifacts").rglob("model.safetensors"))  # proxied: stored by the server

    with mlflow_tracking(url):
        loaded = mlflow.pyfunc.load_model(f"models:/{logged_model(client, student).model_id}")
    answers = loaded.predict(pd.DataFrame({"text": ["a wonderful , moving film", "a dull and tedious mess"]}))
    assert set(answers["label"]) <= set(summary["task_definition"]["labels"]) and len(answers) == 2


@pytest.mark.slow
def test_a_sweep_logs_its_trials_to_a_tracking_server(mlflow_server, ray_session, tmp_path):
    """A team's set-up: the tracking server, and the sweep's run directory in an object store (a real S3 API)."""
    url, _ = mlflow_server
    before = os.environ.get("MLFLOW_TRACKING_URI")
    with s3_server(tmp_path) as s3:
        run_dir = s3.uri("sweeps/kd", credentials=True)
        summary = run_sweep(SweepConfig(method="kd", num_samples=2, max_concurrency=2, run_dir=run_dir,
                                        job={"synthetic_size": 120, "members": 1, "teacher_epochs": 1, "epochs": 2},
                                        tracking_uri=url, experiment="served-sweep"))
        stored = s3.keys("sweeps/kd")
    assert os.environ.get("MLFLOW_TRACKING_URI") == before  # Tune's callback set MLflow's global only for the sweep
    assert summary["tracking_uri"] == url and summary["trials"] == 2 and summary["failed"] == 0
    prefix = "kd-runs/sweeps/kd"
    redacted = s3.uri("sweeps/kd").replace("s3://", "s3://testing:***@")  # the summary names no credentials
    assert summary["run_dir"] == redacted and summary["best_model"] == redacted.replace("/kd?", "/kd/best?")
    assert {f"{prefix}/summary.json", f"{prefix}/trials.csv", f"{prefix}/best/model.safetensors",
            f"{prefix}/teachers/steps/teacher-0/model/model.safetensors"} <= set(stored)
    assert len([k for k in stored if k.endswith("/output/model.safetensors")]) == 2  # each trial's best epoch
    assert len([k for k in stored if k.endswith("teacher-0/model/model.safetensors")]) == 1  # trained once
    assert not [k for k in stored if ".partial" in k]  # (a trial stopped at its last report keeps its checkpoint)
    _, parent, children = job_tree(url, summary["mlflow_run_id"])  # over HTTP, from the trials' own processes
    assert parent.info.status == "FINISHED"
    trials = [r for r in children if r.data.tags.get("kd.role") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" and r.data.metrics for r in trials)
