"""Plain teacher -> student distillation (Hinton, Vinyals and Dean 2015), for any task, as a recipe.

Steps (names are the run directory's ``steps/<name>``):

1. ``teacher-<i>`` (``i < members``, teacher steps): the teacher (an ensemble of
   ``members`` models differing by seed) trains on gold labels;
2. ``knowledge-<i>`` (teacher steps): each member reads the training split once;
   ``knowledge`` merges them (the task's merge: the mean of the members' probabilities,
   or of their values for regression);
3. ``student`` trains with ``L = (1 - alpha) L_hard + alpha L_soft(tau)``, where ``L_soft``
   is the task's soft term (classification: ``tau^2`` times the cross-entropy to the
   teacher's softened distribution; span QA: the same per start/end; regression: MSE to the
   teacher's value); ``student-no-kd``, the same student on gold labels only, is the baseline;
4. ``eval-teacher``, ``eval-student``, ``eval-student-no-kd``: every model on the **test**
   split (train steps score themselves on dev; nothing here is chosen on test).

The paper writes the soft loss as a cross-entropy to the teacher's soft targets with
weight ``tau^2``; the KL divergence differs from it by the teacher's entropy, a constant, so
gradients are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kd_core.engine.local import Recipe, in_order
from kd_core.engine.steps import CollectStep, EvaluateStep, MergeStep, Result, Step, TermSpec, TrainStep, model_ref
from kd_core.io.errors import ConfigError
from kd_core.io.options import option
from kd_core.training.config import TrainConfig

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace


@dataclass(frozen=True)
class HintonSettings:
    """The recipe's hyperparameters (module doc), validated at construction."""

    teacher_model: str = option("tiny-bert", "teacher: preset (tiny-bert, small-bert, tiny-bert-1l), HF id or path",
                                "model")
    student_model: str = option("tiny-bert-1l", "student: preset, HF id or path", "model")
    members: int = option(1, "teacher ensemble members (differing by seed)", "model")
    teacher_epochs: float = option(6.0, "epochs of each teacher member", "model")
    epochs: float = option(6.0, "epochs of the student", "model")
    tau: float = option(2.0, "temperature of the soft targets", "model")
    alpha: float = option(0.5, "weight of the soft loss; the hard loss gets 1 - alpha", "model")
    batch_size: int = option(32, "training batch size", "model")
    learning_rate: float = option(2e-3, "peak learning rate (linear warm-up and decay)", "model", alias="--lr")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")
    baseline: bool = option(True, "also train the same student without knowledge (the no-KD baseline)", "model")

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ConfigError("kd", "members", f"must be >= 1, got {self.members}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError("kd", "alpha", f"must be in [0, 1], got {self.alpha}")
        if not self.tau > 0:
            raise ConfigError("kd", "tau", f"must be > 0, got {self.tau}")
        self.training(self.epochs, 0)
        self.training(max(self.teacher_epochs, 1e-9), 0)

    def training(self, epochs: float, seed: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, seed=seed)


def hinton_recipe(settings: HintonSettings, ws: Workspace | None = None) -> Recipe:
    """The recipe of the module doc for ``settings`` (the same for every workspace)."""
    s = settings
    members = [f"teacher-{i}" for i in range(s.members)]
    collects = [f"knowledge-{i}" for i in range(s.members)]
    teachers: list[Step] = [
        TrainStep(name, s.teacher_model, s.seed + 1000 * i, "teacher", (TermSpec("hard"),),
                  s.training(s.teacher_epochs, s.seed + 1000 * i), teacher=True, tags={"kd.role": "teacher"})
        for i, name in enumerate(members)
    ]
    knowledge: list[Step] = [CollectStep(c, model_ref(m), "teacher", tags={"kd.role": "teacher"})
                             for c, m in zip(collects, members)]
    merge: list[Step] = [MergeStep("knowledge", tuple(collects), "teacher", tags={"kd.role": "teacher"})]
    students: list[Step] = [
        TrainStep("student", s.student_model, s.seed + 1, "student",
                  (TermSpec("hard", 1 - s.alpha), TermSpec("soft", s.alpha, s.tau)), s.training(s.epochs, s.seed + 1),
                  knowledge="knowledge", tags={"kd.role": "student"}),
    ]
    if s.baseline:
        students.append(TrainStep("student-no-kd", s.student_model, s.seed + 1, "student", (TermSpec("hard"),),
                                  s.training(s.epochs, s.seed + 1), tags={"kd.role": "baseline"}))
    evaluations: list[Step] = [EvaluateStep("eval-teacher", tuple(model_ref(m) for m in members), "teacher")]
    evaluations += [EvaluateStep(f"eval-{step.name}", (model_ref(step.name),), "student") for step in students]

    return in_order(teachers, knowledge, merge, students, evaluations)


def summarise(results: Mapping[str, Result], settings: HintonSettings, task: str, primary: str) -> dict[str, Any]:
    """The job's summary: per model (teacher ensemble, student, no-KD student) dev and test scores."""
    models = {"teacher": ([f"teacher-{i}" for i in range(settings.members)], "eval-teacher"),
              "student": (["student"], "eval-student")}
    if settings.baseline:
        models["student_no_kd"] = (["student-no-kd"], "eval-student-no-kd")
    table = {}
    for label, (trained, evaluation) in models.items():
        table[label] = {"dev": [results[name]["primary"] for name in trained], "test": results[evaluation]["primary"],
                        "test_scores": results[evaluation]["scores"], "parameters": results[trained[0]]["parameters"]}
    return {"method": "kd", "task": task, "primary_metric": primary, "models": table,
            "knowledge_bytes": results["knowledge"]["bytes"]}


def format_table(summary: Mapping[str, Any]) -> str:
    """Models x (dev, test, parameters); the teacher's dev is its members' mean, test the ensemble's."""
    metric = summary["primary_metric"]
    lines = [f"{'model':<16}{'dev ' + metric:>16}{'test ' + metric:>16}{'params':>12}"]
    for label, row in summary["models"].items():
        dev = sum(row["dev"]) / len(row["dev"])
        lines.append(f"{label.replace('_', ' '):<16}{dev:>16.2f}{row['test']:>16.2f}{row['parameters']:>12,}")
    return "\n".join(lines)
