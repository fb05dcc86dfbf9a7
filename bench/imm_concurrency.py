"""Is an IMM iteration really concurrent? One transfer (every domain's phi_i, then theta_i) with
one step worker per domain (all domains at once) versus one worker (one after another).

Both modes run in the same process on the same Ray cluster, alternating, so machine noise hits
both alike. Iteration 0 and its knowledge run once, untimed (their results are shared by every
timed repeat); each repeat runs the same transfer steps into a fresh folder. Worker start-up
is excluded (workers start once per job), and each mode gives its steps the torch threads the
job would: the node's cores shared among the steps running at once. Prints one JSON line per
timed transfer and, last, the medians and the ratio sequential / concurrent (above 1:
concurrency pays).

    python bench/imm_concurrency.py --domains 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
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
from kd_core.data.domains import DataSettings  # noqa: E402
from kd_core.data.synthetic import DOMAINS  # noqa: E402
from kd_core.engine.execute import execute  # noqa: E402
from kd_core.engine.local import drive, is_teacher  # noqa: E402
from kd_core.engine.prepare import build_domain_workspace  # noqa: E402
from kd_core.engine.workspace import absolute_result  # noqa: E402
from kd_core.io.run_files import write_atomic  # noqa: E402
from kd_core.methods.imm import TOKENIZER, IMMSettings, domain_names, imm_recipe  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domains", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--synthetic-size", type=int, default=150)
    p.add_argument("--epochs", type=float, default=2.0)
    args = p.parse_args()
    settings = IMMSettings(epochs=args.epochs, iterations=1)
    work = Path(tempfile.mkdtemp(prefix="imm-concurrency-"))
    ws = build_domain_workspace(DataSettings(synthetic_domains=DOMAINS[: args.domains],
                                             synthetic_size=args.synthetic_size),
                                settings.max_answer_length, TOKENIZER, work / "base")
    names = domain_names(ws)
    recipe = imm_recipe(settings, ws)
    teachers = drive(recipe, lambda steps: [execute(s, ws) for s in steps], until=is_teacher)  # untimed, once
    phi = recipe(teachers)
    theta = recipe({**teachers, **{step.name: {} for step in phi}})
    connect(default_tracking_uri())
    base = ws.store

    times: dict[str, list[float]] = {"concurrent": [], "sequential": []}
    for repeat in range(args.repeats):
        for mode, size in (("concurrent", len(names)), ("sequential", 1)):
            pool = WorkerPool(size)
            pool.run([lambda worker: worker.info.remote() for _ in range(size)])  # wait until every worker is up
            ws.relocate(work / f"{mode}-{repeat}")
            for name, result in teachers.items():  # the shared iteration 0: its results name its models and tables
                write_atomic(ws.result_path(name), json.dumps(absolute_result(result, base)))
            ws_ref = ray.put(ws)
            started = time.perf_counter()
            for steps in (phi, theta):
                threads = pool.threads(len(steps))
                pool.run([lambda worker, s=s: worker.run.remote(s, ws_ref, None, threads) for s in steps])
            seconds = time.perf_counter() - started
            pool.shutdown()
            times[mode].append(seconds)
            print(json.dumps({"mode": mode, "repeat": repeat, "transfer_s": round(seconds, 2)}), flush=True)
    concurrent, sequential = statistics.median(times["concurrent"]), statistics.median(times["sequential"])
    print(json.dumps({
        "domains": len(names), "train_features": {n: len(ws.features(TOKENIZER, f"{n}.train")[0]) for n in names},
        "epochs": args.epochs, "repeats": args.repeats, "cluster_cpus": ray.cluster_resources().get("CPU"),
        "concurrent_transfer_s": round(concurrent, 2), "sequential_transfer_s": round(sequential, 2),
        "ratio_sequential_over_concurrent": round(sequential / concurrent, 2),
    }))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
