"""Does plain KD help on the embedded tasks? The kd recipe per task and seed, in one process; means over seeds.

For every task and seed: the teacher ensemble, the KD student and the no-KD student (same
architecture, data, initialisation and schedule), each scored on the task's **test** split
with its primary metric. Prints one JSON object with the per-seed numbers and the means.
``--set KEY=VALUE`` overrides any recipe or data option (e.g. ``--set members=3``).
Never run as a test.
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

from kd_core.engine.local import run_locally  # noqa: E402
from kd_core.engine.prepare import DataOptions, build_workspace  # noqa: E402
from kd_core.io.config_files import build_config, parse_overrides  # noqa: E402
from kd_core.methods.hinton import HintonSettings, hinton_recipe  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["sentiment", "entailment", "rating"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    overrides = parse_overrides(args.set)
    data_keys = {f.name for f in fields(DataOptions)}
    rows: dict[str, dict[str, list[float]]] = {}
    started = time.perf_counter()
    for task in args.tasks:
        rows[task] = {"teacher": [], "student": [], "student_no_kd": []}
        for seed in args.seeds:
            data = build_config(DataOptions, {k: v for k, v in overrides.items() if k in data_keys},
                                {"task": task, "seed": seed}, "--set")
            settings = build_config(HintonSettings, {k: v for k, v in overrides.items() if k not in data_keys},
                                    {"seed": seed}, "--set")
            with tempfile.TemporaryDirectory() as run_dir:
                ws = build_workspace(data, settings.teacher_model, settings.student_model, run_dir)
                results = run_locally(hinton_recipe(settings), ws)
            for label, step in (("teacher", "eval-teacher"), ("student", "eval-student"),
                                ("student_no_kd", "eval-student-no-kd")):
                rows[task][label].append(results[step]["primary"])
        rows[task]["primary_metric"] = ws.task.primary_metric  # type: ignore[assignment]
    means = {task: {label: statistics.mean(v) for label, v in r.items() if isinstance(v, list)}
             for task, r in rows.items()}
    print(json.dumps({
        "benchmark": "kd_seeds", "tasks": args.tasks, "seeds": args.seeds, "overrides": overrides,
        "per_seed_test": rows, "mean_test": means,
        "kd_minus_no_kd": {t: m["student"] - m["student_no_kd"] for t, m in means.items()},
        "seconds": round(time.perf_counter() - started, 1), "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
    }))


if __name__ == "__main__":
    main()
