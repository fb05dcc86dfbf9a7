"""The GPU suite's code paths at ``--tiny`` on the CPU, and the preparation of its real data (bench/gpu_*.py)."""

from __future__ import annotations

import gzip
import importlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from kd_core.data.loaders import load_examples
from kd_core.models.build import build_preset_model, save_model
from tests.helpers import toy_tokenizer

ROOT = Path(__file__).resolve().parents[1]
WHO = ("member-0", "member-1", "ensemble", "student", "student-no-kd")


def leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, str(index)))
    else:
        yield path, value


def test_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    done = subprocess.run([sys.executable, "bench/gpu_suite.py", "--tiny", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == json.loads(out.read_text())
    assert (report["device"], report["mode"], report["ray_or_mlflow_imported"]) == ("cpu", "tiny", False)
    assert report["versions"]["torch"] and report["command"] and report["date"]

    assert set(report["matmul_peak_tflops"]) >= {"bf16", "fp32"}
    shapes = report["training"]["shapes"]
    assert list(shapes) == list(report["size"]["shapes"])
    for shape in shapes.values():
        assert shape["matmul_parameters"] < shape["parameters"]
        for precision in ("bf16", "fp32"):
            run = shape[precision]
            assert run["timed_steps"] == report["size"]["timed_steps"]
            assert run["model_tflops"] == pytest.approx(shape["flops_per_example"] * run["examples_per_s"] / 1e12)
            assert run["mfu"] == pytest.approx(run["model_tflops"] / report["matmul_peak_tflops"]["bf16"])
        assert shape["bf16_speedup"] == pytest.approx(shape["bf16"]["examples_per_s"] / shape["fp32"]["examples_per_s"])
    targets = report["training"]["targets"]
    assert targets["bf16_speedup_met"] == (targets["bf16_speedup"] >= 2.5)
    assert targets["bf16_mfu_met"] == (targets["bf16_mfu"] >= 0.40)
    for timings in report["collection"]["shapes"].values():
        assert {kind: set(speeds) for kind, speeds in timings.items()} == \
            {kind: {"without_attention", "with_attention"} for kind in ("run_model", "collect")}

    a2d = report["a2d"]
    assert a2d["data"]["held_out_contexts_in_train_or_dev"] == 0
    assert a2d["settings"]["precision"] == "bf16"
    for split in ("dev", "held_out"):
        assert set(a2d["scores"][split]) == set(WHO)
        for scores in a2d["scores"][split].values():
            assert set(scores) == {"f1", "exact_match"}
            assert all(0 <= value <= 100 for value in scores.values())
            assert scores["exact_match"] <= scores["f1"]
    assert {f"eval-{who}-held_out" for who in WHO} <= set(a2d["seconds"]["steps"])

    counted = 0
    for path, value in leaves(report):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if path[:1] == ("size",) or path[:2] in {("a2d", "scores"), ("a2d", "settings")} \
                or path[-1] == "held_out_contexts_in_train_or_dev":
            continue  # settings, scores (in [0, 100], above) and a count that must be 0
        assert math.isfinite(value) and value > 0, path
        counted += 1
    assert counted > 60


def write_mrqa(path: Path, contexts: list[str]) -> None:
    path.parent.mkdir(parents=True)
    lines = [{"header": {"dataset": "SQuAD", "split": "dev"}}]
    for c, context in enumerate(contexts):
        answer = context.split()[0]
        lines.append({"context": context, "qas": [{
            "qid": f"q{c}", "question": f"what is {c}?", "answers": [answer],
            "detected_answers": [{"text": answer, "char_spans": [[0, len(answer) - 1]]}]}]})
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines))


def write_squad(path: Path, contexts: list[str]) -> None:
    path.parent.mkdir(parents=True)
    paragraphs = [{"context": context, "qas": [{"id": f"x{c}", "question": "which?",
                                                "answers": [{"text": context.split()[0], "answer_start": 0}]}]}
                  for c, context in enumerate(contexts)]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))


def test_prepare_drops_shared_contexts_and_halves_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    kept = "Alpha beta gamma delta."
    write_mrqa(shared / "mrqa_domains" / "squad_mrqa" / "SQuAD.jsonl.gz",
               ["Omega is shared here.", kept, "Sigma  is\nshared too."])
    write_squad(shared / "squad11" / "xquad.en.json", ["Omega is shared here.", "Sigma is shared too."])
    tokenizer = toy_tokenizer()
    model = save_model(build_preset_model("tiny-bert", tokenizer, 0), tokenizer, tmp_path / "model")
    out = tmp_path / "gpu_data"
    done = subprocess.run([sys.executable, "bench/gpu_prepare.py", "--shared", str(shared), "--minilm", str(model),
                           "--out", str(out), "--no-wheels"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["fits"] and summary["wheels"] == []

    train = load_examples(str(out / "squad_without_xquad.jsonl.gz"))
    assert list(train["context"]) == [kept]  # the re-spaced copy of a held-out context went too
    counts = json.loads((out / "manifest.json").read_text())["train"]
    assert (counts["contexts_kept"], counts["contexts_removed"], counts["questions_removed"]) == (1, 2, 2)
    assert (out / "xquad.en.json").read_bytes() == (shared / "squad11" / "xquad.en.json").read_bytes()

    original = load_file(str(model / "model.safetensors"))
    halved = load_file(str(out / "minilm" / "model.safetensors"))
    assert set(halved) == set(original)
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    suite = importlib.import_module("gpu_suite")
    widened = load_file(str(suite.widened_model(out / "minilm", tmp_path / "widened") / "model.safetensors"))
    for name, value in original.items():
        if value.is_floating_point():
            assert halved[name].dtype.itemsize == 2 and widened[name].dtype == value.dtype
            assert (widened[name] == value.half().float()).all()
        else:
            assert (widened[name] == value).all()


def test_the_flop_count_of_bert_base_is_the_hand_computed_212_gflop(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    suite = importlib.import_module("gpu_suite")
    model = suite.random_bert("bert-L12-H768-A12-I3072", 30522, 0, torch.device("meta"))
    # By hand: per layer Q, K, V, output 4 x 768^2 and the MLP 2 x 768 x 3072; x 12 layers; the QA head 768 x 2.
    n = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * 2
    assert suite.matmul_parameters(model) == n == 84_936_192
    # 6 N S + 12 L S^2 H at S = 384
    assert suite.flops_per_example(model, 384) == 6 * 84_936_192 * 384 + 12 * 12 * 384**2 * 768 == 212_000_440_320
