"""Search spaces as data: defaults per method, overridable from a config file, turned into Ray Tune domains.

A space maps a hyperparameter to one of

* ``{"choice": [v1, v2, ...]}``: one of the values (a grid axis under ``--search grid``);
* ``{"grid": [v1, v2, ...]}``: every value, in every search (``tune.grid_search``);
* ``{"uniform": [low, high]}`` / ``{"loguniform": [low, high]}`` (``0 < low < high`` for log).

Defaults (:data:`DEFAULT_SPACES`) follow the papers: A2D's ``tau`` in {1, 2, 3, 5}, ``gamma``
and ``delta`` log-uniform around 0.3 and 0.1 (one decade either side); IMM's ``lambda``
schedule (the paper's linear 0 -> 1, a later start, a constant) and ``K`` in {1, 2, 3}; plain
KD's (Hinton et al.) ``tau`` in {1, 2, 4, 8} and soft-loss weight ``alpha`` uniform in [0.1, 0.9];
the different students' ``tau``, loss kind (soft, logit MSE, hard), noisy-teacher scale and KD
weight (``tau`` only acts with the soft loss).
A config file's ``space:`` mapping replaces the default of each parameter it names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kd_core.io.errors import ConfigError
from kd_core.io.values import non_finite

KINDS = ("choice", "grid", "uniform", "loguniform")
SEARCHES = ("random", "grid", "optuna")
#: The name under which trials report their metric (the task's primary metric on dev; :mod:`tuning.trials`).
RECIPE_METRIC = "dev_metric"

DEFAULT_SPACES: dict[str, dict[str, dict[str, list[Any]]]] = {
    "a2d": {
        "tau": {"choice": [1.0, 2.0, 3.0, 5.0]},
        "gamma": {"loguniform": [0.03, 3.0]},
        "delta": {"loguniform": [0.01, 1.0]},
    },
    "imm": {
        "lambda_schedule": {"choice": ["linear:0:1", "linear:0.5:1", "0.5"]},
        "iterations": {"choice": [1, 2, 3]},
    },
    "kd": {
        "tau": {"choice": [1.0, 2.0, 4.0, 8.0]},
        "alpha": {"uniform": [0.1, 0.9]},
    },
    "mtdnn": {
        "alpha": {"uniform": [0.2, 0.8]},
        "tau": {"choice": [1.0, 2.0, 4.0]},
        "learning_rate": {"loguniform": [3e-4, 3e-3]},
    },
    "students": {
        "tau": {"choice": [1.0, 2.0, 4.0]},
        "loss": {"choice": ["soft", "mse", "hard"]},
        "noise": {"choice": [0.0, 0.1, 0.3]},
        "alpha": {"uniform": [0.3, 0.9]},
    },
}


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: its kind and values (``[low, high]`` for the continuous kinds)."""

    name: str
    kind: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        where = f"space.{self.name}"
        if self.kind not in KINDS:
            raise ConfigError("sweep", where, f"unknown kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind in ("choice", "grid"):
            if not self.values:
                raise ConfigError("sweep", where, f"{self.kind} needs at least one value")
            bad = non_finite(self.values)
            if bad is not None:  # refused here, not by a trial's config after the cluster started
                raise ConfigError("sweep", where, f"values must be finite numbers, got {bad}")
            return
        if len(self.values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values):
            raise ConfigError("sweep", where, f"{self.kind} needs [low, high] numbers, got {list(self.values)}")
        low, high = self.values
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError("sweep", where, f"needs low < high, got {list(self.values)}")
        if self.kind == "loguniform" and low <= 0:
            raise ConfigError("sweep", where, f"loguniform needs low > 0, got {low}")

    def domain(self, search: str) -> Any:
        """The Ray Tune search domain (choices become grid axes under ``search="grid"``; Ray Tune is imported here, so
        listing a sweep's options does not)."""
        from ray import tune

        if self.kind == "grid" or (self.kind == "choice" and search == "grid"):
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        if search == "grid":
            raise ConfigError("sweep", f"space.{self.name}", f"grid search needs listed values, not {self.kind}")
        low, high = self.values
        return tune.uniform(low, high) if self.kind == "uniform" else tune.loguniform(low, high)


def parse_space(method: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Param]:
    """The method's default space with ``overrides`` (``{name: {kind: values}}``) replacing entries.

    Whether each name is a setting of the method (and may be searched) is the method's check
    (:meth:`kd_core.methods.registry.MethodSpec.check_searchable`).
    """
    if method not in DEFAULT_SPACES:
        raise ConfigError("sweep", "method", f"no search space for {method!r}; known: {', '.join(DEFAULT_SPACES)}")
    merged: dict[str, Any] = {**DEFAULT_SPACES[method], **dict(overrides or {})}
    space: dict[str, Param] = {}
    for name, spec in merged.items():
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise ConfigError("sweep", f"space.{name}", f"expected one of {{kind: values}} with kind in {KINDS}, got {spec!r}")
        ((kind, values),) = spec.items()
        if not isinstance(values, (list, tuple)):
            raise ConfigError("sweep", f"space.{name}", f"{kind} needs a list, got {values!r}")
        space[name] = Param(name, str(kind), tuple(values))
    return space


def param_space(space: Mapping[str, Param], search: str) -> dict[str, Any]:
    """``{name: tune domain}`` for ``tune.Tuner(param_space=...)``."""
    if search not in SEARCHES:
        raise ConfigError("sweep", "search", f"must be one of {', '.join(SEARCHES)}, got {search!r}")
    if search == "optuna" and any(p.kind == "grid" for p in space.values()):
        raise ConfigError("sweep", "space", "Optuna cannot search grid axes; use choice")
    return {name: param.domain(search) for name, param in space.items()}
