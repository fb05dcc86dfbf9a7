"""Steps: what a recipe asks the executor to do, as frozen, picklable data.

Every step has a ``name`` unique within its job: its outputs live in
``<run dir>/steps/<name>/`` and its result in ``.../result.json``, written last and
atomically (so a step either has a complete result or is run, or resumed, again). A model
is named by a source (preset, hub id or path) or by ``"@<train step>"``, the model that
step trained. ``teacher=True`` marks the steps a sweep runs once for all its trials.

| step | does | result |
| --- | --- | --- |
| :class:`TrainStep` | one model on a split (+ knowledge) with an objective | model (``save_pretrained``) + dev scores |
| :class:`CollectStep` | a model reads a split and writes its knowledge | Parquet + manifest |
| :class:`MergeStep` | members' tables become one (the task's merge) | Parquet + manifest |
| :class:`EvaluateStep` | one model, or an ensemble of several, on a split | scores |
| :class:`SelectStep` | keep the best of candidate models on their validation scores | the kept model |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kd_core.errors import ConfigError
from kd_core.objectives import Schedule
from kd_core.train import TrainConfig

#: ``hard`` (gold labels) and ``soft`` (the teacher at ``tau``) exist for every task; span QA adds
#: A2D's ``answer_margin`` and ``attention`` and IMM's ``prediction_mse``
#: (:meth:`kd_core.tasks.base.Task.term`).
TERM_KINDS = ("hard", "soft", "answer_margin", "attention", "prediction_mse")
#: Term kinds that read teacher knowledge.
KNOWLEDGE_TERMS = ("soft", "answer_margin", "attention", "prediction_mse")


@dataclass(frozen=True)
class TermSpec:
    """One loss term of an objective, as data: its kind (:data:`TERM_KINDS`), weight and temperature.

    The weight is a number or a schedule over training progress (:class:`~kd_core.objectives.Linear`,
    :class:`~kd_core.objectives.Complement`: IMM's annealed ``lambda`` and ``1 - lambda``).
    """

    kind: str
    weight: float | Schedule = 1.0
    tau: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in TERM_KINDS:
            raise ConfigError("objective", "kind", f"must be one of {TERM_KINDS}, got {self.kind!r}")
        if isinstance(self.weight, (int, float)) and self.weight < 0:
            raise ConfigError("objective", f"{self.kind} weight", f"must be >= 0, got {self.weight}")
        if not self.tau > 0:
            raise ConfigError("objective", "tau", f"must be > 0, got {self.tau}")

    def describe(self) -> str:
        """``0.5*soft(tau=2)``, ``Linear(start=0.0, end=1.0)*hard``: the term as one readable string."""
        weight = f"{self.weight:g}" if isinstance(self.weight, (int, float)) else str(self.weight)
        return f"{weight}*{self.kind}" + (f"(tau={self.tau:g})" if self.kind == "soft" else "")

    @property
    def active(self) -> bool:
        """Whether the term counts (a scheduled weight always does; a constant one when above 0)."""
        return not isinstance(self.weight, (int, float)) or self.weight > 0


@dataclass(frozen=True)
class Source:
    """One part of a train step's data mixture: a split, its example weight, the knowledge read on it."""

    split: str
    weight: float = 1.0
    knowledge: str | None = None  # the collect/merge step whose table holds a teacher's outputs on ``split``

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ConfigError("step", self.split, f"a source's weight must be > 0, got {self.weight}")


def model_ref(step_name: str) -> str:
    """How a step names the model trained by train step ``step_name``."""
    return f"@{step_name}"


def referenced_step(model: str) -> str | None:
    """The train step a model name refers to (``"@teacher"`` -> ``"teacher"``), or ``None`` for a source."""
    return model[1:] if model.startswith("@") else None


@dataclass(frozen=True)
class TrainStep:
    """Train ``model`` (initialised from ``seed``) on ``split`` read with tokenizer ``tokenizer``.

    ``sources`` (instead of ``split`` and ``knowledge``) trains on a mixture of splits
    (:mod:`kd_core.engine.mixture`): every part up-sampled to the largest, each example
    carrying its part's weight. ``keep_layers`` cuts a freshly loaded model to its first
    layers before training (a shallower student initialised from a pretrained model's lower
    layers). ``workers > 1``
    trains data-parallel (each of ``workers`` processes takes its share of every global
    batch of ``workers * batch_size`` rows; gradients are averaged).
    """

    name: str
    model: str
    seed: int
    tokenizer: str
    objective: tuple[TermSpec, ...]
    config: TrainConfig
    #: The collect/merge step whose table the knowledge terms read (a multi-task step: one per task with a teacher).
    knowledge: str | tuple[str, ...] | None = None
    keep_layers: int | None = None
    split: str = "train"
    eval_split: str = "dev"
    sources: tuple[Source, ...] = ()
    workers: int = 1
    task: str | None = None
    dropout: float | None = None
    score_epochs: bool = False
    teacher: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ConfigError("step", self.name, f"dropout must be in [0, 1), got {self.dropout}")
        if self.workers < 1:
            raise ConfigError("step", self.name, f"workers must be >= 1, got {self.workers}")
        if not any(t.active for t in self.objective):
            raise ConfigError("step", self.name, "the objective needs a term with a weight above 0")
        if self.sources and self.knowledge is not None:
            raise ConfigError("step", self.name, "a mixture names its knowledge per source")
        knowledge = [s.knowledge for s in self.sources] if self.sources else [self.knowledge]
        if any(t.kind in KNOWLEDGE_TERMS and t.active for t in self.objective) and None in knowledge:
            raise ConfigError("step", self.name, "a knowledge term needs knowledge (the step that collected it) "
                              "for every source")
        if self.keep_layers is not None and (self.keep_layers < 1 or self.model.startswith("@")):
            raise ConfigError("step", self.name, "keep_layers cuts a fresh model (a source, not '@step') to >= 1 "
                              "layers")


@dataclass(frozen=True)
class CollectStep:
    """Run the model of ``model`` over ``split`` and store its knowledge table.

    ``options`` are the task's collection settings as ``(name, value)`` pairs (span QA:
    ``top_k``, ``with_attention``; see the task's ``collect``).
    """

    name: str
    model: str
    tokenizer: str
    split: str = "train"
    options: tuple[tuple[str, Any], ...] = ()
    task: str | None = None  # one task of a multi-task workspace
    teacher: bool = True
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeStep:
    """Merge the tables the collect steps ``members`` wrote over ``split`` with tokenizer ``tokenizer``."""

    name: str
    members: tuple[str, ...]
    tokenizer: str
    split: str = "train"
    task: str | None = None  # one task of a multi-task workspace
    teacher: bool = True
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateStep:
    """Score ``models`` on ``split``: one model, or the ensemble of several (the task's ensemble)."""

    name: str
    models: tuple[str, ...]
    tokenizer: str
    split: str = "test"
    task: str | None = None  # one task of a multi-task workspace
    teacher: bool = False
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SelectStep:
    """Keep the best of ``candidates`` (train or select steps) by their primary score on ``split``.

    Keep-the-best (IMM): a later candidate replaces an earlier one only if it is strictly
    better, so a tie keeps the old model. ``"@<select step>"`` names the kept model.
    """

    name: str
    candidates: tuple[str, ...]
    split: str = "dev"
    teacher: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ConfigError("step", self.name, "a select step needs at least one candidate")


Step = TrainStep | CollectStep | MergeStep | EvaluateStep | SelectStep
