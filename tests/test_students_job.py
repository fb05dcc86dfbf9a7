"""jobs/students.py on a real local Ray and a real MLflow store: the run tree, the per-student table, teacher reuse,
bad settings refused before any cluster work."""

from pathlib import Path

import pytest

from jobs.students import StudentsJobConfig, main, run
from kd_core.io.cli import run_cli
from tests.helpers import help_text, job_tree, mlflow_tracking, plain_and_project_logits

TASKS = """tasks:
  - {name: sentiment, synthetic: sentiment, kind: classification, labels: [negative, positive], size: 120}
  - {name: rating, synthetic: rating, kind: regression, size: 60}
"""
TINY = dict(teacher_model="tiny-bert", teacher_epochs=2, teacher_restarts=2, scratch_layers=1, scratch_hidden=16,
            scratch_intermediate=32, bilstm_hidden=8, layer_loss="hidden_mse", epochs=1, batch_size=16, augment=True,
            n_iter=1, vocab_size=300, word_vocab_size=200, max_length=32, speed_examples=16, speed_repeats=1)
KINDS = ("layers", "scratch", "bilstm")
STEPS = ({"teacher-0", "teacher-1", "teacher", "knowledge", "speed", "eval-teacher"} | set(KINDS)
         | {f"{k}-no-kd" for k in KINDS} | {f"eval-{k}" for k in KINDS} | {f"eval-{k}-no-kd" for k in KINDS})


@pytest.fixture(scope="module")
def tasks_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tasks") / "tasks.yaml"
    path.write_text(TASKS)
    return str(path)


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory, tasks_file):
    root = tmp_path_factory.mktemp("students")
    uri = f"sqlite:///{root}/mlflow.db"
    return run(StudentsJobConfig(**TINY, tasks=tasks_file, run_dir=str(root / "run"), tracking_uri=uri)), uri, root


@pytest.mark.slow
def test_students_job_end_to_end_with_the_table_and_plot_in_mlflow(finished):
    summary, uri, _ = finished
    assert list(summary["models"]) == ["teacher", *KINDS]
    assert summary["augmented_rows"] > 0 and summary["knowledge_rows"] > summary["augmented_rows"]
    teacher = summary["models"]["teacher"]
    for kind in KINDS:
        row = summary["models"][kind]
        assert row["kind"] == kind and row["kd_gain"] == pytest.approx(row["test"] - row["test_no_kd"])
        assert 0 < row["parameters"] < teacher["parameters"] and 0 < row["disk_bytes"] < teacher["disk_bytes"]
        assert row["speedup_b1"] > 0 and row["speedup_b32"] > 0
    assert summary["models"]["bilstm"]["model"] == "bilstm-E64-H8"  # the teacher's word vectors: tiny-bert's width
    assert summary["models"]["layers"]["parameters"] < teacher["parameters"]  # one of the teacher's two layers

    client, parent, children = job_tree(uri, summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kd.method"] == "students"
    assert sorted(r.data.tags["kd.step"] for r in children) == sorted(STEPS)
    assert all(r.info.status == "FINISHED" for r in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.json", "summary_table.txt", "students_table.json"} <= artifacts
    assert "plots/students.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    with mlflow_tracking(uri):  # MlflowClient.load_table searches runs through the global tracking URI
        table = client.load_table(parent.info.experiment_id, "students_table.json", run_ids=[parent.info.run_id])
    assert list(table["model"]) == ["teacher", *KINDS]
    assert list(table["test_no_kd"])[1:] == pytest.approx([summary["models"][k]["test_no_kd"] for k in KINDS])
    assert parent.data.metrics["test/bilstm"] == summary["models"]["bilstm"]["test"]
    by_step = {r.data.tags["kd.step"]: r for r in children}
    assert by_step["bilstm"].data.tags["kd.student"] == "bilstm" and by_step["bilstm"].data.params["tokenizer"] == "words"
    assert "loss/hidden_mse" in by_step["scratch"].data.metrics and "loss/hidden_mse" not in by_step["bilstm"].data.metrics
    assert by_step["layers"].data.params["keep_layers"] == "(0,)"


@pytest.mark.slow
def test_the_saved_bilstm_loads_in_plain_hugging_face_code_after_its_registration_import(finished):
    """``import kd_core.models.bilstm`` registers the model type; the rest is transformers' Auto classes."""
    import kd_core.models.bilstm  # noqa: F401  (the one documented import)

    summary, _, _ = finished
    saved = summary["saved_models"]
    assert {"student/bilstm", "baseline/bilstm-no-kd", "student/scratch", "student/layers"} <= set(saved)
    texts = [f"{a} {b} day" for a in ("a good", "a bad", "an odd", "a fine") for b in ("sunny", "rainy", "long", "calm",
                                                                                     "dull")]
    plain, ours, id2label = plain_and_project_logits(Path(saved["student/bilstm"]), texts)
    assert id2label == {0: "negative", 1: "positive"}
    assert plain.shape == ours.shape == (20, 2) and abs(plain - ours).max() < 1e-4


@pytest.mark.slow
def test_a_second_run_reuses_the_teacher_and_gets_the_same_students(finished, tmp_path, tasks_file):
    first, _, root = finished
    summary = run(StudentsJobConfig(**TINY, baseline=False, tasks=tasks_file, knowledge_from=str(root / "run"),
                                    run_dir=str(tmp_path / "run"), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    assert {"teacher-0", "teacher-1", "teacher", "knowledge"} <= set(summary["reused_steps"])
    assert not (tmp_path / "run/steps/teacher-0/model").exists()  # nothing trained again
    for kind in KINDS:
        assert summary["models"][kind]["test"] == first["models"][kind]["test"]


@pytest.mark.slow
def test_knowledge_of_another_task_is_refused_before_cluster_work(finished, tmp_path, monkeypatch, capsys,
                                                                   tasks_file):
    _, _, root = finished
    monkeypatch.chdir(tmp_path)
    args = ["--tasks", tasks_file, "--task", "rating", "--teacher-model", "tiny-bert", "--teacher-restarts", "2",
            "--knowledge-from", str(root / "run"), "--augment", "--n-iter", "1", "--vocab-size", "300",
            "--max-length", "32", "--word-vocab-size", "200"]
    assert run_cli(main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made for" in err[0] and "knowledge.arrow" in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_help_and_check_without_cluster_work(tmp_path, monkeypatch, capsys, tasks_file):
    text = help_text(main)
    assert "--layer-loss" in text and "--assistant" in text
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "students.yaml"
    config.write_text(f"tasks: {tasks_file}\nstudents: [scratch, bilstm]\nnoise: 0.1\n")
    assert run_cli(main, ["--config", str(config), "--tau", "3", "--check"]) == 0
    assert "ok" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, expected", [
    (["--students", "layers,transformer"], "--students: need distinct kinds among layers, scratch, bilstm"),
    (["--layer-loss", "hidden_mse", "--layer-map", "0:1,1:7"], "teacher layer 7 does not exist; the teacher has 4"),
    (["--layer-loss", "hidden_mse", "--no-projection", "--scratch-hidden", "32"], "needs the projection"),
    (["--noise", "-0.5"], "--noise: invalid value -0.5"),
    (["--student-layers", "0,9"], "the teacher has 4"),
    (["--loss", "kl"], "--loss: must be one of soft, mse, hard"),
])
def test_bad_student_settings_exit_2_with_one_line_before_cluster_work(tmp_path, monkeypatch, capsys, tasks_file,
                                                                       args, expected):
    monkeypatch.chdir(tmp_path)
    assert run_cli(main, ["--tasks", tasks_file, *args, "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
