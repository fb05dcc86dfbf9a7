"""What a method reports to a sweep after a stage, when its result is not one train step's epochs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """A method's progress after a stage: its ``index`` (reports count up), the metric, the models it stands for."""

    index: int
    metric: float
    models: dict[str, str]
