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
| :class:`SpeedStep` | time several models side by side in one process | latency, throughput, speed-ups |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kd_core.io.errors import ConfigError
from kd_core.objectives.schedules import Schedule
from kd_core.training.config import TrainConfig

#: Loss terms of the model's layers, against a teacher run alongside the student
#: (:mod:`kd_core.objectives.layer_distillation`): any task's transformer student can use them.
LAYER_TERMS = ("hidden_mse", "hidden_cos", "attention_map", "relation")
#: ``hard`` (gold labels) and ``soft`` (the teacher at ``tau``) exist for every task; span QA adds
#: A2D's ``answer_margin`` and ``attention`` and IMM's KD term (``prediction_mse``,
#: ``gold_prediction_mse``, ``span_logit_mse``); classification adds
#: ``logit_mse`` and ``hard_distill`` (:meth:`kd_core.tasks.base.Task.term`); and :data:`LAYER_TERMS`.
TERM_KINDS = ("hard", "soft", "answer_margin", "attention", "prediction_mse", "gold_prediction_mse", "span_logit_mse",
              "logit_mse", "hard_distill", *LAYER_TERMS)
#: Term kinds that read teacher knowledge.
KNOWLEDGE_TERMS = ("soft", "answer_margin", "attention", "prediction_mse", "gold_prediction_mse", "span_logit_mse",
                   "logit_mse", "hard_distill")


@dataclass(frozen=True)
class TermSpec:
    """One loss term of an objective, as data: its kind (:data:`TERM_KINDS`), weight and temperature.

    The weight is a number or a schedule over training progress (:class:`~kd_core.objectives.schedules.Linear`,
    :class:`~kd_core.objectives.schedules.Complement`: IMM's annealed ``lambda`` and ``1 - lambda``).
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
    carrying its part's weight. ``keep_layers`` cuts the loaded model to the transformer
    layers it names before training (a shallower student initialised from chosen layers of
    a pretrained or trained teacher). ``embeddings_from`` initialises a BiLSTM student's word
    embeddings from that model's (:func:`~kd_core.models.bilstm.init_embeddings_from_teacher`).
    ``teacher_noise = sigma > 0`` perturbs the teacher logits the knowledge terms read, drawn
    per epoch (:mod:`kd_core.objectives.noise`). Layer terms (:data:`LAYER_TERMS`) compare the student's
    layers with those of ``layer_teacher`` (a model run alongside, frozen, on the same features):
    student layer ``s`` with teacher layer ``t`` for every ``(s, t)`` of ``layer_map``, through
    a learned linear projection when the widths differ (``projection``); ``relation`` uses
    ``relation_heads`` relation heads on the map's last pair. ``keep_best`` keeps the weights of
    the epoch that scored best on ``eval_split`` (the first of equals): the step's model and
    scores are that epoch's, a choice made on ``eval_split`` only. ``workers > 1``
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
    keep_layers: tuple[int, ...] | None = None
    embeddings_from: str | None = None
    teacher_noise: float = 0.0
    layer_teacher: str | None = None
    layer_map: tuple[tuple[int, int], ...] = ()
    projection: bool = True
    relation_heads: int = 4
    split: str = "train"
    eval_split: str = "dev"
    sources: tuple[Source, ...] = ()
    workers: int = 1
    task: str | None = None
    dropout: float | None = None
    score_epochs: bool = False
    keep_best: bool = False
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
        if self.keep_layers is not None and (not self.keep_layers or min(self.keep_layers) < 0
                                             or len(set(self.keep_layers)) != len(self.keep_layers)):
            raise ConfigError("step", self.name, f"keep_layers needs distinct layer indices >= 0, got {self.keep_layers}")
        if self.teacher_noise < 0:
            raise ConfigError("step", self.name, f"teacher_noise must be >= 0, got {self.teacher_noise}")
        layer_terms = any(t.kind in LAYER_TERMS and t.active for t in self.objective)
        if layer_terms and (self.layer_teacher is None or not self.layer_map):
            raise ConfigError("step", self.name, "a layer term needs a layer_teacher and a layer_map")
        if any(s < 0 or t < 0 for s, t in self.layer_map):
            raise ConfigError("step", self.name, f"layer_map indices must be >= 0, got {self.layer_map}")
        if self.relation_heads < 1:
            raise ConfigError("step", self.name, f"relation_heads must be >= 1, got {self.relation_heads}")


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
    """Merge the tables the collect steps ``members`` wrote over ``split`` with tokenizer ``tokenizer``.

    ``options`` are the task's merge settings as ``(name, value)`` pairs (span QA: ``confusing``,
    the rule that picks the confusing answer).
    """

    name: str
    members: tuple[str, ...]
    tokenizer: str
    split: str = "train"
    options: tuple[tuple[str, Any], ...] = ()
    task: str | None = None  # one task of a multi-task workspace
    teacher: bool = True
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateStep:
    """Score ``models`` on ``split``: one model, or the ensemble of several (the task's ensemble).

    ``threshold_from`` names an earlier evaluation (on dev), or a train step (its scores on its
    ``eval_split``), whose chosen SQuAD v2 null threshold (``best_f1_threshold``) this one
    applies; without one, or on a set without unanswerable questions, nothing changes.
    """

    name: str
    models: tuple[str, ...]
    tokenizer: str
    split: str = "test"
    threshold_from: str | None = None
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


@dataclass(frozen=True)
class SpeedStep:
    """Time ``models`` (``(label, model, tokenizer)`` triples) side by side on ``split`` (:mod:`kd_core.evaluation.speed`).

    The first model is the reference of the speed-ups. ``examples`` rows of ``split`` are read
    at batch size 1 (latency) and 32 (throughput) by every model in turn, ``repeats`` rounds;
    the median counts.
    """

    name: str
    models: tuple[tuple[str, str, str], ...]
    split: str = "test"
    examples: int = 256
    repeats: int = 3
    teacher: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models or self.examples < 1 or self.repeats < 1:
            raise ConfigError("step", self.name, "a speed step needs models, examples >= 1 and repeats >= 1")


Step = TrainStep | CollectStep | MergeStep | EvaluateStep | SelectStep | SpeedStep
#: What a step returns and writes as its result file (JSON-able: paths, scores, counts).
Result = dict[str, Any]


def step_inputs(step: Step) -> tuple[str, ...]:
    """The steps whose results ``step`` reads, in the order its fields name them (each once).

    A recipe declares them by the names it writes into the step: ``"@<step>"`` models (the
    model, ``embeddings_from``, ``layer_teacher``, an evaluation's or speed test's models and
    tokenizers), knowledge tables (``knowledge``, each source's), a merge's members, an
    evaluation's ``threshold_from`` and a select step's candidates. A runner starts a step once
    all of them have finished (:func:`kd_core.engine.local.flow`).
    """
    named: list[str | None] = []
    if isinstance(step, TrainStep):
        knowledge = (step.knowledge,) if isinstance(step.knowledge, str) else step.knowledge or ()
        named += [referenced_step(step.model), referenced_step(step.tokenizer), *knowledge,
                  *(source.knowledge for source in step.sources)]
        named += [referenced_step(m) for m in (step.embeddings_from, step.layer_teacher) if m is not None]
    elif isinstance(step, CollectStep):
        named += [referenced_step(step.model), referenced_step(step.tokenizer)]
    elif isinstance(step, MergeStep):
        named += step.members
    elif isinstance(step, EvaluateStep):
        named += [*(referenced_step(m) for m in step.models), referenced_step(step.tokenizer), step.threshold_from]
    elif isinstance(step, SelectStep):
        named += [referenced_step(c) or c for c in step.candidates]
    elif isinstance(step, SpeedStep):
        named += [referenced_step(name) for _, model, tokenizer in step.models for name in (model, tokenizer)]
    return tuple(dict.fromkeys(name for name in named if name is not None))
