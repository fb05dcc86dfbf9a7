"""Which A2D term helps? One teacher, one knowledge table, students trained side by side with
each combination of terms: none (CE only), KD only, KD at tau = 1, full A2D, full A2D with gamma = 1.

All students share the data, tokenizer, teacher knowledge and initialisation, so differences
come from the objective alone. Prints one JSON object (per-variant dev F1 and seconds).

    python bench/a2d_terms.py --set synthetic_per_domain=300 --set teacher_epochs=20 --set epochs=8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from kd_core.config_files import build_config, parse_overrides
from kd_core.distill import DistillConfig, build_model, prepare_data, teacher_knowledge, train_student
from kd_core.knowledge.span import knowledge_arrays
from kd_core.objectives import a2d_objective
from kd_core.predict import evaluate_qa
from kd_core.train import train

VARIANTS: dict[str, dict[str, float] | None] = {
    "ce_only": None,
    "kd_only": {"gamma": 0.0, "delta": 0.0},
    "kd_only_tau1": {"tau": 1.0, "gamma": 0.0, "delta": 0.0},
    "a2d": {},
    "a2d_gamma1": {"gamma": 1.0},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a DistillConfig field (repeatable)")
    args = p.parse_args()
    values = parse_overrides(args.overrides)
    config = build_config(DistillConfig, values, {}, source="overrides")
    data = prepare_data(config)
    started = time.perf_counter()
    teacher = build_model(config.teacher_model, data, seed=config.seed)
    train(teacher, data.train_arrays, a2d_objective(config.a2d, use_knowledge=False), config.teacher_training(),
          progress=False)
    teacher_f1 = evaluate_qa(teacher, data.dev_examples, data.dev_features, data.dev_arrays)[0]["f1"]
    knowledge = knowledge_arrays(teacher_knowledge(teacher, data, config.knowledge), data.train_features["feature_id"])
    result = {"config": values, "teacher_f1": teacher_f1, "teacher_s": time.perf_counter() - started, "students": {}}
    for name, change in VARIANTS.items():
        started = time.perf_counter()
        _, scores = train_student(replace(config, **(change or {})), data, None if change is None else knowledge, name)
        result["students"][name] = {"f1": scores["f1"], "seconds": time.perf_counter() - started}
        print(json.dumps({name: result["students"][name]}), file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
