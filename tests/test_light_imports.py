"""Small fixed costs: a job's ``--help`` and a step worker's import load neither torch nor transformers, and a
job's driver (its ``--check``, its workspace, the code that logs its models) never loads torch.

Each check runs in a fresh interpreter (the test process has torch loaded already): every job's
``--help`` or ``--check`` in turn, as ``python jobs/<name>.py ...`` runs it, then which heavy packages ended
up in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted(p.name for p in (ROOT / "jobs").glob("*.py") if p.name != "__init__.py")
HEAVY = ("torch", "transformers", "datasets", "mlflow", "matplotlib", "sklearn")

#: Defines ``run_job``: ``python jobs/NAME ARGS`` run in this interpreter, as ``python jobs/NAME`` runs it.
RUN_JOB = """
import contextlib, io, json, runpy, sys

def run_job(name, args, starts):
    \"\"\"The job's exit code, and whether what it printed starts with ``starts``.\"\"\"
    sys.argv = [f"jobs/{name}", *args]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            runpy.run_path(f"jobs/{name}", run_name="__main__")
            code = None
        except SystemExit as stop:
            code = stop.code
    return code, text.getvalue().startswith(starts)
"""

HELP_ALL = RUN_JOB + """
out = {}
for name in sys.argv[1:]:
    code, usage = run_job(name, ["--help"], "usage: ")
    out[name] = {"code": code, "usage": usage}
out["loaded"] = [m for m in %r if m in sys.modules]
print(json.dumps(out))
"""


#: What only a step (a model) needs: a driver that loads it pays seconds at every start.
MODEL_CODE = ("torch", "transformers.modeling_utils", "sklearn", "matplotlib")

DRIVER = RUN_JOB + """
root = sys.argv[1]
out = {}
for name in sys.argv[2:]:
    code, ok = run_job(name, ["--check", "--run-dir", f"{root}/{name}"], "ok: ")
    out[name] = {"code": code, "ok": ok}
from ray import cloudpickle
from jobs.a2d import JOB
config = JOB.config(JOB.parse(["--run-dir", f"{root}/a2d-run"]))
ws = JOB.prepare(config)
out["steps"] = len(JOB.recipe(config, ws)({}))  # the first steps, as the driver plans them
out["pickled"] = len(cloudpickle.dumps(ws)) > 0  # what the driver puts in the object store
import cluster.job, cluster.tracking.pyfunc_model  # what the driver runs to log a model (MLflow runs the file)
out["loaded"] = [m for m in %r if m in sys.modules]
print(json.dumps(out))
"""


def _run(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_jobs_help_exits_0_with_its_usage_and_loads_no_torch_or_transformers():
    found = _run(HELP_ALL % (HEAVY,), *JOBS)
    assert {"a2d.py", "distill.py", "imm.py", "kd.py", "mtdnn.py", "students.py", "sweep.py"} <= set(JOBS)
    assert {name: found[name] for name in JOBS} == {name: {"code": 0, "usage": True} for name in JOBS}
    assert found["loaded"] == []


def test_importing_the_step_worker_and_the_executor_loads_no_step_code():
    code = ("import json, sys; import kd_core, cluster.worker, cluster.job_cli, kd_core.engine.execute; "
            f"print(json.dumps({{'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    assert _run(code)["loaded"] == []


def test_a_jobs_driver_checks_prepares_and_logs_without_loading_torch(tmp_path):
    jobs = ("a2d.py", "imm.py", "kd.py", "mtdnn.py", "students.py")
    found = _run(DRIVER % (MODEL_CODE,), str(tmp_path), *jobs)
    assert {name: found[name] for name in jobs} == {name: {"code": 0, "ok": True} for name in jobs}
    assert found["steps"] > 0 and found["pickled"]
    assert found["loaded"] == []
