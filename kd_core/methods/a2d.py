"""Attention-Guided Answer Distillation (Hu et al. 2018) as a recipe: an ensemble of readers teaches one student.

Steps (names are the run directory's ``steps/<name>``):

1. ``member-<i>`` (``i < members``, teacher steps): the members train on span CE, seeds
   ``seed + 1000 i`` (with ``teacher_epochs = 0`` the teacher model is used as it is and
   ``eval-member-<i>`` scores it on dev);
2. ``knowledge-<i>`` (teacher steps): each member reads the training features once (start/end
   logits, its ``top_k`` best spans, question-passage attention when ``delta > 0``);
   ``knowledge`` merges them: member logits, the confusing answer, averaged attention
   (:mod:`kd_core.knowledge.span`);
3. ``student`` (seed ``seed + 1``, optionally cut to its first ``student_layers`` layers):
   ``L = L_CE + lambda tau^2 L_KD + gamma L_ANS + delta L_ATT`` (Eq. 1 with the vanilla-KD
   weight ``lambda = alpha``; every span term sums its start and end parts, see
   :mod:`kd_core.objectives.losses`; span CE only with ``no_kd``, which skips steps 2);
   ``student-no-kd`` the same on CE only (``baseline``); with ``keep_best`` both keep their
   best epoch on dev (the epoch count chosen on dev, the same budget for both). ``stagewise`` trains instead in two
   stages (Table 5's "stage-wise"): ``student-attention`` on ``delta L_ATT`` alone for
   ``attention_epochs``, then ``student`` from it on ``L_CE + lambda tau^2 L_KD + gamma L_ANS``;
4. ``eval-ensemble-<split>``, ``eval-student-<split>``: the ensemble (averaged
   probabilities) and the student on dev, then on test and every extra evaluation split, side
   by side in one stage each, so their inference seconds (the speed table) are measured with
   the same resources; on test also every member (``eval-member-<i>-test``) and the no-KD
   student (``eval-student-no-kd-test``). On SQuAD v2 data a later split applies the null
   threshold each model chose on dev.

**Evaluation protocol.** Dev is where every choice is made (a default, an epoch count, a
SQuAD v2 null threshold, a sweep's best trial: the ``student`` step's dev F1); test, the
``--test`` file or contexts split off the training data, is read by no choice and holds the
reported numbers (the summary's ``test``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core.engine.local import Recipe, in_order
from kd_core.engine.steps import CollectStep, EvaluateStep, MergeStep, Result, Step, TermSpec, TrainStep, model_ref
from kd_core.evaluation.squad_metrics import ADVERSARIAL_KEYS
from kd_core.io.errors import ConfigError
from kd_core.io.options import option
from kd_core.knowledge.confusing import CONFUSING_RULES
from kd_core.training.config import TrainConfig

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace

#: Split names of the evaluations the summary reads: choices are made on dev, reported numbers are on test.
DEV = "dev"
TEST = "test"


@dataclass(frozen=True)
class A2DSettings:
    """The recipe's hyperparameters (module doc), validated at construction."""

    teacher_model: str = option("tiny-bert", "members: preset (tiny-bert, small-bert, tiny-bert-1l), HF id or local "
                                "path", "model")
    student_model: str = option("tiny-bert-1l", "student: preset, HF id or local path", "model")
    student_layers: int | None = option(None, "keep only the student model's first K layers (shallower student; "
                                        "default: all)", "model")
    members: int = option(2, "ensemble size N (paper: 12)", "model")
    teacher_epochs: float = option(20.0, "epochs of each member (0: the teacher model as it is)", "model")
    epochs: float = option(8.0, "epochs of the student (8, not 4: chosen on dev)", "model")
    tau: float = option(2.0, "temperature of the soft targets", "model")
    gamma: float = option(0.3, "weight of the answer-margin loss", "model")
    delta: float = option(0.1, "weight of the attention MSE (0: no attention is collected)", "model")
    top_k: int = option(4, "teacher spans kept per feature (confusing-answer candidates)", "model")
    alpha: float = option(1.0, "weight lambda of the vanilla KD term (0: without it, Table 5)", "model")
    confusing: str = option("question", "confusing answer: 'question' (the paper's: one per question, the wrong "
                            "answer a member is most confident in) or 'window' (per window, by ensemble confidence)",
                            "model", choices=CONFUSING_RULES)
    stagewise: bool = option(False, "train attention matching first (student-attention), then the other losses",
                             "model")
    attention_epochs: float = option(1.0, "epochs of the attention stage with --stagewise", "model")
    batch_size: int = option(16, "training batch size", "model")
    learning_rate: float = option(2e-3, "peak learning rate (linear warm-up and decay)", "model", alias="--lr")
    no_kd: bool = option(False, "train the student without knowledge (no knowledge is collected)", "model")
    baseline: bool = option(True, "also train the same student without knowledge (student-no-kd)", "model")
    keep_best: bool = option(False, "the student and the no-KD student keep their best epoch on dev (epochs chosen on "
                             "dev, both given --epochs as the budget)", "model")
    student_workers: int = option(1, "data-parallel workers of the student (1: one worker; more: Ray Train)", "job")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        for name in ("members", "student_workers"):
            if getattr(self, name) < 1:
                raise ConfigError("a2d", name, f"must be >= 1, got {getattr(self, name)}")
        if self.teacher_epochs < 0:
            raise ConfigError("a2d", "teacher_epochs", f"must be >= 0, got {self.teacher_epochs}")
        if self.student_layers is not None and self.student_layers < 1:
            raise ConfigError("a2d", "student_layers", f"must be >= 1, got {self.student_layers}")
        if not self.tau > 0:
            raise ConfigError("a2d", "tau", f"must be > 0, got {self.tau}")
        for name in ("gamma", "delta", "alpha"):
            if getattr(self, name) < 0:
                raise ConfigError("a2d", name, f"must be >= 0, got {getattr(self, name)}")
        if self.confusing not in CONFUSING_RULES:
            raise ConfigError("a2d", "confusing", f"must be one of {CONFUSING_RULES}, got {self.confusing!r}")
        if self.stagewise and (self.no_kd or self.delta == 0):
            raise ConfigError("a2d", "stagewise", "the attention stage needs knowledge and delta > 0")
        if not self.attention_epochs > 0:
            raise ConfigError("a2d", "attention_epochs", f"must be > 0, got {self.attention_epochs}")
        if not self.no_kd and not self.stagewise and self.alpha == self.gamma == self.delta == 0:
            raise ConfigError("a2d", "alpha", "alpha, gamma and delta are all 0: the student would use no "
                              "knowledge; use --no-kd")
        if self.top_k < 1:
            raise ConfigError("a2d", "top_k", f"must be >= 1, got {self.top_k}")
        self.training(self.epochs, 0)

    def training(self, epochs: float, seed: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, seed=seed)

    @property
    def kept_layers(self) -> tuple[int, ...] | None:
        """The student's kept layers: its first ``student_layers`` (all when unset)."""
        return None if self.student_layers is None else tuple(range(self.student_layers))

    def member_seed(self, i: int) -> int:
        return self.seed + 1000 * i


def member_models(s: A2DSettings) -> list[str]:
    """The members as models: the trained ``member-<i>``, or the teacher model itself with ``teacher_epochs = 0``."""
    if s.teacher_epochs == 0:
        return [s.teacher_model] * s.members
    return [model_ref(f"member-{i}") for i in range(s.members)]


def eval_splits(ws: Workspace) -> list[str]:
    """The extra evaluation splits of a span-QA workspace (all but train, dev and test)."""
    return [split for split in ws.splits if split not in ("train", DEV, TEST)]


def a2d_recipe(settings: A2DSettings, ws: Workspace) -> Recipe:
    """The recipe of the module doc; the ensemble and the student are also scored on ``ws``'s extra splits."""
    s = settings
    role = {"kd.role": "member"}
    members: list[Step] = [] if s.teacher_epochs == 0 else [
        TrainStep(f"member-{i}", s.teacher_model, s.member_seed(i), "teacher", (TermSpec("hard"),),
                  s.training(s.teacher_epochs, s.member_seed(i)), teacher=True, tags={**role, "kd.member": str(i)})
        for i in range(s.members)
    ]
    models = member_models(s)
    options = (("top_k", s.top_k), ("with_attention", s.delta > 0))
    collects: list[Step] = [] if s.no_kd else [
        CollectStep(f"knowledge-{i}", model, "teacher", options=options, tags={**role, "kd.member": str(i)})
        for i, model in enumerate(models)
    ]
    merge: list[Step] = [] if s.no_kd else [
        MergeStep("knowledge", tuple(step.name for step in collects), "teacher", options=(("confusing", s.confusing),),
                  tags=role)]
    kd_terms = () if s.no_kd else (TermSpec("soft", s.alpha, s.tau), TermSpec("answer_margin", s.gamma),
                                   TermSpec("attention", 0.0 if s.stagewise else s.delta))
    warm_up: list[Step] = [
        TrainStep("student-attention", s.student_model, s.seed + 1, "teacher", (TermSpec("attention", s.delta),),
                  s.training(s.attention_epochs, s.seed + 1), knowledge="knowledge", keep_layers=s.kept_layers,
                  workers=s.student_workers, tags={"kd.role": "student"})
    ] if s.stagewise else []
    if s.baseline:
        warm_up.append(TrainStep("student-no-kd", s.student_model, s.seed + 1, "teacher", (TermSpec("hard"),),
                                 s.training(s.epochs, s.seed + 1), keep_layers=s.kept_layers,
                                 workers=s.student_workers, keep_best=s.keep_best, tags={"kd.role": "baseline"}))
    student: list[Step] = [
        TrainStep("student", model_ref("student-attention") if s.stagewise else s.student_model, s.seed + 1,
                  "teacher", (TermSpec("hard"), *kd_terms), s.training(s.epochs, s.seed + 1),
                  knowledge=None if s.no_kd else "knowledge", keep_layers=None if s.stagewise else s.kept_layers,
                  workers=s.student_workers, keep_best=s.keep_best, tags={"kd.role": "student"}),
    ]
    evaluations: list[Step] = []
    if s.teacher_epochs == 0:
        evaluations += [EvaluateStep(f"eval-member-{i}", (model,), "teacher", split=DEV, tags=role)
                        for i, model in enumerate(models)]
    evaluated = {"ensemble": tuple(models), "student": (model_ref("student"),)}
    evaluations += [EvaluateStep(f"eval-{who}-{DEV}", chosen, "teacher", split=DEV, tags={"kd.role": who})
                    for who, chosen in evaluated.items()]
    extra: list[Step] = [EvaluateStep(f"eval-{who}-{split}", chosen, "teacher", split=split,
                                      threshold_from=f"eval-{who}-{DEV}", tags={"kd.role": who})
                         for split in (TEST, *eval_splits(ws)) for who, chosen in evaluated.items()]
    extra += [EvaluateStep(f"eval-member-{i}-{TEST}", (model,), "teacher", split=TEST,
                           threshold_from=f"eval-member-{i}" if s.teacher_epochs == 0 else f"member-{i}",
                           tags={**role, "kd.member": str(i)}) for i, model in enumerate(models)]
    if s.baseline:
        extra.append(EvaluateStep(f"eval-student-no-kd-{TEST}", (model_ref("student-no-kd"),), "teacher", split=TEST,
                                  threshold_from="student-no-kd", tags={"kd.role": "baseline"}))

    if s.stagewise:
        return in_order(members, collects, merge, warm_up, student, evaluations, extra)
    return in_order(members, collects, merge, student + warm_up, evaluations, extra)


def summarise(results: Mapping[str, Result], settings: A2DSettings, ws: Workspace) -> dict[str, Any]:
    """The job's summary (the JSON contract of ``jobs/a2d.py``) from the step results."""
    s = settings
    if s.teacher_epochs == 0:
        members_f1 = [results[f"eval-member-{i}"]["primary"] for i in range(s.members)]
    else:
        members_f1 = [results[f"member-{i}"]["scores"][DEV]["f1"] for i in range(s.members)]
    ensemble, student = results[f"eval-ensemble-{DEV}"], results[f"eval-student-{DEV}"]
    speed_table = {
        "ensemble": {"parameters": ensemble["parameters"], "infer_s": ensemble["infer_s"]},
        "student": {"parameters": student["parameters"], "infer_s": student["infer_s"]},
        "speedup": ensemble["infer_s"] / max(student["infer_s"], 1e-9),
    }
    timings = {"student_train_s": results["student"]["seconds"]}
    if s.teacher_epochs > 0:
        timings["members_train_s"] = max(results[f"member-{i}"]["seconds"] for i in range(s.members))
    knowledge_bytes = None
    if not s.no_kd:
        timings["teacher_infer_s"] = max(results[f"knowledge-{i}"]["seconds"] for i in range(s.members))
        knowledge_bytes = results["knowledge"]["bytes"] / results["knowledge"]["rows"]
    summary = {
        "members_f1": members_f1,
        "ensemble_f1": ensemble["scores"]["f1"],
        "student_f1": student["scores"]["f1"],
        "eval": {split: {"ensemble": results[f"eval-ensemble-{split}"]["scores"]["f1"],
                         "student": results[f"eval-student-{split}"]["scores"]["f1"]} for split in eval_splits(ws)},
        "eval_adversarial": {
            split: {who: {key: results[f"eval-{who}-{split}"]["scores"][key] for key in ADVERSARIAL_KEYS
                          if key in results[f"eval-{who}-{split}"]["scores"]} for who in ("ensemble", "student")}
            for split in eval_splits(ws) if "adversarial_f1" in results[f"eval-ensemble-{split}"]["scores"]},
        "ensemble_infer_s": ensemble["infer_s"],
        "student_infer_s": student["infer_s"],
        "speedup": speed_table["speedup"],
        "speed_table": speed_table,
        "knowledge_bytes_per_feature": knowledge_bytes,
        "timings": timings,
    }
    if s.baseline:
        summary["student_no_kd_f1"] = results["student-no-kd"]["primary"]
    if s.keep_best:  # each student's dev F1 after every epoch and the epoch it kept: did the score stop rising?
        summary["students_epochs"] = {
            name: {"dev_f1": results[name]["epochs_primary"], "kept_epoch": results[name]["best_epoch"]}
            for name in ("student", "student-no-kd") if name in results}
    summary["test"] = test_scores(results, s)
    summary["splits"] = SPLITS
    return summary


#: What the summary's splits are (its top-level F1s are on dev, ``test`` holds the reported ones).
SPLITS = {"dev": "where every choice is made: the top-level members_f1, ensemble_f1, student_f1, student_no_kd_f1",
          "test": "reported, read by no choice: the same F1s under test"}


def test_scores(results: Mapping[str, Result], s: A2DSettings) -> dict[str, Any]:
    """Test F1 of the members, the ensemble, the student and the no-KD student, and what the student kept.

    ``gain_kept`` is the share of the ensemble's gain over its mean member that the student keeps,
    ``(student - member) / (ensemble - member)`` (``None`` when the ensemble does not beat it);
    ``kd_gain`` is ``student - no-KD student``.
    """
    def f1(step: str) -> float:
        return float(results[step]["scores"]["f1"])

    members = [f1(f"eval-member-{i}-{TEST}") for i in range(s.members)]
    out: dict[str, Any] = {"members_f1": members, "ensemble_f1": f1(f"eval-ensemble-{TEST}"),
                           "student_f1": f1(f"eval-student-{TEST}")}
    member = float(np.mean(members))
    gain = out["ensemble_f1"] - member
    out["gain_kept"] = (out["student_f1"] - member) / gain if gain > 0 else None
    if s.baseline:
        out["student_no_kd_f1"] = f1(f"eval-student-no-kd-{TEST}")
        out["kd_gain"] = out["student_f1"] - out["student_no_kd_f1"]
    return out


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The parent run's metrics: ensemble/student F1, the members' mean, speed, knowledge size, extra evaluations."""
    metrics = {"ensemble_f1": summary["ensemble_f1"], "student_f1": summary["student_f1"],
               "members_mean_f1": float(np.mean(summary["members_f1"])), "speedup": summary["speedup"],
               "ensemble_infer_s": summary["ensemble_infer_s"], "student_infer_s": summary["student_infer_s"]}
    if summary["knowledge_bytes_per_feature"] is not None:
        metrics["knowledge_bytes_per_feature"] = summary["knowledge_bytes_per_feature"]
    if "student_no_kd_f1" in summary:
        metrics["student_no_kd_f1"] = summary["student_no_kd_f1"]
    test = summary["test"]
    metrics |= {f"test/{key}": value for key, value in test.items() if key != "members_f1" and value is not None}
    metrics["test/members_mean_f1"] = float(np.mean(test["members_f1"]))
    metrics |= {f"eval/{name}/{who}": f1 for name, scores in summary["eval"].items() for who, f1 in scores.items()}
    metrics |= {f"eval/{name}/{who}/{key}": value for name, models in summary["eval_adversarial"].items()
                for who, scores in models.items() for key, value in scores.items()}
    return metrics


def format_table(summary: Mapping[str, Any]) -> str:
    """Dev (choices) and test (reported) F1 of members, ensemble and students; extra evaluations; the speed table."""
    test = summary["test"]
    rows = [(f"member {i}", f1, test["members_f1"][i]) for i, f1 in enumerate(summary["members_f1"])]
    rows += [("ensemble", summary["ensemble_f1"], test["ensemble_f1"]),
             ("student", summary["student_f1"], test["student_f1"])]
    if "student_no_kd_f1" in summary:
        rows.append(("student without kd", summary["student_no_kd_f1"], test["student_no_kd_f1"]))
    lines = [f"{'model':<20} {'dev F1':>7} {'test F1':>8}"]
    lines += [f"{name:<20} {dev:>7.2f} {reported:>8.2f}" for name, dev, reported in rows]
    lines.append("dev: every choice is made on it; test: reported, read by no choice")
    if test["gain_kept"] is not None:
        lines.append(f"the student keeps {100 * test['gain_kept']:.0f}% of the ensemble's test gain over its mean member")
    for name, scores in summary["eval"].items():
        lines.append(f"{name}: ensemble {scores['ensemble']:.2f}, student {scores['student']:.2f}")
        for who, adversarial in summary["eval_adversarial"].get(name, {}).items():
            lines.append(f"  {who}: adversarial F1 {adversarial['adversarial_f1']:.2f} (worst variant per question), "
                         f"original questions F1 {adversarial.get('original_f1', float('nan')):.2f}")
    table = summary["speed_table"]
    lines.append(f"inference over dev: ensemble {table['ensemble']['infer_s']:.2f} s "
                 f"({table['ensemble']['parameters']:,} params), student {table['student']['infer_s']:.2f} s "
                 f"({table['student']['parameters']:,} params), speedup {table['speedup']:.1f}x")
    if summary["knowledge_bytes_per_feature"] is not None:
        lines.append(f"knowledge: {summary['knowledge_bytes_per_feature']:.0f} bytes per feature")
    return "\n".join(lines)
