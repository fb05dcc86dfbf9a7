"""jobs/kd.py on a real local Ray and a real MLflow store: the run tree, resume after a real SIGKILL, the CLI."""

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from jobs.kd import KDJobConfig, main, run
from kd_core.engine.prepare import build_workspace
from kd_core.io.cli import run_cli
from tests.helpers import (
    KD_TINY,
    free_port,
    help_text,
    job_tree,
    logged_model,
    logged_model_files,
    mlflow_tracking,
    plain_and_project_logits,
    s3_server,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
CLI_TINY = ["--synthetic-size", "240", "--members", "2", "--teacher-epochs", "2", "--epochs", "3",
            "--batch-size", "16"]
STEPS = {"teacher-0", "teacher-1", "knowledge-0", "knowledge-1", "knowledge", "student", "student-no-kd",
         "eval-teacher", "eval-student", "eval-student-no-kd"}


def test_kd_job_end_to_end_with_one_mlflow_run_per_step(kd_job):
    summary, uri = kd_job
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
    evaluation = next(r for r in children if r.data.tags["kd.step"] == "eval-student")
    assert evaluation.data.metrics["test/accuracy"] == summary["models"]["student"]["test"]
    trained = [r for r in children if r.data.tags["kd.step"] in ("teacher-0", "teacher-1", "student", "student-no-kd")]
    model = logged_model(client, student)  # every trained model is a logged model of its run
    assert all(logged_model(client, r).status == "READY" for r in trained)
    assert model.name == "student" and model.tags["kd.role"] == "student"
    assert "model/model.safetensors" in logged_model_files(client, student)
    versions = client.search_model_versions("name = 'kd-test.student'")  # --register-as: students only
    assert [(v.source, v.run_id) for v in versions] == [(model.artifact_location, student.info.run_id)]
    assert not client.search_model_versions("name = 'kd-test.teacher-0'")


def _test_split(summary):
    config = KDJobConfig(**KD_TINY)
    return build_workspace(config.data, config.teacher_model, config.student_model, summary["run_dir"]).examples("test")


def test_the_saved_student_classifies_in_plain_hugging_face_code_as_in_the_project(kd_job):
    summary, _ = kd_job
    assert set(summary["saved_models"]) == {"teacher/teacher-0", "teacher/teacher-1", "student/student",
                                            "baseline/student-no-kd"}
    texts = [f"the {noun} was {word}" for noun in ("film", "meal", "book", "show")
             for word in ("great", "awful", "fine", "boring", "wonderful")]
    plain, ours, id2label = plain_and_project_logits(Path(summary["saved_models"]["student/student"]), texts)
    assert id2label == {0: "negative", 1: "positive"}
    assert plain.shape == ours.shape == (20, 2) and abs(plain - ours).max() < 1e-4


def test_the_logged_student_is_a_pyfunc_that_scores_as_its_evaluation(kd_job):
    summary, uri = kd_job
    client, _, children = job_tree(uri, summary["mlflow_run_id"])
    model = logged_model(client, next(r for r in children if r.data.tags["kd.step"] == "student"))
    with mlflow_tracking(uri):
        loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    test = _test_split(summary)
    labels = summary["task_definition"]["labels"]
    predicted = loaded.predict(pd.DataFrame({"text": list(test["text_a"])}))
    assert list(predicted.columns) == ["label", "probability"] and len(predicted) == len(test)
    assert predicted["probability"].between(1 / len(labels), 1).all()
    accuracy = 100 * np.mean([labels.index(p) == gold for p, gold in zip(predicted["label"], test["label"])])
    assert accuracy == pytest.approx(summary["models"]["student"]["test"])  # the job's evaluation, through MLflow
    with pytest.raises(Exception, match="text"):
        loaded.predict(pd.DataFrame({"sentence": ["no text column"]}))


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_request(kd_job, tmp_path):
    summary, uri = kd_job
    client, _, children = job_tree(uri, summary["mlflow_run_id"])
    model = logged_model(client, next(r for r in children if r.data.tags["kd.step"] == "student"))
    texts = list(_test_split(summary)["text_a"])[:3]
    port = free_port()
    log = tmp_path / "serve.log"
    bin_dir = Path(sys.executable).parent  # as in an activated venv: the server runs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    with log.open("w") as out:
        server = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{model.model_id}",
                                   "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{url}/ping"), server, 180, log)
        request = urllib.request.Request(f"{url}/invocations", json.dumps({"dataframe_records": [
            {"text": t} for t in texts]}).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.loads(response.read())["predictions"]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    with mlflow_tracking(uri):
        local = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(pd.DataFrame({"text": texts}))
    assert [row["label"] for row in served] == list(local["label"])
    assert [row["probability"] for row in served] == pytest.approx(list(local["probability"]))


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_a_step_that_finished_as_its_driver_died_gets_its_mlflow_run_closed_on_resume(kd_job, ray_session, tmp_path):
    """The race of a driver killed between a step's result file and the end of its child run: on resume the
    step is reused (not run again) and its run is finished, with its metrics."""
    summary, uri = kd_job
    run_dir, store = tmp_path / "run", tmp_path / "mlflow.db"
    shutil.copytree(summary["run_dir"], run_dir)
    shutil.copy(uri.removeprefix("sqlite:///"), store)
    client = MlflowClient(f"sqlite:///{store}")
    parent = client.get_run(summary["mlflow_run_id"])
    cut = client.create_run(parent.info.experiment_id, tags={"mlflow.parentRunId": parent.info.run_id}).info.run_id
    state = json.loads((run_dir / "state.json").read_text())
    state["options"].update(run_dir=str(run_dir), tracking_uri=f"sqlite:///{store}")
    state["steps"]["eval-student"] = {"run_id": cut, "finished": False}  # RUNNING, no metrics: as the kill left it
    (run_dir / "state.json").write_text(json.dumps(state))
    (run_dir / "summary.json").unlink()

    resumed = run(KDJobConfig(**state["options"]), resume=True, quiet=True)
    assert resumed["models"] == summary["models"] and "eval-student" in resumed["reused_steps"]
    closed = client.get_run(cut)
    assert closed.info.status == "FINISHED" and closed.data.metrics["test/accuracy"] == summary["models"]["student"]["test"]


@pytest.mark.slow
def test_a_job_in_an_s3_run_dir_whose_driver_is_killed_resumes_to_the_uninterrupted_result(kd_job, ray_session,
                                                                                            tmp_path, capsys):
    """The run directory in a real S3 API (moto's server): every file goes through the store; the resumed job's
    new driver (this process) and workers start with empty staging folders, so its checkpoint and teachers come
    from S3. The credentials are in the URI: the test session's workers started without them (a job of its own
    forwards them from its environment: tests/test_node_loss.py)."""
    expected, _ = kd_job
    address = ray_session.get_runtime_context().gcs_address
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log = tmp_path / "killed.log"
    with s3_server(tmp_path) as s3:
        run_dir, prefix = s3.uri("runs/kd", credentials=True), "runs/kd"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "jobs/kd.py", *CLI_TINY, "--run-dir", run_dir,
                                     "--tracking-uri", uri, "--address", address],
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            # Kill the driver while the student trains (its first epoch's checkpoint is in the store).
            wait_for(lambda: f"kd-runs/{prefix}/steps/student/checkpoint.latest" in s3.keys(prefix), proc, 300, log)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        before = s3.keys(prefix)
        assert f"kd-runs/{prefix}/summary.json" not in before
        done_before = {key: stamp for key, stamp in before.items() if key.endswith("/result.json")}
        assert {key.split("/")[-2] for key in done_before} >= {"teacher-0", "teacher-1", "knowledge"}
        parent_id = json.loads(s3.fs.open_input_stream(f"kd-runs/{prefix}/state.json").read())["parent_run_id"]

        # the driver's progress: a line per step started, with its stage and worker (a log is not a terminal)
        text = log.read_text()
        assert "] stage 1 of 5 | started teacher-0 @ w" in text and "] stage 1 of 5 | started teacher-1 @ w" in text
        assert run_cli(main, ["--resume", run_dir, "--tau", "3"]) == 2  # state.json read from S3
        refused = capsys.readouterr().err
        assert "--tau" in refused and "2.0" in refused
        assert run_cli(main, ["--resume", run_dir, "--members", "2", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        after = s3.keys(prefix)
        student = json.loads(s3.fs.open_input_stream(f"kd-runs/{prefix}/steps/student/result.json").read())
    assert summary["models"] == expected["models"]  # the same numbers as the uninterrupted job on a local disk
    assert summary["run_dir"] == s3.uri(prefix).replace("s3://", "s3://testing:***@")  # its credentials redacted
    assert student["model_dir"] == "steps/student/model"  # relative to the run dir: a copied run dir is its own
    assert set(summary["reused_steps"]) == {key.split("/")[-2] for key in done_before}
    assert all(after[key] == stamp for key, stamp in done_before.items())  # nothing finished was written again
    assert student["resumed_from_step"] > 0  # from the checkpoint in S3
    assert f"kd-runs/{prefix}/summary.json" in after and f"kd-runs/{prefix}/steps/student/model/model.safetensors" in after
    assert not [key for key in after if ".partial" in key or "checkpoint" in key]  # no temporary or spent objects
    assert summary["mlflow_run_id"] == parent_id
    _, parent, children = job_tree(uri, parent_id)
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.tags["kd.step"] for r in children) == sorted(STEPS)


def test_help_and_check_without_cluster_work(tmp_path, monkeypatch, capsys):
    text = help_text(main)
    assert "--teacher-model" in text and "--lr" in text
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


@pytest.mark.slow
def test_a_full_run_directory_ends_the_job_with_one_line_and_resume_finishes_it_after(tmp_path, ray_session, capsys):
    """A run directory on a 1 MiB file system fills up mid-job: one line and exit 2, no finished-looking
    half-written file; grown to 64 MiB, ``--resume`` finishes the job."""
    disk = tmp_path / "disk"
    disk.mkdir()
    small = ["--synthetic-size", "160", "--members", "1", "--teacher-epochs", "1", "--epochs", "1", "--batch-size", "16",
             "--no-baseline"]
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        run_dir, uri = disk / "run", f"sqlite:///{tmp_path}/mlflow.db"
        address = ray_session.get_runtime_context().gcs_address
        full = subprocess.run([sys.executable, "jobs/kd.py", *small, "--run-dir", str(run_dir), "--tracking-uri", uri,
                               "--address", address], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert full.returncode == 2, full.stderr[-3000:]
        last = full.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {run_dir}/steps/") and "No space left on device" in last
        assert "Traceback" not in full.stderr
        assert not (run_dir / "summary.json").exists()
        for result in run_dir.rglob("result.json"):
            json.loads(result.read_text())  # every finished-looking file is whole
        for checkpoint in run_dir.rglob("checkpoint"):
            assert {"state.json", "model.safetensors"} <= {p.name for p in checkpoint.iterdir()}
        parent_id = json.loads((run_dir / "state.json").read_text())["parent_run_id"]
        _, parent, _ = job_tree(uri, parent_id)
        assert parent.info.status == "FAILED"

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert run_cli(main, ["--resume", str(run_dir), "--json"]) == 0  # the new driver: this process
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["mlflow_run_id"] == parent_id
        _, parent, children = job_tree(uri, parent_id)
        assert parent.info.status == "FINISHED"
        assert sorted(r.data.tags["kd.step"] for r in children) == ["eval-student", "eval-teacher", "knowledge",
                                                                     "knowledge-0", "student", "teacher-0"]
        assert all(r.info.status == "FINISHED" for r in children)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
