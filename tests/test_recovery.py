"""Corrupt run-directory files are found and recovered from: a cut result file, knowledge table, model or checkpoint is
named in one warning line and its step runs again to the uninterrupted result; a corrupt ``state.json`` is one error
line and exit 2; a consumer reading a corrupt input gets one line naming the file, not Arrow's or JSON's error."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file, save_file

import jobs.kd
from cluster.job import JobState
from jobs.kd import KDJobConfig
from kd_core.engine.execute import execute
from kd_core.engine.local import run_locally
from kd_core.engine.prepare import DataOptions, build_workspace
from kd_core.engine.steps import TermSpec, TrainStep
from kd_core.io.cli import run_cli
from kd_core.io.file_checks import CorruptFile, check_table_file, safetensors_header
from kd_core.io.redaction import redact
from kd_core.io.run_store import clear_staging, join
from kd_core.knowledge.table import read_knowledge
from kd_core.methods.hinton import HintonSettings, hinton_recipe
from kd_core.training.loop import TrainConfig
from tests.helpers import s3_server

LOCAL = HintonSettings(teacher_model="tiny-bert-1l", teacher_epochs=1, epochs=1, batch_size=32, baseline=False)
LOCAL_DATA = DataOptions(task="sentiment", synthetic_size=150)


def cut(path: Path) -> None:
    """Keep the first half of the file ``path``, as a full disk or a killed copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def copy_run(source: str | Path, target: Path) -> Path:
    """A copy of the run directory ``source`` (its results name its files relative to it, so corrupting the copy
    leaves the original whole)."""
    shutil.copytree(source, target)
    return target


def untimed(results: dict) -> dict:
    """``results`` without what a clock measured (a step's seconds, an evaluation's inference time)."""
    return {name: {k: v for k, v in result.items() if k not in ("seconds", "infer_s")} for name, result in results.items()}


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: ")]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """``(run dir, results)`` of the tiny kd recipe run once in this process."""
    run_dir = tmp_path_factory.mktemp("local") / "run"
    return run_dir, run_locally(hinton_recipe(LOCAL), build_workspace(LOCAL_DATA, LOCAL.teacher_model,
                                                                      LOCAL.student_model, run_dir))


def _drop_primary(path: Path) -> None:
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "primary"}))


#: (what is damaged, how, the step that runs again, what its warning line says)
DAMAGE = [
    ("steps/student/result.json", cut, "student", "result.json: corrupt ("),
    ("steps/eval-student/result.json", _drop_primary, "eval-student", "corrupt (an evaluate result without primary)"),
    ("steps/teacher-0/model/model.safetensors", cut, "teacher-0", "model.safetensors: corrupt (the file has"),
    ("steps/knowledge/knowledge.arrow", cut, "knowledge", "knowledge.arrow: corrupt (not a readable Arrow IPC file"),
]


@pytest.mark.parametrize("damaged, damage, rerun, said", DAMAGE, ids=[d[2] for d in DAMAGE])
def test_a_corrupt_finished_step_is_named_once_and_runs_again_to_the_same_results(local_run, damaged, damage, rerun,
                                                                                  said, tmp_path, capsys):
    original, expected = local_run
    run_dir = copy_run(original, tmp_path / "run")
    damage(run_dir / damaged)
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in (run_dir / "steps").rglob("result.json")}
    capsys.readouterr()
    again = run_locally(hinton_recipe(LOCAL), build_workspace(LOCAL_DATA, LOCAL.teacher_model, LOCAL.student_model,
                                                              run_dir))
    (line,) = warnings_in(capsys.readouterr().err)
    assert line.startswith(f"warning: {run_dir / damaged}") and said in line and line.endswith(
        f"; step {rerun} runs again"), line
    after = {p.parent.name: p.stat().st_mtime_ns for p in (run_dir / "steps").rglob("result.json")}
    assert {name for name in stamps if after[name] != stamps[name]} == {rerun}  # only the damaged step ran again
    assert untimed(again) == untimed(json.loads(json.dumps(expected).replace(str(original), str(run_dir))))


def test_in_an_s3_run_dir_a_corrupt_table_is_named_by_its_uri_and_made_again(tmp_path, capsys):
    """The same check through the store's local copies: a fresh process (empty staging folder) finds the damage."""
    with s3_server(tmp_path) as s3:
        run_dir = s3.uri("runs/local", credentials=True)

        def recipe_run() -> dict:
            return run_locally(hinton_recipe(LOCAL), build_workspace(LOCAL_DATA, LOCAL.teacher_model,
                                                                     LOCAL.student_model, run_dir))

        expected = recipe_run()
        key = f"{s3.bucket}/runs/local/steps/knowledge-0/knowledge.arrow"
        with s3.fs.open_input_stream(key) as stream:
            whole = stream.read()
        with s3.fs.open_output_stream(key) as stream:
            stream.write(whole[:len(whole) // 2])
        clear_staging()
        capsys.readouterr()
        again = recipe_run()
        (line,) = warnings_in(capsys.readouterr().err)
        clear_staging()
    assert "testing:testing@" not in line  # the credentials in the URI are redacted in the line
    assert line.startswith(f"warning: {redact(join(run_dir, expected['knowledge-0']['path']))}: corrupt (not a readable Arrow IPC file"), line
    assert line.endswith("; step knowledge-0 runs again") and untimed(again) == untimed(expected)


def test_a_consumer_reading_a_corrupt_table_gets_one_line_naming_it(local_run, tmp_path):
    """The worker-side check: a table damaged after the driver's check is refused by the step that reads it."""
    original, _ = local_run
    run_dir = copy_run(original, tmp_path / "run")
    table = run_dir / "steps/knowledge/knowledge.arrow"
    cut(table)
    ws = build_workspace(LOCAL_DATA, LOCAL.teacher_model, LOCAL.student_model, run_dir)
    student = TrainStep("student-2", "tiny-bert-1l", 1, "student", (TermSpec("soft", 1.0, 2.0),),
                        TrainConfig(epochs=1), knowledge="knowledge")
    with pytest.raises(CorruptFile, match=r"knowledge/knowledge.arrow: corrupt: not a readable Arrow IPC file"):
        execute(student, ws)
    with pytest.raises(CorruptFile, match=r"knowledge.arrow: corrupt: not a readable Arrow IPC file \(Not an Arrow file"):
        read_knowledge(table)


STEP = TrainStep("model", "tiny-bert-1l", 3, "teacher", (TermSpec("hard"),),
                 TrainConfig(epochs=2, batch_size=16, checkpoint_every=3, log_every=1))
CHECKPOINT_DAMAGE = [
    ("state.json", lambda path: path.write_text('{"step": 6, "param_')),
    ("optimizer.safetensors", cut),
    ("model.safetensors", lambda path: path.write_bytes(path.read_bytes()[:-4])),
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The weights of ``STEP`` trained without interruption."""
    whole = build_workspace(LOCAL_DATA, "tiny-bert-1l", "tiny-bert-1l", tmp_path_factory.mktemp("whole"))
    execute(STEP, whole)
    return load_file(str(whole.step_dir("model") / "model/model.safetensors"))


@pytest.mark.parametrize("damaged, damage", CHECKPOINT_DAMAGE, ids=[d[0] for d in CHECKPOINT_DAMAGE])
def test_a_corrupt_checkpoint_is_named_and_training_starts_over_to_the_same_weights(uninterrupted, damaged, damage,
                                                                                    tmp_path, capsys):
    class Crash(Exception):
        pass

    def crash_at_step_7(metrics):
        if metrics["step"] == 7:
            raise Crash

    ws = build_workspace(LOCAL_DATA, "tiny-bert-1l", "tiny-bert-1l", tmp_path)
    with pytest.raises(Crash):
        execute(STEP, ws, callbacks_for=lambda s: [crash_at_step_7])
    checkpoint = ws.step_dir("model") / "checkpoint"
    damage(checkpoint / damaged)
    capsys.readouterr()
    resumed = execute(STEP, ws)
    (line,) = warnings_in(capsys.readouterr().err)
    assert line.startswith(f"warning: {checkpoint / damaged}: corrupt (") and line.endswith(
        "; training starts from the start (the loop keeps one checkpoint)"), line
    assert resumed["resumed_from_step"] == 0 and resumed["steps"] > 7
    weights = load_file(str(ws.step_dir("model") / "model/model.safetensors"))
    assert weights.keys() == uninterrupted.keys() and all(torch.equal(weights[k], uninterrupted[k]) for k in weights)


def _saved(tmp_path: Path, **tensors) -> Path:
    path = tmp_path / "w.safetensors"
    save_file({name: value.contiguous() for name, value in tensors.items()}, str(path))
    return path


def test_safetensors_headers_catch_cut_padded_and_rewritten_files(tmp_path):
    path = _saved(tmp_path, a=torch.zeros(3, 4), b=torch.ones(5, dtype=torch.bfloat16))
    assert {k: v["shape"] for k, v in safetensors_header(path).items()} == {"a": [3, 4], "b": [5]}
    whole = path.read_bytes()
    length = int.from_bytes(whole[:8], "little")
    damaged = {
        "the file has 185 bytes, its header describes 186 (cut short)": whole[:-1],
        "the file has 188 bytes, its header describes 186": whole + b"\0\0",
        f"its header length says {length + 200} bytes": (length + 200).to_bytes(8, "little") + whole[8:],
        "the header is not JSON": whole[:8] + b"#" + whole[9:],
        "tensor 'a' has 48 bytes, its dtype and shape need 24": whole.replace(b'"shape":[3,4]', b'"shape":[3,2]'),
        "fewer than the 8 of its header length": whole[:5],
    }
    for problem, data in damaged.items():
        path.write_bytes(data)
        with pytest.raises(CorruptFile, match=problem.replace("(", r"\(").replace(")", r"\)")):
            safetensors_header(path)


def test_a_table_whose_rows_or_manifest_disagree_with_its_result_is_corrupt(local_run):
    original, results = local_run
    table, rows = Path(original) / results["knowledge"]["path"], results["knowledge"]["rows"]
    check_table_file(table, rows, (b"kd_manifest",))
    with pytest.raises(CorruptFile, match=f"{rows} rows, its step wrote {rows + 1}"):
        check_table_file(table, rows + 1)
    with pytest.raises(CorruptFile, match="no readable kd_other in its schema metadata"):
        check_table_file(table, rows, (b"kd_other",))


# ---------------------------------------------------------------- state.json


def _state(**changes) -> dict:
    return {**asdict(JobState("kd", asdict(KDJobConfig()))), **changes}


#: (row id, state.json's text, what the one error line says after the file's name)
STATES = [
    ("not-json", '{"method": "kd", "opt', "state: corrupt: Unterminated string"),
    ("not-a-mapping", "[1, 2]", "state: corrupt: a JSON list, not a mapping"),
    ("unknown-key", json.dumps(_state(colour="blue")), "colour: unknown key of a job state; known: method, options"),
    ("steps-malformed", json.dumps(_state(steps={"teacher-0": "done"})), "steps: must be a mapping of step ->"),
    ("unknown-option", json.dumps(_state(options={**asdict(KDJobConfig()), "taus": 2})),
     "options: taus: unknown option; known: accumulate_steps"),
    ("option-of-the-wrong-type", json.dumps(_state(options={**asdict(KDJobConfig()), "tau": "hot"})),
     "options: tau: expected a number, got 'hot'"),
    ("option-out-of-range", json.dumps(_state(options={**asdict(KDJobConfig()), "tau": 0})),
     "options: tau: must be > 0, got 0"),
]


@pytest.mark.parametrize("row, text, expected", STATES, ids=[s[0] for s in STATES])
def test_a_corrupt_state_file_is_one_line_and_exit_2(row, text, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run/state.json").write_text(text)
    assert run_cli(jobs.kd.main, ["--resume", "run"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {tmp_path / 'run/state.json'}: {expected}"), errors
    assert not Path("mlflow.db").exists()


# ---------------------------------------------------------------- a real job on Ray


def _resumable_copy(kd_job, tmp_path: Path) -> tuple[Path, str, dict]:
    """A copy of the ``kd_job`` fixture's run directory and MLflow store, ready to resume: ``(run dir, uri, state)``."""
    summary, uri = kd_job
    run_dir, store = copy_run(summary["run_dir"], tmp_path / "run"), tmp_path / "mlflow.db"
    shutil.copy(uri.removeprefix("sqlite:///"), store)
    state = json.loads((run_dir / "state.json").read_text())
    state["options"].update(run_dir=str(run_dir), tracking_uri=f"sqlite:///{store}")
    (run_dir / "state.json").write_text(json.dumps(state))
    return run_dir, f"sqlite:///{store}", state


JOB_DAMAGE = [("steps/student/result.json", "student"), ("steps/knowledge-0/knowledge.arrow", "knowledge-0")]


@pytest.mark.slow
@pytest.mark.parametrize("damaged, rerun", JOB_DAMAGE, ids=[d[1] for d in JOB_DAMAGE])
def test_resume_after_corruption_reruns_the_step_in_its_finished_mlflow_run_to_the_same_summary(
        kd_job, ray_session, damaged, rerun, tmp_path, capsys):
    expected, _ = kd_job
    run_dir, uri, state = _resumable_copy(kd_job, tmp_path)
    cut(run_dir / damaged)
    capsys.readouterr()
    resumed = jobs.kd.run(KDJobConfig(**state["options"]), resume=True, quiet=True)
    (line,) = warnings_in(capsys.readouterr().err)
    assert line.startswith(f"warning: {run_dir / damaged}: corrupt (") and line.endswith(
        f"; step {rerun} runs again"), line
    assert resumed["models"] == expected["models"]
    assert rerun not in resumed["reused_steps"] and len(resumed["reused_steps"]) == len(state["steps"]) - 1
    client = MlflowClient(uri)
    run = client.get_run(state["steps"][rerun]["run_id"])
    assert run.info.status == "FINISHED" and "kd.rerun" in run.data.tags
    assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"
    assert json.loads((run_dir / "state.json").read_text())["steps"][rerun]["finished"] is True
