"""Inference speed of several models measured side by side: latency at batch 1, throughput at batch 32.

Machines are noisy, so speed is only reported as ratios measured in one process under the
same load: every round times every model in turn (a round-robin, so a slow spell hits all of
them), and each model's figure is its median over the rounds. Per model:

* ``latency_ms_b1``: milliseconds per example, reading ``min(examples, 64)`` examples one at a time;
* ``throughput_b32``: examples per second, reading ``examples`` examples in batches of 32;
* ``speedup_b1 = latency_ref / latency`` and ``speedup_b32 = throughput / throughput_ref``
  against the first model (the teacher).

Each model reads its own features (its own tokenizer) of the same examples, through the
task's batched inference (eval mode, no gradients), after one warm-up pass.

Why not ``torch.utils.benchmark.Timer``: it times one statement at a time (its ``timeit`` runs
two warm-up calls before every measurement, so a round-robin over models would cost three
times the inference), and its reason to exist on a GPU, synchronising before reading the
clock, is met here already: the task's inference returns host arrays, so every timed call
ends with the device's work done.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

Infer = Callable[[torch.nn.Module, Mapping[str, np.ndarray], int], Any]
LATENCY_EXAMPLES = 64


def _take(arrays: Mapping[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    return {name: values[:rows] for name, values in arrays.items()}


def _seconds(infer: Infer, model: torch.nn.Module, arrays: Mapping[str, np.ndarray], batch_size: int) -> float:
    started = time.perf_counter()
    infer(model, arrays, batch_size)
    return time.perf_counter() - started


def measure_speed(models: Sequence[tuple[str, torch.nn.Module, Mapping[str, np.ndarray]]], infer: Infer,
                  examples: int = 256, repeats: int = 3, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """``{label: {latency_ms_b1, throughput_b32, speedup_b1, speedup_b32}}`` (module doc); the first is the reference."""
    inputs = {label: (_take(arrays, examples), _take(arrays, min(examples, LATENCY_EXAMPLES)))
              for label, _, arrays in models}
    for label, model, _ in models:  # warm-up: allocations, lazy initialisation
        infer(model, inputs[label][1], batch_size)
    latency: dict[str, list[float]] = {label: [] for label, _, _ in models}
    throughput: dict[str, list[float]] = {label: [] for label, _, _ in models}
    for _ in range(repeats):
        for label, model, _ in models:
            many, few = inputs[label]
            latency[label].append(1000 * _seconds(infer, model, few, 1) / len(few["input_ids"]))
            throughput[label].append(len(many["input_ids"]) / _seconds(infer, model, many, batch_size))
    reference = models[0][0]
    ref_latency = statistics.median(latency[reference])
    ref_throughput = statistics.median(throughput[reference])
    out = {}
    for label, _, _ in models:
        lat, thr = statistics.median(latency[label]), statistics.median(throughput[label])
        out[label] = {"latency_ms_b1": lat, "throughput_b32": thr, "speedup_b1": ref_latency / lat,
                      "speedup_b32": thr / ref_throughput}
    return out
