"""Why is the A2D ensemble below its members? Members and ensembles decoded both ways from the same outputs.

Per seed: the recipe's members train (A2D defaults: ``members = 2``, the embedded data), each is
run once over dev, and the same logits are decoded two ways:

* ``raw``: a span scores ``a_i + b_j`` (pre-softmax logits), the usual BERT rule;
* ``normalised``: ``log p_start(i) + log p_end(j)`` with ``p`` the softmax over each window's
  legal positions, the rule the ensemble (averaged probabilities) is decoded by.

It also reports how often the members give the same answer and the oracle F1 (per question the
better member), which tell whether the members make the same mistakes. Prints one JSON object.

    python bench/a2d_decoding.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.distill import DistillConfig, workspace  # noqa: E402
from kd_core.engine.execute import execute  # noqa: E402
from kd_core.engine.inputs import load_model  # noqa: E402
from kd_core.engine.steps import TrainStep  # noqa: E402
from kd_core.evaluation.decode import predict_answers  # noqa: E402
from kd_core.evaluation.predict import ModelOutputs, ensemble_outputs, references_of, run_model  # noqa: E402
from kd_core.evaluation.squad_metrics import span_f1, squad_scores  # noqa: E402
from kd_core.io.config_files import build_config, parse_overrides  # noqa: E402
from kd_core.methods.a2d import a2d_recipe  # noqa: E402
from kd_core.objectives.losses import masked_log_softmax  # noqa: E402


def normalised(logits: np.ndarray, span_mask: np.ndarray) -> np.ndarray:
    return masked_log_softmax(torch.from_numpy(logits), torch.from_numpy(span_mask).bool()).numpy()


def one_seed(config: DistillConfig) -> dict:
    ws = workspace(config)
    members = [s for s in a2d_recipe(config.settings, ws)({}) if isinstance(s, TrainStep)]
    for step in members:
        execute(step, ws)
    examples, (features, arrays) = ws.examples("dev"), ws.features("teacher", "dev")
    contexts, references = dict(zip(examples["id"], examples["context"])), references_of(examples)
    mask, passage = arrays["span_mask"], arrays["passage_mask"]

    def answers(start: np.ndarray, end: np.ndarray) -> dict[str, str]:
        return predict_answers(features["example_id"], contexts, features["offsets"], start, end, passage,
                               config.max_answer_length)

    outputs = [run_model(load_model(f"@{s.name}", 0, "teacher", ws, "cpu"), arrays) for s in members]
    raw = [answers(o.start_logits, o.end_logits) for o in outputs]
    norm = [answers(normalised(o.start_logits, mask), normalised(o.end_logits, mask)) for o in outputs]
    merged = ensemble_outputs(outputs, mask)
    logit_mean = ModelOutputs(np.mean([o.start_logits for o in outputs], 0), np.mean([o.end_logits for o in outputs], 0))
    f1 = lambda predictions: squad_scores(predictions, references)["f1"]  # noqa: E731
    per_question = [[span_f1(p[q], references[q]) for q in references] for p in norm]
    return {
        "seed": config.seed,
        "members_raw_f1": [f1(p) for p in raw],
        "members_normalised_f1": [f1(p) for p in norm],
        "ensemble_probabilities_normalised_f1": f1(answers(merged.start_logits, merged.end_logits)),
        "ensemble_mean_logits_raw_f1": f1(answers(logit_mean.start_logits, logit_mean.end_logits)),
        "members_agree": float(np.mean([norm[0][q] == norm[1][q] for q in references])) if len(norm) == 2 else None,
        "oracle_f1": 100.0 * float(np.mean(np.max(per_question, axis=0))),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of python jobs/distill.py (repeatable), e.g. --set teacher_epochs=12")
    args = p.parse_args()
    values = {"members": 2, **parse_overrides(args.overrides)}
    runs = []
    for seed in args.seeds:
        config = build_config(DistillConfig, {**values, "seed": seed,
                                              "run_dir": tempfile.mkdtemp(prefix=f"a2d-decoding-{seed}-")}, {},
                              source="overrides")
        runs.append(one_seed(config))
        print(json.dumps(runs[-1]), file=sys.stderr)
    keys = ("ensemble_probabilities_normalised_f1", "ensemble_mean_logits_raw_f1", "oracle_f1")
    mean = {k: statistics.mean(r[k] for r in runs) for k in keys}
    for rule in ("raw", "normalised"):
        mean[f"best_member_{rule}_f1"] = statistics.mean(max(r[f"members_{rule}_f1"]) for r in runs)
        mean[f"members_{rule}_f1"] = statistics.mean(statistics.mean(r[f"members_{rule}_f1"]) for r in runs)
    print(json.dumps({"config": values, "runs": runs, "mean": mean}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
