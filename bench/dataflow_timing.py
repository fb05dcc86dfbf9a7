"""Stage barriers against dataflow: one recipe timed both ways on step workers (the part the
``*_concurrency.py`` benches share).

* **before**: the runtime as it was: the recipe's stages one after another, each stage's steps
  through :meth:`~cluster.scheduler.WorkerPool.run` (a step waits for a free worker), every
  step of a stage awaited before the next stage is planned; each step gets the node's cores
  shared among the stage's steps running at once.
* **after**: the runtime now: :func:`kd_core.engine.local.flow` on
  :class:`~cluster.job_steps.PoolSteps`, a step starting as soon as the steps it reads are done
  and a worker is free.

Every timed run drives the whole recipe from nothing into a fresh run dir on a fresh pool
(worker start-up is not timed: a job starts its workers once), the modes alternating and
their order swapped every repeat so that machine noise hits both alike. With one worker both
modes run the steps one after another: the reference the speed-ups are read against.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray

from cluster.job_steps import PoolSteps
from cluster.scheduler import WorkerPool
from kd_core.engine.local import Recipe, flow
from kd_core.engine.steps import Result, Step
from kd_core.engine.workspace import Workspace

MODES = ("before", "after")
ROOT = Path(__file__).resolve().parents[1]
#: How the machine was shared while the committed results were measured (said in every result file).
LOAD = ("2-core machine shared with other agents: their tests, jobs and benchmarks may run at the same time "
        "(each run's load_1min is the 1-minute load average as it ended)")


class Timeline(PoolSteps):
    """:class:`PoolSteps` that remembers each step's stage and worker (for :func:`overlaps`)."""

    def __init__(self, pool: WorkerPool, ws: Workspace, ws_ref: ray.ObjectRef) -> None:
        super().__init__(pool, ws, ws_ref)
        self.stages: dict[str, int | None] = {}
        self.places: dict[str, str] = {}

    def on_start(self, step: Step, stage: int | None, place: str) -> None:
        self.stages[step.name] = stage
        self.places[step.name] = place


def stage_by_stage(recipe: Recipe, pool: WorkerPool, ws_ref: ray.ObjectRef) -> tuple[dict[str, Result], list[dict]]:
    """The "before" driver (module doc): every result by step name, and each stage's steps and seconds."""
    results: dict[str, Result] = {}
    stages: list[dict] = []
    while steps := recipe(results):
        threads = pool.threads(len(steps))
        started = time.perf_counter()
        done = pool.run([lambda worker, s=s: worker.run.remote(s, ws_ref, None, threads) for s in steps])
        stages.append({"steps": [s.name for s in steps], "seconds": round(time.perf_counter() - started, 2)})
        results |= {step.name: result for step, result in zip(steps, done)}
    return results, stages


def overlaps(runner: Timeline) -> list[dict]:
    """The steps a dataflow run started while a step of an earlier stage still ran: what stage barriers forbid."""
    spans: dict[str, list[float]] = {}
    for event, name, seconds in runner.events:
        spans.setdefault(name, []).append(seconds)
    found = []
    for name, (start, _) in spans.items():
        stage = runner.stages[name]
        earlier = [other for other, (s, end) in spans.items() if s <= start < end
                   and (runner.stages[other] or 0) < (stage or 0)]
        if earlier:
            found.append({"step": name, "stage": stage, "while": sorted(earlier)})
    return found


def timeline(runner: Timeline) -> list[list]:
    """``[step, stage, worker, start s, end s]`` of every step of a dataflow run, from its first start."""
    spans: dict[str, list[float]] = {}
    for _, name, seconds in runner.events:
        spans.setdefault(name, []).append(seconds)
    zero = min(start for start, _ in spans.values())
    return [[name, runner.stages[name], runner.places[name], round(start - zero, 2), round(end - zero, 2)]
            for name, (start, end) in spans.items()]


def time_one(mode: str, recipe: Recipe, ws: Workspace, workers: int, run_dir: Path) -> dict[str, Any]:
    """Drive ``recipe`` once in ``mode`` on a fresh pool of ``workers`` into the fresh ``run_dir``."""
    ws.relocate(run_dir)  # not ``ws.run_dir = ...``: a worker's copy resets run_dir from the store
    pool = WorkerPool(workers)
    try:
        pool.run([lambda worker: worker.info.remote() for _ in range(workers)])  # every worker up before the clock
        ws_ref = ray.put(ws)
        started = time.perf_counter()
        if mode == "before":
            results, stages = stage_by_stage(recipe, pool, ws_ref)
            seconds = time.perf_counter() - started
            detail: dict[str, Any] = {"stages": stages}
        else:
            runner = Timeline(pool, ws, ws_ref)
            results = flow(recipe, runner)
            seconds = time.perf_counter() - started
            detail = {"overlapped": overlaps(runner), "timeline": timeline(runner)}
    finally:
        pool.shutdown()
    return {"mode": mode, "workers": workers, "wall_s": round(seconds, 2), "steps": len(results),
            "load_1min": round(os.getloadavg()[0], 2), **detail}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and (max - min) / median of ``values``."""
    median = statistics.median(values)
    return {"median_s": round(median, 2), "min_s": round(min(values), 2), "max_s": round(max(values), 2),
            "relative_spread": round((max(values) - min(values)) / median, 3)}


def compare(recipe_for: Callable[[Workspace], Recipe], ws: Workspace, work: Path, workers: Sequence[int],
            repeats: int, keep_last: bool = False) -> dict[str, Any]:
    """Time ``recipe_for(ws)`` in both modes, ``repeats`` times per worker count of ``workers`` (module doc).

    Prints one JSON line per run on stderr; returns the runs (a dataflow run's timeline only for the
    first repeat), and per worker count the spread of each mode and the ratio before / after (above 1:
    dataflow pays), and the speed-up of each mode over one worker when ``workers`` has 1. Each run's
    folder is removed after it, but the last one with ``keep_last`` (the caller reads its models).
    """
    runs: list[dict[str, Any]] = []
    folder = None
    for repeat in range(repeats):
        for size in workers:
            for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
                folder = work / f"{mode}-{size}-{repeat}"
                run = {"repeat": repeat, **time_one(mode, recipe_for(ws), ws, size, folder)}
                print(json.dumps({k: run[k] for k in ("mode", "workers", "repeat", "wall_s", "steps", "load_1min")}),
                      file=sys.stderr, flush=True)
                if repeat > 0:
                    run.pop("timeline", None)
                runs.append(run)
    if folder is not None and not keep_last:
        shutil.rmtree(folder, ignore_errors=True)
    by_workers: dict[str, Any] = {}
    for size in workers:
        walls = {mode: [r["wall_s"] for r in runs if r["workers"] == size and r["mode"] == mode] for mode in MODES}
        by_workers[str(size)] = {mode: spread(walls[mode]) for mode in MODES}
        by_workers[str(size)]["ratio_before_over_after"] = round(
            statistics.median(walls["before"]) / statistics.median(walls["after"]), 3)
    summary: dict[str, Any] = {"workers": list(workers), "repeats": repeats, "by_workers": by_workers}
    if 1 in workers:
        one = by_workers["1"]
        summary["speedup_over_1_worker"] = {
            str(size): {mode: round(one[mode]["median_s"] / by_workers[str(size)][mode]["median_s"], 3)
                        for mode in MODES} for size in workers if size != 1}
    summary["runs"] = runs
    return summary


def environment(argv: Sequence[str]) -> dict[str, Any]:
    """Where and how a result was measured: machine, versions, command, date, commit, load."""
    import mlflow
    import torch
    import transformers

    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), None) if Path("/proc/meminfo").exists() else None
    script = Path(argv[0]).resolve()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date": time.strftime("%Y-%m-%d"), "commit": commit.stdout.strip() or None,
        "command": "python " + " ".join([script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT)
                                         else argv[0], *argv[1:]]),
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "ray_cpus": ray.cluster_resources().get("CPU"),
                    "memory_gib": round(int(memory) / 2**20, 1) if memory else None, "gpu": torch.cuda.is_available()},
        "load": LOAD,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "ray": ray.__version__, "mlflow": mlflow.__version__},
    }


def write_result(name: str, result: Mapping[str, Any], out: str | None) -> Path:
    """Print ``result`` as one JSON line and write it to ``out`` (default ``bench/results/<name>_<date>.json``)."""
    path = Path(out) if out else ROOT / "bench" / "results" / f"{name}_{time.strftime('%Y-%m-%d')}.json"
    print(json.dumps(result))
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path
