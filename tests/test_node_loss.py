"""A node lost mid-step: a real second Ray node (`ray start --address`, its own ports and temp dir) is killed
while the job's only worker trains on it; Ray restarts the worker on the head and the step resumes from its
checkpoint in the run's store (a real S3 API, so nothing of the lost node's disk is used)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import s3_server, stop_processes_mentioning, wait_for

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
HEAD_PORT, DASHBOARD_PORT = 6395, 8295  # the dashboard serves the state API (which node each actor is on)
#: Ports of the two nodes (node manager, object manager, dashboard agent http/grpc, runtime env agent, metrics,
#: worker range), apart from the test session's cluster and tests/test_ray_job_submit.py's.
#: All below Linux's ephemeral range (32768-60999), where any outgoing connection may already hold one.
HEAD_PORTS = dict(node=6396, objects=6397, agent=29401, agent_grpc=29402, runtime_env=29403, metrics=29404,
                  workers=(20400, 20499))
SPARE_PORTS = dict(node=6398, objects=6399, agent=29411, agent_grpc=29412, runtime_env=29413, metrics=29414,
                   workers=(20500, 20599))
KD_TINY = ["--synthetic-size", "240", "--members", "1", "--teacher-epochs", "1", "--epochs", "8",
           "--batch-size", "16", "--max-concurrency", "1", "--no-baseline", "--quiet"]
#: Run with the cluster's address: "hold" waits for the spare node, starts a detached actor holding the head's only
#: CPU (so the job's worker must start on the spare node) and prints the spare node's id; ("free", dashboard URL)
#: removes it and prints the state and (last) node of every step worker.
BLOCKER = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
if sys.argv[2] == "hold":
    deadline = time.monotonic() + 90
    while not [n for n in ray.nodes() if n["Alive"] and "spare" in n["Resources"]] and time.monotonic() < deadline:
        time.sleep(0.5)
    @ray.remote(num_cpus=1, resources={"head": 1})
    class Blocker:
        def ready(self):
            return True
    ray.get(Blocker.options(name="blocker", namespace="kd-test", lifetime="detached").remote().ready.remote())
    print(next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "spare" in n["Resources"]))
else:
    from ray.util.state import list_actors
    ray.kill(ray.get_actor("blocker", namespace="kd-test"))
    workers = list_actors(address=sys.argv[3], filters=[("class_name", "=", "StepWorker")])
    print(json.dumps([(actor.state, actor.node_id) for actor in workers]))
"""
#: The head notices a dead node after 4 missed health checks 1 s apart (Ray's default: 5, 3 s apart).
HEALTH_CHECKS = '{"health_check_period_ms": 1000, "health_check_timeout_ms": 2000, "health_check_failure_threshold": 4}'


def _node_args(ports: dict, temp_dir: str) -> list[str]:
    return ["--node-ip-address", "127.0.0.1", "--node-manager-port", str(ports["node"]),
            "--object-manager-port", str(ports["objects"]), "--dashboard-agent-listen-port", str(ports["agent"]),
            "--dashboard-agent-grpc-port", str(ports["agent_grpc"]), "--runtime-env-agent-port",
            str(ports["runtime_env"]), "--metrics-export-port", str(ports["metrics"]), "--min-worker-port",
            str(ports["workers"][0]), "--max-worker-port", str(ports["workers"][1]), "--num-cpus", "1",
            "--object-store-memory", "200000000", "--temp-dir", temp_dir, "--disable-usage-stats"]


@pytest.mark.slow
def test_a_lost_node_s_step_is_rescheduled_on_the_head_and_resumes_from_its_checkpoint(tmp_path):
    head_dir = tempfile.mkdtemp(prefix="rayhead", dir="/tmp")  # short: Ray's unix sockets live under them
    spare_dir = tempfile.mkdtemp(prefix="rayspare", dir="/tmp")
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"127.0.0.1:{HEAD_PORT}"
    spare = None
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(HEAD_PORT), "--dashboard-host", "127.0.0.1",
                        "--dashboard-port", str(DASHBOARD_PORT), "--system-config", HEALTH_CHECKS,
                        "--resources", '{"head": 1}', *_node_args(HEAD_PORTS, head_dir)],
                       check=True, env=env, capture_output=True, timeout=120)
        with (tmp_path / "spare.log").open("w") as spare_log:
            spare = subprocess.Popen([RAY, "start", "--address", address, "--resources", '{"spare": 1}', "--block",
                                      *_node_args(SPARE_PORTS, spare_dir)], env=env, stdout=spare_log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        held = subprocess.run([sys.executable, "-c", BLOCKER, address, "hold"], env=env, capture_output=True, text=True,
                              timeout=180)
        assert held.returncode == 0, held.stderr[-2000:] + (tmp_path / "spare.log").read_text()[-2000:]
        spare_id = held.stdout.strip().splitlines()[-1]
        with s3_server(tmp_path) as s3:
            run_dir, prefix = s3.uri("runs/node-loss"), "kd-runs/runs/node-loss"
            job_env = {**env, **s3.env}
            log = tmp_path / "job.log"
            with log.open("w") as out:
                job = subprocess.Popen([sys.executable, "jobs/kd.py", *KD_TINY, "--run-dir", run_dir, "--tracking-uri",
                                        f"sqlite:///{tmp_path}/mlflow.db", "--address", address, "--json"],
                                       cwd=ROOT, env=job_env, stdout=out, stderr=subprocess.STDOUT)
                # The student trains on the spare node (the head's CPU is held): wait for its first checkpoint.
                wait_for(lambda: f"{prefix}/steps/student/checkpoint.latest" in s3.keys("runs/node-loss"), job, 600,
                         log)
                os.killpg(spare.pid, signal.SIGKILL)  # the node: `ray start --block`, its raylet and workers
                stop_processes_mentioning(spare_dir)
                freed = subprocess.run([sys.executable, "-c", BLOCKER, address, "free",
                                        f"http://127.0.0.1:{DASHBOARD_PORT}"], env=env,
                                       capture_output=True, text=True, timeout=120)
                assert freed.returncode == 0, freed.stderr[-3000:]
                (_, node), = json.loads(freed.stdout.strip().splitlines()[-1])
                assert node == spare_id  # it ran on the lost node (Ray may not have noticed the loss yet)
                assert job.wait(timeout=600) == 0, log.read_text()[-4000:]
            summary = json.loads(next(line for line in reversed(log.read_text().splitlines()) if line.startswith("{")))
            student = json.loads(s3.fs.open_input_stream(f"{prefix}/steps/student/result.json").read())
        assert student["resumed_from_step"] > 0, log.read_text()[-5000:]  # from the checkpoint in S3, on the head
        assert "[kd " not in log.read_text() and "featurize" not in log.read_text()  # --quiet: no progress
        assert summary["models"]["student"]["test"] is not None
    finally:
        if spare is not None and spare.poll() is None:
            os.killpg(spare.pid, signal.SIGKILL)
        stop_processes_mentioning(spare_dir)
        stop_processes_mentioning(head_dir)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(spare_dir, ignore_errors=True)
