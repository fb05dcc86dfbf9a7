"""Which A2D term helps? One teacher, one knowledge table, students trained side by side with
each combination of terms, named by what their loss contains.

The A2D recipe's teacher steps run once (:func:`kd_core.engine.local.drive` until the first
non-teacher step); every variant is then one student train step on the same data, tokenizer,
knowledge and initialisation, so differences come from the objective alone. Prints one JSON
object (per-variant dev F1 and seconds). Runs in this process (no Ray, no MLflow).

    python bench/a2d_terms.py --set synthetic_per_domain=300 --set teacher_epochs=20 --set epochs=8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kd_core.config_files import build_config, parse_overrides  # noqa: E402
from kd_core.distill import DistillConfig, workspace  # noqa: E402
from kd_core.engine.execute import execute  # noqa: E402
from kd_core.engine.local import is_teacher, drive  # noqa: E402
from kd_core.engine.steps import TermSpec, TrainStep  # noqa: E402
from kd_core.methods.a2d import a2d_recipe  # noqa: E402


def variants(c: DistillConfig) -> dict[str, tuple[TermSpec, ...]]:
    """Objectives by content: CE, CE + KD (at tau, at 1), full A2D, full A2D with gamma = 1."""
    ce, kd = TermSpec("hard"), TermSpec("soft", 1.0, c.tau)
    ans, att = TermSpec("answer_margin", c.gamma), TermSpec("attention", c.delta)
    return {
        "ce": (ce,),
        f"ce+kd(tau={c.tau:g})": (ce, kd),
        "ce+kd(tau=1)": (ce, TermSpec("soft", 1.0, 1.0)),
        f"ce+kd+ans(gamma={c.gamma:g})+att(delta={c.delta:g})": (ce, kd, ans, att),
        f"ce+kd+ans(gamma=1)+att(delta={c.delta:g})": (ce, kd, TermSpec("answer_margin", 1.0), att),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of python -m kd_core.distill (repeatable), e.g. --set epochs=6")
    args = p.parse_args()
    values = parse_overrides(args.overrides)
    config = build_config(DistillConfig, {"run_dir": tempfile.mkdtemp(prefix="a2d-terms-"), **values}, {},
                          source="overrides")
    ws = workspace(config)
    teachers = drive(a2d_recipe(config.settings, ws), lambda steps: [execute(s, ws) for s in steps], until=is_teacher)
    student = next(step for step in a2d_recipe(config.settings, ws)(teachers) if step.name == "student")
    assert isinstance(student, TrainStep)
    result = {"config": values, "teacher_f1": [r["primary"] for n, r in teachers.items() if n.startswith("member-")],
              "teacher_s": sum(r["seconds"] for r in teachers.values()), "students": {}}
    for name, objective in variants(config).items():
        trained = execute(replace(student, name=f"student-{len(result['students'])}", objective=objective,
                                  knowledge=None if len(objective) == 1 else student.knowledge), ws)
        result["students"][name] = {"f1": trained["primary"], "seconds": trained["seconds"]}
        print(json.dumps({name: result["students"][name]}), file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
