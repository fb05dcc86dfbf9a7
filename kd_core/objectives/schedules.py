"""Loss weights as functions of training progress ``p in [0, 1]``: :class:`Schedule` and its kinds.

Plain data without torch, so the settings that parse a schedule (IMM's ``--lambda-schedule``)
and the step definitions that hold one import no training code; the terms that use them are
:mod:`kd_core.objectives.terms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kd_core.io.errors import ConfigError


class Schedule(Protocol):
    """A loss weight as a function of training progress ``p in [0, 1]``."""

    def __call__(self, progress: float) -> float: ...


@dataclass(frozen=True)
class Constant:
    """``w(p) = value``."""

    value: float

    def __call__(self, progress: float) -> float:
        return self.value


@dataclass(frozen=True)
class Linear:
    """``w(p) = start + (end - start) * p``: linear annealing over training."""

    start: float
    end: float

    def __call__(self, progress: float) -> float:
        return self.start + (self.end - self.start) * min(max(progress, 0.0), 1.0)


@dataclass(frozen=True)
class Complement:
    """``w(p) = 1 - inner(p)``: the weight that, with ``inner``'s, sums to 1 (IMM's ``1 - lambda``)."""

    inner: Constant | Linear

    def __call__(self, progress: float) -> float:
        return 1.0 - self.inner(progress)


def parse_schedule(spec: str | float, where: str = "schedule") -> Schedule:
    """``0.3`` or ``"0.3"`` -> :class:`Constant`; ``"linear:0:1"`` -> :class:`Linear` (0 -> 1)."""
    if isinstance(spec, (int, float)):
        return Constant(float(spec))
    parts = str(spec).strip().split(":")
    try:
        if len(parts) == 1:
            return Constant(float(parts[0]))
        if parts[0] == "linear" and len(parts) == 3:
            return Linear(float(parts[1]), float(parts[2]))
    except ValueError:
        pass
    raise ConfigError("objective", where, f"cannot read schedule {spec!r}; use a number or 'linear:START:END'")
