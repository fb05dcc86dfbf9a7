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

The run stops after ``K`` iterations or when no domain improved. Where the paper is silent we
chose (``phi_init`` makes it an option): ``phi_i^(k)`` starts from the base model
(``"model"``) so every iteration's multi-domain model is an ordinary fine-tuning run whose
only new ingredient is the improved teachers; ``"theta"`` warm-starts it from ``theta_i^(k-1)``.

Baselines as steps of the same recipe: ``single`` (iteration 0 alone), ``mix`` (one model on
all domains, scored on each), ``ft`` (train on the other domains, fine-tune on the target)
and ``mft`` (mixed fine-tuning, Chu et al. 2017: then fine-tune on all domains, target
included). The ablations ``no_similarity`` (all ``s_ij = 1/(N-1)``), ``no_kd1`` (``phi``
without the MSE) and ``no_kd2`` (``theta`` without it) change the steps only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kd_core.data.similarity import domain_similarity
from kd_core.engine.execute import Result
from kd_core.engine.local import Recipe, staged
from kd_core.engine.steps import (
    CollectStep, EvaluateStep, SelectStep, Source, Step, TermSpec, TrainStep, model_ref,
)
from kd_core.engine.workspace import Workspace
from kd_core.errors import ConfigError
from kd_core.methods.progress import Progress
from kd_core.objectives import Complement, parse_schedule
from kd_core.options import option
from kd_core.train import TrainConfig

METHODS = ("imm", "single", "mix", "ft", "mft")
PHI_INITS = ("model", "theta")
#: The name of the one tokenizer every domain model reads.
TOKENIZER = "shared"


@dataclass(frozen=True)
class IMMSettings:
    """The recipe's hyperparameters (module doc), validated at construction."""

    model: str = option("tiny-bert", "every domain model: preset (tiny-bert, small-bert), HF id or local path",
                        "model")
    method: str = option("imm", "imm, or a baseline as the main method: single, mix, ft, mft", "model")
    baselines: tuple[str, ...] = option((), "baselines run in the same job, e.g. single,ft", "model")
    iterations: int = option(2, "IMM iterations K (the paper finds 3 enough)", "model", alias="-K")
    lambda_schedule: str = option("linear:0:1", "weight of the NLL: 'linear:0:1' (the paper) or a constant",
                                  "model")
    phi_init: str = option("model", "phi_i starts from the base model (model) or from theta_i (theta)", "model")
    no_similarity: bool = option(False, "ablation: all s_ij equal", "model")
    no_kd1: bool = option(False, "ablation: phi without the MSE term", "model")
    no_kd2: bool = option(False, "ablation: theta without the MSE term", "model")
    epochs: float = option(6.0, "epochs of each single-domain model", "model")
    transfer_epochs: float | None = option(None, "epochs of phi on the other domains (default: --epochs)", "model")
    finetune_epochs: float | None = option(None, "epochs of theta on its own domain (default: --epochs)", "model")
    batch_size: int = option(16, "training batch size", "model")
    learning_rate: float = option(2e-3, "peak learning rate (linear warm-up and decay)", "model", alias="--lr")
    max_answer_length: int = option(30, "longest answer span, in tokens", "model")
    seed: int = option(0, "seed of data splits, initialisation and batch order", "data")

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if self.method not in METHODS:
            raise ConfigError("imm", "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        for baseline in self.baselines:
            if baseline not in METHODS or baseline == "imm":
                raise ConfigError("imm", "baselines", f"unknown baseline {baseline!r}; known: {', '.join(METHODS[1:])}")
        if self.method in self.baselines or len(set(self.baselines)) != len(self.baselines):
            raise ConfigError("imm", "baselines", "each method may be run once per job")
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
        return self.finetune_epochs if self.finetune_epochs is not None else self.epochs


# ---------------------------------------------------------------------------- domains of a workspace


def train_split(domain: str) -> str:
    return f"{domain}.train"


def dev_split(domain: str) -> str:
    return f"{domain}.dev"


def domain_names(ws: Workspace) -> list[str]:
    """The domains of a multi-domain workspace (splits ``<domain>.train`` / ``<domain>.dev``), in order."""
    return [split.rsplit(".", 1)[0] for split in ws.splits if split.endswith(".train")]


def similarity_weights(settings: IMMSettings, ws: Workspace) -> np.ndarray:
    """``S[i, j] = s_ij`` over the domains' training questions (uniform ``1/(N-1)`` with ``no_similarity``)."""
    names = domain_names(ws)
    if len(names) < 2:
        raise ConfigError("domains", "count", f"multi-domain transfer needs at least 2 domains, got {len(names)}")
    if settings.no_similarity:
        return (1.0 - np.eye(len(names))) / (len(names) - 1)
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


def imm_recipe(settings: IMMSettings, ws: Workspace) -> Recipe:
    """The recipe of the module doc for the domains of ``ws``."""
    s = settings
    names = domain_names(ws)
    similarity = similarity_weights(s, ws)
    schedule = parse_schedule(s.lambda_schedule, "lambda_schedule")
    with_kd = (TermSpec("hard", schedule), TermSpec("prediction_mse", Complement(schedule)))
    hard_only = (TermSpec("hard"),)

    def tags(domain: str, iteration: int, stage: str, method: str = "imm") -> dict[str, str]:
        return {"kd.method": method, "kd.domain": domain, "kd.iteration": str(iteration), "kd.stage": stage}

    def initial() -> list[Step]:
        return [TrainStep(f"theta-{d}-0", s.model, _seed(s, i, 0, 0), TOKENIZER, hard_only,
                          s.training(s.epochs, _seed(s, i, 0, 1)), eval_split=dev_split(d),
                          sources=(Source(train_split(d)),), teacher=True,
                          tags=tags(d, 0, "initial", "imm" if "imm" in s.methods else "single"))
                for i, d in enumerate(names)]

    def knowledge(d: str, m: int) -> str:
        return f"knowledge-{d}-{m}"

    def iterations(done: Mapping[str, Result]) -> Iterator[list[Step]]:
        for k in range(1, s.iterations + 1):
            models = {d: model_iteration(d, k - 1, done) for d in names}
            if not (s.no_kd1 and s.no_kd2):
                yield [CollectStep(knowledge(d, models[d]), model_ref(current_model(d, k - 1)), TOKENIZER,
                                   split=train_split(d), options=(("top_k", 1), ("with_attention", False)),
                                   teacher=k == 1, tags=tags(d, models[d], "knowledge"))
                       for d in names]
            yield [TrainStep(
                f"phi-{d}-{k}", s.model if s.phi_init == "model" else model_ref(current_model(d, k - 1)),
                _seed(s, i, k, 0), TOKENIZER, hard_only if s.no_kd1 else with_kd,
                s.training(s.phi_epochs, _seed(s, i, k, 1)), eval_split=dev_split(d),
                sources=tuple(Source(train_split(o), float(similarity[i, j]),
                                     None if s.no_kd1 else knowledge(o, models[o]))
                              for j, o in enumerate(names) if j != i),
                tags=tags(d, k, "phi")) for i, d in enumerate(names)]
            yield [TrainStep(
                f"theta-{d}-{k}", model_ref(f"phi-{d}-{k}"), _seed(s, i, k, 0), TOKENIZER,
                hard_only if s.no_kd2 else with_kd, s.training(s.theta_epochs, _seed(s, i, k, 2)),
                eval_split=dev_split(d),
                sources=(Source(train_split(d), 1.0, None if s.no_kd2 else knowledge(d, models[d])),),
                tags=tags(d, k, "theta")) for i, d in enumerate(names)]
            yield [SelectStep(f"select-{d}-{k}", (current_model(d, k - 1), f"theta-{d}-{k}"), split=dev_split(d),
                              tags=tags(d, k, "select")) for d in names]
            if not any(done[f"select-{d}-{k}"]["kept"] == f"theta-{d}-{k}" for d in names):
                return  # no domain improved: stop early

    def baseline(method: str) -> Iterator[list[Step]]:
        if method == "mix":
            yield [TrainStep("mix", s.model, _seed(s, 0, 0, 0), TOKENIZER, hard_only,
                             s.training(s.epochs, _seed(s, 0, 0, 1)), eval_split=dev_split(names[0]),
                             sources=tuple(Source(train_split(d)) for d in names), tags=tags("all", 0, "mix", "mix"))]
            yield [EvaluateStep(f"mix-eval-{d}", (model_ref("mix"),), TOKENIZER, split=dev_split(d),
                                tags=tags(d, 0, "evaluate", "mix")) for d in names]
        elif method in ("ft", "mft"):
            yield [TrainStep(f"{method}-pretrain-{d}", s.model, _seed(s, i, 0, 0), TOKENIZER, hard_only,
                             s.training(s.phi_epochs, _seed(s, i, 0, 1)), eval_split=dev_split(d),
                             sources=tuple(Source(train_split(o)) for o in names if o != d),
                             tags=tags(d, 0, "pretrain", method)) for i, d in enumerate(names)]
            target = (lambda d: tuple(Source(train_split(o)) for o in names)) if method == "mft" else (
                lambda d: (Source(train_split(d)),))
            yield [TrainStep(f"{method}-{d}", model_ref(f"{method}-pretrain-{d}"), _seed(s, i, 0, 0), TOKENIZER,
                             hard_only, s.training(s.theta_epochs, _seed(s, i, 0, 2)), eval_split=dev_split(d),
                             sources=target(d), tags=tags(d, 0, "finetune", method)) for i, d in enumerate(names)]

    def stages(done: Mapping[str, Result]) -> Iterator[list[Step]]:
        if "imm" in s.methods or "single" in s.methods:
            yield initial()
        for method in s.methods:
            if method == "imm":
                yield from iterations(done)
            else:
                yield from baseline(method)

    return staged(stages)


# ---------------------------------------------------------------------------- the summary


def iterations_done(results: Mapping[str, Result], names: Sequence[str]) -> int:
    """How many transfer iterations have finished (every domain's select step stored)."""
    ran = 0
    while all(f"select-{d}-{ran + 1}" in results for d in names):
        ran += 1
    return ran


def imm_outcome(results: Mapping[str, Result], settings: IMMSettings, names: Sequence[str]) -> dict[str, Any]:
    """Per domain: dev F1 of the kept model after each iteration run, whether each new model was kept."""
    ran = iterations_done(results, names)
    history = {d: [results[f"theta-{d}-0"]["primary"]] for d in names}
    kept = {d: [True] for d in names}
    for k in range(1, ran + 1):
        for d in names:
            select = results[f"select-{d}-{k}"]
            history[d].append(select["primary"])
            kept[d].append(select["kept"] == f"theta-{d}-{k}")
    final = {d: results[current_model(d, ran)]["model_dir"] for d in names}
    return {"iterations_f1": history, "kept": kept, "stopped_early": ran < settings.iterations,
            "final_models": final}


def imm_progress(results: Mapping[str, Result], ws: Workspace) -> Progress | None:
    """After iteration ``k >= 1``'s select steps: the average dev F1 of the kept models and the models themselves."""
    names = domain_names(ws)
    ran = iterations_done(results, names)
    if ran == 0:
        return None
    kept = {d: results[f"select-{d}-{ran}"] for d in names}
    return Progress(ran, float(np.mean([r["primary"] for r in kept.values()])),
                    {d: r["model_dir"] for d, r in kept.items()})


def baseline_outcome(results: Mapping[str, Result], method: str, names: Sequence[str]) -> dict[str, Any]:
    """A baseline's dev F1 per domain (``single`` is iteration 0)."""
    step = {"single": "theta-{d}-0", "mix": "mix-eval-{d}", "ft": "ft-{d}", "mft": "mft-{d}"}[method]
    return {"iterations_f1": {d: [results[step.format(d=d)]["primary"]] for d in names}}


def with_final(outcome: dict[str, Any]) -> dict[str, Any]:
    """Final F1 per domain (the last entry of each history) and their average."""
    final = {name: f1s[-1] for name, f1s in outcome["iterations_f1"].items()}
    return {**outcome, "final_f1": final, "average_f1": float(np.mean(list(final.values())))}


def timings(results: Mapping[str, Result]) -> dict[str, float]:
    """Seconds of each stage, the longest of its steps (they run at once): ``<step kind>_<iteration>_s``."""
    out: dict[str, float] = {}
    for name, result in results.items():
        if result.get("kind") == "select":
            continue
        kind, _, rest = name.partition("-")
        iteration = rest.rsplit("-", 1)[1] if kind in ("theta", "phi", "knowledge") else "0"
        key = f"{kind}_{iteration}_s"
        out[key] = max(out.get(key, 0.0), float(result["seconds"]))
    return out


def summarise(results: Mapping[str, Result], settings: IMMSettings, ws: Workspace) -> dict[str, Any]:
    """The job's summary: the main method's per-domain history, the baselines, similarity and timings."""
    names = domain_names(ws)
    outcomes = {method: with_final(imm_outcome(results, settings, names) if method == "imm"
                                   else baseline_outcome(results, method, names)) for method in settings.methods}
    similarity = similarity_weights(settings, ws)
    return {
        "method": settings.method,
        **outcomes[settings.method],
        "baselines": {m: {"final_f1": o["final_f1"], "average_f1": o["average_f1"]}
                      for m, o in outcomes.items() if m != settings.method},
        "similarity": {n: dict(zip(names, map(float, row))) for n, row in zip(names, similarity)},
        "timings": timings(results),
    }


def format_table(summary: Mapping[str, Any]) -> str:
    """Domains x iterations of the main method, then one column per baseline; the average last."""
    history = summary["iterations_f1"]
    names = list(history)
    width = max(len(history[n]) for n in names)
    imm = summary["method"] == "imm"
    columns = [f"iter {i}" if imm else summary["method"] for i in range(width)]
    baselines = summary.get("baselines", {})
    columns += list(baselines)
    rows = []
    for name in names:
        values = list(history[name]) + [None] * (width - len(history[name]))
        values += [b["final_f1"][name] for b in baselines.values()]
        rows.append((name, values))
    averages = [float(np.mean([history[n][min(i, len(history[n]) - 1)] for n in names])) for i in range(width)]
    rows.append(("average", averages + [b["average_f1"] for b in baselines.values()]))
    head = f"{'dev F1':<14}" + "".join(f"{c:>10}" for c in columns)
    body = [f"{name:<14}" + "".join(f"{'-' if v is None else f'{v:.2f}':>10}" for v in values) for name, values in rows]
    return "\n".join([head, *body])
