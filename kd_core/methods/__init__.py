"""The distillation methods as recipes over the engine's steps (:mod:`kd_core.engine`), and their registry.

A :class:`MethodSpec` is all a generic driver (a job, a sweep) needs to know of a method:
its settings dataclass, the function that turns settings into a recipe, and the train step
whose dev score is "the" result a sweep optimises. Adding a method is a recipe module and
one entry in :data:`METHODS`; no engine, cluster or tuning code changes.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from dataclasses import dataclass, field, replace
from typing import Any

from kd_core.engine.local import Recipe
from kd_core.errors import ConfigError
from kd_core.methods.hinton import HintonSettings, hinton_recipe


@dataclass(frozen=True)
class MethodSpec:
    """A method as a generic driver sees it (module doc)."""

    name: str
    settings: type
    recipe: Callable[[Any], Recipe]
    metric_step: str
    #: Reports a sweep trial makes (the metric step's epochs) for ``settings``.
    horizon: Callable[[Any], int]
    #: Settings a sweep's trials use unless told otherwise (e.g. no baseline run in every trial).
    sweep_defaults: dict[str, Any] = field(default_factory=dict)

    def teacher_plan(self, settings: Any) -> list:
        """The first steps the recipe plans (its teachers), which a sweep runs once for every trial."""
        return self.recipe(settings)({})

    def check_searchable(self, settings: Any, name: str, value: Any, source: str = "sweep") -> Any:
        """``settings`` with ``name = value``; refused if that is no setting or it would change the teachers."""
        if name not in self.settings.__dataclass_fields__:
            raise ConfigError(source, f"space.{name}", f"not a setting of {self.name}; known: "
                              f"{', '.join(sorted(self.settings.__dataclass_fields__))}")
        changed = replace(settings, **{name: value})
        if self.teacher_plan(changed) != self.teacher_plan(settings):
            raise ConfigError(source, f"space.{name}", "changes the teacher steps, which a sweep runs once for all "
                              "trials; it cannot be searched")
        return changed


METHODS: dict[str, MethodSpec] = {
    "kd": MethodSpec("kd", HintonSettings, hinton_recipe, metric_step="student",
                     horizon=lambda s: max(1, math.ceil(s.epochs)), sweep_defaults={"baseline": False}),
}
