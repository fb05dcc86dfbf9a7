"""Is member work really concurrent? A2D's member training and teacher inference, side by side:
all members at once (a pool of ``members`` step workers) versus one after another (one worker).

Both modes run in the same process on the same Ray cluster, alternating, so machine noise hits
both alike; worker start-up is excluded (workers start once per job). Each mode gives its
steps the torch threads a job would: the node's cores shared among the steps running at once.
Prints one JSON object with the medians and the ratio sequential / concurrent (above 1:
concurrency pays).

    python bench/a2d_concurrency.py --members 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from cluster.runtime import connect  # noqa: E402
from cluster.scheduler import WorkerPool  # noqa: E402
from cluster.tracking import default_tracking_uri  # noqa: E402
from kd_core.engine.prepare import SpanQAData, build_span_workspace  # noqa: E402
from kd_core.methods.a2d import A2DSettings, a2d_recipe  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--synthetic-size", type=int, default=100)
    p.add_argument("--epochs", type=float, default=1.0)
    args = p.parse_args()
    settings = A2DSettings(members=args.members, teacher_epochs=args.epochs)
    ws = build_span_workspace(SpanQAData(synthetic_size=args.synthetic_size), settings.teacher_model,
                              settings.student_model, tempfile.mkdtemp(prefix="a2d-concurrency-"))
    recipe = a2d_recipe(settings, ws)
    members = recipe({})
    collects = recipe({step.name: {} for step in members})
    connect(default_tracking_uri())
    times: dict[str, dict[str, list[float]]] = {"concurrent": {"train_s": [], "infer_s": []},
                                                "sequential": {"train_s": [], "infer_s": []}}
    root = ws.run_dir
    for repeat in range(args.repeats):
        for mode, size in (("concurrent", args.members), ("sequential", 1)):
            ws.run_dir = root / f"{mode}-{repeat}"
            pool = WorkerPool(size)
            pool.run([lambda worker: worker.info.remote() for _ in range(size)])  # wait until every worker is up
            ws_ref = ray.put(ws)
            for stage, steps in (("train_s", members), ("infer_s", collects)):
                threads = pool.threads(len(steps))
                started = time.perf_counter()
                pool.run([lambda worker, s=s: worker.run.remote(s, ws_ref, None, threads) for s in steps])
                times[mode][stage].append(time.perf_counter() - started)
            pool.shutdown()
            print(json.dumps({"mode": mode, "repeat": repeat, **{k: v[-1] for k, v in times[mode].items()}}),
                  file=sys.stderr)
    median = {mode: {k: statistics.median(v) for k, v in stages.items()} for mode, stages in times.items()}
    print(json.dumps({
        "members": args.members, "train_features": len(ws.features("teacher", "train")[0]),
        "cpus": ray.cluster_resources().get("CPU"), "median": median,
        "ratio_sequential_over_concurrent": {k: median["sequential"][k] / median["concurrent"][k]
                                             for k in ("train_s", "infer_s")},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
