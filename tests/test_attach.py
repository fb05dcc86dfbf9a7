"""How a job tells its user to watch its cluster: the attach lines (formatter), and a real local cluster started by
the runtime, whose printed ``ray status --address`` command is run from another process as a user would."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.runtime import Cluster, attach_lines, token_settings

ROOT = Path(__file__).resolve().parents[1]
LOCAL = Cluster(started_here=True, address="192.0.2.2:37717", dashboard_url="http://127.0.0.1:8265", nodes=1,
                token_auth=True)


def test_a_local_cluster_prints_its_dashboard_the_status_command_and_where_the_token_is():
    lines = attach_lines(LOCAL, "/venv/bin/ray", environ={})
    token = str(Path.home() / ".ray" / "auth_token")
    assert lines[0] == "Ray: started a local cluster for this job at 192.0.2.2:37717 (it stops when the job ends)"
    assert lines[1] == f"  dashboard:  http://127.0.0.1:8265 (it asks for the token: paste the contents of {token})"
    assert lines[2] == "  status:     RAY_AUTH_MODE=token /venv/bin/ray status --address 192.0.2.2:37717"
    assert lines[3].startswith(f"  token:      {token}; ") and "RAY_AUTH_MODE=token" in lines[3]


def test_the_token_settings_follow_where_ray_reads_the_token_and_never_print_it():
    env, where = token_settings({"RAY_AUTH_TOKEN_PATH": "/secrets/ray"})
    assert env == "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/secrets/ray" and where == "/secrets/ray"
    lines = attach_lines(LOCAL, environ={"RAY_AUTH_TOKEN": "s3cr3t"})
    assert not any("s3cr3t" in line for line in lines)
    assert 'RAY_AUTH_MODE=token RAY_AUTH_TOKEN="<the same token>" ray status --address' in lines[2]
    assert "paste the job's RAY_AUTH_TOKEN variable" in lines[1]


def test_an_attached_cluster_says_which_and_without_auth_or_dashboard_prints_the_plain_command():
    attached = Cluster(started_here=False, address="10.0.0.5:6379", dashboard_url=None, nodes=3, token_auth=False)
    assert attach_lines(attached) == ["Ray: attached to the cluster at 10.0.0.5:6379 (3 nodes alive)",
                                      "  status:     ray status --address 10.0.0.5:6379"]


CONNECT = """
import sys
sys.path.insert(0, {root!r})
from cluster.runtime import announce, connect
announce(connect("sqlite:///{tmp}/mlflow.db", {address!r}))
print("connected", flush=True)
sys.stdin.read()  # hold the cluster until the test closes stdin
"""


def _connect(tmp: Path, env: dict, address: str | None = None) -> tuple[subprocess.Popen, list[str]]:
    """A process that connects like a job (its stderr's lines up to the connection) and holds the connection."""
    code = CONNECT.format(root=str(ROOT), tmp=tmp, address=address)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)
    assert proc.stdout is not None and proc.stdout.readline() == "connected\n", proc.communicate(timeout=30)
    lines = []
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(line.startswith("  status:") for line in lines):
        line = proc.stderr.readline()
        if line:
            lines.append(line.rstrip("\n"))
        else:
            time.sleep(0.1)
    return proc, lines


def _stop(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_printed_status_command_works_against_the_cluster_a_job_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}  # the job's token lands in tmp_path/.ray
    proc, lines = _connect(tmp_path, env)
    try:
        assert lines and lines[0].startswith("Ray: started a local cluster for this job at "), lines
        dashboard = next(line for line in lines if line.startswith("  dashboard:  http://127.0.0.1:"))
        assert f"paste the contents of {tmp_path}/.ray/auth_token" in dashboard
        command = next(line for line in lines if line.startswith("  status:")).split(":", 1)[1].strip()
        assert command.startswith("RAY_AUTH_MODE=token ") and " status --address " in command
        for _ in range(10):  # right after start: "No cluster status. It may take a few seconds..."
            status = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
            assert status.returncode == 0, status.stderr[-2000:]
            if "Node status" in status.stdout:
                break
            time.sleep(2)
        assert "Node status" in status.stdout and "Active:" in status.stdout, status.stdout
        without = subprocess.run(["bash", "-c", command.replace("RAY_AUTH_MODE=token ", "RAY_AUTH_MODE=disabled ")],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert without.returncode != 0  # the token part of the printed command is needed
        # A second driver with --address attaches to the same cluster and says which.
        address = command.rsplit(" ", 1)[1]
        other, attached = _connect(tmp_path, {**env, "RAY_AUTH_MODE": "token"}, address)
        _stop(other)
        assert attached[0] == f"Ray: attached to the cluster at {address} (1 node alive)", attached
        assert any(line.startswith("  dashboard:  http://127.0.0.1:") for line in attached)
    finally:
        _stop(proc)
