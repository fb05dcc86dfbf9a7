"""jobs/a2d.py on a real local Ray and a real MLflow store: the run tree, resume after a real SIGKILL, the CLI."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from jobs.a2d import A2DJobConfig, main, run
from kd_core.data.features import FeatureConfig
from kd_core.data.schema import examples_to_dataset
from kd_core.data.synthetic import generate
from kd_core.evaluation.squad_metrics import squad_scores
from kd_core.io.cli import run_cli
from kd_core.knowledge.manifest import read_manifest
from kd_core.knowledge.span import knowledge_metadata
from kd_core.knowledge.table import read_knowledge
from kd_core.tasks.span_qa import SpanQATask
from tests.helpers import (
    help_text,
    job_tree,
    logged_model,
    logged_model_files,
    mlflow_tracking,
    wait_for,
    write_squad_file,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(synthetic_size=24, teacher_epochs=1, epochs=3, vocab_size=500, members=2, max_concurrency=2,
            baseline=False)
CLI_TINY = ["--synthetic-size", "24", "--teacher-epochs", "1", "--epochs", "3", "--vocab-size", "500",
            "--no-baseline"]
STEPS = {"member-0", "member-1", "knowledge-0", "knowledge-1", "knowledge", "student", "eval-ensemble-dev",
         "eval-student-dev", "eval-ensemble-test", "eval-student-test", "eval-member-0-test", "eval-member-1-test"}


def write_squad(path: Path, seed: int) -> Path:
    """Synthetic examples written as an adversarial SQuAD v1.1 file (an extra evaluation set).

    Each question ``q<i>`` has a variant ``q<i>-addsent`` whose context ends with a distracting sentence.
    """
    examples = [{**ex, "id": f"q{i}"} for i, ex in enumerate(generate(n_per_domain=4, seed=seed))]
    return write_squad_file(path, examples, "The river was found near the old mill.")


@pytest.fixture(scope="module")
def uninterrupted(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("a2d")
    uri = f"sqlite:///{root}/mlflow.db"
    extra = write_squad(root / "addsent.json", seed=9)
    config = A2DJobConfig(**TINY, eval=(str(extra),), run_dir=str(root / "run"), tracking_uri=uri)
    return run(config), uri


@pytest.mark.slow
def test_a2d_job_end_to_end_with_one_mlflow_run_per_step(uninterrupted):
    summary, uri = uninterrupted
    assert len(summary["members_f1"]) == 2
    for key in ("ensemble_f1", "student_f1", "ensemble_infer_s", "student_infer_s", "speedup",
                "knowledge_bytes_per_feature", "mlflow_run_id", "tracking_uri", "run_dir"):
        assert summary[key] is not None
    assert set(summary["eval"]) == {"addsent.json"} and set(summary["eval"]["addsent.json"]) == {"ensemble", "student"}
    test = summary["test"]  # reported: the test split, which no choice reads
    assert len(test["members_f1"]) == 2 and set(summary["splits"]) == {"dev", "test"}
    member = sum(test["members_f1"]) / 2
    if test["ensemble_f1"] > member:
        assert test["gain_kept"] == pytest.approx((test["student_f1"] - member) / (test["ensemble_f1"] - member))
    adversarial = summary["eval_adversarial"]["addsent.json"]["student"]
    assert set(adversarial) == {"adversarial_f1", "adversarial_exact_match", "original_f1", "original_exact_match"}
    table = summary["speed_table"]
    assert table["student"]["parameters"] < table["ensemble"]["parameters"]
    run_dir = Path(summary["run_dir"])
    knowledge = read_knowledge(run_dir / "steps/knowledge/knowledge.arrow")
    assert knowledge_metadata(knowledge)["members"] == 2
    assert len(read_manifest(knowledge, "knowledge").teachers) == 2
    assert AutoModelForQuestionAnswering.from_pretrained(run_dir / "steps/student/model").config.num_hidden_layers == 1

    client, parent, children = job_tree(uri, summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("a2d synthetic 20")
    assert parent.data.params["tau"] == "2.0" and parent.data.params["members"] == "2"
    assert parent.data.metrics["student_f1"] == pytest.approx(summary["student_f1"])
    assert parent.data.metrics["test/student_f1"] == pytest.approx(test["student_f1"])
    assert parent.data.metrics["test/members_mean_f1"] == pytest.approx(member)
    assert parent.data.metrics["eval/addsent.json/student"] == pytest.approx(summary["eval"]["addsent.json"]["student"])
    assert parent.data.metrics["eval/addsent.json/student/adversarial_f1"] == pytest.approx(adversarial["adversarial_f1"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"plots", "speed_table.json", "summary.json"}
    steps = STEPS | {"eval-ensemble-addsent.json", "eval-student-addsent.json"}
    assert sorted(r.info.run_name for r in children) == sorted(steps)
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id
               for r in children)
    member = next(r for r in children if r.info.run_name == "member-1")
    assert member.data.tags["kd.role"] == "member" and member.data.tags["kd.member"] == "1"
    assert member.data.metrics["dev/f1"] == pytest.approx(summary["members_f1"][1])
    member_test = next(r for r in children if r.info.run_name == "eval-member-1-test")
    assert member_test.data.metrics["test/f1"] == pytest.approx(test["members_f1"][1])
    student = next(r for r in children if r.info.run_name == "student")
    assert len(client.get_metric_history(student.info.run_id, "loss/att")) >= 1  # per step, from the worker
    assert "model/model.safetensors" in logged_model_files(client, student)


@pytest.mark.slow
def test_the_logged_student_answers_questions_as_its_evaluation_did(uninterrupted, tmp_path):
    """The student's pyfunc, fed the extra set's questions and contexts, scores the F1 the job reported on it."""
    summary, uri = uninterrupted
    client, _, children = job_tree(uri, summary["mlflow_run_id"])
    model = logged_model(client, next(r for r in children if r.info.run_name == "student"))
    with mlflow_tracking(uri):
        loaded = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    rows = [(qa["id"], qa["question"], p["context"], [a["text"] for a in qa["answers"]])
            for p in json.loads(write_squad(tmp_path / "addsent.json", seed=9).read_text())["data"][0]["paragraphs"]
            for qa in p["qas"]]
    answers = loaded.predict(pd.DataFrame({"question": [r[1] for r in rows], "context": [r[2] for r in rows]}))
    assert list(answers.columns) == ["answer", "score"] and (answers["score"] <= 0).all()  # log-probabilities
    assert all(answer in context for answer, (_, _, context, _) in zip(answers["answer"], rows))
    scores = squad_scores(dict(zip([r[0] for r in rows], answers["answer"])), {r[0]: r[3] for r in rows})
    assert scores["f1"] == pytest.approx(summary["eval"]["addsent.json"]["student"])


@pytest.mark.slow
def test_an_a2d_job_whose_driver_is_killed_resumes_to_the_uninterrupted_result(uninterrupted, ray_session, tmp_path,
                                                                              capsys):
    expected, _ = uninterrupted
    address = ray_session.get_runtime_context().gcs_address
    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db"
    extra = write_squad(tmp_path / "addsent.json", seed=9)
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "jobs/a2d.py", *CLI_TINY, "--eval", str(extra), "--run-dir",
                                 str(run_dir), "--tracking-uri", uri, "--address", address],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        # Kill the driver while the student trains (its first epoch's checkpoint is on disk).
        wait_for(lambda: (run_dir / "steps/student/checkpoint/state.json").exists(), proc, 300, log)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (run_dir / "summary.json").exists()
    done_before = {p: p.stat().st_mtime_ns for p in (run_dir / "steps").rglob("result.json")}
    assert {p.parent.name for p in done_before} >= {"member-0", "member-1", "knowledge"}
    parent_id = json.loads((run_dir / "state.json").read_text())["parent_run_id"]

    # The new driver runs in this process (already on the cluster): the same main and exit codes.
    assert run_cli(main, ["--resume", str(run_dir), "--gamma", "1"]) == 2
    refused = capsys.readouterr().err
    assert "--gamma" in refused and "0.3" in refused
    assert run_cli(main, ["--resume", str(run_dir), "--members", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("members_f1", "ensemble_f1", "student_f1", "eval"):
        assert summary[key] == expected[key]  # the same numbers as the uninterrupted job
    assert summary["mlflow_run_id"] == parent_id
    assert set(summary["reused_steps"]) == {p.parent.name for p in done_before}
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in done_before.items())
    assert json.loads((run_dir / "steps/student/result.json").read_text())["resumed_from_step"] > 0
    _, parent, children = job_tree(uri, parent_id)
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)


@pytest.mark.slow
def test_a_student_with_two_workers_trains_data_parallel_on_ray_train(ray_session, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # two micro-batches per optimizer step: DDP all-reduces on the second only (no_sync on the first)
    config = A2DJobConfig(**{**TINY, "epochs": 1, "members": 1}, student_workers=2, run_dir=str(tmp_path / "run"),
                          tracking_uri=uri, accumulate_steps=2)
    summary = run(config)
    steps = Path(summary["run_dir"]) / "steps"
    result = json.loads((steps / "student/result.json").read_text())
    features = json.loads((steps / "knowledge/result.json").read_text())["rows"]
    assert result["steps"] == -(-features // 64)  # one epoch of global batches of 2 workers x 2 x 16 rows
    assert (tmp_path / "run" / "ray_train" / "student").is_dir()
    client, _, children = job_tree(uri, summary["mlflow_run_id"])
    student = next(r for r in children if r.info.run_name == "student")
    assert len(client.get_metric_history(student.info.run_id, "loss/kd")) >= 1  # logged by rank 0


def test_check_validates_without_cluster_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, ["--synthetic-size", "8", "--members", "3", "--check"]) == 0
    assert "ok" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--members", "0"], "a2d: --members: must be >= 1"),
    (["--tau", "-2"], "a2d: --tau: must be > 0"),
    (["--max-concurrency", "0"], "job: --max-concurrency"),
    (["--eval", "missing.json"], "missing.json"),
    (["--resume", "nowhere"], "state.json is missing"),
])
def test_bad_options_exit_2_before_cluster_work(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, ["--synthetic-size", "8", *args]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0]
    assert stderr.strip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_help_lists_the_contract_options():
    text = help_text(main)
    for option in ("--train", "--dev", "--eval", "--teacher-model", "--student-model", "--members", "--tau", "--gamma",
                   "--delta", "--top-k", "--epochs", "--seed", "--student-workers", "--run-dir", "--tracking-uri",
                   "--max-concurrency", "--no-kd", "--check", "--json", "--config", "--resume"):
        assert option in text


@pytest.mark.slow
def test_the_saved_student_gives_the_projects_logits_in_plain_hugging_face_code(uninterrupted, tmp_path):
    """The job's final student, loaded and run with transformers calls only, as a user's own code would."""
    summary, _ = uninterrupted
    saved = summary["saved_models"]
    assert set(saved) == {"member/member-0", "member/member-1", "student/student"}
    index = json.loads((Path(summary["run_dir"]) / "models/index.json").read_text())["models"]
    assert index["student/student"] == {"path": "student/student", "role": "student", "step": "student"}
    folder = Path(saved["student/student"])
    assert folder == Path(summary["run_dir"]) / "models/student/student"

    # --- plain Hugging Face code: the window settings and inputs come from the saved folder only
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    windows = model.config.kd_serving["windows"]
    assert tokenizer.model_max_length == windows["max_length"] == 96 and windows["doc_stride"] == 32
    rows = [(qa["question"], p["context"]) for p in
            json.loads(write_squad(tmp_path / "addsent.json", seed=9).read_text())["data"][0]["paragraphs"]
            for qa in p["qas"]][:20]
    assert len(rows) == 20
    encoded = tokenizer([q for q, _ in rows], [c for _, c in rows], truncation="only_second",
                        max_length=tokenizer.model_max_length, stride=windows["doc_stride"],
                        return_overflowing_tokens=True, padding="max_length", return_tensors="pt")
    assert "token_type_ids" in encoded  # the segment ids the model was trained with
    with torch.no_grad():
        plain = model(input_ids=encoded["input_ids"], token_type_ids=encoded["token_type_ids"],
                      attention_mask=encoded["attention_mask"])

    # --- the project's own featurisation and inference of the same examples
    examples = [{"id": str(i), "domain": "", "title": "", "context": c, "question": q,
                 "answers": {"text": [], "answer_start": []}, "is_impossible": False} for i, (q, c) in enumerate(rows)]
    task = SpanQATask()
    project_model, project_tokenizer = task.build_model(str(folder), 0, None)
    features = task.featurize(examples_to_dataset(examples), project_tokenizer, FeatureConfig(**windows))
    arrays = task.arrays(features)
    ours = task.infer(project_model, arrays)
    assert len(arrays["input_ids"]) == len(encoded["input_ids"])
    assert (encoded["input_ids"].numpy() == arrays["input_ids"]).all()
    assert (encoded["token_type_ids"].numpy() == arrays["token_type_ids"]).all()
    real = encoded["attention_mask"].numpy().astype(bool)
    for name in ("start_logits", "end_logits"):
        assert abs(getattr(plain, name).numpy()[real] - ours[name][real]).max() < 1e-4


@pytest.mark.slow
def test_mlflow_shows_the_job_as_a_model_training_run_tree(uninterrupted):
    """What the MLflow UI reads: the experiment's view, the run's source tags, each logged model linked to its run."""
    summary, uri = uninterrupted
    client, parent, children = job_tree(uri, summary["mlflow_run_id"])
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    source = {k: parent.data.tags[k] for k in ("mlflow.user", "mlflow.source.name", "mlflow.source.type")}
    assert source["mlflow.user"] and source["mlflow.source.type"] == "LOCAL"
    trained = [r for r in children if r.info.run_name in ("member-0", "member-1", "student")]
    for child in children:
        assert {k: child.data.tags.get(k) for k in source} == source
    for child in trained:
        model = logged_model(client, child)
        assert [m.model_id for m in child.outputs.model_outputs] == [model.model_id]
    assert all(not r.outputs.model_outputs for r in children if r not in trained)
