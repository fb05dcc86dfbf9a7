"""IMM: iterative multi-source mutual knowledge transfer for MRC (Liu et al., IJCAI 2020), as plans.

Domains ``D_1..D_N`` each have a model ``theta_i``. Iteration 0 trains every
``theta_i^(0)`` on ``D_i`` alone. Iteration ``k`` (``0 <= k < K``), for every domain ``i``:

1. every ``theta_j^(k)`` predicts on its own training features once (its *knowledge*,
   :func:`domain_knowledge`, stored as logits keyed by feature id);
2. ``phi_i^(k)`` trains on the mixture of ``{D_j, j != i}``, every domain up-sampled to the
   size of the largest (:func:`upsample_indices`), with the per-example loss

       s_ij * [ lambda * NLL + (1 - lambda) * MSE(p_phi, p_theta_j^(k)) ],

   ``lambda`` annealed linearly 0 -> 1 over the stage (``s_ij`` the normalised TF-IDF
   question similarity, :func:`kd_core.data.similarity.domain_similarity`; the batch loss is
   ``sum_b s_b L_b / sum_b s_b``, so only the *relative* weights of the domains matter and
   the learning rate means the same with and without them);
3. ``theta_i^(k+1)`` starts from ``phi_i^(k)`` and is fine-tuned on ``D_i`` with the same
   loss, the targets being ``theta_i^(k)``'s own outputs on ``D_i``;
4. the better of ``theta_i^(k)`` and ``theta_i^(k+1)`` on ``D_i``'s dev set is kept
   (:func:`keep_new`; a tie keeps the old model).

The run stops after ``K`` iterations or when no domain improved.

Where the paper is silent we chose (and ``phi_init`` makes it an option): ``phi_i^(k)``
starts from the base model (``"model"``: the pretrained encoder with a fresh head, or a fresh
preset) so every iteration's multi-domain model is an ordinary fine-tuning run whose only
new ingredient is the improved teachers; ``"theta"`` warm-starts it from ``theta_i^(k)``.

Everything a domain does in one iteration is a :class:`DomainPlan` (a list of training
:class:`Stage` s, each a weighted mixture of :class:`SourcePart` s, then evaluation and the
keep-the-best decision); :func:`run_plan` executes one in the current process. The
baselines are plans too (:func:`baseline_plans`): ``single`` (iteration 0 alone), ``mix``
(one model on all domains), ``ft`` (train on the other domains, fine-tune on the target)
and ``mft`` (mixed fine-tuning, Chu et al. 2017: train on the other domains, then
fine-tune on the mixture of all domains, target included). The ablations ``no_similarity``
(all ``s_ij = 1/(N-1)``), ``no_kd1`` (``phi`` without the MSE) and ``no_kd2`` (``theta``
without it) change the plans only.

A plan is resumable: each stage trains with checkpoints in ``checkpoint_dir/<stage>`` (a
finished stage resumes at its last step, i.e. is not recomputed), and the plan's result
file, written atomically last, marks it complete.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from kd_core.data.domains import DomainData
from kd_core.data.similarity import domain_similarity
from kd_core.errors import ConfigError
from kd_core.knowledge.span import KnowledgeConfig, member_knowledge, member_logits
from kd_core.knowledge.table import read_knowledge, write_knowledge
from kd_core.models import load_qa_model, save_model
from kd_core.objectives import imm_objective, parse_schedule
from kd_core.predict import evaluate_qa
from kd_core.run_files import replace_dir, write_atomic
from kd_core.train import MetricsCallback, TrainConfig, train

METHODS = ("imm", "single", "mix", "ft", "mft")
PHI_INITS = ("model", "theta")
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class IMMSettings:
    """The algorithm's hyperparameters (module doc), validated at construction."""

    iterations: int = 2
    lambda_schedule: str = "linear:0:1"
    phi_init: str = "model"
    no_similarity: bool = False
    no_kd1: bool = False
    no_kd2: bool = False
    epochs: float = 6.0
    transfer_epochs: float | None = None
    finetune_epochs: float | None = None
    batch_size: int = 16
    learning_rate: float = 2e-3
    max_answer_length: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ConfigError("imm", "iterations", f"must be >= 0, got {self.iterations}")
        if self.phi_init not in PHI_INITS:
            raise ConfigError("imm", "phi_init", f"must be one of {PHI_INITS}, got {self.phi_init!r}")
        parse_schedule(self.lambda_schedule, "lambda_schedule")
        for name in ("transfer_epochs", "finetune_epochs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError("imm", name, f"must be > 0, got {value}")
        if self.max_answer_length < 1:
            raise ConfigError("imm", "max_answer_length", f"must be >= 1, got {self.max_answer_length}")
        self.train_config(self.epochs, 0)  # validates epochs, batch size, learning rate

    def train_config(self, epochs: float, seed: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, seed=seed)

    @property
    def phi_epochs(self) -> float:
        return self.transfer_epochs if self.transfer_epochs is not None else self.epochs

    @property
    def theta_epochs(self) -> float:
        return self.finetune_epochs if self.finetune_epochs is not None else self.epochs


# ---------------------------------------------------------------------------- pure pieces


def similarity_weights(questions_by_domain: Mapping[str, Sequence[str]], uniform: bool = False) -> np.ndarray:
    """``S[i, j] = s_ij``: TF-IDF question similarity normalised over ``j != i`` (zero diagonal).

    ``uniform`` (the ``--no-similarity`` ablation) gives every other domain ``1 / (N - 1)``.
    """
    if uniform:
        n = len(questions_by_domain)
        if n < 2:
            raise ConfigError("domains", "similarity", f"needs at least 2 domains, got {n}")
        return (1.0 - np.eye(n)) / (n - 1)
    return domain_similarity(questions_by_domain)


def upsample_indices(size: int, target: int, seed: int) -> np.ndarray:
    """Rows of a ``size``-row set repeated up to ``target`` rows: whole copies, then a seeded sample.

    ``target // size`` full copies of ``0..size-1`` and ``target % size`` rows drawn without
    replacement, so every row appears ``floor(target/size)`` or one more times.
    """
    if size < 1 or target < size:
        raise ValueError(f"cannot up-sample {size} rows to {target}")
    copies, rest = divmod(target, size)
    extra = np.random.default_rng(seed).choice(size, rest, replace=False) if rest else np.empty(0, np.int64)
    return np.concatenate([np.tile(np.arange(size), copies), np.sort(extra)]).astype(np.int64)


def keep_new(previous_f1: float | None, new_f1: float) -> bool:
    """Keep-the-best: the new model replaces the old one only if it is strictly better on dev."""
    return previous_f1 is None or new_f1 > previous_f1


@dataclass(frozen=True)
class SourcePart:
    """One domain's training features in a stage: its weight and, optionally, a teacher's logits on them."""

    domain: str
    weight: float = 1.0
    knowledge: str | None = None  # Parquet table of a teacher's outputs on this domain's training features


@dataclass(frozen=True)
class Stage:
    """One training stage: the mixture it trains on, its epochs and seed."""

    name: str
    parts: tuple[SourcePart, ...]
    epochs: float
    seed: int

    @property
    def uses_knowledge(self) -> bool:
        return any(p.knowledge is not None for p in self.parts)


def mixture_arrays(parts: Sequence[SourcePart], domains: Mapping[str, DomainData], seed: int) -> dict[str, np.ndarray]:
    """The training arrays of a stage: every part up-sampled to the largest, with ``weight`` (and knowledge).

    All parts must carry knowledge or none. A single part is used as is (no up-sampling).
    """
    if not parts:
        raise ConfigError("imm", "stage", "a stage needs at least one source domain")
    with_knowledge = [p.knowledge is not None for p in parts]
    if any(with_knowledge) and not all(with_knowledge):
        raise ConfigError("imm", "stage", "either every source of a stage has teacher knowledge or none has")
    target = max(len(domains[p.domain].train_arrays["input_ids"]) for p in parts)
    pieces: list[dict[str, np.ndarray]] = []
    for index, part in enumerate(parts):
        data = domains[part.domain]
        arrays = dict(data.train_arrays)
        if part.knowledge is not None:
            start, end = member_logits(read_knowledge(part.knowledge), data.train_features["feature_id"])
            arrays |= {"teacher_start_logits": start, "teacher_end_logits": end}
        size = len(arrays["input_ids"])
        rows = upsample_indices(size, target, seed * 1_009 + index) if len(parts) > 1 else np.arange(size)
        piece = {name: values[rows] for name, values in arrays.items()}
        piece["weight"] = np.full(len(rows), part.weight, np.float32)
        pieces.append(piece)
    return {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}


def domain_knowledge(model: PreTrainedModel, data: DomainData, batch_size: int = 64) -> pa.Table:
    """A domain model's outputs on its own training features (the knowledge other domains learn from)."""
    config = KnowledgeConfig(top_k=1, with_attention=False, batch_size=batch_size)
    return member_knowledge(model, data.train_arrays, data.train_features["feature_id"], config)


# ---------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class DomainPlan:
    """What one domain model does in one iteration of one method (module doc).

    ``init`` is the model the first stage starts from (a model name, or a saved model
    directory); ``previous_f1`` is the dev F1 of the model a new one must beat (``None``:
    always keep). ``eval_domains`` are scored on their dev sets; the first one decides.
    """

    method: str
    iteration: int
    domain: str
    init: str
    init_seed: int
    stages: tuple[Stage, ...]
    eval_domains: tuple[str, ...]
    output_dir: str
    checkpoint_dir: str
    result_dir: str
    lambda_schedule: str = "linear:0:1"
    previous_f1: float | None = None

    @property
    def key(self) -> str:
        return f"{self.method}/{self.iteration}/{self.domain}"

    @property
    def result_path(self) -> Path:
        return Path(self.result_dir) / RESULT_FILE


@dataclass
class PlanResult:
    """The outcome of a plan: dev scores, whether the new model was kept, where it is, timings."""

    key: str
    domain: str
    iteration: int
    f1: dict[str, float]
    em: dict[str, float]
    kept: bool
    model_dir: str | None
    previous_f1: float | None
    stage_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def target_f1(self) -> float:
        return next(iter(self.f1.values()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def read(cls, path: str | Path) -> PlanResult:
        return cls(**json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class RunLayout:
    """Where a run keeps models, knowledge, checkpoints and results (one folder every node reaches)."""

    root: Path

    def model_dir(self, method: str, domain: str, iteration: int) -> Path:
        return self.root / "models" / method / domain / f"iter-{iteration}"

    def knowledge_path(self, domain: str, model_iteration: int) -> Path:
        return self.root / "knowledge" / domain / f"theta-{model_iteration}.parquet"

    def checkpoint_dir(self, method: str, domain: str, iteration: int) -> Path:
        return self.root / "checkpoints" / method / domain / f"iter-{iteration}"

    def result_dir(self, method: str, domain: str, iteration: int) -> Path:
        return self.root / "results" / method / f"iter-{iteration}" / domain


def _plan(layout: RunLayout, settings: IMMSettings, method: str, iteration: int, domain: str, init: str,
          init_seed: int, stages: Sequence[Stage], eval_domains: Sequence[str], previous_f1: float | None) -> DomainPlan:
    return DomainPlan(
        method, iteration, domain, init, init_seed, tuple(stages), tuple(eval_domains),
        str(layout.model_dir(method, domain, iteration)), str(layout.checkpoint_dir(method, domain, iteration)),
        str(layout.result_dir(method, domain, iteration)), settings.lambda_schedule, previous_f1,
    )


def _seed(settings: IMMSettings, domain_index: int, iteration: int, stage: int) -> int:
    return settings.seed + 1000 * domain_index + 10 * iteration + stage


def initial_plans(layout: RunLayout, settings: IMMSettings, names: Sequence[str], model: str,
                  method: str = "imm") -> list[DomainPlan]:
    """Iteration 0: every ``theta_i^(0)`` trained on ``D_i`` alone (also the ``single`` baseline)."""
    return [
        _plan(layout, settings, method, 0, name, model, _seed(settings, i, 0, 0),
              [Stage("initial", (SourcePart(name),), settings.epochs, _seed(settings, i, 0, 1))], [name], None)
        for i, name in enumerate(names)
    ]


@dataclass(frozen=True)
class CurrentModel:
    """The kept ``theta_i``: the iteration that produced it, where it is, its dev F1."""

    iteration: int
    model_dir: str
    f1: float


def transfer_plans(layout: RunLayout, settings: IMMSettings, names: Sequence[str], model: str,
                   similarity: np.ndarray, current: Mapping[str, CurrentModel], iteration: int) -> list[DomainPlan]:
    """IMM iteration ``iteration`` -> ``iteration + 1`` for every domain (module doc, steps 2-4)."""
    k = iteration + 1
    plans = []
    for i, name in enumerate(names):
        phi_parts = tuple(
            SourcePart(other, float(similarity[i, j]),
                       None if settings.no_kd1 else str(layout.knowledge_path(other, current[other].iteration)))
            for j, other in enumerate(names) if j != i
        )
        theta_part = SourcePart(name, 1.0,
                                None if settings.no_kd2 else str(layout.knowledge_path(name, current[name].iteration)))
        init = current[name].model_dir if settings.phi_init == "theta" else model
        plans.append(_plan(
            layout, settings, "imm", k, name, init, _seed(settings, i, k, 0),
            [Stage("phi", phi_parts, settings.phi_epochs, _seed(settings, i, k, 1)),
             Stage("theta", (theta_part,), settings.theta_epochs, _seed(settings, i, k, 2))],
            [name], current[name].f1,
        ))
    return plans


def baseline_plans(layout: RunLayout, settings: IMMSettings, names: Sequence[str], model: str,
                   method: str) -> list[DomainPlan]:
    """The plans of a baseline ``method`` (``single``, ``mix``, ``ft`` or ``mft``; module doc)."""
    if method == "single":
        return initial_plans(layout, settings, names, model, method="single")
    if method == "mix":
        every = tuple(SourcePart(name) for name in names)
        return [_plan(layout, settings, "mix", 0, "all", model, _seed(settings, 0, 0, 0),
                      [Stage("mix", every, settings.epochs, _seed(settings, 0, 0, 1))], names, None)]
    if method in ("ft", "mft"):
        plans = []
        for i, name in enumerate(names):
            others = tuple(SourcePart(other) for other in names if other != name)
            target = tuple(SourcePart(n) for n in names) if method == "mft" else (SourcePart(name),)
            plans.append(_plan(
                layout, settings, method, 0, name, model, _seed(settings, i, 0, 0),
                [Stage("pretrain", others, settings.phi_epochs, _seed(settings, i, 0, 1)),
                 Stage("finetune", target, settings.theta_epochs, _seed(settings, i, 0, 2))],
                [name], None,
            ))
        return plans
    raise ConfigError("imm", "method", f"unknown baseline {method!r}; known: {METHODS[1:]}")


# ---------------------------------------------------------------------------- execution


def run_plan(
    plan: DomainPlan,
    domains: Mapping[str, DomainData],
    tokenizer: PreTrainedTokenizerFast,
    *,
    device: str = "cpu",
    callbacks_for: Callable[[str], Sequence[MetricsCallback]] = lambda stage: (),
    settings: IMMSettings,
    progress: bool = False,
) -> PlanResult:
    """Execute ``plan`` here (train every stage, evaluate, keep the best); resumable (module doc).

    A plan whose result file exists is not run again: its stored result is returned.
    """
    if plan.result_path.exists():
        return PlanResult.read(plan.result_path)
    started = time.perf_counter()
    model, _ = load_qa_model(plan.init, plan.init_seed, tokenizer)
    model.to(device)
    schedule = parse_schedule(plan.lambda_schedule, "lambda_schedule")
    stage_metrics: dict[str, dict[str, float]] = {}
    for stage in plan.stages:
        arrays = mixture_arrays(stage.parts, domains, stage.seed)
        result = train(model, arrays, imm_objective(schedule, use_knowledge=stage.uses_knowledge),
                       settings.train_config(stage.epochs, stage.seed), callbacks=callbacks_for(stage.name),
                       checkpoint_dir=Path(plan.checkpoint_dir) / stage.name, progress=progress,
                       desc=f"{plan.domain} {stage.name}")
        stage_metrics[stage.name] = {**result.last_metrics, "features": float(len(arrays["input_ids"])),
                                     "resumed_from_step": float(result.resumed_from_step)}
    f1: dict[str, float] = {}
    em: dict[str, float] = {}
    for name in plan.eval_domains:
        data = domains[name]
        scores, _ = evaluate_qa(model, data.dev_examples, data.dev_features, data.dev_arrays, settings.max_answer_length)
        f1[name], em[name] = float(scores["f1"]), float(scores["exact_match"])
    kept = keep_new(plan.previous_f1, f1[plan.eval_domains[0]])
    if kept:
        output = Path(plan.output_dir)
        partial = output.with_name(output.name + ".partial")
        save_model(model.cpu(), tokenizer, partial)
        replace_dir(partial, output)
    outcome = PlanResult(plan.key, plan.domain, plan.iteration, f1, em, kept, plan.output_dir if kept else None,
                         plan.previous_f1, stage_metrics, round(time.perf_counter() - started, 2))
    write_atomic(plan.result_path, outcome.to_json())
    shutil.rmtree(plan.checkpoint_dir, ignore_errors=True)  # optimizer states are no longer needed
    return outcome


def write_domain_knowledge(model_dir: str, data: DomainData, tokenizer: PreTrainedTokenizerFast, path: str | Path,
                           device: str = "cpu", seed: int = 0) -> Path:
    """Load ``theta_j`` from ``model_dir`` and store its knowledge on ``D_j`` at ``path`` (skipped if present)."""
    target = Path(path)
    if target.exists():
        return target
    model, _ = load_qa_model(model_dir, seed, tokenizer)
    model.to(device)
    return write_knowledge(domain_knowledge(model, data), target)
