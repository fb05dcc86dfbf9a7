"""Mean and spread of one number over seeds, as every seeds benchmark reports it."""

from __future__ import annotations

import statistics


def spread(values: list[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (``None`` under two values) and how many seeds had a value (``None`` values,
    e.g. a ``gain_kept`` where the ensemble does not beat its mean member, are left out by the caller)."""
    return {"mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}
