"""Does knowledge help? A2D's members, ensemble, student and no-KD student on dev and test, over several seeds.

Runs the single-process distillation (``jobs.distill``) once per seed with ``--baseline``
on, so the KD student and the no-KD baseline see the same data, tokenizer, teachers and
student initialisation. Per seed and as means with spreads (sample standard deviation) over
seeds: dev F1 (where choices are made: compare settings on it) and test F1 (reported: no
choice reads it) of every member, the ensemble, the student and the no-KD student; on test
also the share of the ensemble's gain over its mean member that the student keeps,
``(student - member) / (ensemble - member)``, and KD's own gain, ``student - no-KD student``.

With ``--out FILE`` the object is written after every finished seed (``"complete": false``
until the last), and seeds already in FILE for the same configuration are not run again, so a
long run can go one seed at a time. Runs in this process (no Ray, no MLflow); never a test.

    python bench/distill_seeds.py --seeds 0 1 2 --set teacher_epochs=20 --out bench/results/a2d_protocol_<date>.json
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
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402

from bench.spreads import spread  # noqa: E402
from jobs.distill import DistillConfig, run_distillation, values_from_job_config  # noqa: E402
from kd_core.io.config_files import build_config, parse_overrides  # noqa: E402
from kd_core.io.run_files import write_atomic  # noqa: E402

#: The per-seed numbers, each on dev (choices) and test (reported).
MODELS = ("members_mean_f1", "ensemble_f1", "student_f1", "student_no_kd_f1")


def one_seed(base: DistillConfig, seed: int) -> dict[str, Any]:
    """Dev and test F1 of the members (each and their mean), the ensemble and both students, for one seed."""
    with tempfile.TemporaryDirectory(prefix=f"distill-seeds-{seed}-") as tmp:
        summary = run_distillation(replace(base, seed=seed, baseline=True, no_kd=False, run_dir=tmp))
    test = summary["test"]
    dev = {key: summary[key] for key in ("ensemble_f1", "student_f1", "student_no_kd_f1")}
    return {
        "dev": {**dev, "members_f1": summary["members_f1"], "members_mean_f1": statistics.mean(summary["members_f1"])},
        "test": {**{key: test[key] for key in dev}, "members_f1": test["members_f1"],
                 "members_mean_f1": statistics.mean(test["members_f1"]), "gain_kept": test["gain_kept"],
                 "kd_gain": test["kd_gain"]},
        **({"students_epochs": summary["students_epochs"]} if "students_epochs" in summary else {}),
        "seconds": summary["seconds"],
        "examples": {split: summary[f"{split}_examples"] for split in ("train", "dev", "test")},
    }


def report(values: dict[str, Any], runs: dict[str, dict[str, Any]], complete: bool) -> dict[str, Any]:
    """The benchmark's JSON object for the seeds finished so far."""
    summary: dict[str, Any] = {}
    for split, keys in (("dev", MODELS), ("test", (*MODELS, "gain_kept", "kd_gain"))):
        summary[split] = {key: spread([r[split][key] for r in runs.values() if r[split][key] is not None])
                          for key in keys}
    return {
        "benchmark": "distill_seeds", "config": values, "seeds": [int(s) for s in runs], "complete": complete,
        "splits": {"dev": "where choices are made (compare settings on it)", "test": "reported, read by no choice"},
        "per_seed": runs, "summary": summary,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU", "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d"), "command": "python bench/distill_seeds.py " + " ".join(sys.argv[1:]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--config", help="a jobs/a2d.py config file (YAML/JSON); --set overrides it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of python jobs/distill.py (repeatable), e.g. --set teacher_epochs=8")
    p.add_argument("--out", type=Path, help="write the results to FILE after every seed; seeds in it are kept")
    args = p.parse_args()
    values = values_from_job_config(args.config, parse_overrides(args.overrides), {"members": 2})
    base = build_config(DistillConfig, values, {}, source=args.config or "overrides")
    runs: dict[str, dict[str, Any]] = {}
    if args.out and args.out.exists():
        earlier = json.loads(args.out.read_text())
        if earlier.get("config") == values:
            runs = {seed: run for seed, run in earlier["per_seed"].items() if int(seed) in args.seeds}
    for seed in args.seeds:
        if str(seed) not in runs:
            runs[str(seed)] = one_seed(base, seed)
            print(json.dumps({"seed": seed, **runs[str(seed)]}), file=sys.stderr, flush=True)
        if args.out:
            write_atomic(args.out, json.dumps(report(values, runs, len(runs) == len(args.seeds)), indent=1) + "\n")
    print(json.dumps(report(values, runs, True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
