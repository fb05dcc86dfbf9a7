"""Clean stops with real signals: SIGTERM and SIGINT end a command with one line and 128 + the signal; a real kd
job (its own local Ray cluster) stopped with SIGTERM in the middle of a step leaves its MLflow runs KILLED, no
process of its Ray session, and a run directory that ``--resume`` finishes to the uninterrupted result; a real
sweep stopped with SIGINT while its trials run ends with 130, its runs KILLED and no process of its session."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from jobs.kd import main
from kd_core.io.cli import run_cli
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[1]
CLI_TINY = ["--synthetic-size", "240", "--members", "2", "--teacher-epochs", "2", "--epochs", "3",
            "--batch-size", "16"]  # tests.helpers.KD_TINY, the kd_job fixture's job
#: Seconds a stopped job may take to exit (its clean-up: workers, MLflow runs, ray.shutdown; ~5 s here).
STOP_BOUND_S = 60
#: Seconds the processes of a stopped job's Ray session may take to be gone after the driver exited.
GONE_BOUND_S = 20


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_runs_the_clean_up_and_ends_the_command_with_one_line(signum, status, capsys):
    cleaned = []

    def command(argv):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(30)  # the signal interrupts this
            return 0
        finally:
            cleaned.append(True)

    before = signal.getsignal(signum)
    assert run_cli(command, []) == status
    assert cleaned == [True]
    assert capsys.readouterr().err == f"stopped: {signal.Signals(signum).name}\n"
    assert signal.getsignal(signum) is before  # the command's handlers are gone with it


def test_a_second_signal_during_the_clean_up_ends_the_process_at_once(tmp_path):
    """A stop whose clean-up hangs: the second signal exits with its status without waiting for it."""
    script = textwrap.dedent("""
        import sys, time
        from kd_core.io.cli import run_cli

        def command(argv):
            try:
                print("ready", flush=True)
                time.sleep(60)
            finally:
                print("cleaning", flush=True)
                time.sleep(60)  # a clean-up that hangs

        sys.exit(run_cli(command, []))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == "cleaning\n"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - sent < 5
    assert proc.stderr.read() == "stopped: SIGINT again during the clean-up; exiting without finishing it\n"


def _session_processes(session_id: int) -> list[str]:
    """Live processes (not zombies) of the session ``session_id`` (a job started with ``start_new_session``: its
    driver and every process of the Ray cluster it started, agents and workers included)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        state, _, _, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == session_id and state != "Z":
            found.append(f"{pid} {command[:120]}")
    return found


def _own_cluster_env() -> dict[str, str]:
    """This environment without ``RAY_ADDRESS`` (so the command starts its own local cluster), token auth off."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def _assert_session_gone(session_id: int) -> None:
    """No process of the session is left (after a bounded wait: a killed worker takes a moment to go)."""
    deadline = time.monotonic() + GONE_BOUND_S
    while _session_processes(session_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_processes(session_id) == []


def _stop_when(command: list[str], log: Path, ready: Callable[[], bool],
               signum: int) -> tuple[subprocess.Popen, int]:
    """Start ``command`` on a local cluster of its own (stderr to ``log``), send it ``signum`` once ``ready()``, and
    return it with its exit status; one still running after :data:`STOP_BOUND_S` is killed with its process group
    (and the wait's ``TimeoutExpired`` fails the test)."""
    with log.open("w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, env=_own_cluster_env(), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            wait_for(ready, proc, 300, log)
            proc.send_signal(signum)
            return proc, proc.wait(timeout=STOP_BOUND_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_sigterm_stops_a_running_job_cleanly_and_resume_finishes_it_to_the_uninterrupted_result(kd_job, tmp_path,
                                                                                               capsys):
    """SIGTERM while the teachers train (teacher-0's first epoch checkpoint is on disk): 143 and one line with the
    resume command, no traceback or Ray's native dump, the parent and every unfinished step's run KILLED, no process
    of the job's Ray session left; then ``--resume`` gives the kd_job fixture's numbers."""
    run_dir, uri, log = tmp_path / "run", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "job.err"
    proc, code = _stop_when([sys.executable, "jobs/kd.py", *CLI_TINY, "--run-dir", str(run_dir), "--tracking-uri",
                             uri], log, lambda: (run_dir / "steps/teacher-0/checkpoint/state.json").exists(),
                            signal.SIGTERM)
    assert code == 143, log.read_text()
    stderr = log.read_text()
    assert [line for line in stderr.splitlines() if line.startswith("stopped:")] == [
        f"stopped: SIGTERM; the run dir keeps every finished step: python jobs/kd.py --resume {run_dir} continues it"]
    assert "Traceback" not in stderr and "received at time" not in stderr, stderr  # Ray's native SIGTERM dump
    state = json.loads((run_dir / "state.json").read_text())
    client = MlflowClient(uri)
    assert client.get_run(state["parent_run_id"]).info.status == "KILLED"
    statuses = {step: client.get_run(known["run_id"]).info.status for step, known in state["steps"].items()}
    running = {step for step, known in state["steps"].items() if not known["finished"]}
    assert running and {statuses[step] for step in running} == {"KILLED"}, statuses
    assert {statuses[step] for step in set(statuses) - running} <= {"FINISHED"}, statuses
    _assert_session_gone(proc.pid)

    assert run_cli(main, ["--resume", str(run_dir), "--json", "--quiet"]) == 0  # on the test session's cluster
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["models"] == kd_job[0]["models"]
    state = json.loads((run_dir / "state.json").read_text())
    assert {client.get_run(known["run_id"]).info.status for known in state["steps"].values()} == {"FINISHED"}
    assert client.get_run(state["parent_run_id"]).info.status == "FINISHED"


@pytest.mark.slow
def test_sigint_stops_a_running_sweep_with_status_130_one_line_and_its_runs_killed(tmp_path):
    """Ctrl-C in a sweep: Tune's own SIGINT handler would end fit() as if the sweep were done (exit 0)."""
    run_dir, uri, log = tmp_path / "sweep", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "sweep.err"
    proc, code = _stop_when([sys.executable, "jobs/sweep.py", "--method", "kd", "--num-samples", "2",
                             "--max-concurrency", "2", *CLI_TINY, "--run-dir", str(run_dir), "--tracking-uri", uri],
                            log, lambda: any((run_dir / "trials").glob("*/")), signal.SIGINT)  # once a trial started
    assert code == 130, log.read_text()
    stderr = log.read_text()
    assert [line for line in stderr.splitlines() if line.startswith("stopped:")] == [
        "stopped: SIGINT; its MLflow runs are marked KILLED; a sweep does not resume (run it again to start over)"]
    assert "Traceback" not in stderr, stderr
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    statuses = {run.data.tags.get("kd.role"): set() for run in runs}
    for run in runs:
        statuses[run.data.tags.get("kd.role")].add(run.info.status)
    assert statuses["sweep"] == {"KILLED"} and statuses["teacher"] == {"FINISHED"}, statuses
    assert "KILLED" in statuses["trial"] and statuses["trial"] <= {"KILLED", "FINISHED"}, statuses
    _assert_session_gone(proc.pid)
