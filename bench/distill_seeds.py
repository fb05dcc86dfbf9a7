"""Does knowledge help? Student F1 with and without A2D knowledge, over several seeds, side by side.

Runs the single-process distillation (``jobs.distill``) once per seed with ``--baseline``
on, so the KD student and the no-KD baseline see the same data, tokenizer, teacher and
student initialisation; prints one JSON object with per-seed and mean F1.

    python bench/distill_seeds.py --seeds 0 1 2 --set epochs=6 --set synthetic_size=300
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace

from jobs.distill import DistillConfig, run_distillation
from kd_core.io.config_files import build_config, parse_overrides


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a DistillConfig field (repeatable), e.g. --set epochs=6")
    args = p.parse_args()
    values = parse_overrides(args.overrides)
    base = build_config(DistillConfig, values, {}, source="overrides")
    runs = []
    for seed in args.seeds:
        summary = run_distillation(replace(base, seed=seed, baseline=True, no_kd=False, run_dir=f"{base.run_dir}/seed{seed}"))
        runs.append({k: summary[k] for k in ("teacher_f1", "student_f1", "student_no_kd_f1", "seconds")} | {"seed": seed})
        print(json.dumps(runs[-1]), file=sys.stderr)
    mean = {k: statistics.mean(r[k] for r in runs) for k in ("teacher_f1", "student_f1", "student_no_kd_f1", "seconds")}
    print(json.dumps({"config": values, "runs": runs, "mean": mean,
                      "kd_gain_f1": mean["student_f1"] - mean["student_no_kd_f1"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
