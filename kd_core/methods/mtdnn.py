"""MT-DNN knowledge distillation (Liu et al. 2019, "Improving Multi-Task Deep Neural Networks via
Knowledge Distillation for Natural Language Understanding") as a recipe.

Steps (``<t>`` a task of the multi-task workspace, :class:`~kd_core.tasks.multitask.MultiTask`):

1. Teacher steps; all of a stage's steps at once on the workers. By default a **teacher
   pool** (``candidates = P > 0``; the paper's six candidates differing in dropout and seed,
   the best three on dev kept, is the default because it beat seed-only members on dev in
   every seed, ``docs/results.md``): ``P`` candidates train per task with a teacher, dropout
   ``0.1, 0.2, 0.3`` in turn unless ``member_dropouts`` gives one rate per candidate, and each
   task's ensemble is its ``members`` candidates of highest dev score (the lower index first
   on ties): a choice made on dev only. With ``candidates = 0``, ``members`` members differ by
   seed only (and, with ``member_dropouts``, by dropout rate) and all form the ensemble.
   As in the paper, a member is an MT-DNN model fine-tuned on its task: ``teacher-mt-<m>``
   trains a multi-task model on every task's gold labels, then ``<t>-member-<m>`` fine-tunes
   its encoder and task head on task ``t`` alone (``teacher_fine_tune_epochs``). With
   ``--no-teacher-multitask`` a member is a single-task model trained from scratch
   (``teacher_epochs`` on its task).
2. ``<t>-knowledge-<m>``: each member reads its task's training split once;
   ``<t>-knowledge`` merges them (soft targets: the members' averaged class probabilities
   ``q = 1/M sum_m softmax(z_m / tau)``; regression: the members' mean value).
3. ``student``: one multi-task model (a shared encoder, one head per task) trained by the
   paper's Algorithm 1 (every task's data in single-task mini-batches, all batches shuffled
   together each epoch) with ``L = (1 - alpha) L_hard + alpha L_soft`` on tasks with a
   teacher and ``L_hard`` on tasks without one (``alpha = 0.5``: the paper's average of the
   two losses). Regression uses squared errors to the gold score and to the teachers' mean.
   Baselines trained at the same time from the same initialisation, data and schedule:
   with ``baseline``, ``student-vanilla`` (the multi-task model on gold labels only) and, with
   ``single_task``, ``<t>-single`` (the student's architecture on one task).
4. With ``fine_tune_epochs > 0`` (the default, 2: the fine-tuned students beat the multi-task
   one on dev in every seed, ``docs/results.md``): ``<t>-student-ft`` and ``<t>-vanilla-ft``,
   each task's head and the shared encoder fine-tuned on that task alone (as the paper does
   before its test runs).
5. Evaluations on every task's **test** split (no choice is made on it): every member (every
   candidate of a pool), each task's ensemble, the students (per task and their average), the
   baselines.

The soft loss is Hinton's cross-entropy to the soft targets times ``tau^2``; the paper uses
no temperature (``tau = 1``, the default), where the factor is 1. Train steps score
themselves on dev after every epoch (MLflow learning curves per task).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core.engine.local import Recipe, staged
from kd_core.engine.steps import CollectStep, EvaluateStep, MergeStep, Result, Step, TermSpec, TrainStep, model_ref
from kd_core.io.errors import ConfigError
from kd_core.io.options import option
from kd_core.training.config import TrainConfig

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace


@dataclass(frozen=True)
class MTDNNSettings:
    """The recipe's hyperparameters (module doc), validated at construction."""

    teacher_model: str = option("tiny-bert", "every teacher member: preset (tiny-bert, small-bert), HF id or path",
                                "model")
    student_model: str = option("tiny-bert", "the multi-task student (a BERT encoder): preset, HF id or path", "model")
    members: int = option(3, "teacher ensemble members per task: the best on dev of the --candidates (with "
                          "--candidates 0, members differing by seed)", "model")
    member_dropouts: tuple[float, ...] = option((), "dropout rate of each member (one per member, or per candidate "
                                                "of a pool; default: the model's own, in a pool 0.1, 0.2, 0.3 in "
                                                "turn)", "model")
    candidates: int = option(6, "teacher pool (the paper's 6, chosen on dev): train this many candidate members per "
                             "task, differing by seed and dropout, and keep the --members best on dev as the ensemble "
                             "(0: no pool, the members are the ensemble)", "model")
    teacher_epochs: float = option(12.0, "epochs of each teacher member (with --teacher-multitask: of its multi-task "
                                   "training)", "model")
    teacher_learning_rate: float = option(1e-3, "peak learning rate of the teacher members", "model")
    teacher_multitask: bool = option(True, "members are MT-DNN models (multi-task training, then per-task "
                                     "fine-tuning) as in the paper; off: single-task members",
                                     "model")
    teacher_fine_tune_epochs: float = option(3.0, "epochs of each member's per-task fine-tuning (with "
                                             "--teacher-multitask)", "model")
    epochs: float = option(8.0, "epochs of the multi-task students", "model")
    learning_rate: float = option(1e-3, "peak learning rate of the students (linear warm-up and decay)", "model",
                                  alias="--lr")
    alpha: float = option(0.5, "weight of the soft loss on tasks with a teacher; the hard loss gets 1 - alpha",
                          "model")
    tau: float = option(1.0, "temperature of the soft targets (the paper: 1)", "model")
    batch_size: int = option(32, "training batch size (every batch holds one task)", "model")
    fine_tune_epochs: float = option(2.0, "then fine-tune each student per task for this many epochs, as the paper "
                                     "does before its test runs (2: chosen on dev; 0: no)", "model")
    baseline: bool = option(True, "also train the multi-task student without teachers (student-vanilla: the no-KD "
                            "baseline)", "model")
    single_task: bool = option(False, "also train the student's architecture on each task alone (the paper's "
                               "single-task column)", "model")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        object.__setattr__(self, "member_dropouts", tuple(float(p) for p in self.member_dropouts))
        if self.members < 1:
            raise ConfigError("mtdnn", "members", f"must be >= 1, got {self.members}")
        if self.candidates and self.candidates < self.members:
            raise ConfigError("mtdnn", "candidates", f"a pool keeps --members ({self.members}) of its candidates: "
                              f"needs at least {self.members}, got {self.candidates} (--candidates 0: no pool)")
        if self.candidates < 0:
            raise ConfigError("mtdnn", "candidates", f"must be >= 0, got {self.candidates}")
        if self.member_dropouts and len(self.member_dropouts) != self.pool:
            what = "candidate" if self.candidates else "member"
            raise ConfigError("mtdnn", "member_dropouts", f"give one rate per {what} ({self.pool}), got "
                              f"{len(self.member_dropouts)}")
        if any(not 0 <= p < 1 for p in self.member_dropouts):
            raise ConfigError("mtdnn", "member_dropouts", f"rates must be in [0, 1), got {list(self.member_dropouts)}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError("mtdnn", "alpha", f"must be in [0, 1], got {self.alpha}")
        if not self.tau > 0:
            raise ConfigError("mtdnn", "tau", f"must be > 0, got {self.tau}")
        if self.fine_tune_epochs < 0:
            raise ConfigError("mtdnn", "fine_tune_epochs", f"must be >= 0, got {self.fine_tune_epochs}")
        self.training(self.epochs, self.learning_rate, 0)
        self.training(self.teacher_epochs, self.teacher_learning_rate, 0)
        self.training(self.teacher_fine_tune_epochs, self.teacher_learning_rate, 0)

    @property
    def pool(self) -> int:
        """How many members train per task: the pool's candidates, else the members."""
        return self.candidates or self.members

    def dropout(self, member: int) -> float | None:
        """Member (or candidate) ``member``'s dropout rate (module doc); ``None``: the model's own."""
        if self.member_dropouts:
            return self.member_dropouts[member]
        return POOL_DROPOUTS[member % len(POOL_DROPOUTS)] if self.candidates else None

    def training(self, epochs: float, learning_rate: float, seed: int, sampler: str = "rows") -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, learning_rate=learning_rate, seed=seed,
                           sampler=sampler)


#: The dropout rates a teacher pool's candidates take in turn (the paper's 0.1, 0.2 and 0.3).
POOL_DROPOUTS = (0.1, 0.2, 0.3)


def member_name(task: str, member: int) -> str:
    return f"{task}-member-{member}"


def kept_members(settings: MTDNNSettings, task: str, done: Mapping[str, Result]) -> list[int]:
    """The members of ``task``'s ensemble: every member, or a pool's ``members`` candidates of highest dev score.

    Ties keep the lower index (so a plan made from results without scores keeps the first ones).
    """
    if not settings.candidates:
        return list(range(settings.members))
    dev = [float(done[member_name(task, m)].get("primary", 0.0)) for m in range(settings.candidates)]
    return sorted(sorted(range(settings.candidates), key=lambda m: -dev[m])[:settings.members])


def mtdnn_recipe(settings: MTDNNSettings, ws: Workspace) -> Recipe:
    """The recipe of the module doc for ``settings`` on the multi-task workspace ``ws``."""
    s = settings
    tasks = list(ws.task.describe().get("tasks", []))
    if not tasks:
        raise ConfigError("mtdnn", "tasks", f"MT-DNN needs a multi-task workspace, got task kind {ws.task.kind}")
    names = [t["name"] for t in tasks]
    taught = list(ws.task.describe()["with_teacher"])
    role = {"kd.role": "teacher"}

    pretraining: list[Step] = []
    if s.teacher_multitask and taught:
        pretraining = [TrainStep(f"teacher-mt-{m}", s.teacher_model, s.seed + 1000 * m, "teacher", (TermSpec("hard"),),
                                 s.training(s.teacher_epochs, s.teacher_learning_rate, s.seed + 1000 * m, "tasks"),
                                 dropout=s.dropout(m), teacher=True, tags={**role, "kd.member": str(m)})
                       for m in range(s.pool)]
    teachers: list[Step] = [
        TrainStep(member_name(t, m), model_ref(f"teacher-mt-{m}") if pretraining else s.teacher_model,
                  s.seed + 1000 * m + 17 * i, "teacher", (TermSpec("hard"),),
                  s.training(s.teacher_fine_tune_epochs if pretraining else s.teacher_epochs, s.teacher_learning_rate,
                             s.seed + 1000 * m + 17 * i), task=t, dropout=s.dropout(m), teacher=True,
                  tags={**role, "kd.member": str(m)})
        for i, t in enumerate(taught) for m in range(s.pool)
    ]

    student_seed = s.seed + 1
    multi = s.training(s.epochs, s.learning_rate, student_seed, sampler="tasks")
    students: list[Step] = [
        TrainStep("student", s.student_model, student_seed, "student",
                  (TermSpec("hard", 1 - s.alpha), TermSpec("soft", s.alpha, s.tau)) if taught else (TermSpec("hard"),),
                  multi, knowledge=tuple(f"{t}-knowledge" for t in taught) if taught else None, score_epochs=True,
                  tags={"kd.role": "student"}),
    ]
    if s.baseline:
        students.append(TrainStep("student-vanilla", s.student_model, student_seed, "student", (TermSpec("hard"),),
                                  multi, score_epochs=True, tags={"kd.role": "baseline"}))
    if s.single_task:
        students += [TrainStep(f"{t}-single", s.student_model, student_seed, "student", (TermSpec("hard"),),
                               s.training(s.epochs, s.learning_rate, student_seed), task=t, score_epochs=True,
                               tags={"kd.role": "baseline"}) for t in names]
    fine_tuned: list[Step] = []
    if s.fine_tune_epochs > 0:
        fine_tuned = [TrainStep(f"{t}-{label}-ft", model_ref(source), student_seed, "student", (TermSpec("hard"),),
                                s.training(s.fine_tune_epochs, s.learning_rate, student_seed), task=t,
                                tags={"kd.role": "student" if source == "student" else "baseline"})
                      for source, label in (("student", "student"), ("student-vanilla", "vanilla"))
                      if source == "student" or s.baseline for t in names]

    def stages(done: Mapping[str, Result]) -> Iterator[list[Step]]:
        yield pretraining
        yield teachers
        kept = {t: kept_members(s, t, done) for t in taught}  # a pool chooses on dev: after its candidates trained
        yield [CollectStep(f"{t}-knowledge-{m}", model_ref(member_name(t, m)), "teacher", task=t, tags=role)
               for t in taught for m in kept[t]]
        yield [MergeStep(f"{t}-knowledge", tuple(f"{t}-knowledge-{m}" for m in kept[t]), "teacher", task=t, tags=role)
               for t in taught]
        yield students
        yield fine_tuned
        evaluations: list[Step] = [EvaluateStep(f"eval-{member_name(t, m)}", (model_ref(member_name(t, m)),),
                                                "teacher", task=t) for t in taught for m in range(s.pool)]
        evaluations += [EvaluateStep(f"eval-{t}-ensemble", tuple(model_ref(member_name(t, m)) for m in kept[t]),
                                     "teacher", task=t) for t in taught]
        for step in [*students, *fine_tuned]:
            assert isinstance(step, TrainStep)
            evaluations.append(EvaluateStep(f"eval-{step.name}", (model_ref(step.name),), "student", task=step.task))
        yield evaluations

    planned = sum(1 for stage in (pretraining, teachers, taught, taught, students, fine_tuned) if stage) + 1
    return staged(stages, planned)


# ---------------------------------------------------------------------------- summary

def _columns(settings: MTDNNSettings) -> list[tuple[str, str]]:
    """The table's columns: ``(label, evaluation step)``, the step's name formatted with the task ``t``."""
    columns = []
    if settings.single_task:
        columns.append(("single", "eval-{t}-single"))
    if settings.baseline:
        columns.append(("vanilla_mt", "eval-student-vanilla"))
    columns.append(("mt_kd", "eval-student"))
    if settings.fine_tune_epochs > 0:
        if settings.baseline:
            columns.append(("vanilla_mt_ft", "eval-{t}-vanilla-ft"))
        columns.append(("mt_kd_ft", "eval-{t}-student-ft"))
    columns.append(("ensemble", "eval-{t}-ensemble"))
    return columns


def summarise(results: Mapping[str, Result], settings: MTDNNSettings, ws: Workspace) -> dict[str, Any]:
    """Per task: its metric for members, ensemble, single-task, vanilla MT and MT-KD students (test), and more."""
    described = ws.task.describe()
    taught = set(described["with_teacher"])
    tasks: dict[str, Any] = {}
    for part in described["tasks"]:
        t, primary = part["name"], part["primary_metric"]
        row: dict[str, Any] = {"teacher": t in taught, "primary_metric": primary, "test": {}, "test_scores": {}}
        for label, step in _columns(settings):
            name = step.format(t=t)
            if name not in results or (label == "ensemble" and t not in taught):
                continue
            scores = results[name]["scores"]
            own = {k.removeprefix(f"{t}/"): v for k, v in scores.items() if k.startswith(f"{t}/")} or scores
            row["test"][label] = own[primary]
            row["test_scores"][label] = own
        if t in taught:
            row["members_test"] = [results[f"eval-{member_name(t, m)}"]["primary"] for m in range(settings.pool)]
            row["members_dev"] = [results[member_name(t, m)]["primary"] for m in range(settings.pool)]
            row["ensemble_members"] = kept_members(settings, t, results)
        tasks[t] = row
    labels = [label for label, _ in _columns(settings) if label != "ensemble"]
    average = {label: float(np.mean([row["test"][label] for row in tasks.values()])) for label in labels}
    students = {name: {"dev_average": results[name]["primary"], "parameters": results[name]["parameters"]}
                for name in ("student", "student-vanilla") if name in results}
    for source, label in (("student", "student"), ("student-vanilla", "vanilla")):  # fine-tuned: one model per task
        steps = [f"{part['name']}-{label}-ft" for part in described["tasks"]]
        if source in students and all(step in results for step in steps):
            students[f"{source}-ft"] = {"dev_average": float(np.mean([results[step]["primary"] for step in steps])),
                                        "parameters": results[source]["parameters"]}
    infer = {"student_every_task": results["eval-student"]["infer_s"],
             "ensembles_tasks_with_teacher": sum(results[f"eval-{t}-ensemble"]["infer_s"] for t in taught)}
    return {"method": "mtdnn", "tasks": tasks, "average_test": average, "with_teacher": sorted(taught),
            "students": students, "inference_seconds_test": infer,
            "knowledge_bytes": sum(results[f"{t}-knowledge"]["bytes"] for t in taught)}


def format_table(summary: Mapping[str, Any]) -> str:
    """Tasks x models on test (the paper's Table 3: single, vanilla MT, MT-KD, ensemble), with the average."""
    labels = list(summary["average_test"]) + ["ensemble"]
    header = f"{'task':<14}{'teacher':>8}{'metric':>10}" + "".join(f"{label:>15}" for label in labels)
    lines = [header]
    for name, row in summary["tasks"].items():
        cells = "".join(f"{row['test'][label]:>15.2f}" if label in row["test"] else f"{'-':>15}" for label in labels)
        lines.append(f"{name:<14}{'yes' if row['teacher'] else 'no':>8}{row['primary_metric']:>10}{cells}")
    cells = "".join(f"{summary['average_test'][label]:>15.2f}" if label in summary["average_test"] else f"{'':>15}"
                    for label in labels)
    lines.append(f"{'average':<14}{'':>8}{'':>10}{cells}")
    return "\n".join(lines)
