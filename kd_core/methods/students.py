"""Different students (Sucik 2020): one teacher distilled into smaller BERTs and a BiLSTM, as a recipe.

Steps (names are the run directory's ``steps/<name>``):

1. ``teacher`` (teacher steps) trains on the gold labels: with ``teacher_restarts > 1``,
   ``teacher-<i>`` train from different seeds and ``teacher`` keeps the best on **dev** (the
   random restarts of Devlin et al. 2019 for small data sets, where training from a seed
   sometimes fails); ``knowledge`` (teacher step) is its
   logits on the **transfer set**: the training split, or the training split plus its
   augmentations labelled by nobody but the teacher (Tang et al. 2019;
   :mod:`kd_core.data.augment`), collected once and keyed by example, so every student
   reads it through its own tokenizer.
2. With an ``assistant`` (Mirzadeh et al. 2019's teacher assistant): ``assistant`` distils
   from the teacher's knowledge as the students would, and ``knowledge-assistant`` is its
   logits on the transfer set; the students then distil from the assistant (a chain
   teacher -> assistant -> student, each knowledge table written once).
3. One student per kind, all at once, each with ``L = (1 - alpha) L_hard + alpha L_kd +
   beta L_layer``:

   * ``layers``: the teacher cut to chosen layers (DistilBERT: every other one,
     ``(0, 2, 4, ...)``), initialised from the trained teacher's weights;
   * ``scratch``: a small BERT of the given shape, randomly initialised, the teacher's
     tokenizer;
   * ``bilstm``: a BiLSTM (:mod:`kd_core.models.bilstm`) with its own word-level tokenizer, its word
     vectors initialised from the teacher's word embeddings (the default, with 64 units: chosen
     on dev) or random.

   ``L_kd`` (``loss``): ``soft`` (``tau^2`` times the cross-entropy to the softened teacher),
   ``mse`` (squared distance of the logits, Tang et al.) or ``hard`` (cross-entropy to the
   teacher's argmax); the teacher's logits may be perturbed afresh every epoch (``noise``,
   :mod:`kd_core.objectives.noise`). ``L_layer`` (``layer_loss``, transformer students only): hidden
   states (MSE or cosine), attention maps, or MiniLM self-attention relations against the
   teacher's (or assistant's) mapped layers (:mod:`kd_core.objectives.layer_distillation`); the
   ``layers`` student maps its layer ``i`` to the teacher layer it was copied from, the
   ``scratch`` student maps uniformly (its last layer to the teacher's last) unless
   ``layer_map`` says otherwise. The gold-label loss is 0 on augmented rows.
4. ``<kind>-no-kd`` (``baseline``): the same student, same initialisation, on the labelled
   training split with the gold-label loss only.
5. ``eval-<model>``: every model on the **test** split (choices are made on dev); ``speed``:
   every distilled student, the assistant and the teacher timed side by side in one
   process (:mod:`kd_core.evaluation.speed`), so speed-ups are ratios measured under the same load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kd_core.engine.local import Recipe, in_order
from kd_core.engine.steps import (
    CollectStep,
    EvaluateStep,
    Result,
    SelectStep,
    SpeedStep,
    Step,
    TermSpec,
    TrainStep,
    model_ref,
)
from kd_core.io.errors import ConfigError
from kd_core.io.options import option
from kd_core.models.presets import every_other_layer, model_shape
from kd_core.objectives.layer_maps import LAYER_KINDS, check_layer_map, uniform_layer_map
from kd_core.training.config import TrainConfig

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace

STUDENT_KINDS = ("layers", "scratch", "bilstm")
#: ``loss`` option -> the term kind (:data:`~kd_core.engine.steps.TERM_KINDS`).
KD_LOSSES = {"soft": "soft", "mse": "logit_mse", "hard": "hard_distill"}
LAYER_LOSSES = ("none", *LAYER_KINDS)
EMBEDDINGS = ("teacher", "random")
#: The split the students distil on when the transfer set is augmented (:func:`kd_core.engine.prepare.build_students_workspace`).
TRANSFER = "transfer"


def parse_layer_map(pairs: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """``("0:1", "1:3")`` -> ``((0, 1), (1, 3))`` (student layer : teacher layer, 0-based)."""
    parsed = []
    for pair in pairs:
        try:
            student, teacher = (int(v) for v in pair.split(":"))
        except ValueError:
            raise ConfigError("students", "layer_map", f"cannot read {pair!r}; write STUDENT:TEACHER, e.g. 0:1") from None
        parsed.append((student, teacher))
    return tuple(parsed)


@dataclass(frozen=True)
class StudentsSettings:
    """The recipe's hyperparameters (module doc), validated at construction."""

    teacher_model: str = option("small-bert", "teacher: preset, bert-L<n>-H<n>-A<n>-I<n>, HF id or path", "model")
    teacher_epochs: float = option(20.0, "epochs of the teacher", "model")
    teacher_restarts: int = option(3, "teachers trained from different seeds; the best on dev is kept", "model")
    students: tuple[str, ...] = option(STUDENT_KINDS, "student kinds", "model", choices=STUDENT_KINDS)
    student_layers: tuple[int, ...] = option((), "layers student: the teacher layers it keeps (default: every other "
                                      "one, 0,2,4,...)", "model")
    scratch_layers: int = option(2, "scratch student: transformer layers", "model")
    scratch_hidden: int = option(64, "scratch student: hidden size", "model")
    scratch_heads: int = option(2, "scratch student: attention heads", "model")
    scratch_intermediate: int = option(256, "scratch student: feed-forward size", "model")
    bilstm_hidden: int = option(64, "bilstm student: LSTM size per direction (64 and teacher vectors: chosen on "
                                "dev, docs/results.md)", "model")
    bilstm_embeddings: str = option("teacher", "bilstm student: word vectors from the teacher's embeddings or random",
                                    "model", choices=EMBEDDINGS)
    bilstm_embedding_dim: int = option(32, "bilstm student: word vector size when random (with teacher vectors: "
                                       "the teacher's width)", "model")
    assistant: str | None = option(None, "teacher assistant model (preset or shape): teacher -> assistant -> "
                                   "students", "model")
    loss: str = option("soft", "distillation loss", "distill", choices=tuple(KD_LOSSES))
    tau: float = option(2.0, "temperature of the soft loss", "distill")
    alpha: float = option(0.7, "weight of the distillation loss; the gold-label loss gets 1 - alpha", "distill")
    noise: float = option(0.0, "noisy teacher: std of the multiplicative Gaussian noise on teacher logits", "distill")
    layer_loss: str = option("none", "layer loss of transformer students", "distill", choices=LAYER_LOSSES)
    layer_weight: float = option(1.0, "weight of the layer loss", "distill")
    layer_map: tuple[str, ...] = option((), "STUDENT:TEACHER layer pairs for the layer loss (default: the layers "
                                        "student's copied layers; uniform for scratch)", "distill",
                                        metavar="S:T[,S:T...]")
    projection: bool = option(True, "learn a projection when student and teacher widths differ", "distill")
    relation_heads: int = option(4, "relation heads of the MiniLM relation loss", "distill")
    epochs: float = option(20.0, "epochs of each student", "model")
    batch_size: int = option(32, "training batch size", "model")
    learning_rate: float = option(1e-3, "peak learning rate (linear warm-up and decay)", "model", alias="--lr")
    teacher_learning_rate: float | None = option(None, "the teacher's peak learning rate, also the layers student's "
                                                 "(it starts from the teacher's weights); default: --lr", "model")
    baseline: bool = option(True, "also train every student without knowledge (gold labels only)", "model")
    speed_examples: int = option(256, "test examples each model reads in the speed measurement", "model")
    speed_repeats: int = option(3, "rounds of the speed measurement (the median counts)", "model")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        object.__setattr__(self, "students", tuple(self.students))
        object.__setattr__(self, "student_layers", tuple(int(v) for v in self.student_layers))
        object.__setattr__(self, "layer_map", tuple(self.layer_map))
        unknown = [k for k in self.students if k not in STUDENT_KINDS]
        if unknown or not self.students or len(set(self.students)) != len(self.students):
            raise ConfigError("students", "students", f"need distinct kinds among {', '.join(STUDENT_KINDS)}, got "
                              f"{list(self.students)}")
        choices = {"loss": (self.loss, tuple(KD_LOSSES)), "layer_loss": (self.layer_loss, LAYER_LOSSES),
                   "bilstm_embeddings": (self.bilstm_embeddings, EMBEDDINGS)}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError("students", name, f"must be one of {', '.join(allowed)}, got {value!r}")
        checks = {"alpha": 0 <= self.alpha <= 1, "tau": self.tau > 0, "noise": self.noise >= 0,
                  "layer_weight": self.layer_weight >= 0, "relation_heads": self.relation_heads >= 1,
                  "scratch_layers": self.scratch_layers >= 1, "scratch_heads": self.scratch_heads >= 1,
                  "scratch_hidden": self.scratch_hidden >= 1 and self.scratch_hidden % max(self.scratch_heads, 1) == 0,
                  "scratch_intermediate": self.scratch_intermediate >= 1, "bilstm_hidden": self.bilstm_hidden >= 1,
                  "bilstm_embedding_dim": self.bilstm_embedding_dim >= 1, "speed_examples": self.speed_examples >= 1,
                  "speed_repeats": self.speed_repeats >= 1,
                  "teacher_restarts": self.teacher_restarts >= 1, "student_layers": min(self.student_layers, default=0) >= 0}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError("students", name, f"invalid value {getattr(self, name)!r}")
        parse_layer_map(self.layer_map)
        self.training(self.epochs, 0)
        self.training(max(self.teacher_epochs, 1e-9), 0, True)

    def training(self, epochs: float, seed: int, from_teacher: bool = False) -> TrainConfig:
        """Optimisation of a step; ``from_teacher``: the teacher's (or a model starting from its weights)."""
        own = self.teacher_learning_rate if from_teacher else None
        rate = self.learning_rate if own is None else own
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, learning_rate=rate, seed=seed)

    @property
    def scratch_model(self) -> str:
        return f"bert-L{self.scratch_layers}-H{self.scratch_hidden}-A{self.scratch_heads}-I{self.scratch_intermediate}"


@dataclass(frozen=True)
class StudentPlan:
    """One student kind as steps need it: model, tokenizer, kept layers, embeddings source, layer map."""

    kind: str
    model: str
    tokenizer: str
    keep_layers: tuple[int, ...] | None = None
    embeddings_from: str | None = None
    layer_map: tuple[tuple[int, int], ...] = ()


def plan_students(s: StudentsSettings) -> list[StudentPlan]:
    """Every student of ``s``, checked against the teacher's shape (bad layers and widths refused here)."""
    teacher_layers, teacher_width = model_shape(s.teacher_model)
    source_layers, source_width = model_shape(s.assistant) if s.assistant else (teacher_layers, teacher_width)
    explicit = parse_layer_map(s.layer_map)
    plans = []
    for kind in s.students:
        if kind == "layers":
            kept = s.student_layers or every_other_layer(teacher_layers)
            if max(kept) >= teacher_layers or len(set(kept)) != len(kept):
                raise ConfigError("students", "student_layers", f"need distinct teacher layers in [0, "
                                  f"{teacher_layers - 1}] (the teacher has {teacher_layers}), got {list(kept)}")
            default_map = tuple(enumerate(kept)) if not s.assistant else uniform_layer_map(len(kept), source_layers)
            plan = StudentPlan(kind, model_ref("teacher"), "teacher", keep_layers=kept,
                               layer_map=explicit or default_map)
            width = teacher_width
        elif kind == "scratch":
            plan = StudentPlan(kind, s.scratch_model, "teacher",
                               layer_map=explicit or uniform_layer_map(s.scratch_layers, source_layers))
            width = s.scratch_hidden
        else:
            dim = teacher_width if s.bilstm_embeddings == "teacher" else s.bilstm_embedding_dim
            plans.append(StudentPlan(kind, f"bilstm-E{dim}-H{s.bilstm_hidden}", "words",
                                     embeddings_from=model_ref("teacher") if s.bilstm_embeddings == "teacher" else None))
            continue
        if s.layer_loss != "none":
            student_layers = len(plan.keep_layers) if plan.keep_layers else s.scratch_layers
            check_layer_map(plan.layer_map, student_layers, source_layers, source="students")
            if s.layer_loss.startswith("hidden") and width != source_width and not s.projection:
                raise ConfigError("students", "projection", f"the {kind} student is {width} wide and its layer "
                                  f"teacher {source_width}: {s.layer_loss} needs the projection (--projection)")
        plans.append(plan)
    return plans


def _objective(s: StudentsSettings, layered: bool) -> tuple[TermSpec, ...]:
    terms = [TermSpec("hard", 1 - s.alpha), TermSpec(KD_LOSSES[s.loss], s.alpha, s.tau)]
    if layered and s.layer_loss != "none":
        terms.append(TermSpec(s.layer_loss, s.layer_weight))
    return tuple(terms)


def students_recipe(settings: StudentsSettings, ws: Workspace) -> Recipe:
    """The recipe of the module doc; students distil on ``transfer`` when ``ws`` has that split, else on ``train``."""
    s = settings
    plans = plan_students(s)
    transfer = TRANSFER if TRANSFER in ws.splits else "train"
    teacher_role = {"kd.role": "teacher"}
    restarts = ["teacher"] if s.teacher_restarts == 1 else [f"teacher-{i}" for i in range(s.teacher_restarts)]
    teacher: list[Step] = [TrainStep(name, s.teacher_model, s.seed + 1000 * i, "teacher", (TermSpec("hard"),),
                                     s.training(s.teacher_epochs, s.seed + 1000 * i, True), teacher=True,
                                     tags=teacher_role)
                           for i, name in enumerate(restarts)]
    select: list[Step] = [] if s.teacher_restarts == 1 else [
        SelectStep("teacher", tuple(restarts), split="dev", teacher=True, tags=teacher_role)]
    knowledge: list[Step] = [CollectStep("knowledge", model_ref("teacher"), "teacher", split=transfer,
                                         tags=teacher_role)]
    chain: list[list[Step]] = []
    source, source_knowledge = "teacher", "knowledge"
    if s.assistant:
        role = {"kd.role": "assistant"}
        chain = [[TrainStep("assistant", s.assistant, s.seed + 2, "teacher", _objective(s, False),
                            s.training(s.epochs, s.seed + 2), knowledge="knowledge", split=transfer,
                            teacher_noise=s.noise, tags=role)],
                 [CollectStep("knowledge-assistant", model_ref("assistant"), "teacher", split=transfer,
                              teacher=False, tags=role)]]
        source, source_knowledge = "assistant", "knowledge-assistant"
    students: list[Step] = []
    for plan in plans:
        seed = s.seed + 1
        config = s.training(s.epochs, seed, from_teacher=plan.kind == "layers")
        common = {"keep_layers": plan.keep_layers, "embeddings_from": plan.embeddings_from}
        layered = plan.kind != "bilstm" and s.layer_loss != "none"
        students.append(TrainStep(
            plan.kind, plan.model, seed, plan.tokenizer, _objective(s, layered), config,
            knowledge=source_knowledge, split=transfer, teacher_noise=s.noise,
            layer_teacher=model_ref(source) if layered else None, layer_map=plan.layer_map if layered else (),
            projection=s.projection, relation_heads=s.relation_heads,
            tags={"kd.role": "student", "kd.student": plan.kind}, **common))
        if s.baseline:
            students.append(TrainStep(f"{plan.kind}-no-kd", plan.model, seed, plan.tokenizer, (TermSpec("hard"),),
                                      config, tags={"kd.role": "baseline", "kd.student": plan.kind},
                                      **common))
    tokenizers = {"teacher": "teacher", **({"assistant": "teacher"} if s.assistant else {}),
                  **{step.name: step.tokenizer for step in students}}
    evaluations: list[Step] = [EvaluateStep(f"eval-{name}", (model_ref(name),), tokenizer)
                               for name, tokenizer in tokenizers.items()]
    timed = [name for name in tokenizers if not name.endswith("-no-kd")]
    speed: list[Step] = [SpeedStep("speed", tuple((name, model_ref(name), tokenizers[name]) for name in timed),
                                   examples=s.speed_examples, repeats=s.speed_repeats)]
    return in_order(teacher, select, knowledge, *chain, students, evaluations, speed)


def target_student(settings: StudentsSettings) -> str:
    """The train step a sweep scores: the first distilled student."""
    return settings.students[0]


def summarise(results: Mapping[str, Result], settings: StudentsSettings, task: str, primary: str) -> dict[str, Any]:
    """Per model: kind, parameters, size on disk, speed and speed-ups, dev and test metric with and without KD."""
    speed = results["speed"]["models"]
    models = {"teacher": settings.teacher_model, "assistant": settings.assistant,
              **{plan.kind: plan.model for plan in plan_students(settings)}}
    rows: dict[str, dict[str, Any]] = {}
    for name in speed:
        timing = speed[name]
        row = {"kind": name, "model": models[name], "parameters": timing["parameters"],
               "disk_bytes": timing["disk_bytes"], "latency_ms_b1": timing["latency_ms_b1"],
               "throughput_b32": timing["throughput_b32"], "speedup_b1": timing["speedup_b1"],
               "speedup_b32": timing["speedup_b32"], "dev": results[name]["primary"],
               "test": results[f"eval-{name}"]["primary"], "test_scores": results[f"eval-{name}"]["scores"]}
        if name in settings.students and settings.baseline:
            row["dev_no_kd"] = results[f"{name}-no-kd"]["primary"]
            row["test_no_kd"] = results[f"eval-{name}-no-kd"]["primary"]
            row["kd_gain"] = row["test"] - row["test_no_kd"]
        rows[name] = row
    return {"method": "students", "task": task, "primary_metric": primary, "models": rows,
            "knowledge_rows": results["knowledge"]["rows"], "speed_device": results["speed"]["device"],
            "speed_threads": results["speed"]["threads"]}


def format_table(summary: Mapping[str, Any]) -> str:
    """Models x (parameters, MB, speed-ups, test metric with and without KD)."""
    metric = summary["primary_metric"]
    lines = [f"{'model':<11}{'params':>11}{'MB':>7}{'x b1':>7}{'x b32':>7}{'test ' + metric:>16}{'no KD':>8}{'gain':>7}"]
    for name, row in summary["models"].items():
        no_kd = f"{row['test_no_kd']:>8.2f}{row['kd_gain']:>+7.2f}" if "test_no_kd" in row else f"{'':>8}{'':>7}"
        lines.append(f"{name:<11}{row['parameters']:>11,}{row['disk_bytes'] / 1e6:>7.2f}{row['speedup_b1']:>7.2f}"
                     f"{row['speedup_b32']:>7.2f}{row['test']:>16.2f}{no_kd}")
    return "\n".join(lines)
