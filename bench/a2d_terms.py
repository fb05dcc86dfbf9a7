"""A2D's Table 5 and the confusing-answer rule: one set of members, students trained per variant, per seed.

Per seed, the A2D recipe (default settings of ``python jobs/a2d.py`` unless ``--set``) runs its
teacher steps once; every variant then runs the rest of the recipe with its own settings in
its own run directory, reusing every teacher step whose definition it shares (a variant that
collects or merges differently, e.g. ``delta = 0`` or ``confusing = window``, recomputes
those steps). Variants are named by what the student's loss contains:

* ``CE+KD+ANS+ATT`` (Eq. 1, joint; its run also trains ``CE`` alone, the no-KD student);
* ``CE+ANS+ATT`` (``alpha = 0``: without vanilla KD), ``CE+KD+ANS`` (``delta = 0``),
  ``CE+KD+ATT`` (``gamma = 0``);
* ``ATT, then CE+KD+ANS`` (``stagewise``);
* ``CE+KD+ANS+ATT, confusing per window`` (the earlier rule, against the paper's per question).

Prints one JSON object: per variant the student's dev F1 (where choices are made) and test F1
(``<name> [test]``, read by no choice) per seed and the mean. With ``--out FILE``
it also writes that object after every finished seed (``"complete": false`` until the last), so
a long run stopped early keeps the seeds it finished. Runs in this process (no Ray, no MLflow).
Never run as a test.

    python bench/a2d_terms.py --seeds 0 1 2 > bench/results/a2d_terms_<date>.json
    python bench/a2d_terms.py --config configs/a2d_xquad.yaml --set teacher_model=M --set student_model=M \
        --out bench/results/a2d_terms_xquad_<date>.json
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402

from jobs.distill import DistillConfig, values_from_job_config, workspace  # noqa: E402
from kd_core.engine.execute import execute  # noqa: E402
from kd_core.engine.local import drive, is_teacher  # noqa: E402
from kd_core.engine.workspace import absolute_result  # noqa: E402
from kd_core.io.config_files import build_config, parse_overrides  # noqa: E402
from kd_core.io.run_files import write_atomic  # noqa: E402
from kd_core.methods.a2d import a2d_recipe, summarise  # noqa: E402
from kd_core.methods.registry import METHODS  # noqa: E402

VARIANTS = {
    "CE+KD+ANS+ATT": {},
    "CE+ANS+ATT": {"alpha": 0.0},
    "CE+KD+ANS": {"delta": 0.0},
    "CE+KD+ATT": {"gamma": 0.0},
    "ATT, then CE+KD+ANS": {"stagewise": True},
    "CE+KD+ANS+ATT, confusing per window": {"confusing": "window"},
}


def one_seed(base: DistillConfig, seed: int) -> dict[str, float]:
    """Every variant's student dev F1 (and the members', the ensemble's and the no-KD student's) for one seed."""
    with tempfile.TemporaryDirectory(prefix=f"a2d-terms-{seed}-") as tmp:
        root = Path(tmp)
        config = replace(base, seed=seed, run_dir=str(root / "teachers"))
        ws = workspace(config)
        spec = METHODS["a2d"]
        settings = replace(config.settings, baseline=True)
        teachers = drive(a2d_recipe(settings, ws), lambda steps: [execute(s, ws, progress=True) for s in steps],
                         until=is_teacher)
        base_plan = {step.name: step for step in spec.teacher_plan(settings, ws)}
        out: dict[str, float] = {}
        for name, changes in VARIANTS.items():
            variant = replace(settings, baseline=not changes, **changes)
            vws = replace(ws, run_dir=root / name.replace(" ", "_").replace(",", ""))
            shared = {step.name: teachers[step.name] for step in spec.teacher_plan(variant, vws)
                      if base_plan.get(step.name) == step}
            for step_name, result in shared.items():  # the variant's run directory holds the shared results
                write_atomic(vws.result_path(step_name), json.dumps(absolute_result(result, ws.store)))
            results = drive(a2d_recipe(variant, vws), lambda steps: [execute(s, vws, progress=True) for s in steps],
                            done=shared)
            out[name] = results["eval-student-dev"]["primary"]
            out[f"{name} [test]"] = results["eval-student-test"]["primary"]
            if not changes:
                summary = summarise(results, variant, vws)
                out.update({f"member {i}": f1 for i, f1 in enumerate(summary["members_f1"])})
                out.update({f"member {i} [test]": f1 for i, f1 in enumerate(summary["test"]["members_f1"])})
                out["CE (no knowledge)"] = results["student-no-kd"]["primary"]
                out["CE (no knowledge) [test]"] = summary["test"]["student_no_kd_f1"]
                out["ensemble"] = results["eval-ensemble-dev"]["primary"]
                out["ensemble [test]"] = summary["test"]["ensemble_f1"]
            print(json.dumps({"seed": seed, name: out[name]}), file=sys.stderr, flush=True)
    return out


def report(values: dict, runs: dict[int, dict[str, float]], complete: bool, started: float) -> dict:
    """The benchmark's JSON object for the seeds finished so far."""
    names = list(next(iter(runs.values())))
    return {
        "benchmark": "a2d_terms", "config": values,
        "split": "dev (where choices are made); the names ending in [test]: test, read by no choice",
        "seeds": list(runs), "complete": complete,
        "per_seed": runs, "mean": {n: statistics.mean(r[n] for r in runs.values()) for n in names},
        "seconds": round(time.perf_counter() - started, 1), "machine": platform.machine(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/a2d_terms.py " + " ".join(sys.argv[1:]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--config", help="a jobs/a2d.py config file (YAML/JSON); --set overrides it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of python jobs/distill.py (repeatable), e.g. --set epochs=6")
    p.add_argument("--out", type=Path, help="also write the results to FILE after every finished seed")
    args = p.parse_args()
    values = values_from_job_config(args.config, parse_overrides(args.overrides), {"members": 2})
    base = build_config(DistillConfig, values, {}, source=args.config or "overrides")
    started = time.perf_counter()
    runs: dict[int, dict[str, float]] = {}
    for seed in args.seeds:
        runs[seed] = one_seed(base, seed)
        if args.out:
            write_atomic(args.out, json.dumps(report(values, runs, seed == args.seeds[-1], started)) + "\n")
    print(json.dumps(report(values, runs, True, started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
