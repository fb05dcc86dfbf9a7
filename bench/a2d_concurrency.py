"""Is member work really concurrent? A2D's member training and teacher inference, side by side:
all members at once (``max_concurrency = members``) versus one after another (``max_concurrency = 1``).

Both modes run in the same process on the same Ray cluster, alternating, so machine noise hits
both alike; actor start-up is excluded (actors are created once per job). Each mode gives its
actors the torch threads the job would: cores / concurrently running models. Prints one JSON
object with the medians and the ratio sequential / concurrent (above 1: concurrency pays).

    python bench/a2d_concurrency.py --members 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import ray

from cluster.ensemble import Ensemble
from cluster.runtime import connect, model_placement
from cluster.tracking import default_tracking_uri
from kd_core.distill import DistillConfig, prepare_data
from kd_core.objectives import a2d_objective


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--synthetic-per-domain", type=int, default=100)
    p.add_argument("--epochs", type=float, default=1.0)
    args = p.parse_args()
    config = DistillConfig(synthetic_per_domain=args.synthetic_per_domain, teacher_epochs=args.epochs)
    data = prepare_data(config)
    connect(default_tracking_uri())
    work = Path(tempfile.mkdtemp(prefix="a2d-concurrency-"))
    data.tokenizer.save_pretrained(work / "tokenizer")
    arrays = ray.put(data.train_arrays)
    seeds = [config.seed + i for i in range(args.members)]
    times: dict[str, dict[str, list[float]]] = {"concurrent": {"train_s": [], "infer_s": []},
                                                "sequential": {"train_s": [], "infer_s": []}}
    for repeat in range(args.repeats):
        for mode, concurrency in (("concurrent", args.members), ("sequential", 1)):
            placement = model_placement(args.members, concurrency)
            ensemble = Ensemble.create(config.teacher_model, seeds, work / "tokenizer", work / f"{mode}-{repeat}",
                                       placement, concurrency)
            ensemble.info()  # wait until every actor is up
            _, train_s = ensemble.train(arrays, a2d_objective(config.a2d, use_knowledge=False),
                                        [replace(config.teacher_training(), seed=s) for s in seeds],
                                        work / f"ckpt-{mode}-{repeat}", [None] * args.members)
            _, infer_s = ensemble.knowledge(arrays, data.train_features["feature_id"], config.knowledge)
            ensemble.shutdown()
            times[mode]["train_s"].append(train_s)
            times[mode]["infer_s"].append(infer_s)
            print(json.dumps({"mode": mode, "repeat": repeat, "train_s": train_s, "infer_s": infer_s,
                              "threads_per_actor": placement.torch_threads}), file=sys.stderr)
    median = {mode: {k: statistics.median(v) for k, v in stages.items()} for mode, stages in times.items()}
    print(json.dumps({
        "members": args.members, "train_features": len(data.train_features), "cpus": ray.cluster_resources().get("CPU"),
        "median": median,
        "ratio_sequential_over_concurrent": {k: median["sequential"][k] / median["concurrent"][k] for k in ("train_s", "infer_s")},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
