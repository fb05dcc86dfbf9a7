"""What the engine costs: one student trained bare, through the engine on a Ray worker, and on Ray Train.

The same student (same arrays, knowledge, objective, seed and torch threads) is trained

* **bare**: kd_core's loop in this process on in-memory arrays (:func:`kd_core.training.loop.train`);
* **engine**: a :class:`~kd_core.engine.steps.TrainStep` executed by a Ray
  :class:`~cluster.worker.StepWorker`: the workspace through the object store, knowledge read
  from its Parquet table (manifest checked), per-step MLflow logging, evaluation, saving;
* **ray_train**: the same train step on one Ray Train worker
  (:func:`cluster.data_parallel.train_on_ray_train`), what the A2D job used for a one-worker
  student before the engine (jobs now use Ray Train only for ``workers > 1``).

Each variant runs with ``--epochs`` E1 and E2 (interleaved, ``--repeats`` times, medians), so
its time splits into a per-training-step cost ``(t2 - t1) / (steps2 - steps1)`` and a fixed
cost ``t1 - steps1 * per_step``; the ratios to bare are measured side by side in one run.
Prints one JSON object. Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402

from cluster.data_parallel import train_on_ray_train  # noqa: E402
from cluster.runtime import Placement, connect  # noqa: E402
from cluster.tracking import Tracker  # noqa: E402
from cluster.worker import create_worker  # noqa: E402
from kd_core.engine.execute import execute  # noqa: E402
from kd_core.engine.inputs import knowledge_for, objective_for  # noqa: E402
from kd_core.engine.local import drive, is_teacher  # noqa: E402
from kd_core.engine.prepare import DataOptions, build_workspace  # noqa: E402
from kd_core.engine.steps import TermSpec, TrainStep  # noqa: E402
from kd_core.methods.hinton import HintonSettings, hinton_recipe  # noqa: E402
from kd_core.models.build import save_model  # noqa: E402
from kd_core.training.loop import TrainConfig, train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="span_qa")
    p.add_argument("--synthetic-size", type=int, default=600)
    p.add_argument("--epochs", type=float, nargs=2, default=(1.0, 3.0), metavar=("E1", "E2"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="engine-overhead-"))
    torch.set_num_threads(args.threads)
    options = DataOptions(task=args.task, synthetic_size=args.synthetic_size, max_length=96, doc_stride=32)
    settings = HintonSettings(teacher_epochs=2)
    ws = build_workspace(options, settings.teacher_model, settings.student_model, root / "run")
    drive(hinton_recipe(settings), lambda steps: [execute(s, ws) for s in steps], until=is_teacher)
    specs = (TermSpec("hard", 0.5), TermSpec("soft", 0.5, 2.0))
    features, arrays = ws.features("student", "train")
    arrays = {**arrays, **knowledge_for("knowledge", "student", "train", ws)}
    objective = objective_for(specs, ws.task)

    uri = f"sqlite:///{root}/mlflow.db"
    connect(uri)
    tracker = Tracker(uri)
    parent = tracker.start_run("bench", "engine overhead")
    worker = create_worker(Placement(num_cpus=1.0, num_gpus=0.0, torch_threads=args.threads))
    ray.get(worker.info.remote(), timeout=600)
    ws_ref = ray.put(ws)
    init = save_model(ws.task.build_model(settings.student_model, 1, ws.tokenizer("student"))[0],
                      ws.tokenizer("student"), root / "student-init")

    def config(epochs: float) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=1)

    def bare(epochs: float) -> tuple[float, int]:
        model, _ = ws.task.build_model(str(init), 1, ws.tokenizer("student"))
        started = time.perf_counter()
        result = train(model, arrays, objective, config(epochs), progress=False, forward=ws.task.forward)
        return time.perf_counter() - started, result.steps

    counter = iter(range(10**6))

    def engine(epochs: float) -> tuple[float, int]:
        step = TrainStep(f"student-{next(counter)}", str(init), 1, "student", specs, config(epochs),
                         knowledge="knowledge")
        run = tracker.start_child(parent, step.name)
        started = time.perf_counter()
        result = ray.get(worker.run.remote(step, ws_ref, run), timeout=3600)
        seconds = time.perf_counter() - started
        tracker.end_run(run)
        shutil.rmtree(ws.step_dir(step.name), ignore_errors=True)
        return seconds, result["steps"]

    def ray_train(epochs: float) -> tuple[float, int]:
        step = TrainStep(f"ray-train-{next(counter)}", str(init), 1, "student", specs, config(epochs),
                         knowledge="knowledge")
        run = tracker.start_child(parent, step.name)
        started = time.perf_counter()
        result = train_on_ray_train(step, ws, ws_ref, run, root / "ray_train")
        seconds = time.perf_counter() - started
        tracker.end_run(run)
        shutil.rmtree(ws.step_dir(step.name), ignore_errors=True)
        return seconds, result["steps"]

    variants = {"bare": bare, "engine": engine, "ray_train": ray_train}
    times: dict[str, dict[float, list[float]]] = {v: {e: [] for e in args.epochs} for v in variants}
    steps: dict[str, dict[float, int]] = {v: {} for v in variants}
    for _ in range(args.repeats):
        for epochs in args.epochs:
            for name, run_variant in variants.items():
                seconds, count = run_variant(epochs)
                times[name][epochs].append(seconds)
                steps[name][epochs] = count
    e1, e2 = args.epochs
    report: dict[str, dict[str, float]] = {}
    for name in variants:
        t1, t2 = (statistics.median(times[name][e]) for e in (e1, e2))
        s1, s2 = steps[name][e1], steps[name][e2]
        per_step = (t2 - t1) / (s2 - s1)
        report[name] = {"median_s": {str(e1): t1, str(e2): t2}, "steps": {str(e1): s1, str(e2): s2},
                        "per_step_s": per_step, "fixed_s": t1 - s1 * per_step}
    for name in ("engine", "ray_train"):
        report[name]["per_step_ratio_to_bare"] = report[name]["per_step_s"] / report["bare"]["per_step_s"]
        report[name]["fixed_minus_bare_s"] = report[name]["fixed_s"] - report["bare"]["fixed_s"]
    tracker.end_run(parent)
    print(json.dumps({
        "benchmark": "engine_overhead", "task": args.task, "train_features": len(features),
        "epochs": list(args.epochs), "repeats": args.repeats, "threads": args.threads, "variants": report,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
        "ray": ray.__version__, "date": time.strftime("%Y-%m-%d"),
    }))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
