"""Small fixed costs: a job's start-up before and after the lazy imports (issue 28, part 3).

Compares two checkouts of the project, each with its own virtual environment (``BEFORE`` and
``AFTER``, by default ``../wt-fixed-before`` and this one), on the same machine, runs alternating
(before, after, then after, before, ...) so a change of load hits both alike:

* ``--help`` and ``--check`` of ``jobs/imm.py`` and ``jobs/a2d.py``: wall time of the whole command,
  the interpreter's start included (``--check`` reads and featurises the default data);
* ``import kd_core, cluster.worker`` (what a step worker imports when Ray starts it), timed inside
  the interpreter;
* the default run of each job (tiny models, a local Ray cluster, a fresh run directory in a
  temporary folder; the MLflow store a copy of an empty one the tree's MLflow created, as on a
  user's second run, or with ``--fresh-store`` a new one): seconds from launch to the first
  ``started <step>`` progress line (the driver's imports, the data, Ray's start, the MLflow runs;
  :mod:`cluster.progress`), to the first training metric any step logged (read from the store
  afterwards: the worker's start and the first step's imports and set-up are on that path too), to
  the first and the last ``done`` line, and to the end of the command.

The **fixed overhead** of a run is what is not training: launch to the first training metric, plus
the last step's end to the command's end (summary, models logged, Ray stopped).

Each tree's ``--help`` and import run once untimed first (bytecode, file cache). Prints one JSON
line per measurement and, last, the summary (medians, min and max per variant);
writes it with the machine, versions, commands and load to ``bench/results/fixed_costs_<date>.json``,
after every job run too (``"complete": false`` until the last one).

    python bench/fixed_costs.py --before ../wt-fixed-before --repeats 3  # ../wt-fixed-before: a checkout of ce57cad
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
JOBS = ("imm", "a2d")
IMPORT_WORKER = ("import time; t = time.perf_counter(); import kd_core, cluster.worker; "
                 "print(time.perf_counter() - t)")
CHECK_ARGS = ("--check", "--run-dir")
STARTED = re.compile(r"\| started (\S+) @")
DONE = re.compile(r"\| (\S+) done in ")


def python_of(tree: Path) -> str:
    """The tree's own interpreter (its ``.venv``)."""
    return str(tree / ".venv" / "bin" / "python")


def clean_env() -> dict[str, str]:
    """This environment without a Ray address or MLflow URI (every job starts its own local cluster)."""
    return {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}


def time_help(tree: Path, job: str) -> float:
    """Wall seconds of ``python jobs/<job>.py --help`` in ``tree``."""
    started = time.perf_counter()
    subprocess.run([python_of(tree), f"jobs/{job}.py", "--help"], cwd=tree, env=clean_env(), check=True,
                   capture_output=True)
    return time.perf_counter() - started


def time_check(tree: Path, job: str, work: Path) -> float:
    """Wall seconds of ``python jobs/<job>.py --check --run-dir WORK`` in ``tree``."""
    started = time.perf_counter()
    subprocess.run([python_of(tree), f"jobs/{job}.py", *CHECK_ARGS, str(work)], cwd=tree, env=clean_env(),
                   check=True, capture_output=True)
    return time.perf_counter() - started


def empty_store(tree: Path, path: Path) -> Path:
    """An empty MLflow SQLite store at ``path``, created and migrated by ``tree``'s MLflow."""
    code = f"from mlflow import MlflowClient; MlflowClient('sqlite:///{path}').search_experiments()"
    subprocess.run([python_of(tree), "-c", code], cwd=tree, env=clean_env(), check=True, capture_output=True)
    return path


def first_metric(store: Path) -> float | None:
    """The epoch seconds of the first metric a step's run (a child of the job's run) logged in ``store``."""
    with contextlib.closing(sqlite3.connect(store)) as db:
        row = db.execute("SELECT MIN(m.timestamp) FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
                         "WHERE t.key = 'mlflow.parentRunId'").fetchone()
    return row[0] / 1000 if row and row[0] is not None else None


def time_import(tree: Path) -> float:
    """Seconds of ``import kd_core, cluster.worker`` in a fresh interpreter of ``tree``."""
    done = subprocess.run([python_of(tree), "-c", IMPORT_WORKER], cwd=tree, env=clean_env(), check=True,
                          capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def run_job(tree: Path, job: str, work: Path, store: Path | None) -> dict[str, Any]:
    """One default run of ``jobs/<job>.py`` in ``tree`` (into a copy of ``store``, or a new store when None): seconds
    to the first started step, the first training metric, the first and last finished step, and in all."""
    work.mkdir(parents=True)
    db = work / "mlflow.db"
    if store is not None:
        shutil.copy(store, db)
    command = [python_of(tree), f"jobs/{job}.py", "--run-dir", str(work / "run"), "--tracking-uri", f"sqlite:///{db}"]
    load = os.getloadavg()[0]
    launched = time.time()
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=tree, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    marks: dict[str, Any] = {}

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            now = time.perf_counter() - started
            if "first_started_s" not in marks and (found := STARTED.search(line)):
                marks.update(first_started_s=round(now, 2), first_step=found.group(1))
            if found := DONE.search(line):
                marks.setdefault("first_done_s", round(now, 2))
                marks.setdefault("first_done_step", found.group(1))
                marks["last_done_s"] = round(now, 2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert proc.stdout is not None
    out = proc.stdout.read()  # not communicate(): it would read stderr too, taking lines from the watcher
    proc.wait()
    watcher.join()
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}")
    reported = re.search(r"run dir: .* \(([\d.]+) s\)", out)
    metric = first_metric(db)
    timings = {**marks, "total_s": round(total, 2)}
    if metric is not None:
        timings["first_metric_s"] = round(metric - launched, 2)
        timings["fixed_s"] = round(timings["first_metric_s"] + total - marks["last_done_s"], 2)
    return {**timings, "job_seconds": float(reported.group(1)) if reported else None, "load_1min": round(load, 2)}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and count of ``values``."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "n": len(values)}


def versions(tree: Path) -> dict[str, str]:
    """The versions of the heavy libraries in ``tree``'s environment."""
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('torch', 'transformers', 'datasets', 'ray', 'mlflow')}))")
    done = subprocess.run([python_of(tree), "-c", code], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def commit(tree: Path) -> dict[str, Any]:
    """The tree's commit and whether its tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True,
                          check=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=tree, capture_output=True,
                             text=True, check=True).stdout.strip()
    return {"commit": head, "modified": bool(changed)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, default=ROOT.parent / "wt-fixed-before", help="checkout before the change")
    p.add_argument("--after", type=Path, default=ROOT, help="checkout after the change (default: this one)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each job per variant")
    p.add_argument("--quick-repeats", type=int, default=5, help="--help and import timings per variant")
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    p.add_argument("--fresh-store", action="store_true", help="each run creates its MLflow store (default: a copy "
                   "of an empty one, as on a second run)")
    p.add_argument("--note", default="idle: nothing else ran on the machine during the bench",
                   help="what the machine was doing besides (written with the result)")
    p.add_argument("--out", type=Path, default=None, help="result file (default: bench/results/fixed_costs_<date>.json)")
    args = p.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    samples: dict[str, dict[str, list[float]]] = {v: {} for v in trees}
    runs: list[dict[str, Any]] = []

    def order(i: int) -> list[str]:
        return ["before", "after"] if i % 2 == 0 else ["after", "before"]

    out = args.out or ROOT / "bench" / "results" / f"fixed_costs_{datetime.date.today().isoformat()}.json"

    def write(complete: bool) -> dict[str, Any]:
        """The result so far (``complete`` once every run finished), written to ``out``."""
        summary = {variant: {key: spread(values) for key, values in measures.items()}
                   for variant, measures in samples.items()}
        ratios = {key: round(summary["after"][key]["median"] / summary["before"][key]["median"], 3)
                  for key in summary["before"] if key in summary["after"]}
        result = {
            "what": __doc__.splitlines()[0],
            "complete": complete,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "note": args.note, "order": "before and after alternate (load_1min per run)"},
            "versions": versions(trees["after"]),
            "trees": {variant: {"path": str(tree), **commit(tree)} for variant, tree in trees.items()},
            "job_commands": {job: f"python jobs/{job}.py --run-dir TMP/run --tracking-uri sqlite:///TMP/mlflow.db"
                             for job in args.jobs},
            "store": "new per run" if args.fresh_store else "a copy of an empty store per run",
            "summary": summary,
            "after_over_before": ratios,
            "runs": runs,
        }
        out.write_text(json.dumps(result, indent=1) + "\n")
        return result

    def note(variant: str, measure: str, seconds: float) -> None:
        samples[variant].setdefault(measure, []).append(seconds)
        print(json.dumps({"variant": variant, "measure": measure, "s": round(seconds, 3)}), flush=True)

    with tempfile.TemporaryDirectory(prefix="fixed-costs-") as tmp:
        stores = {variant: None if args.fresh_store else empty_store(tree, Path(tmp) / f"empty-{variant}.db")
                  for variant, tree in trees.items()}
        for tree in trees.values():  # untimed: compiles each tree's bytecode and warms the file cache
            for job in args.jobs:
                time_help(tree, job)
                time_check(tree, job, Path(tmp) / "warm-check")
            time_import(tree)
        for i in range(args.quick_repeats):
            for variant in order(i):
                for job in args.jobs:
                    note(variant, f"help_{job}_s", time_help(trees[variant], job))
                    note(variant, f"check_{job}_s", time_check(trees[variant], job, Path(tmp) / f"check-{variant}-{i}"))
                note(variant, "import_kd_core_worker_s", time_import(trees[variant]))
        for i in range(args.repeats):
            for job in args.jobs:
                for variant in order(i):
                    run = {"variant": variant, "job": job, "repeat": i,
                           **run_job(trees[variant], job, Path(tmp) / f"{job}-{variant}-{i}", stores[variant])}
                    runs.append(run)
                    print(json.dumps(run), flush=True)
                    for key in ("first_started_s", "first_metric_s", "first_done_s", "fixed_s", "total_s"):
                        if run.get(key) is not None:
                            samples[variant].setdefault(f"{job}_{key}", []).append(run[key])
                    write(complete=False)  # a run stopped early keeps the runs it finished
    result = write(complete=True)
    print(json.dumps({"summary": result["summary"], "after_over_before": result["after_over_before"],
                      "written": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
