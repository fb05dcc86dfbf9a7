"""Secrets kept: credentials reach workers through no log or file, and are redacted wherever a job prints, saves or
logs a run directory or tracking URI; a Ray address where nothing listens is one line, not Ray's retries."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

import jobs.kd
from cluster.job_cli import ui_hint
from cluster.job_options import JobState, resume_options
from cluster.secrets import forget, publish, receive, worker_env
from cluster.tracking import flatten_params
from kd_core.io.cli import run_cli
from kd_core.io.errors import ConfigError, StorageError
from kd_core.io.redaction import holds_credentials, redact
from kd_core.io.run_store import RunStore
from tests.helpers import running_mlflow_server, stop_processes_mentioning

ROOT = Path(__file__).resolve().parents[1]
#: Fake credentials in the job's environment: none may appear in any file the job, Ray or MLflow writes.
SECRETS = {"AWS_ACCESS_KEY_ID": "fake-keyid-77ab0e", "AWS_SECRET_ACCESS_KEY": "fake-secret-9f3c11d4",
           "AWS_SESSION_TOKEN": "fake-session-4a8e2c", "MLFLOW_TRACKING_USERNAME": "fake-user-3b1d7a",
           "MLFLOW_TRACKING_PASSWORD": "fake-pw-5e2d90"}
URI_PASSWORD = "fake-uri-pw-71c2e8"  # in the tracking URI itself: http://alice:<this>@host:port

REDACTED = [  # (text, what redact makes of it): written by hand
    ("s3://AKIAFAKE:wJal/rX+Yz@bucket/run?endpoint_override=127.0.0.1:9000&scheme=http",
     "s3://AKIAFAKE:***@bucket/run?endpoint_override=127.0.0.1:9000&scheme=http"),
    ("error: s3://KEY:SECRET@bucket/run: run directory: refused", "error: s3://KEY:***@bucket/run: run directory: refused"),
    ("https://alice:pa55@mlflow.example:5000/#/experiments/1", "https://alice:***@mlflow.example:5000/#/experiments/1"),
    ("postgresql://kd:pw@db:5432/mlflow", "postgresql://kd:***@db:5432/mlflow"),
    ("https://ghp_abc123@github.com/org/repo", "https://***@github.com/org/repo"),
    ("gs://ya29.token@bucket/run", "gs://***@bucket/run"),
    ("s3://bucket/run?access_key=AK&secret_key=SK&session_token=ST&region=eu-west-1",
     "s3://bucket/run?access_key=***&secret_key=***&session_token=***&region=eu-west-1"),
    ("http://h/api?password=p;token=t&page=2", "http://h/api?password=***;token=***&page=2"),
    ("made with 's3://K:S@b/r', not 's3://K:T@b/r'", "made with 's3://K:***@b/r', not 's3://K:***@b/r'"),
    # nothing to take out
    ("sqlite:////tmp/runs/mlflow.db", "sqlite:////tmp/runs/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("10.0.0.5:6379", "10.0.0.5:6379"),
    ("s3://bucket/models@v2?region=x", "s3://bucket/models@v2?region=x"),
    ("ssh://git@github.com/org/repo", "ssh://git@github.com/org/repo"),  # a user name, not a token, for ssh
]


@pytest.mark.parametrize("text, expected", REDACTED, ids=[t for t, _ in REDACTED])
def test_redact_takes_out_passwords_tokens_and_secret_query_values(text, expected):
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent: a saved form stays what it is


def test_error_lines_params_and_the_ui_hint_name_no_credentials():
    err = StorageError("s3://KEY:fake-secret@bucket/run", "write",
                       "the store refused: cannot write s3://KEY:fake-secret@bucket/run/state.json?token=fake-t")
    expected = ("s3://KEY:***@bucket/run: write: the store refused: cannot write "
                "s3://KEY:***@bucket/run/state.json?token=***")
    assert str(err) == expected
    assert str(pickle.loads(pickle.dumps(err))) == expected  # as it reaches the driver from a Ray worker
    assert flatten_params({"job": {"run_dir": "s3://KEY:fake-secret@bucket/run"}}) == {"job.run_dir":
                                                                                       "s3://KEY:***@bucket/run"}
    assert ui_hint("https://alice:fake-pw@mlflow.example", "3", "abc") == \
        "https://alice:***@mlflow.example/#/experiments/3/runs/abc?workflowType=machine_learning"


def test_credentials_go_apart_from_the_plain_settings():
    environ = {**SECRETS, "HF_HUB_OFFLINE": "1", "AWS_REGION": "eu-west-1", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
               "HOME": "/root"}
    names = ("HF_HUB_OFFLINE", "AWS_REGION", "GOOGLE_APPLICATION_CREDENTIALS")
    plain, secret = worker_env(environ, names, "sqlite:////tmp/m.db")
    assert plain == {"HF_HUB_OFFLINE": "1", "AWS_REGION": "eu-west-1", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
                     "MLFLOW_TRACKING_URI": "sqlite:////tmp/m.db"}
    assert secret == SECRETS
    plain, secret = worker_env(environ, names, "https://alice:pw@mlflow.example")
    assert "MLFLOW_TRACKING_URI" not in plain and secret["MLFLOW_TRACKING_URI"] == "https://alice:pw@mlflow.example"
    assert holds_credentials("https://alice:***@mlflow.example") and not holds_credentials("http://127.0.0.1:5000")


@ray.remote(max_calls=1)  # its worker process exits after the call: no test session worker keeps the fake secrets
def _received(names: list[str]) -> dict[str, str | None]:
    receive()
    return {name: os.environ.get(name) for name in names}


def test_a_worker_receives_the_secrets_its_driver_published(ray_session):
    """The channel itself, on the test session's cluster (whose workers were started without these variables)."""
    names = ["KD_TEST_SECRET_A", "KD_TEST_SECRET_B"]
    assert ray.get(_received.remote(names)) == {name: None for name in names}
    publish({"KD_TEST_SECRET_A": "fake-a-1c9e", "KD_TEST_SECRET_B": "fake-b-77d0"})
    try:
        assert ray.get(_received.remote(names)) == {"KD_TEST_SECRET_A": "fake-a-1c9e", "KD_TEST_SECRET_B": "fake-b-77d0"}
    finally:
        forget()
    assert ray.get(_received.remote(names)) == {name: None for name in names}  # gone once the driver forgets them


def test_an_s3_run_dir_with_credentials_is_refused_without_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    uri = "s3://AKIAFAKE:fake-secret-9f3c11d4@bucket/run?colour=blue&secret_key=fake-query-2b7f"
    assert run_cli(jobs.kd.main, ["--run-dir", uri, "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: s3://AKIAFAKE:***@bucket/run?colour=blue&secret_key=***: run directory: not a file "
                          "system URI pyarrow can open"), err
    assert "fake-secret" not in err and "fake-query" not in err


def test_a_resumed_job_takes_a_redacted_tracking_uri_again_from_the_option_or_the_environment(tmp_path, monkeypatch):
    real = "https://alice:fake-pw-5e2d90@mlflow.example"
    store = RunStore(str(tmp_path / "run"))
    store.local_root.mkdir(parents=True)
    JobState("kd", {"tracking_uri": real, "tau": 2.0, "run_dir": str(tmp_path / "run")}).save(store)
    saved = json.loads((tmp_path / "run" / "state.json").read_text())["options"]
    assert saved["tracking_uri"] == "https://alice:***@mlflow.example"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=r"--tracking-uri: the run was made with 'https://alice:\*\*\*@mlflow"
                                          r"\.example', whose credentials are not saved: give --tracking-uri again"):
        resume_options(tmp_path / "run", "kd", {})
    assert resume_options(tmp_path / "run", "kd", {"tracking_uri": real})["tracking_uri"] == real
    with pytest.raises(ConfigError, match="--tracking-uri: the run was made with"):  # another server is refused
        resume_options(tmp_path / "run", "kd", {"tracking_uri": "https://alice:pw@elsewhere.example"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", real)
    assert resume_options(tmp_path / "run", "kd", {})["tracking_uri"] == real


@pytest.mark.parametrize("variable", [False, True], ids=["--address", "RAY_ADDRESS"])
def test_a_ray_address_where_nothing_listens_is_one_line_within_seconds(variable, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if variable:
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    started = time.monotonic()
    assert run_cli(jobs.kd.main, [] if variable else ["--address", "127.0.0.1:1"]) == 2
    elapsed = time.monotonic() - started
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    source = "RAY_ADDRESS" if variable else "--address"
    assert errors == [f"error: 127.0.0.1:1: {source}: no Ray cluster answers there (Connection refused, waited at most "
                      "5 s); is the cluster up and the port open from here?"], errors
    assert elapsed < 30, elapsed
    assert not Path("runs").exists() and not Path("mlflow.db").exists()


@pytest.mark.parametrize("address, expected", [
    ("http://127.0.0.1:8265", "error: http://127.0.0.1:8265: --address: an http address is a dashboard's (for `ray "
                              "job submit`); give the head's GCS address host:6379, or ray://host:10001 for Ray Client"),
    ("head-node", "error: head-node: --address: expected host:port (the GCS address, e.g. 10.0.0.5:6379) or "
                  "ray://host:port"),
])
def test_an_address_that_is_no_ray_address_is_refused(address, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(jobs.kd.main, ["--address", address]) == 2
    assert capsys.readouterr().err.strip() == expected


def _files_holding(folder: Path, secrets: list[str]) -> dict[str, list[str]]:
    """Every file under ``folder`` whose bytes hold one of ``secrets``, with the ones it holds."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            held = [s for s in secrets if s.encode() in data]
            if held:
                found[str(path)] = held
    return found


@pytest.mark.slow
def test_a_job_writes_its_credentials_to_no_log_or_file(tmp_path):
    """A real job (its own local Ray cluster, in a Ray temp dir of its own) with credentials in its environment and in
    its tracking URI (a real `mlflow server`): none of them is in the Ray session's files (logs included), the run
    directory, the MLflow server's store or artifacts, or what the job printed; the redacted URI is what it saved."""
    server_root = tmp_path / "server"
    server_root.mkdir()
    with running_mlflow_server(server_root) as port:
        ray_tmp = Path(tempfile.mkdtemp(prefix="kdsec", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
        uri = f"http://alice:{URI_PASSWORD}@127.0.0.1:{port}"
        env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}, **SECRETS,
               "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled"}
        cli = ["--synthetic-size", "120", "--members", "1", "--teacher-epochs", "1", "--epochs", "1", "--no-baseline"]
        try:
            done = subprocess.run([sys.executable, "jobs/kd.py", *cli, "--run-dir", str(tmp_path / "run"),
                                   "--tracking-uri", uri, "--quiet", "--json"], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            secrets = [*SECRETS.values(), URI_PASSWORD]
            sessions = list((ray_tmp / "ray").glob("session_2*"))  # (and the link session_latest)
            assert len(sessions) == 1, sessions
            agent_log = (sessions[0] / "logs" / "runtime_env_agent.log").read_text()
            assert '"HF_HUB_OFFLINE": "1"' in agent_log  # where Ray writes a job's env vars: the plain ones are there
            for folder in (sessions[0], tmp_path / "run"):
                assert _files_holding(folder, secrets) == {}, folder
            # MLflow records the user name as each run's user (its mlflow.user tag), on purpose: not a secret there
            assert _files_holding(server_root, [s for s in secrets if s != SECRETS["MLFLOW_TRACKING_USERNAME"]]) == {}
            assert not [s for s in secrets if s in done.stdout + done.stderr]
        finally:
            stop_processes_mentioning(str(ray_tmp))  # the job's cluster, were anything of it left
            shutil.rmtree(ray_tmp, ignore_errors=True)
    shown = f"http://alice:***@127.0.0.1:{port}"
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["tracking_uri"] == shown and f"MLflow run {summary['mlflow_run_id']} in {shown}" in done.stdout
    assert json.loads((tmp_path / "run" / "state.json").read_text())["options"]["tracking_uri"] == shown
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["tracking_uri"] == shown
    run = MlflowClient(f"sqlite:///{server_root}/server.db").get_run(summary["mlflow_run_id"])  # the server's store
    assert run.data.params["tracking_uri"] == shown
