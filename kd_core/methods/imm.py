"""IMM: iterative multi-source mutual knowledge transfer for MRC (Liu et al., IJCAI 2020), as a recipe.

Domains ``D_1..D_N`` each have a model ``theta_i``. Steps (``d`` a domain, ``k`` an iteration):

1. ``theta-<d>-0`` (teacher steps): every ``theta_i^(0)`` trains on ``D_i`` alone;
2. ``knowledge-<d>-<m>``: the current ``theta_j`` (from iteration ``m``) reads its own
   training features once (logits keyed by feature id; skipped when that model was read before);
3. ``phi-<d>-<k>``: ``phi_i^(k)`` trains on the mixture of ``{D_j, j != i}``, every domain
   up-sampled to the largest (:mod:`kd_core.engine.mixture`), with the per-example loss

       s_ij * [ lambda * NLL + (1 - lambda) * MSE(p_phi, p_theta_j^(k)) ],

   ``lambda`` annealed linearly 0 -> 1 over the step (``s_ij`` the normalised TF-IDF question
   similarity, :func:`kd_core.data.similarity.domain_similarity`; the batch loss is
   ``sum_b s_b L_b / sum_b s_b``, so only the *relative* weights of the domains matter);
4. ``theta-<d>-<k>``: starts from ``phi_i^(k)`` and is fine-tuned on ``D_i`` with the same
   loss, the targets being ``theta_i^(k-1)``'s own outputs on ``D_i``;
5. ``select-<d>-<k>``: keep-the-best on ``D_i``'s dev set (a tie keeps the old model).

**Evaluation protocol** (the paper's): every domain has a validation split ``<d>.dev`` carved
from its training data and a test split ``<d>.test`` (:mod:`kd_core.data.domains`). Every
choice is made on dev, for every method alike: each train step keeps its best epoch on dev
(``keep_best``), IMM keeps the best model per iteration on dev. The reported numbers are the
``test-<method>-<d>`` evaluations of each method's final models on test, which no choice read.
Extra evaluation files (``--eval [DOMAIN=]FILE``, e.g. adversarial SQuAD as in the paper's
Table 2) are scored in the same last stage by each method's final model of the domains named,
``eval-<method>-<d>-<file>``, and read by no choice either.

The run stops after ``K`` iterations or when no domain improved. Where the paper is silent we
chose (``phi_init`` makes it an option): ``phi_i^(k)`` starts from the base model
(``"model"``) so every iteration's multi-domain model is an ordinary fine-tuning run whose
only new ingredient is the improved teachers; ``"theta"`` warm-starts it from ``theta_i^(k-1)``.

Baselines (the paper's Table 1) as steps of the same recipe: ``single`` (iteration 0 alone),
``mix`` (one model on all domains, its best epoch on the union of the dev sets, scored on
each), ``ft`` (train on the other domains, fine-tune on the target), ``mft`` (mixed
fine-tuning, Chu et al. 2017: then fine-tune on all domains, target included), ``ms-ft`` and
``ms-mft`` (the same from the single most similar domain ``argmax_{j != i} s_ij``; MS-MFT
fine-tunes on that domain and the target) and ``bam`` (Clark et al. 2019: one multi-domain
student distilled from every ``theta_j^(0)`` with equal weight, each domain's examples taught by
their own domain's model, ``lambda`` annealed as in IMM, then fine-tuned on each domain). The
ablations ``no_similarity`` (all ``s_ij = 1/(N-1)``), ``no_kd1`` (``phi`` without the KD term)
and ``no_kd2`` (``theta`` without it) change the steps only.

**The KD term** (``kd_target``): the paper's L2/L4 and the authors' released code differ:
``"distributions"`` (the default) is the MSE between the student's and teacher's span
distributions over every legal position (:func:`~kd_core.objectives.losses.prediction_mse_loss`);
``"gold"`` is the paper's, the squared error of the two predictions at the gold positions
only (:func:`~kd_core.objectives.losses.gold_prediction_mse_loss`); ``"logits"`` is the released code's,
the MSE of raw logits (:func:`~kd_core.objectives.losses.span_logit_mse_loss`). We keep the distributions:
they carry the teacher's whole belief (not only at the gold span, where CE already pulls), and
are bounded like the NLL they are mixed with (raw logits are unbounded and shift-invariant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kd_core.data.domain_settings import ALL_DEV, eval_split
from kd_core.engine.local import Recipe, staged
from kd_core.engine.steps import (
    CollectStep,
    EvaluateStep,
    Result,
    SelectStep,
    Source,
    Step,
    TermSpec,
    TrainStep,
    model_ref,
)
from kd_core.io.errors import ConfigError
from kd_core.io.options import option
from kd_core.objectives.schedules import Complement, parse_schedule
from kd_core.training.config import TrainConfig

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace

METHODS = ("imm", "single", "mix", "ft", "mft", "ms-ft", "ms-mft", "bam")
#: The KD term of each ``kd_target`` (module doc).
KD_TERMS = {"distributions": "prediction_mse", "gold": "gold_prediction_mse", "logits": "span_logit_mse"}
PHI_INITS = ("model", "theta")
#: The name of the one tokenizer every domain model reads.
TOKENIZER = "shared"


@dataclass(frozen=True)
class IMMSettings:
    """The recipe's hyperparameters (module doc), validated at construction."""

    model: str = option("tiny-bert", "every domain model: preset (tiny-bert, small-bert), HF id or local path",
                        "model")
    method: str = option("imm", "imm, or a baseline as the main method", "model", choices=METHODS)
    baselines: tuple[str, ...] = option(("single", "ft"), "baselines run in the same job, e.g. single,ft,bam ('' for "
                                        "none)", "model", choices=METHODS[1:])
    iterations: int = option(2, "IMM iterations K (the paper finds 3 enough)", "model", alias="-K")
    lambda_schedule: str = option("linear:0:1", "weight of the NLL: 'linear:0:1' (the paper) or a constant",
                                  "model", metavar="SCHEDULE")
    phi_init: str = option("model", "phi_i starts from the base model (model) or from theta_i (theta)", "model",
                          choices=PHI_INITS)
    no_similarity: bool = option(False, "ablation: all s_ij equal", "model")
    no_kd1: bool = option(False, "ablation: phi without the KD term", "model")
    no_kd2: bool = option(False, "ablation: theta without the KD term", "model")
    kd_target: str = option("distributions", "the KD term: MSE of span distributions (distributions), of the "
                            "predictions at the gold span (gold: the paper's) or of raw logits (logits: the released "
                            "code's)", "model", choices=tuple(KD_TERMS))
    epochs: float = option(6.0, "epochs of each single-domain model", "model")
    transfer_epochs: float | None = option(None, "epochs of phi on the other domains (default: --epochs)", "model")
    fine_tune_epochs: float | None = option(None, "epochs of theta on its own domain (default: --epochs)", "model")
    batch_size: int = option(16, "training batch size", "model")
    learning_rate: float = option(2e-3, "peak learning rate (linear warm-up and decay)", "model", alias="--lr")
    max_answer_length: int = option(30, "longest answer span, in tokens", "model")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", tuple(b for b in self.baselines if b))
        if self.kd_target not in KD_TERMS:
            raise ConfigError("imm", "kd_target", f"must be one of {', '.join(KD_TERMS)}, got {self.kd_target!r}")
        if self.method not in METHODS:
            raise ConfigError("imm", "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        for baseline in self.baselines:
            if baseline not in METHODS or baseline == "imm":
                raise ConfigError("imm", "baselines", f"unknown baseline {baseline!r}; known: {', '.join(METHODS[1:])}")
        if len(set(self.baselines)) != len(self.baselines):
            raise ConfigError("imm", "baselines", "each method may be run once per job")
        if self.method in self.baselines:  # the default baselines with another main method: run it once
            object.__setattr__(self, "baselines", tuple(b for b in self.baselines if b != self.method))
        if self.iterations < 0:
            raise ConfigError("imm", "iterations", f"must be >= 0, got {self.iterations}")
        if self.phi_init not in PHI_INITS:
            raise ConfigError("imm", "phi_init", f"must be one of {PHI_INITS}, got {self.phi_init!r}")
        parse_schedule(self.lambda_schedule, "lambda_schedule")
        for name in ("transfer_epochs", "fine_tune_epochs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError("imm", name, f"must be > 0, got {value}")
        if self.max_answer_length < 1:
            raise ConfigError("imm", "max_answer_length", f"must be >= 1, got {self.max_answer_length}")
        self.training(self.epochs, 0)  # validates epochs, batch size, learning rate

    def training(self, epochs: float, seed: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, seed=seed)

    @property
    def methods(self) -> tuple[str, ...]:
        return (self.method, *self.baselines)

    @property
    def phi_epochs(self) -> float:
        return self.transfer_epochs if self.transfer_epochs is not None else self.epochs

    @property
    def theta_epochs(self) -> float:
        return self.fine_tune_epochs if self.fine_tune_epochs is not None else self.epochs


# ---------------------------------------------------------------------------- domains of a workspace


def train_split(domain: str) -> str:
    return f"{domain}.train"


def dev_split(domain: str) -> str:
    """The domain's validation split (choices)."""
    return f"{domain}.dev"


def domain_test_split(domain: str) -> str:
    """The domain's test split (reported numbers)."""
    return f"{domain}.test"


def domain_names(ws: Workspace) -> list[str]:
    """The domains of a multi-domain workspace (splits ``<domain>.train`` / ``.dev`` / ``.test``), in order."""
    return [split.rsplit(".", 1)[0] for split in ws.splits if split.endswith(".train")]


def eval_files(ws: Workspace) -> dict[str, list[str]]:
    """The extra evaluation files of a multi-domain workspace: file name -> the domains whose models score it."""
    files: dict[str, list[str]] = {}
    for domain in domain_names(ws):
        prefix = eval_split(domain, "")
        for split in ws.splits:
            if split.startswith(prefix):
                files.setdefault(split[len(prefix):], []).append(domain)
    return files


def eval_step(method: str, domain: str, file_name: str) -> str:
    """The step in which ``method``'s final model of ``domain`` scores the extra evaluation file ``file_name``."""
    return f"eval-{method}-{domain}-{file_name}"


def similarity_weights(settings: IMMSettings, ws: Workspace) -> np.ndarray:
    """``S[i, j] = s_ij`` over the domains' training questions (uniform ``1/(N-1)`` with ``no_similarity``)."""
    names = domain_names(ws)
    if len(names) < 2:
        raise ConfigError("domains", "count", f"multi-domain transfer needs at least 2 domains, got {len(names)}")
    if settings.no_similarity:
        return (1.0 - np.eye(len(names))) / (len(names) - 1)
    from kd_core.data.similarity import domain_similarity  # scikit-learn: only when the recipe is planned

    return domain_similarity({name: list(ws.examples(train_split(name))["question"]) for name in names})


# ---------------------------------------------------------------------------- the recipe


def _seed(settings: IMMSettings, domain_index: int, iteration: int, stage: int) -> int:
    return settings.seed + 1000 * domain_index + 10 * iteration + stage


def current_model(domain: str, iteration: int) -> str:
    """The step whose model is ``theta_<domain>`` after ``iteration`` (a train step at 0, then a select step)."""
    return f"theta-{domain}-0" if iteration == 0 else f"select-{domain}-{iteration}"


def model_iteration(domain: str, iteration: int, done: Mapping[str, Result]) -> int:
    """The iteration that trained the kept ``theta_<domain>`` after ``iteration``."""
    kept = 0
    for k in range(1, iteration + 1):
        if done[f"select-{domain}-{k}"]["kept"] == f"theta-{domain}-{k}":
            kept = k
    return kept


def most_similar(similarity: np.ndarray, index: int) -> int:
    """The other domain ``j != i`` of the highest ``s_ij`` (the first of equals): MS-FT's and MS-MFT's source."""
    row = np.where(np.arange(len(similarity)) == index, -np.inf, similarity[index])
    return int(np.argmax(row))


def imm_recipe(settings: IMMSettings, ws: Workspace) -> Recipe:
    """The recipe of the module doc for the domains of ``ws``."""
    s = settings
    names = domain_names(ws)
    similarity = similarity_weights(s, ws)
    extra = eval_files(ws)
    schedule = parse_schedule(s.lambda_schedule, "lambda_schedule")
    with_kd = (TermSpec("hard", schedule), TermSpec(KD_TERMS[s.kd_target], Complement(schedule)))
    hard_only = (TermSpec("hard"),)

    def tags(domain: str, iteration: int, stage: str, method: str = "imm") -> dict[str, str]:
        return {"kd.method": method, "kd.domain": domain, "kd.iteration": str(iteration), "kd.stage": stage}

    def train(name: str, model: str, seed: int, objective: tuple[TermSpec, ...], epochs: float, seed_b: int,
              sources: tuple[Source, ...], eval_split: str, step_tags: dict[str, str], teacher: bool = False) -> TrainStep:
        """Every model is chosen alike: its best epoch on a validation split."""
        return TrainStep(name, model, seed, TOKENIZER, objective, s.training(epochs, seed_b), eval_split=eval_split,
                         sources=sources, keep_best=True, teacher=teacher, tags=step_tags)

    def initial() -> list[Step]:
        return [train(f"theta-{d}-0", s.model, _seed(s, i, 0, 0), hard_only, s.epochs, _seed(s, i, 0, 1),
                      (Source(train_split(d)),), dev_split(d),
                      tags(d, 0, "initial", "imm" if "imm" in s.methods else "single"), teacher=True)
                for i, d in enumerate(names)]

    def knowledge(d: str, m: int) -> str:
        return f"knowledge-{d}-{m}"

    def collect(d: str, m: int, model: str, teacher: bool) -> CollectStep:
        return CollectStep(knowledge(d, m), model_ref(model), TOKENIZER, split=train_split(d),
                           options=(("top_k", 1), ("with_attention", False)), teacher=teacher,
                           tags=tags(d, m, "knowledge"))

    def iterations(done: Mapping[str, Result]) -> Iterator[list[Step]]:
        for k in range(1, s.iterations + 1):
            models = {d: model_iteration(d, k - 1, done) for d in names}
            if not (s.no_kd1 and s.no_kd2):
                yield [collect(d, models[d], current_model(d, k - 1), k == 1) for d in names]
            yield [train(
                f"phi-{d}-{k}", s.model if s.phi_init == "model" else model_ref(current_model(d, k - 1)),
                _seed(s, i, k, 0), hard_only if s.no_kd1 else with_kd, s.phi_epochs, _seed(s, i, k, 1),
                tuple(Source(train_split(o), float(similarity[i, j]), None if s.no_kd1 else knowledge(o, models[o]))
                      for j, o in enumerate(names) if j != i),
                dev_split(d), tags(d, k, "phi")) for i, d in enumerate(names)]
            yield [train(
                f"theta-{d}-{k}", model_ref(f"phi-{d}-{k}"), _seed(s, i, k, 0), hard_only if s.no_kd2 else with_kd,
                s.theta_epochs, _seed(s, i, k, 2),
                (Source(train_split(d), 1.0, None if s.no_kd2 else knowledge(d, models[d])),),
                dev_split(d), tags(d, k, "theta")) for i, d in enumerate(names)]
            yield [SelectStep(f"select-{d}-{k}", (current_model(d, k - 1), f"theta-{d}-{k}"), split=dev_split(d),
                              tags=tags(d, k, "select")) for d in names]
            if not any(done[f"select-{d}-{k}"]["kept"] == f"theta-{d}-{k}" for d in names):
                return  # no domain improved: stop early

    def pretrain_then_tune(method: str, source: Callable[[int], tuple[str, ...]],
                           target: Callable[[int], tuple[str, ...]]) -> Iterator[list[Step]]:
        """FT-style baselines: ``<method>-pretrain-<d>`` on ``source(i)``, then ``<method>-<d>`` on ``target(i)``."""
        yield [train(f"{method}-pretrain-{d}", s.model, _seed(s, i, 0, 0), hard_only, s.phi_epochs, _seed(s, i, 0, 1),
                     tuple(Source(train_split(names[j])) for j in source(i)), dev_split(d), tags(d, 0, "pretrain", method))
               for i, d in enumerate(names)]
        yield [train(f"{method}-{d}", model_ref(f"{method}-pretrain-{d}"), _seed(s, i, 0, 0), hard_only, s.theta_epochs,
                     _seed(s, i, 0, 2), tuple(Source(train_split(names[j])) for j in target(i)), dev_split(d),
                     tags(d, 0, "finetune", method)) for i, d in enumerate(names)]

    def baseline(method: str) -> Iterator[list[Step]]:
        everyone = tuple(range(len(names)))
        if method == "mix":
            yield [train("mix", s.model, _seed(s, 0, 0, 0), hard_only, s.epochs, _seed(s, 0, 0, 1),
                         tuple(Source(train_split(d)) for d in names), ALL_DEV, tags("all", 0, "mix", "mix"))]
            yield [EvaluateStep(f"mix-eval-{d}", (model_ref("mix"),), TOKENIZER, split=dev_split(d),
                                tags=tags(d, 0, "evaluate", "mix")) for d in names]
        elif method == "ft":
            yield from pretrain_then_tune(method, lambda i: tuple(j for j in everyone if j != i), lambda i: (i,))
        elif method == "mft":
            yield from pretrain_then_tune(method, lambda i: tuple(j for j in everyone if j != i), lambda i: everyone)
        elif method == "ms-ft":
            yield from pretrain_then_tune(method, lambda i: (most_similar(similarity, i),), lambda i: (i,))
        elif method == "ms-mft":
            yield from pretrain_then_tune(method, lambda i: (most_similar(similarity, i),),
                                          lambda i: (most_similar(similarity, i), i))
        elif method == "bam":
            yield [collect(d, 0, f"theta-{d}-0", True) for d in names]
            yield [train("bam", s.model, _seed(s, 0, 0, 3), with_kd, s.epochs, _seed(s, 0, 0, 4),
                         tuple(Source(train_split(d), 1.0, knowledge(d, 0)) for d in names), ALL_DEV,
                         tags("all", 0, "distill", "bam"))]
            yield [train(f"bam-{d}", model_ref("bam"), _seed(s, i, 0, 3), hard_only, s.theta_epochs, _seed(s, i, 0, 5),
                         (Source(train_split(d)),), dev_split(d), tags(d, 0, "finetune", "bam"))
                   for i, d in enumerate(names)]

    def stages(done: Mapping[str, Result]) -> Iterator[list[Step]]:
        if any(m in s.methods for m in ("imm", "single", "bam")):
            yield initial()
        for method in s.methods:
            if method == "imm":
                yield from iterations(done)
            else:
                yield from baseline(method)
        ran = iterations_done(done, names)
        yield [EvaluateStep(f"test-{m}-{d}", (model_ref(final_step(m, d, ran)),), TOKENIZER,
                            split=domain_test_split(d), tags=tags(d, ran if m == "imm" else 0, "test", m))
               for m in s.methods for d in names] + [
            EvaluateStep(eval_step(m, d, file), (model_ref(final_step(m, d, ran)),), TOKENIZER,
                         split=eval_split(d, file), tags=tags(d, ran if m == "imm" else 0, "eval", m) | {"kd.eval": file})
            for file, domains in extra.items() for m in s.methods for d in domains]

    planned, at_most = planned_stages(s)
    return staged(stages, planned, at_most)


#: Stages of each baseline: FT-style ones pretrain then tune; mix trains then evaluates; BAM reads its teachers too.
BASELINE_STAGES = {"single": 0, "mix": 2, "ft": 2, "mft": 2, "ms-ft": 2, "ms-mft": 2, "bam": 3}


def planned_stages(settings: IMMSettings) -> tuple[int, bool]:
    """``(stages, at_most)`` of :func:`imm_recipe` for ``settings``: the count if every iteration runs.

    ``at_most`` when IMM may stop early (no domain improved) with more than one iteration left to skip.
    """
    s = settings
    methods = tuple(dict.fromkeys(s.methods))  # a method named twice plans the same steps: no stage of its own
    reads = not (s.no_kd1 and s.no_kd2)  # each iteration's knowledge stage
    stages = 1 if any(m in methods for m in ("imm", "single", "bam")) else 0  # the initial theta-<d>-0
    stages += sum(s.iterations * (4 if reads else 3) if m == "imm" else BASELINE_STAGES[m] for m in methods)
    if "imm" in methods and "bam" in methods and reads and s.iterations >= 1:
        stages -= 1  # IMM's first knowledge stage and BAM's are the same steps: the later one is no stage
    return stages + 1, "imm" in methods and s.iterations > 1  # + the test evaluations


def iterations_done(results: Mapping[str, Result], names: Sequence[str]) -> int:
    """How many transfer iterations have finished (every domain's select step stored)."""
    ran = 0
    while all(f"select-{d}-{ran + 1}" in results for d in names):
        ran += 1
    return ran


def final_step(method: str, domain: str, iterations: int) -> str:
    """The step whose model ``method`` ends with for ``domain`` (IMM: the kept model after ``iterations``)."""
    if method == "imm":
        return current_model(domain, iterations)
    if method == "single":
        return f"theta-{domain}-0"
    if method == "mix":
        return "mix"
    return f"{method}-{domain}"
