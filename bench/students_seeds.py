"""Does KD help every student kind? The students recipe per seed, in one process; means over seeds.

For every seed: per student kind, the dev and test metric with KD and without (same student,
same initialisation, gold labels only), the teacher's, and each model's size and speed-up.
``--set KEY=VALUE`` overrides any recipe or data option (e.g. ``--set augment=true``,
``--set tasks=glue``).

``--variant NAME:KEY=VALUE[,KEY=VALUE]`` adds, per seed, the students trained with other
settings (e.g. ``mse-only:loss=mse,alpha=1``), in their own run directory. A variant on the
same data reuses every teacher step whose definition it shares with the base run (the teacher,
and its knowledge unless the transfer set changes), so its students distil from the same
teacher; a variant that changes the data (e.g. ``synthetic_size``) trains its own. Its no-KD
students are not retrained unless it says ``baseline=true``: its ``gain_vs_base``
(``dev_gain_vs_base`` on dev) is its test metric minus the base run's no-KD student's (a fair
gain when the variant changes only the distillation; say ``baseline=true`` when it changes the
students' training).
``--breakdown`` (classification tasks) adds, per model, its test accuracy on the examples
whose words are all in the BiLSTM's word vocabulary (``test_known_words``) and on those with
at least one word outside it (``test_unknown_words``, read as ``[UNK]`` by the BiLSTM; the
BERTs spell every word in word pieces), and the share of test examples on which it predicts
what the teacher predicts (``agrees_with_teacher``); and per seed the share of such test
examples and the unknown-word rate and mean length of the train and test splits. Prints one
JSON object with the per-seed numbers and, per number, the mean and sample standard deviation
over seeds (``{"mean", "std", "n"}``). With ``--out FILE`` the object is written after every
finished seed (``"complete": false`` until the last); a rerun with the same settings keeps the
seeds already in FILE. Never run as a test.

    python bench/students_seeds.py --seeds 0 1 2 > bench/results/students_seeds_<date>.json
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from bench.spreads import spread  # noqa: E402
from kd_core.engine.execute import execute  # noqa: E402
from kd_core.engine.local import drive  # noqa: E402
from kd_core.engine.prepare import StudentsData, build_students_workspace  # noqa: E402
from kd_core.engine.steps import CollectStep, model_ref  # noqa: E402
from kd_core.engine.workspace import Workspace, absolute_result  # noqa: E402
from kd_core.io.config_files import build_config, parse_overrides  # noqa: E402
from kd_core.io.run_files import write_atomic  # noqa: E402
from kd_core.knowledge.table import read_knowledge, unfixed  # noqa: E402
from kd_core.methods.registry import METHODS  # noqa: E402
from kd_core.methods.students import StudentsSettings, plan_students, students_recipe, summarise  # noqa: E402

FIELDS = ("dev", "test", "dev_no_kd", "test_no_kd", "kd_gain", "parameters", "speedup_b1", "speedup_b32")
DATA_KEYS = {f.name for f in fields(StudentsData)}


def configs(values: dict[str, Any], seed: int) -> tuple[StudentsData, StudentsSettings]:
    """The data and recipe settings of ``values`` (option name -> value) for ``seed``."""
    data = build_config(StudentsData, {k: v for k, v in values.items() if k in DATA_KEYS}, {"seed": seed}, "--set")
    settings = build_config(StudentsSettings, {k: v for k, v in values.items() if k not in DATA_KEYS},
                            {"seed": seed}, "--set")
    return data, settings


def run(data: StudentsData, settings: StudentsSettings, run_dir: Path,
        teachers: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any], Workspace]:
    """One recipe run in ``run_dir`` (the base run's equal teacher steps reused); (its teacher steps, summary, workspace)."""
    ws = build_students_workspace(data, settings.teacher_model, run_dir)
    plan = {step.name: step for step in METHODS["students"].teacher_plan(settings, ws)}
    shared: dict[str, Any] = {}
    if teachers is not None and teachers["data"] == data:  # same data: equal teacher steps give equal results
        shared = {name: absolute_result(teachers["results"][name], teachers["store"])  # names the base run's files
                  for name, step in plan.items() if teachers["plan"].get(name) == step}
        for name, result in shared.items():  # the variant's run directory holds the shared results
            write_atomic(ws.result_path(name), json.dumps(result))
    results = drive(students_recipe(settings, ws), lambda steps: [execute(step, ws) for step in steps], done=shared)
    summary = summarise(results, settings, ws.task.name, ws.task.primary_metric)
    return {"plan": plan, "results": results, "store": ws.store, "data": data}, summary, ws


def unknown_words(ws: Workspace, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Per example of ``split``: (words the BiLSTM reads as ``[UNK]``, words), by its word tokenizer."""
    tokenizer = ws.tokenizers["words"]
    examples = ws.splits[split]
    texts = [f"{a} {b}" if b else a for a, b in zip(examples["text_a"], examples["text_b"])]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return (np.array([sum(i == tokenizer.unk_token_id for i in row) for row in ids]),
            np.array([len(row) for row in ids]))


def test_predictions(ws: Workspace, name: str, tokenizer: str) -> dict[str, int]:
    """Example id -> the class the model of train step ``name`` (read through ``tokenizer``) predicts on test."""
    result = execute(CollectStep(f"test-logits-{name}", model_ref(name), tokenizer, split="test", teacher=False), ws)
    table = read_knowledge(ws.local(ws.resolve(result["path"])))
    logits = unfixed(table.column("logits"), (ws.task.num_outputs,), np.float32)
    return dict(zip(table.column("example_id").to_pylist(), logits.argmax(axis=1).tolist()))


def breakdown(ws: Workspace, models: dict[str, dict[str, Any]], settings: StudentsSettings) -> dict[str, Any]:
    """Adds each model's accuracy on test examples with and without BiLSTM-unknown words and its agreement
    with the teacher to ``models``; returns the splits' unknown-word rates and lengths."""
    test = ws.splits["test"]
    gold = dict(zip(test["id"], test["label"]))
    unknown, length = unknown_words(ws, "test")
    train_unknown, train_length = unknown_words(ws, "train")
    known = dict(zip(test["id"], (unknown == 0).tolist()))
    tokenizers = {"teacher": "teacher", **{f"{plan.kind}{suffix}": plan.tokenizer for plan in plan_students(settings)
                                           for suffix in ("", "-no-kd")}}
    trained = [name for name in tokenizers if ws.result(name) is not None]
    predicted = {name: test_predictions(ws, name, tokenizers[name]) for name in trained}

    def accuracy(name: str, keep: bool) -> float | None:
        hits = [predicted[name][i] == gold[i] for i in gold if known[i] == keep]
        return 100 * statistics.mean(hits) if hits else None  # None: no such test example

    for name in trained:
        row = models.setdefault(name.removesuffix("-no-kd"), {})
        suffix = "_no_kd" if name.endswith("-no-kd") else ""
        row[f"test_known_words{suffix}"] = accuracy(name, True)
        row[f"test_unknown_words{suffix}"] = accuracy(name, False)
        row[f"agrees_with_teacher{suffix}"] = 100 * statistics.mean(
            predicted[name][i] == predicted["teacher"][i] for i in gold)
    return {"test_examples": len(gold), "test_share_all_words_known": 100 * statistics.mean(known.values()),
            "unknown_word_rate": {"train": 100 * float(train_unknown.sum() / train_length.sum()),
                                  "test": 100 * float(unknown.sum() / length.sum())},
            "mean_words": {"train": float(train_length.mean()), "test": float(length.mean())}}


def rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model, the reported fields of a summary, with KD's gain on dev (``dev_kd_gain``) where both ran."""
    out = {name: {f: row[f] for f in FIELDS if f in row} for name, row in summary["models"].items()}
    for row in out.values():
        if "dev" in row and "dev_no_kd" in row:
            row["dev_kd_gain"] = row["dev"] - row["dev_no_kd"]
    return out


def means(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | int | None]]]:
    """Per model and field, the mean and sample spread over the seeds that have a value."""
    first = per_seed[0]["models"]
    return {name: {f: spread([s["models"][name][f] for s in per_seed if s["models"][name].get(f) is not None])
                   for f in first[name]} for name in first}


def against_base(models: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]) -> None:
    """Adds to each variant model the gain over the base run's no-KD student of its kind, on dev and test."""
    for kind, row in models.items():
        for split in ("dev", "test"):
            if f"{split}_no_kd" in base.get(kind, {}) and split in row:
                row["gain_vs_base" if split == "test" else "dev_gain_vs_base"] = row[split] - base[kind][f"{split}_no_kd"]


def report(args: argparse.Namespace, overrides: dict[str, Any], variants: dict[str, dict[str, Any]],
           runs: dict[str, dict[str, Any]], started: float, complete: bool) -> dict[str, Any]:
    """The benchmark's JSON object for the seeds finished so far (``runs``: seed -> base and variant rows)."""
    per_seed = list(runs.values())
    mean = means(per_seed)
    return {
        "benchmark": "students_seeds", "seeds": [r["seed"] for r in per_seed], "complete": complete,
        "overrides": overrides, "task": per_seed[0]["task"], "primary_metric": per_seed[0]["primary_metric"],
        "splits": {"dev": "where choices are made (compare settings on it)", "test": "reported, read by no choice"},
        "per_seed": [{k: v for k, v in r.items() if k not in ("variants", "task", "primary_metric")} for r in per_seed],
        "mean": mean,
        "kd_beats_no_kd": {name: row["kd_gain"]["mean"] > 0 for name, row in mean.items() if "kd_gain" in row},
        "variants": {name: {"settings": variants[name],
                            "per_seed": [{"seed": r["seed"], "models": r["variants"][name]} for r in per_seed],
                            "mean": means([{"models": r["variants"][name]} for r in per_seed])} for name in variants},
        "seconds": round(time.perf_counter() - started, 1), "machine": platform.machine(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/students_seeds.py " + " ".join(sys.argv[1:]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]")
    p.add_argument("--out", type=Path, help="write the results to FILE after every seed; seeds in it are kept")
    p.add_argument("--breakdown", action="store_true",
                   help="test accuracy with and without BiLSTM-unknown words, agreement with the teacher")
    args = p.parse_args()
    overrides = parse_overrides(args.set)
    variants = {}
    for spec in args.variant:
        name, _, changes = spec.partition(":")
        variants[name] = {**overrides, "baseline": False, **parse_overrides(changes.split(","))}
    if args.breakdown:
        (definition,) = configs(overrides, args.seeds[0])[0].multitask().definitions()
        if definition.task().kind != "classification":
            p.error(f"--breakdown reads class predictions; task {definition.name!r} is {definition.task().kind}")
    runs: dict[str, dict[str, Any]] = {}
    if args.out and args.out.exists():
        earlier = json.loads(args.out.read_text())
        if earlier.get("overrides") == overrides and set(earlier.get("variants", {})) == set(variants) and all(
                earlier["variants"][name]["settings"] == variants[name] for name in variants):
            for row in earlier["per_seed"]:
                if row["seed"] in args.seeds:
                    runs[str(row["seed"])] = {**row, "task": earlier["task"], "primary_metric": earlier["primary_metric"],
                                              "variants": {name: next(v["models"] for v in earlier["variants"][name]
                                                                      ["per_seed"] if v["seed"] == row["seed"])
                                                           for name in variants}}
    started = time.perf_counter()
    for seed in args.seeds:
        if str(seed) in runs:
            continue
        with tempfile.TemporaryDirectory(prefix=f"students-seeds-{seed}-") as tmp:
            root = Path(tmp)
            data, settings = configs(overrides, seed)
            teachers, summary, ws = run(data, settings, root / "base")
            row: dict[str, Any] = {"seed": seed, "models": rows(summary), "task": summary["task"],
                                   "primary_metric": summary["primary_metric"], "variants": {}}
            if args.breakdown:
                row["splits"] = breakdown(ws, row["models"], settings)
            print(json.dumps({k: row[k] for k in ("seed", "models")}), file=sys.stderr, flush=True)
            for name, values in variants.items():
                data, settings = configs(values, seed)
                _, variant, ws = run(data, settings, root / name, teachers)
                models = rows(variant)
                if args.breakdown:
                    breakdown(ws, models, settings)
                against_base(models, row["models"])
                row["variants"][name] = models
                print(json.dumps({"variant": name, "seed": seed, "models": models}), file=sys.stderr, flush=True)
        runs[str(seed)] = row
        if args.out:
            write_atomic(args.out, json.dumps(report(args, overrides, variants, runs, started,
                                                     len(runs) == len(args.seeds)), indent=1) + "\n")
    print(json.dumps(report(args, overrides, variants, runs, started, True)))


if __name__ == "__main__":
    main()
