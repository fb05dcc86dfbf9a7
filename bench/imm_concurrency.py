"""Is an IMM iteration really concurrent? One transfer stage (every domain's phi_i -> theta_i^(k+1))
with all domain actors at once (``max_concurrency = domains``) versus one after another (``1``).

Both modes run in the same process on the same Ray cluster, alternating, so machine noise hits
both alike. Iteration 0 and the knowledge stage run once, untimed; each timed repeat runs the
same transfer plans into a fresh folder. Actor start-up is excluded (actors are created once
per job), and each mode gives its actors the torch threads the job would (cores / running
models). Prints one JSON line per timed stage and, last, the medians and the ratio
sequential / concurrent (above 1: concurrency pays).

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

import ray

from cluster.domain_actor import create_domain_actor
from cluster.fanout import run_bounded
from cluster.runtime import connect, model_placement
from cluster.tracking import default_tracking_uri
from kd_core.data.synthetic import DOMAINS
from kd_core.imm import CurrentModel, IMMSettings, PlanResult, RunLayout, initial_plans, similarity_weights, transfer_plans
from kd_core.data.domains import DataSettings, prepare_domains


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domains", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--synthetic-per-domain", type=int, default=150)
    p.add_argument("--epochs", type=float, default=2.0)
    args = p.parse_args()
    data_settings = DataSettings(synthetic_domains=DOMAINS[: args.domains], synthetic_per_domain=args.synthetic_per_domain)
    settings = IMMSettings(epochs=args.epochs)
    tokenizer, domains = prepare_domains(data_settings)
    names = list(domains)
    similarity = similarity_weights({n: d.questions for n, d in domains.items()})
    connect(default_tracking_uri())
    work = Path(tempfile.mkdtemp(prefix="imm-concurrency-"))
    tokenizer.save_pretrained(work / "tokenizer")
    data_ref = ray.put(domains)

    def actors_for(concurrency: int) -> dict[str, ray.actor.ActorHandle]:
        placement = model_placement(len(names), concurrency)
        actors = {n: create_domain_actor(data_ref, str(work / "tokenizer"), settings, placement) for n in names}
        ray.get([a.info.remote() for a in actors.values()], timeout=600)  # wait until every actor is up
        return actors

    base = RunLayout(work / "base")
    actors = actors_for(len(names))
    results = [PlanResult(**r) for r in run_bounded(
        [lambda p=p: actors[p.domain].run_plan.remote(p) for p in initial_plans(base, settings, names, "tiny-bert")],
        len(names))]
    current = {r.domain: CurrentModel(0, str(r.model_dir), r.target_f1) for r in results}
    ray.get([actors[n].write_knowledge.remote(n, current[n].model_dir, str(base.knowledge_path(n, 0))) for n in names])
    for actor in actors.values():
        ray.kill(actor, no_restart=True)

    times: dict[str, list[float]] = {"concurrent": [], "sequential": []}
    for repeat in range(args.repeats):
        for mode, concurrency in (("concurrent", len(names)), ("sequential", 1)):
            actors = actors_for(concurrency)
            layout = RunLayout(work / f"{mode}-{repeat}")
            shutil.copytree(base.root / "knowledge", layout.root / "knowledge")
            plans = transfer_plans(layout, settings, names, "tiny-bert", similarity, current, 0)
            started = time.perf_counter()
            run_bounded([lambda p=p: actors[p.domain].run_plan.remote(p) for p in plans], concurrency)
            seconds = time.perf_counter() - started
            for actor in actors.values():
                ray.kill(actor, no_restart=True)
            times[mode].append(seconds)
            print(json.dumps({"mode": mode, "repeat": repeat, "transfer_s": round(seconds, 2)}), flush=True)
    concurrent, sequential = statistics.median(times["concurrent"]), statistics.median(times["sequential"])
    print(json.dumps({
        "domains": len(names), "train_features": {n: len(d.train_features) for n, d in domains.items()},
        "epochs": args.epochs, "repeats": args.repeats, "cluster_cpus": ray.cluster_resources().get("CPU"),
        "concurrent_transfer_s": round(concurrent, 2), "sequential_transfer_s": round(sequential, 2),
        "ratio_sequential_over_concurrent": round(sequential / concurrent, 2),
    }))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
