"""Which student layer reads which teacher layer: the layer terms' names, uniform maps and their check.

Plain data and arithmetic, no torch: a job's options (``--layer-loss``, ``--layer-map``) are listed
and checked with them before any model is built; the terms themselves are
:mod:`kd_core.objectives.layer_distillation`.
"""

from __future__ import annotations

from collections.abc import Sequence

from kd_core.io.errors import ConfigError

LAYER_KINDS = ("hidden_mse", "hidden_cos", "attention_map", "relation")


def uniform_layer_map(student_layers: int, teacher_layers: int) -> tuple[tuple[int, int], ...]:
    """Student layer ``s`` -> teacher layer ``ceil((s + 1) * T / S) - 1``: the last student layer reads the last teacher layer."""
    return tuple((s, -(-(s + 1) * teacher_layers // student_layers) - 1) for s in range(student_layers))


def check_layer_map(layer_map: Sequence[tuple[int, int]], student_layers: int, teacher_layers: int,
                    source: str = "layers") -> None:
    """Refuse a map naming a layer the student or the teacher lacks (one line, naming both counts)."""
    if not layer_map:
        raise ConfigError(source, "layer_map", "is empty")
    for s, t in layer_map:
        if not 0 <= s < student_layers:
            raise ConfigError(source, "layer_map", f"student layer {s} does not exist; the student has "
                              f"{student_layers} layers (0-{student_layers - 1})")
        if not 0 <= t < teacher_layers:
            raise ConfigError(source, "layer_map", f"teacher layer {t} does not exist; the teacher has "
                              f"{teacher_layers} layers (0-{teacher_layers - 1})")
