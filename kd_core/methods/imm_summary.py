"""IMM's summary: per method dev and test F1 per domain, extra evaluations, IMM's dev history, similarity, timings,
the table.

What a method scored with its final models (:func:`~kd_core.methods.imm.final_step`) and
what a sweep reads after every iteration (:func:`imm_progress`); the splits are those of the
recipe's evaluation protocol (:mod:`kd_core.methods.imm`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kd_core.engine.steps import Result
from kd_core.evaluation.squad_metrics import ADVERSARIAL_KEYS
from kd_core.methods.imm import (
    IMMSettings,
    current_model,
    domain_names,
    eval_files,
    eval_step,
    final_step,
    iterations_done,
    similarity_weights,
)
from kd_core.methods.progress import Progress

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace


def dev_score(results: Mapping[str, Result], method: str, domain: str, iterations: int) -> float:
    """The validation F1 of ``method``'s final model for ``domain`` (``mix``: its one model scored on the domain)."""
    step = f"mix-eval-{domain}" if method == "mix" else final_step(method, domain, iterations)
    return float(results[step]["primary"])


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


def method_scores(results: Mapping[str, Result], method: str, names: Sequence[str]) -> dict[str, Any]:
    """Dev (validation: choices) and test (reported) F1 per domain of a method's final models, and their averages."""
    ran = iterations_done(results, names)
    dev = {d: dev_score(results, method, d, ran) for d in names}
    test = {d: float(results[f"test-{method}-{d}"]["primary"]) for d in names}
    return {"dev_f1": dev, "test_f1": test, "average_dev_f1": float(np.mean(list(dev.values()))),
            "average_test_f1": float(np.mean(list(test.values())))}


def eval_scores(results: Mapping[str, Result], methods: Sequence[str],
                files: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(eval, eval_adversarial)``: per extra evaluation file, method and domain, the F1 of the final model and,
    on an adversarial SQuAD file, Jia & Liang's scores (:data:`~kd_core.evaluation.squad_metrics.ADVERSARIAL_KEYS`)."""
    plain: dict[str, Any] = {}
    adversarial: dict[str, Any] = {}
    for file, domains in files.items():
        scores = {m: {d: results[eval_step(m, d, file)]["scores"] for d in domains} for m in methods}
        plain[file] = {m: {d: float(x["f1"]) for d, x in by_domain.items()} for m, by_domain in scores.items()}
        if all("adversarial_f1" in x for by_domain in scores.values() for x in by_domain.values()):
            adversarial[file] = {m: {d: {k: x[k] for k in ADVERSARIAL_KEYS} for d, x in by_domain.items()}
                                 for m, by_domain in scores.items()}
    return plain, adversarial


def timings(results: Mapping[str, Result]) -> dict[str, float]:
    """Seconds of each stage, the longest of its steps (they run at once): ``<stage>_<iteration>_s``.

    IMM's stages are ``theta``, ``phi`` and ``knowledge`` per iteration; a baseline's steps and the
    test evaluations count under their name without the domain (``ft-pretrain_0_s``, ``test-imm_0_s``), the
    extra evaluations all under ``eval_0_s``.
    """
    out: dict[str, float] = {}
    for name, result in results.items():
        if result.get("kind") == "select":
            continue
        kind, _, rest = name.partition("-")
        if kind in ("theta", "phi", "knowledge"):
            key = f"{kind}_{rest.rsplit('-', 1)[1]}_s"
        elif kind == "eval":
            key = "eval_0_s"
        else:
            key = f"{name.rsplit('-', 1)[0] if '-' in name else name}_0_s"
        out[key] = max(out.get(key, 0.0), float(result["seconds"]))
    return out


#: What the summary's two splits are (the summary, MLflow and docs/imm.md say which numbers are on which).
SPLITS = {"dev": "validation questions carved from each domain's training data: every choice (keep-the-best, a "
                 "model's best epoch) is made on them",
          "test": "each domain's own evaluation file (or contexts split off its data): reported, never used for a "
                  "choice"}


#: What the extra evaluation files are (``--eval``).
EVAL_FILES = ("extra evaluation files (--eval), each scored by every method's final model of the domains it names; "
              "reported, never used for a choice")


def summarise(results: Mapping[str, Result], settings: IMMSettings, ws: Workspace) -> dict[str, Any]:
    """The job's summary: per method dev and test F1 per domain, IMM's dev history, similarity and timings."""
    names = domain_names(ws)
    ran = iterations_done(results, names)
    scores = {method: method_scores(results, method, names) for method in settings.methods}
    similarity = similarity_weights(settings, ws)
    history = imm_outcome(results, settings, names) if settings.method == "imm" else {}
    extra, adversarial = eval_scores(results, settings.methods, eval_files(ws))
    return {
        "method": settings.method,
        "splits": SPLITS | ({"eval": EVAL_FILES} if extra else {}),
        **history,
        **scores[settings.method],
        "final_models": {d: results[final_step(settings.method, d, ran)]["model_dir"] for d in names},
        "final_steps": {d: final_step(settings.method, d, ran) for d in names},
        "baselines": {m: score for m, score in scores.items() if m != settings.method},
        "eval": extra,
        "eval_adversarial": adversarial,
        "similarity": {n: dict(zip(names, map(float, row))) for n, row in zip(names, similarity)},
        "timings": timings(results),
    }


def format_table(summary: Mapping[str, Any]) -> str:
    """F1 per method and domain on dev (choices) and test (reported), averages last; then IMM's dev history."""
    names = list(summary["dev_f1"])
    methods = {summary["method"]: summary, **summary.get("baselines", {})}
    head = f"{'F1':<18}" + "".join(f"{n[:12]:>13}" for n in names) + f"{'average':>13}"
    lines = [head]
    for split in ("test", "dev"):
        for method, scores in methods.items():
            values = [scores[f"{split}_f1"][n] for n in names] + [scores[f"average_{split}_f1"]]
            lines.append(f"{f'{method} {split}':<18}" + "".join(f"{v:>13.2f}" for v in values))
    lines.append("test: reported, never used for a choice; dev: validation carved from training data (choices)")
    for file, by_method in summary.get("eval", {}).items():
        adversarial = summary.get("eval_adversarial", {}).get(file)
        lines.append(f"{file}: F1" + (" (adversarial F1, Jia & Liang's rule)" if adversarial else "")
                     + " of each method's final model of the domains that score it:")
        for method, by_domain in by_method.items():
            values = {d: adversarial[method][d]["adversarial_f1"] for d in by_domain} if adversarial else by_domain
            lines.append(f"  {method:<16}" + "".join(f"{values[n]:>13.2f}" if n in values else f"{'-':>13}"
                                                      for n in names))
    if "iterations_f1" in summary:
        history = summary["iterations_f1"]
        lines.append("IMM dev F1 of the kept model after each iteration:")
        lines += [f"  {n:<16}" + " -> ".join(f"{v:.2f}" for v in history[n]) for n in names]
    return "\n".join(lines)


def methods_table(summary: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {"dev" | "test": {domain or "average": F1}}}`` for the main method and every baseline."""
    methods = {summary["method"]: summary, **summary["baselines"]}
    return {m: {split: {**s[f"{split}_f1"], "average": s[f"average_{split}_f1"]} for split in ("dev", "test")}
            for m, s in methods.items()}
