"""Does MT-DNN KD help on the embedded tasks? The mtdnn recipe per seed, in one process; means over seeds.

For every seed: per task, the single-task model, the vanilla multi-task student, the MT-KD
student and the teacher ensemble, each scored on the task's **test** split with its primary
metric, and the average over tasks; and, where choices are made, dev: the students' average
over tasks and each task's members (every candidate of a teacher pool, with the ones its
ensemble kept). Prints one JSON object with the per-seed numbers and the means (and sample
standard deviations of the test averages). ``--set KEY=VALUE`` overrides any recipe or data
option (e.g. ``--set tasks=glue``, ``--set candidates=6``). With ``--out FILE`` the object is
written after every seed (``"complete": false`` until the last) and seeds already in FILE
with the same overrides are not run again. Never run as a test.

    python bench/mtdnn_seeds.py --seeds 0 1 2 > bench/results/mtdnn_seeds_<date>.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from kd_core.engine.local import run_locally  # noqa: E402
from kd_core.engine.prepare import MultiTaskData, build_multitask_workspace  # noqa: E402
from kd_core.io.config_files import build_config, parse_overrides  # noqa: E402
from kd_core.io.run_files import write_atomic  # noqa: E402
from kd_core.methods.mtdnn import MTDNNSettings, mtdnn_recipe, summarise  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, help="write the results to FILE after every seed; seeds in it are kept")
    args = p.parse_args()
    overrides = parse_overrides(args.set)
    data_keys = {f.name for f in fields(MultiTaskData)}
    per_seed: list[dict] = []
    if args.out and args.out.exists():
        earlier = json.loads(args.out.read_text())
        if earlier.get("overrides") == overrides:
            per_seed = [s for s in earlier["per_seed_test"] if s["seed"] in args.seeds]
    started = time.perf_counter()
    for seed in args.seeds:
        if any(s["seed"] == seed for s in per_seed):
            continue
        data = build_config(MultiTaskData, {k: v for k, v in overrides.items() if k in data_keys}, {"seed": seed},
                            "--set")
        settings = build_config(MTDNNSettings, {k: v for k, v in overrides.items() if k not in data_keys},
                                {"seed": seed, "single_task": True}, "--set")
        with tempfile.TemporaryDirectory() as run_dir:
            ws = build_multitask_workspace(data, settings.teacher_model, settings.student_model, run_dir)
            summary = summarise(run_locally(mtdnn_recipe(settings, ws), ws), settings, ws)
        per_seed.append({"seed": seed, "tasks": {t: row["test"] for t, row in summary["tasks"].items()},
                         "average": summary["average_test"], "with_teacher": summary["with_teacher"],
                         "primary_metrics": {t: r["primary_metric"] for t, r in summary["tasks"].items()},
                         "dev": {"students_average": {n: r["dev_average"] for n, r in summary["students"].items()},
                                 "members": {t: row["members_dev"] for t, row in summary["tasks"].items()
                                             if "members_dev" in row},
                                 "ensemble_members": {t: row["ensemble_members"] for t, row in summary["tasks"].items()
                                                      if "ensemble_members" in row}}})
        print(json.dumps(per_seed[-1]), file=sys.stderr, flush=True)
        if args.out:
            write_atomic(args.out, json.dumps(report(per_seed, overrides, args.seeds, started), indent=1) + "\n")
    print(json.dumps(report(per_seed, overrides, args.seeds, started)))


def report(per_seed: list[dict], overrides: dict, seeds: list[int], started: float) -> dict:
    """The benchmark's JSON object for the seeds finished so far."""
    tasks = list(per_seed[0]["tasks"])
    labels = list(per_seed[0]["tasks"][tasks[0]])
    mean = {t: {label: statistics.mean(s["tasks"][t][label] for s in per_seed) for label in labels
                if label in per_seed[0]["tasks"][t]} for t in tasks}
    mean_average = {label: statistics.mean(s["average"][label] for s in per_seed) for label in per_seed[0]["average"]}
    std_average = {label: statistics.stdev(s["average"][label] for s in per_seed) if len(per_seed) > 1 else None
                   for label in per_seed[0]["average"]}
    students = per_seed[0]["dev"]["students_average"]
    mean_dev = {name: statistics.mean(s["dev"]["students_average"][name] for s in per_seed) for name in students}
    return {
        "benchmark": "mtdnn_seeds", "seeds": [s["seed"] for s in per_seed], "overrides": overrides,
        "complete": sorted(s["seed"] for s in per_seed) == sorted(seeds),
        "with_teacher": per_seed[0]["with_teacher"], "primary_metrics": per_seed[0]["primary_metrics"],
        "per_seed_test": per_seed, "mean_test": mean, "mean_average_test": mean_average,
        "std_average_test": std_average, "mean_students_dev_average": mean_dev,
        "mt_kd_minus_vanilla_mt": {t: m["mt_kd"] - m["vanilla_mt"] for t, m in mean.items()}
        | {"average": mean_average["mt_kd"] - mean_average["vanilla_mt"]},
        "seconds": round(time.perf_counter() - started, 1), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/mtdnn_seeds.py " + " ".join(sys.argv[1:]),
    }


if __name__ == "__main__":
    main()
