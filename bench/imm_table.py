"""The IMM table: every method of the paper's Table 1 per domain, dev (choices) and test (reported), mean over seeds.

For every seed, the IMM recipe runs in one process (no Ray, no MLflow) with the main method
``imm`` and every baseline (single, mix, ft, mft, ms-ft, ms-mft, bam), so all methods share the
data, splits, tokenizer and single-domain models. ``--variant NAME:KEY=VALUE[,KEY=VALUE]``
adds IMM runs with other settings on the same seeds (e.g. the ablations -KD1, -KD2, -SIMI, or
another ``kd_target``); a variant runs IMM alone and reuses nothing. Prints one JSON object.
``--set KEY=VALUE`` overrides any data, recipe or compute option (e.g.
``--set dynamic_padding=false``; ``--set config=FILE`` is not read: pass ``--config``). With
``--out FILE`` the object is also written after every finished seed (``"complete": false``
until the last), so a long run stopped early keeps the seeds it finished. Never run as a test.

    python bench/imm_table.py --seeds 0 1 2 --variant minus-KD1:no_kd1=true --variant minus-SIMI:no_similarity=true
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402

from kd_core.data.domains import DataSettings  # noqa: E402
from kd_core.engine.local import run_locally  # noqa: E402
from kd_core.engine.prepare import build_domain_workspace  # noqa: E402
from kd_core.io.config_files import build_config, parse_overrides, read_config_file  # noqa: E402
from kd_core.io.run_files import write_atomic  # noqa: E402
from kd_core.methods.imm import METHODS, TOKENIZER, IMMSettings, imm_recipe  # noqa: E402
from kd_core.methods.imm_summary import summarise  # noqa: E402
from kd_core.training.compute import Compute  # noqa: E402


def run_once(values: dict[str, Any], seed: int) -> dict[str, Any]:
    """One recipe run; its summary's per-method dev and test F1 (per domain and average)."""
    data_keys = {f.name for f in fields(DataSettings)}
    compute_keys = {f.name for f in fields(Compute)}
    data = build_config(DataSettings, {k: v for k, v in values.items() if k in data_keys}, {"seed": seed}, "--set")
    settings = build_config(IMMSettings, {k: v for k, v in values.items()
                                          if (k not in data_keys or k == "model") and k not in compute_keys},
                            {"seed": seed}, "--set")
    compute = build_config(Compute, {k: v for k, v in values.items() if k in compute_keys}, {}, "--set")
    with tempfile.TemporaryDirectory() as run_dir:
        ws = build_domain_workspace(data, settings.max_answer_length, TOKENIZER, run_dir)
        ws.compute = compute
        summary = summarise(run_locally(imm_recipe(settings, ws), ws, progress=True), settings, ws)
    methods = {settings.method: summary, **summary["baselines"]}
    out = {m: {k: s[k] for k in ("dev_f1", "test_f1", "average_dev_f1", "average_test_f1")} for m, s in methods.items()}
    if "iterations_f1" in summary:
        out[settings.method]["iterations_f1"] = summary["iterations_f1"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--config", help="a jobs/imm.py config file (YAML/JSON); --set overrides it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]")
    p.add_argument("--variants-only", action="store_true", help="run the variants without the table of every method")
    p.add_argument("--out", type=Path, help="also write the results to FILE after every finished seed")
    args = p.parse_args()
    base = {**(read_config_file(args.config) if args.config else {}), **parse_overrides(args.set)}
    for key in ("run_dir", "experiment", "tracking_uri", "max_concurrency"):
        base.pop(key, None)
    variants = {} if args.variants_only else {
        "table": {**base, "method": "imm", "baselines": [m for m in METHODS if m != "imm"]}}
    for spec in args.variant:
        name, _, settings = spec.partition(":")
        variants[name] = {**base, "method": "imm", "baselines": [], **parse_overrides(settings.split(","))}
    started = time.perf_counter()
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for seed in args.seeds:
        for name, values in variants.items():
            per_seed[name].append(run_once(values, seed))
            print(json.dumps({"seed": seed, "variant": name, **{m: round(s["average_test_f1"], 2)
                                                                for m, s in per_seed[name][-1].items()}}),
                  file=sys.stderr, flush=True)
        done = args.seeds[:args.seeds.index(seed) + 1]
        if args.out:
            write_atomic(args.out, json.dumps(report(base, variants, done, per_seed, done == args.seeds, started)) + "\n")
    print(json.dumps(report(base, variants, args.seeds, per_seed, True, started)))


def mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, the mean over seeds of each domain's and the average dev and test F1."""
    out = {}
    for method in runs[0]:
        out[method] = {split: {d: statistics.mean(r[method][f"{split}_f1"][d] for r in runs)
                               for d in runs[0][method][f"{split}_f1"]} for split in ("dev", "test")}
        for split in ("dev", "test"):
            out[method][split]["average"] = statistics.mean(r[method][f"average_{split}_f1"] for r in runs)
    return out


def report(base: dict[str, Any], variants: dict[str, dict[str, Any]], seeds: list[int],
           per_seed: dict[str, list[dict[str, Any]]], complete: bool, started: float) -> dict[str, Any]:
    """The benchmark's JSON object for the seeds finished so far."""
    return {
        "benchmark": "imm_table", "seeds": seeds, "complete": complete, "config": base,
        "variants": {n: v for n, v in variants.items() if n != "table"},
        "splits": {"dev": "validation carved from each domain's training data: every choice",
                   "test": "each domain's test split: reported, never used for a choice"},
        "mean": {name: mean(runs) for name, runs in per_seed.items()}, "per_seed": per_seed,
        "seconds": round(time.perf_counter() - started, 1), "machine": platform.machine(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/imm_table.py " + " ".join(sys.argv[1:]),
    }

if __name__ == "__main__":
    main()
