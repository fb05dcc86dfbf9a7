"""A run directory is safe to point at and can be moved: another run's directory is refused unless --overwrite,
a running job's lock refuses a second job (a dead one's is taken over), and a copied run directory resumes from
its own files. Real jobs on the session's Ray and real processes holding the lock; the finished kd job of the
``kd_job`` fixture is copied rather than run again."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.job import JobRuntime
from jobs.a2d import main as a2d_main
from jobs.kd import main
from jobs.sweep import main as sweep_main
from kd_core.io.cli import run_cli
from kd_core.io.run_lock import Holder, process_start

ROOT = Path(__file__).resolve().parents[1]
#: A real second process that takes the lock of the run directory argv[1], says so, then sleeps or dies holding it.
HOLD = ("import os, sys, time\n"
        "from kd_core.io.run_lock import RunLock\n"
        "from kd_core.io.run_store import RunStore\n"
        "lock = RunLock(RunStore(sys.argv[1])).acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(120) if sys.argv[2] == 'hold' else os._exit(0)\n")


def _copy(kd_job, target: Path) -> Path:
    shutil.copytree(kd_job[0]["run_dir"], target)
    return target


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _lock_holder(run_dir: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_fresh_job_or_sweep_refuses_another_jobs_run_dir_and_leaves_it_as_it_was(kd_job, tmp_path, capsys):
    run_dir = _copy(kd_job, tmp_path / "kd-run")
    before = _files(run_dir)
    assert run_cli(main, ["--run-dir", str(run_dir), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {run_dir}: run directory: holds a kd job (")
    assert "state.json" in err and "steps" in err and "pass --overwrite to replace it, or --resume it" in err
    assert not (tmp_path / "m.db").exists()  # refused before the MLflow store was made
    # --check says the same, as do another method's job and a sweep (whose --overwrite is its own flag too)
    for command, argv in ((main, ["--check"]), (a2d_main, ["--check"]), (sweep_main, ["--method", "kd", "--check"])):
        assert run_cli(command, ["--run-dir", str(run_dir), *argv]) == 2
        assert capsys.readouterr().err.startswith(f"error: {run_dir}: run directory: holds a kd job (")
    assert run_cli(main, ["--resume", str(run_dir), "--overwrite"]) == 2
    assert capsys.readouterr().err.startswith("error: --overwrite: --resume: ")
    assert _files(run_dir) == before  # byte for byte
    assert run_cli(main, ["--run-dir", str(run_dir), "--check", "--overwrite", "--synthetic-size", "120"]) == 0
    assert run_cli(sweep_main, ["--method", "kd", "--run-dir", str(run_dir), "--check", "--overwrite",
                                "--synthetic-size", "120"]) == 0
    capsys.readouterr()


def test_overwrite_replaces_the_earlier_run_and_the_runtime_holds_the_lock_until_closed(kd_job, tmp_path):
    run_dir = _copy(kd_job, tmp_path / "kd-run")
    old_state = json.loads((run_dir / "state.json").read_text())
    with pytest.raises(Exception, match="holds a kd job"):
        JobRuntime("kd", {"seed": 1}, str(run_dir), f"sqlite:///{tmp_path}/m.db", "kd")
    runtime = JobRuntime("kd", {"seed": 1, "run_dir": str(run_dir)}, str(run_dir), f"sqlite:///{tmp_path}/m.db", "kd",
                         overwrite=True)
    with runtime:
        assert sorted(p.name for p in run_dir.iterdir()) == [".kd-lock", "state.json"]  # the earlier run is gone
        state = json.loads((run_dir / "state.json").read_text())
        assert state["options"] == {"seed": 1}  # where the run directory is is not saved: a copy is elsewhere
        assert state["parent_run_id"] is None and old_state["parent_run_id"] is not None
        holder = Holder.parse((run_dir / ".kd-lock").read_text())
        assert holder is not None and holder.pid == os.getpid()
    assert not (run_dir / ".kd-lock").exists()  # released on leaving the block


def test_a_job_is_refused_while_another_process_holds_its_run_dirs_lock(kd_job, tmp_path, capsys):
    run_dir = _copy(kd_job, tmp_path / "kd-run")
    holder = _lock_holder(run_dir, "hold")
    try:
        assert run_cli(main, ["--resume", str(run_dir), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {run_dir}: run directory: in use by a running job "
                                                       f"(pid {holder.pid} on {socket.gethostname()}, since ")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert json.loads((run_dir / "state.json").read_text()) == json.loads(
        (Path(kd_job[0]["run_dir"]) / "state.json").read_text())  # the refused job wrote nothing


def test_a_lock_holder_is_alive_only_while_its_process_runs_and_is_not_fooled_by_a_reused_pid():
    me = Holder.this_process()
    assert me.alive() and process_start(os.getpid()) == me.started
    assert not Holder(me.host, me.pid, me.started + 1, me.since, me.token).alive()  # another process with my pid
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not Holder(me.host, int(gone.stdout), None, me.since, me.token).alive()
    assert Holder("another-host", int(gone.stdout), None, me.since, me.token).alive()  # cannot be seen from here


@pytest.mark.slow
def test_a_copied_run_dir_resumes_from_its_own_files_after_the_original_moved_away(kd_job, ray_session, tmp_path,
                                                                                    capsys):
    """cp -r run copy; mv run elsewhere; --resume copy: the copy's steps read the copy's results, models and tables
    (two steps are run again from them), its lock left by a killed job is taken over, and no file of the copy
    names where the original was."""
    summary, uri = kd_job
    original = _copy(kd_job, tmp_path / "run")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    original.rename(tmp_path / "moved")
    store = tmp_path / "mlflow.db"  # the job's MLflow store, copied: the resumed job logs into its copy
    shutil.copy(uri.removeprefix("sqlite:///"), store)
    state = json.loads((copy / "state.json").read_text())
    state["options"]["tracking_uri"] = f"sqlite:///{store}"
    (copy / "state.json").write_text(json.dumps(state))
    for step in ("knowledge", "eval-student"):  # the merge reads the members' tables, the evaluation the student
        (copy / "steps" / step / "result.json").unlink()
    dead = _lock_holder(copy, "die")
    dead.wait(timeout=30)

    assert run_cli(main, ["--resume", str(copy), "--quiet", "--json"]) == 0
    out, err = capsys.readouterr()
    resumed = json.loads(out.strip().splitlines()[-1])
    assert f"note: {copy}: taking over the lock of pid {dead.pid} on " in err
    assert resumed["models"] == summary["models"] and resumed["mlflow_run_id"] == summary["mlflow_run_id"]
    assert set(resumed["reused_steps"]) == set(state["steps"]) - {"knowledge", "eval-student"}
    assert resumed["run_dir"] == str(copy) and resumed["saved_models"]["student/student"] == str(
        copy / "models/student/student")
    assert (copy / "models/student/student/model.safetensors").exists() and not (copy / ".kd-lock").exists()
    written = _files(copy)
    for place in (str(original), summary["run_dir"]):
        assert not [name for name, data in written.items() if place.encode() in data], place
    result = json.loads(written["steps/student/result.json"])
    assert result["model_dir"] == "steps/student/model"
    assert json.loads(written["summary.json"])["saved_models"]["student/student"] == "models/student/student"
