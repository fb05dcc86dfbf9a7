"""The A2D job end to end on a real local Ray and a real MLflow store, and its command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from transformers import AutoModelForQuestionAnswering

from cluster.a2d import A2DJobConfig, run_a2d
from jobs.a2d import main
from kd_core.cli import run_cli
from kd_core.data.synthetic import generate
from kd_core.knowledge.span import knowledge_metadata
from kd_core.knowledge.table import read_knowledge

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(synthetic_per_domain=16, teacher_epochs=1, epochs=1, vocab_size=500, members=2, max_concurrency=2)


def write_squad(path: Path, seed: int) -> Path:
    """Synthetic examples written as a SQuAD v1.1 file (an extra evaluation set)."""
    ds = generate(n_per_domain=4, seed=seed)
    paragraphs = [{"context": ex["context"], "qas": [{"id": ex["id"], "question": ex["question"], "answers": [
        {"text": t, "answer_start": s} for t, s in zip(ex["answers"]["text"], ex["answers"]["answer_start"])]}]}
        for ex in ds]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "extra", "paragraphs": paragraphs}]}))
    return path


def test_a2d_job_end_to_end_with_mlflow_tree(ray_session, tmp_path):
    extra = write_squad(tmp_path / "addsent.json", seed=9)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = A2DJobConfig(**TINY, eval=(str(extra),), run_dir=str(tmp_path / "run"), tracking_uri=uri)
    summary = run_a2d(config)

    assert len(summary["members_f1"]) == 2
    for key in ("ensemble_f1", "student_f1", "ensemble_infer_s", "student_infer_s", "speedup",
                "knowledge_bytes_per_feature", "mlflow_run_id", "tracking_uri", "run_dir"):
        assert summary[key] is not None
    assert set(summary["eval"]["addsent.json"]) == {"ensemble", "student"}
    run_dir = Path(summary["run_dir"])
    assert knowledge_metadata(read_knowledge(run_dir / "knowledge.parquet"))["members"] == 2
    assert AutoModelForQuestionAnswering.from_pretrained(run_dir / "student").config.num_hidden_layers == 1

    client = MlflowClient(uri)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["tau"] == "2.0" and parent.data.params["members"] == "2"
    assert parent.data.metrics["student_f1"] == pytest.approx(summary["student_f1"])
    tree = client.search_runs([parent.info.experiment_id], f"tags.kd_job_id = '{parent.info.run_id}'")
    names = sorted(r.info.run_name for r in tree)
    assert names == ["a2d", "member-0", "member-1", "student"]
    assert all(r.info.status == "FINISHED" for r in tree)
    children = [r for r in tree if r.info.run_id != parent.info.run_id]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    student = next(r for r in children if r.info.run_name == "student")
    assert len(client.get_metric_history(student.info.run_id, "loss/kd")) >= 1  # per-step metrics from Ray Train
    assert "student" in [a.path for a in client.list_artifacts(student.info.run_id)]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"plots", "speed_table.json"}


def test_check_validates_without_cluster_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, ["--synthetic-per-domain", "8", "--members", "3", "--check"]) == 0
    assert "ok" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--members", "0"], "a2d: members: must be >= 1"),
    (["--tau", "-2"], "a2d: tau: must be > 0"),
    (["--max-concurrency", "0"], "a2d: max_concurrency"),
    (["--eval", "missing.json"], "missing.json"),
])
def test_bad_options_exit_2_before_cluster_work(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, ["--synthetic-per-domain", "8", *args]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0]
    assert stderr.strip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_help_lists_the_contract_options():
    result = subprocess.run([sys.executable, str(ROOT / "jobs" / "a2d.py"), "--help"], capture_output=True, text=True)
    for option in ("--train", "--dev", "--eval", "--teacher-model", "--student-model", "--members", "--tau", "--gamma",
                   "--delta", "--top-k", "--epochs", "--seed", "--student-workers", "--run-dir", "--tracking-uri",
                   "--max-concurrency", "--no-kd", "--check", "--json", "--config"):
        assert option in result.stdout
