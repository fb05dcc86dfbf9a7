"""Does KD help every student kind? The students recipe per seed, in one process; means over seeds.

For every seed: per student kind, the test metric with KD and without (same student, same
initialisation, gold labels only), the teacher's, and each model's size and speed-up. Prints
one JSON object with the per-seed numbers and the means. ``--set KEY=VALUE`` overrides any
recipe or data option (e.g. ``--set augment=true``, ``--set tasks=glue``). Never run as a test.

    python bench/students_seeds.py --seeds 0 1 2 > bench/results/students_seeds_<date>.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from kd_core.config_files import build_config, parse_overrides  # noqa: E402
from kd_core.engine.local import run_locally  # noqa: E402
from kd_core.engine.prepare import StudentsData, build_students_workspace  # noqa: E402
from kd_core.methods.students import StudentsSettings, students_recipe, summarise  # noqa: E402

FIELDS = ("test", "test_no_kd", "kd_gain", "parameters", "speedup_b1", "speedup_b32")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    overrides = parse_overrides(args.set)
    data_keys = {f.name for f in fields(StudentsData)}
    per_seed: list[dict] = []
    started = time.perf_counter()
    for seed in args.seeds:
        data = build_config(StudentsData, {k: v for k, v in overrides.items() if k in data_keys}, {"seed": seed},
                            "--set")
        settings = build_config(StudentsSettings, {k: v for k, v in overrides.items() if k not in data_keys},
                                {"seed": seed}, "--set")
        with tempfile.TemporaryDirectory() as run_dir:
            ws = build_students_workspace(data, settings.teacher_model, run_dir)
            summary = summarise(run_locally(students_recipe(settings, ws), ws), settings, ws.task.name,
                                ws.task.primary_metric)
        per_seed.append({"seed": seed, "models": {name: {f: row[f] for f in FIELDS if f in row}
                                                  for name, row in summary["models"].items()}})
        print(json.dumps(per_seed[-1]), file=sys.stderr, flush=True)
    names = list(per_seed[0]["models"])
    mean = {name: {f: statistics.mean(s["models"][name][f] for s in per_seed) for f in FIELDS
                   if f in per_seed[0]["models"][name]} for name in names}
    print(json.dumps({
        "benchmark": "students_seeds", "seeds": args.seeds, "overrides": overrides, "task": summary["task"],
        "primary_metric": summary["primary_metric"], "per_seed": per_seed, "mean": mean,
        "kd_beats_no_kd": {name: row["kd_gain"] > 0 for name, row in mean.items() if "kd_gain" in row},
        "seconds": round(time.perf_counter() - started, 1), "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/students_seeds.py " + " ".join(sys.argv[1:]),
    }))


if __name__ == "__main__":
    main()
