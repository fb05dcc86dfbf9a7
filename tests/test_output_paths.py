"""Relative output paths: under the working directory, or a durable results folder in a `ray job submit` job."""

import json
from pathlib import Path

import pytest

from cluster.output_paths import job_run_dir, output_path, results_root, submission_id
from cluster.tracking import default_tracking_uri, resolve_tracking_uri


@pytest.fixture
def submitted(monkeypatch, tmp_path):
    """This process looks like the driver of submitted job raysubmit_abc, results going to tmp_path/results."""
    job_config = {"runtime_env": {}, "metadata": {"job_submission_id": "raysubmit_abc", "job_name": "raysubmit_abc"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job_config))
    monkeypatch.setenv("KD_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "_ray_pkg_x").mkdir()
    monkeypatch.chdir(tmp_path / "_ray_pkg_x")
    return tmp_path / "results"


def test_outside_a_submitted_job_relative_outputs_stay_under_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert submission_id() is None
    assert job_run_dir("runs/imm", is_default=True) == str(tmp_path.resolve() / "runs" / "imm")
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_a_submitted_job_writes_relative_outputs_to_the_results_folder(submitted, tmp_path):
    assert submission_id() == "raysubmit_abc" and results_root() == submitted.resolve()
    results = submitted.resolve()
    assert job_run_dir("runs/imm", is_default=True) == str(results / "runs" / "imm" / "raysubmit_abc")
    assert job_run_dir("runs/mine", is_default=False) == str(results / "runs" / "mine")
    assert job_run_dir(str(tmp_path / "abs"), is_default=False) == str(tmp_path / "abs")
    assert job_run_dir("s3://bucket/runs/imm?region=eu-west-1", is_default=False) == \
        "s3://bucket/runs/imm?region=eu-west-1"  # a store's URI is durable already: kept as given
    assert output_path("~/x") == Path("~/x").expanduser()
    assert default_tracking_uri() == resolve_tracking_uri(None) == f"sqlite:///{results}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///team.db") == f"sqlite:///{results}/team.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_mlflow_tracking_uri_set_for_a_submitted_job_still_wins(submitted, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert resolve_tracking_uri(None) == "http://mlflow.internal:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///shared.db")
    assert resolve_tracking_uri(None) == f"sqlite:///{submitted.resolve()}/shared.db"


def test_a_malformed_ray_job_config_is_not_a_submitted_job(monkeypatch):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "not json")
    assert submission_id() is None
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {}}))
    assert submission_id() is None
