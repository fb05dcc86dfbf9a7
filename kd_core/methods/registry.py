"""The registry of the methods: what a generic driver (a job, a sweep) needs to know of each recipe.

A :class:`MethodSpec` is all a generic driver (a job, a sweep) needs to know of a method:
its settings dataclass, the function that turns settings and a workspace into a recipe,
what a sweep optimises (the dev score of a train step after every epoch, or a progress
measure after every stage, e.g. IMM's average over domains after every iteration), and its
data options with the function that builds a workspace from them. Adding a method is a recipe module and
one entry in :data:`METHODS`; no engine, cluster or tuning code changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_core.data.domain_settings import DataSettings
from kd_core.engine.data_options import DataOptions, MultiTaskData, SpanQAData, StudentsData
from kd_core.engine.local import Recipe, drive, is_teacher
from kd_core.engine.steps import CollectStep, MergeStep, Result, SelectStep, Step
from kd_core.io.config_files import RENAMED
from kd_core.io.errors import ConfigError
from kd_core.io.run_store import is_uri
from kd_core.methods.a2d import A2DSettings, a2d_recipe
from kd_core.methods.hinton import HintonSettings, hinton_recipe
from kd_core.methods.imm import TOKENIZER, IMMSettings, imm_recipe
from kd_core.methods.imm_summary import imm_progress
from kd_core.methods.mtdnn import MTDNNSettings, mtdnn_recipe
from kd_core.methods.progress import Progress
from kd_core.methods.students import StudentsSettings, students_recipe, target_student

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace

WorkspaceBuilder = Callable[[Any, Any, Path], "Workspace"]


@dataclass(frozen=True)
class MethodSpec:
    """A method as a generic driver sees it (module doc)."""

    name: str
    settings: type
    recipe: Callable[[Any, Workspace], Recipe]
    #: Reports a sweep trial makes (the metric step's epochs, or the progress reports) for ``settings``.
    horizon: Callable[[Any], int]
    #: The data options dataclass and ``workspace(data, settings, run_dir)`` building the workspace.
    data: type
    workspace: WorkspaceBuilder
    #: What a sweep reports: the train step whose dev score counts after every epoch (a name, or a
    #: function of the settings giving it) ...
    metric_step: str | Callable[[Any], str] | None = None
    #: ... or, after every stage, a :class:`Progress` (``None`` while there is nothing new to report).
    progress: Callable[[Mapping[str, Result], Workspace], Progress | None] | None = None
    #: Settings a sweep's trials use unless told otherwise (e.g. no baseline run in every trial).
    sweep_defaults: dict[str, Any] = field(default_factory=dict)
    #: Trials a sweep runs unless told otherwise.
    samples: int = 8

    def __post_init__(self) -> None:
        if (self.metric_step is None) == (self.progress is None):
            raise ValueError(f"method {self.name}: give a metric step or a progress measure, not both or neither")

    def metric_step_of(self, settings: Any) -> str | None:
        """The name of the train step a sweep scores for ``settings`` (``None``: a progress measure is reported)."""
        return self.metric_step(settings) if callable(self.metric_step) else self.metric_step

    def teacher_plan(self, settings: Any, ws: Workspace) -> list[Step]:
        """Every teacher step the recipe plans, stage by stage (what a sweep runs once for all trials)."""
        planned: list[Step] = []

        def plan(steps: Sequence[Step]) -> list[Result]:
            planned.extend(steps)
            return [{} for _ in steps]  # recipes plan from which steps finished; a choice by score (an MT-DNN
            # teacher pool) sees no scores here and keeps its first candidates

        drive(self.recipe(settings, ws), plan, until=is_teacher)
        return planned

    def trial_plan(self, settings: Any, ws: Workspace) -> list[Step]:
        """Every step after the teacher steps, as planned when each keep-the-best keeps the newer model.

        What a sweep trial would compute (the plan branches on which model a select step keeps;
        keeping the newer one walks every stage the settings allow).
        """
        planned: list[Step] = []

        def plan(steps: Sequence[Step]) -> list[Result]:
            if not all(is_teacher(step) for step in steps):
                planned.extend(steps)
            return [{"kept": step.candidates[-1]} if isinstance(step, SelectStep) else {} for step in steps]

        drive(self.recipe(settings, ws), plan)
        return planned

    def reused_teachers(self, settings: Any, ws: Workspace, run_dir: str | Path) -> dict[str, Result]:
        """The teacher steps' results of an earlier job (or sweep) of this method in ``run_dir``, knowledge checked.

        Every teacher step the recipe plans must have finished there, and every knowledge
        table must have been made for these features (task, data, tokenizer): a table of
        another task or data is refused with one line, before any cluster work. The results
        come back naming their models and tables absolutely, in ``run_dir``
        (:func:`~kd_core.engine.workspace.absolute_result`), ready to be written into another
        run directory.
        """
        from kd_core.engine.workspace import absolute_result
        from kd_core.io.run_store import RunStore
        from kd_core.knowledge.manifest import check_manifest, read_manifest
        from kd_core.knowledge.table import read_knowledge

        if is_uri(run_dir):
            raise ConfigError(str(run_dir), "knowledge_from", "reused teachers are read from a local or shared-file-"
                              "system path, not a URI")
        run_dir = Path(run_dir)
        if not (run_dir / "steps").is_dir() and (run_dir / "teachers" / "steps").is_dir():
            run_dir = run_dir / "teachers"  # a sweep's run directory: its teacher steps

        def stored(steps: Sequence[Step]) -> list[Result]:
            results = []
            for step in steps:
                path = run_dir / "steps" / step.name / "result.json"
                if not path.exists():
                    raise ConfigError(str(run_dir), step.name, f"no finished {self.name} teacher step here "
                                      f"(run the {self.name} job with the same data and teacher settings first)")
                result = absolute_result(json.loads(path.read_text()), RunStore(str(run_dir)))
                if isinstance(step, (CollectStep, MergeStep)):
                    view = ws.view(step.task) if step.task else ws
                    table = read_knowledge(result["path"])
                    check_manifest(read_manifest(table, result["path"]),
                                   view.feature_context(step.tokenizer, step.split), result["path"])
                results.append(result)
            return results

        return drive(self.recipe(settings, ws), stored, until=is_teacher)

    def check_searchable(self, settings: Any, ws: Workspace, name: str, value: Any, source: str = "sweep") -> Any:
        """``settings`` with ``name = value``; refused if that is no setting or it would change the teachers."""
        if RENAMED.get(name) in self.settings.__dataclass_fields__:
            raise ConfigError(source, f"space.{name}", f"is now `space.{RENAMED[name]}`")
        if name not in self.settings.__dataclass_fields__:
            raise ConfigError(source, f"space.{name}", f"not a setting of {self.name}; known: "
                              f"{', '.join(sorted(self.settings.__dataclass_fields__))}")
        changed = replace(settings, **{name: value})
        if self.teacher_plan(changed, ws) != self.teacher_plan(settings, ws):
            raise ConfigError(source, f"space.{name}", "changes the teacher steps, which a sweep runs once for all "
                              "trials; it cannot be searched")
        return changed

    def check_changes_trials(self, settings: Any, ws: Workspace, name: str, values: Sequence[Any],
                             source: str = "sweep") -> None:
        """Refuse a searched parameter whose values all plan the same trial (searching it would change nothing)."""
        plans = [self.trial_plan(replace(settings, **{name: value}), ws) for value in values]
        if len(values) > 1 and all(plan == plans[0] for plan in plans[1:]):
            raise ConfigError(source, f"space.{name}", f"the values {list(values)} plan the same trial steps with the "
                              "other settings; searching it would change nothing")


def _epochs(settings: Any) -> int:
    return max(1, math.ceil(settings.epochs))


# The workspace builders (:mod:`kd_core.engine.prepare`, imported when a workspace is built: the registry is read to
# list a sweep's options, which needs no data readers or tokenizers).

def _task_workspace(data: DataOptions, s: Any, run_dir: Path) -> Workspace:
    from kd_core.engine.prepare import build_workspace

    return build_workspace(data, s.teacher_model, s.student_model, run_dir)


def _span_workspace(data: SpanQAData, s: Any, run_dir: Path) -> Workspace:
    from kd_core.engine.prepare import build_span_workspace

    return build_span_workspace(data, s.teacher_model, s.student_model, run_dir)


def _domain_workspace(data: DataSettings, s: Any, run_dir: Path) -> Workspace:
    from kd_core.engine.prepare import build_domain_workspace

    return build_domain_workspace(data, s.max_answer_length, TOKENIZER, run_dir)


def _multitask_workspace(data: MultiTaskData, s: Any, run_dir: Path) -> Workspace:
    from kd_core.engine.prepare import build_multitask_workspace

    return build_multitask_workspace(data, s.teacher_model, s.student_model, run_dir)


def _students_workspace(data: StudentsData, s: Any, run_dir: Path) -> Workspace:
    from kd_core.engine.prepare import build_students_workspace

    return build_students_workspace(data, s.teacher_model, run_dir)


METHODS: dict[str, MethodSpec] = {
    "kd": MethodSpec("kd", HintonSettings, hinton_recipe, horizon=_epochs, metric_step="student", data=DataOptions,
                     workspace=_task_workspace, sweep_defaults={"baseline": False}),
    "a2d": MethodSpec("a2d", A2DSettings, a2d_recipe, horizon=_epochs, metric_step="student", data=SpanQAData,
                      workspace=_span_workspace, sweep_defaults={"members": 1, "baseline": False}),
    "imm": MethodSpec("imm", IMMSettings, imm_recipe, horizon=lambda s: max(1, s.iterations), progress=imm_progress,
                      data=DataSettings, workspace=_domain_workspace, samples=4, sweep_defaults={"baselines": ()}),
    "mtdnn": MethodSpec("mtdnn", MTDNNSettings, mtdnn_recipe, horizon=_epochs, metric_step="student",
                        data=MultiTaskData, workspace=_multitask_workspace,
                        sweep_defaults={"baseline": False, "single_task": False, "fine_tune_epochs": 0.0}),
    "students": MethodSpec("students", StudentsSettings, students_recipe, horizon=_epochs, metric_step=target_student,
                           data=StudentsData, workspace=_students_workspace,
                           sweep_defaults={"baseline": False, "students": ("scratch",)}),
}
