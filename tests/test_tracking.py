"""cluster.tracking against a real MLflow SQLite store (one per module; one experiment per test)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from cluster.tracking import (
    JOB_ID_TAG,
    RunRef,
    Tracker,
    bar_chart,
    default_tracking_uri,
    flatten_params,
    heatmap,
    line_chart,
    mlflow_name,
    resolve_tracking_uri,
)

PARENT = "mlflow.parentRunId"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A SQLite store created once, from this process, before any test or worker writes to it."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    Tracker(f"sqlite:///{db}").experiment_id("warm-up")
    return db


@pytest.fixture
def tracker(store) -> Tracker:
    return Tracker(f"sqlite:///{store}")


@pytest.fixture
def experiment(request) -> str:
    return request.node.name


def _status(tracker: Tracker, run: RunRef) -> str:
    return tracker.client.get_run(run.run_id).info.status


def test_job_tree_is_nested_and_queryable_by_job_id(tracker, experiment):
    job = tracker.start_run(experiment, "imm-job", tags={"kind": "imm"}, params={"domains": 2})
    iteration = tracker.start_child(job, "iteration-0")
    domains = [tracker.start_child(iteration, f"domain-{d}", params={"domain": d}) for d in ("news", "bio")]
    other_job = tracker.start_run(experiment, "other-job")

    assert job.is_root and job.job_id == job.run_id
    assert {r.job_id for r in (iteration, *domains)} == {job.run_id}
    assert not iteration.is_root
    runs = {r.info.run_id: r for r in tracker.client.search_runs([job.experiment_id], f"tags.{JOB_ID_TAG} = '{job.run_id}'")}
    assert set(runs) == {job.run_id, iteration.run_id, *(d.run_id for d in domains)}
    assert PARENT not in runs[job.run_id].data.tags
    assert runs[job.run_id].data.tags["kind"] == "imm"
    assert runs[job.run_id].data.params == {"domains": "2"}
    assert runs[iteration.run_id].data.tags[PARENT] == job.run_id
    assert all(runs[d.run_id].data.tags[PARENT] == iteration.run_id for d in domains)
    assert runs[domains[1].run_id].data.params == {"domain": "bio"}
    assert runs[domains[0].run_id].info.run_name == "domain-news"
    assert tracker.client.get_run(other_job.run_id).data.tags[JOB_ID_TAG] == other_job.run_id
    assert tracker.client.get_experiment(job.experiment_id).name == experiment
    assert tracker.experiment_id(experiment) == job.experiment_id


def test_params_are_flattened_stringified_truncated_and_batched(tracker, experiment):
    @dataclasses.dataclass
    class Train:
        lr: float = 5e-4
        epochs: int = 2

    run = tracker.start_run(experiment, "params")
    many = {f"p{i}": i for i in range(150)}  # more than MLflow's 100 params per batch
    tracker.log_params(run, {"train": Train(), "kd": {"tau": 2.0, "loss": {"ce": 0.5}}, "layers": [1, 2],
                             "long": "x" * 10_000, "bad:key": None, **many})

    params = tracker.client.get_run(run.run_id).data.params
    assert params["train.lr"] == "0.0005" and params["train.epochs"] == "2"
    assert params["kd.tau"] == "2.0" and params["kd.loss.ce"] == "0.5"
    assert params["layers"] == "[1, 2]"
    assert params["bad_key"] == "None"
    assert 0 < len(params["long"]) < 10_000 and set(params["long"]) == {"x"}
    assert all(params[f"p{i}"] == str(i) for i in range(150))


def test_flatten_params_and_metric_names():
    assert flatten_params({"a": {"b": {"c": 1}}, "d": "x"}) == {"a.b.c": "1", "d": "x"}
    assert mlflow_name("loss/ce") == "loss/ce"
    assert mlflow_name("/f1//news/./x y:z") == "f1/news/x y_z"
    with pytest.raises(ValueError):
        mlflow_name("//")


def test_metrics_callback_logs_history_at_the_training_steps(tracker, experiment):
    run = tracker.start_run(experiment, "train")
    every_step = tracker.metrics_callback(run, prefix="train/")
    every_20 = tracker.metrics_callback(run, prefix="sparse/", every=20)
    for step in (10, 20, 30):
        metrics = {"step": step, "epoch": step / 20, "lr": 1e-3 / step, "loss": 3.0 - step / 10,
                   "loss/ce": 1.0 + step, "weight/ce": 0.5}
        every_step(metrics)
        every_20(metrics)

    history = tracker.client.get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(10, 2.0), (20, 1.0), (30, 0.0)]
    assert [m.step for m in tracker.client.get_metric_history(run.run_id, "train/loss/ce")] == [10, 20, 30]
    assert [m.value for m in tracker.client.get_metric_history(run.run_id, "train/epoch")] == [0.5, 1.0, 1.5]
    assert [m.step for m in tracker.client.get_metric_history(run.run_id, "sparse/loss")] == [20]
    metrics = tracker.client.get_run(run.run_id).data.metrics
    assert "train/step" not in metrics and "step" not in metrics
    assert metrics["train/weight/ce"] == 0.5
    with pytest.raises(ValueError):
        tracker.metrics_callback(run, every=0)


def test_log_metrics_at_a_step_and_by_default_at_zero(tracker, experiment):
    run = tracker.start_run(experiment, "eval")
    tracker.log_metrics(run, {"f1/news": 71.5, "em/news": 60})
    tracker.log_metrics(run, {"f1/news": 75.0}, step=3)
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run.run_id, "f1/news")] == [(0, 71.5), (3, 75.0)]
    assert tracker.client.get_run(run.run_id).data.metrics["em/news"] == 60.0


def test_artifacts_directory_figure_dict_text(tracker, experiment, tmp_path):
    run = tracker.start_run(experiment, "student")
    student = tmp_path / "student"  # save_pretrained-style folder
    student.mkdir()
    (student / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (student / "model.safetensors").write_bytes(b"\0" * 128)
    (tmp_path / "teacher_logits.parquet").write_bytes(b"PAR1")
    tracker.log_artifacts(run, student, "student")
    tracker.log_artifact(run, tmp_path / "teacher_logits.parquet", "data")
    tracker.log_figure(run, bar_chart({"member-0": 70.1, "ensemble": 74.0, "student": 72.3}, "F1", "F1"), "plots/f1.png")
    tracker.log_dict(run, {"f1": {"news": 71.5}}, "eval/summary.json")
    tracker.log_dict(run, {"tau": 2.0}, "config.yaml")
    tracker.log_text(run, "hello", "notes.txt")

    listed = lambda path=None: sorted(a.path for a in tracker.client.list_artifacts(run.run_id, path))  # noqa: E731
    assert listed() == ["config.yaml", "data", "eval", "notes.txt", "plots", "student"]
    assert listed("student") == ["student/config.json", "student/model.safetensors"]
    assert listed("data") == ["data/teacher_logits.parquet"]
    out = Path(tracker.client.download_artifacts(run.run_id, "", str(tmp_path / "out")))
    assert (out / "plots" / "f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "eval" / "summary.json").read_text()) == {"f1": {"news": 71.5}}
    assert yaml.safe_load((out / "config.yaml").read_text()) == {"tau": 2.0}
    assert (out / "notes.txt").read_text() == "hello"
    assert (out / "student" / "model.safetensors").stat().st_size == 128


def test_experiment_artifacts_live_beside_the_database(tracker, experiment, store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as in a Tune trial: another working directory
    run = tracker.start_run(experiment, "elsewhere")
    tracker.log_text(run, "x", "x.txt")
    artifact_uri = tracker.client.get_run(run.run_id).info.artifact_uri
    assert artifact_uri.startswith((store.parent / "mlruns").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_charts_have_the_expected_content():
    bars = bar_chart({"a": 1.0, "b": 2.5}, "F1 of members", "F1")
    assert [p.get_height() for p in bars.axes[0].patches] == [1.0, 2.5]
    assert bars.axes[0].get_title() == "F1 of members"

    similarity = heatmap([[1.0, 0.2, 0.1], [0.2, 1.0, 0.4], [0.1, 0.4, 1.0]], ["news", "bio", "law"], "Similarity")
    ax = similarity.axes[0]
    assert [t.get_text() for t in ax.texts][:3] == ["1.00", "0.20", "0.10"] and len(ax.texts) == 9
    assert [t.get_text() for t in ax.get_xticklabels()] == ["news", "bio", "law"]
    with pytest.raises(ValueError):
        heatmap([[1.0, 0.5]], ["a", "b"], "bad")

    lines = line_chart({"news": [60, 65, 70], "bio": [50, 58, 61]}, "iteration", "F1", "F1 per domain", x=[1, 2, 3])
    ax = lines.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["news", "bio"]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3]
    assert list(line_chart({"a": [1, 2]}, "i", "y", "t").axes[0].get_lines()[0].get_xdata()) == [0, 1]


def test_finish_children_closes_running_descendants_only(tracker, experiment):
    job = tracker.start_run(experiment, "job")
    running = tracker.start_child(job, "trial-running")
    done = tracker.start_child(job, "trial-done")
    orphan = tracker.start_child(done, "grandchild-running")
    tracker.end_run(done)
    other = tracker.start_run(experiment, "unrelated")

    closed = tracker.finish_children(job)

    assert sorted(closed) == sorted([running.run_id, orphan.run_id])
    assert _status(tracker, running) == "KILLED" and _status(tracker, orphan) == "KILLED"
    assert _status(tracker, done) == "FINISHED"
    assert _status(tracker, job) == "RUNNING" and _status(tracker, other) == "RUNNING"
    assert tracker.finish_children(job) == []
    with pytest.raises(ValueError):
        tracker.end_run(job, "RUNNING")


def test_scope_ends_finished_on_success_and_failed_on_exception(tracker, experiment):
    with tracker.scope(tracker.start_run(experiment, "ok")) as ok:
        tracker.log_metrics(ok, {"x": 1.0})
    assert _status(tracker, ok) == "FINISHED"

    failing = tracker.start_run(experiment, "failing")
    left_open = tracker.start_child(failing, "child")
    with pytest.raises(RuntimeError, match="boom"):
        with tracker.scope(failing):
            raise RuntimeError("boom")
    assert _status(tracker, failing) == "FAILED"
    assert _status(tracker, left_open) == "KILLED"


def test_resolve_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("sqlite:///runs/mlflow.db") == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    assert resolve_tracking_uri("store.db") == f"sqlite:///{tmp_path.resolve()}/store.db"
    assert resolve_tracking_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert resolve_tracking_uri(None) == default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/env.db"
    for refused in ("mlruns", "file:///tmp/mlruns", "sqlite:///:memory:", "sqlite://"):
        with pytest.raises(ValueError):
            resolve_tracking_uri(refused)


def test_refs_and_trackers_pickle_and_stay_in_their_store(tracker, experiment):
    run = tracker.start_run(experiment, "pickled")
    assert pickle.loads(pickle.dumps(run)) == run
    copy = pickle.loads(pickle.dumps(tracker))
    assert copy.tracking_uri == tracker.tracking_uri
    copy.log_metrics(run, {"m": 1.0})
    assert tracker.client.get_run(run.run_id).data.metrics == {"m": 1.0}
    with pytest.raises(ValueError, match="not in"):
        tracker.log_metrics(dataclasses.replace(run, tracking_uri="sqlite:////elsewhere/mlflow.db"), {"m": 2.0})


_WORKER = """
import sys
from cluster.tracking import RunRef, Tracker, line_chart

parent, name, steps = RunRef(*sys.argv[1:5]), sys.argv[5], int(sys.argv[6])
tracker = Tracker(parent.tracking_uri)
with tracker.scope(tracker.start_child(parent, name, params={"worker": name})) as run:
    callback = tracker.metrics_callback(run, prefix="train/")
    for step in range(1, steps + 1):
        callback({"step": step, "loss": 1.0 / step, "loss/ce": 2.0 / step})
    tracker.log_figure(run, line_chart({name: [1.0, 2.0]}, "i", "f1", name), "plots/f1.png")
print(run.run_id)
"""


@pytest.mark.slow
def test_two_processes_log_children_concurrently(tracker, experiment):
    job = tracker.start_run(experiment, "concurrent")
    steps = 30
    root = str(Path(__file__).resolve().parents[1])
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, *dataclasses.astuple(job), f"worker-{i}", str(steps)],
                         cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    child_ids = [out.strip().splitlines()[-1] for out, _ in outputs]

    client = MlflowClient(tracker.tracking_uri)
    children = client.search_runs([job.experiment_id], f"tags.`{PARENT}` = '{job.run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(child_ids)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags[JOB_ID_TAG] == job.run_id
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train/loss/ce")] == list(range(1, steps + 1))
        assert [a.path for a in client.list_artifacts(child.info.run_id, "plots")] == ["plots/f1.png"]
    assert {r.data.params["worker"] for r in children} == {"worker-0", "worker-1"}
