"""IMM on Ray: one actor per domain, a coordinator that runs the iterations (:mod:`kd_core.imm`).

The coordinator (this module, in the driver) creates one :class:`~cluster.domain_actor.DomainActor`
per domain once per job, each on its own device (a GPU each when the cluster has them), and
then, for the chosen method:

* ``imm``: iteration 0 (every domain model trained alone, all at once); then per iteration
  the knowledge stage (every current ``theta_j`` reads its own training data, all at once)
  and the transfer stage (every domain's ``phi_i`` -> ``theta_i^(k+1)`` -> keep-the-best, all
  at once). It waits for all domains before the next stage, and stops early when no domain
  improved;
* the baselines ``single``, ``mix``, ``ft``, ``mft`` (``--baselines`` runs them in the same
  job, for the paper's comparison tables).

**Run directory and resume.** Models, knowledge tables, training checkpoints and one result
file per (method, iteration, domain) live in the run directory (:class:`~kd_core.imm.RunLayout`);
``state.json`` holds the config and the MLflow run ids. Everything the coordinator decides
is a function of the result files, so ``resume`` re-runs the same loop: completed plans
return their stored result, an interrupted one resumes from its last checkpoint, and the
run ends with the same result as an uninterrupted one.

**Tracking.** One parent run per job (config, similarity matrix and heat map, F1 per domain
per iteration as metrics and a plot, the summary table); one child run per (method,
iteration, domain) with tags ``kd.method``, ``kd.iteration``, ``kd.domain``, ``kd.stage``,
per-step losses as ``<stage>/loss...``, dev EM/F1, ``kept``, and the kept model as artifacts.
A resumed job reopens the same runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import ray

from cluster.domain_actor import create_domain_actor
from cluster.fanout import run_bounded
from cluster.runtime import connect, model_placement
from cluster.tracking import RunRef, Tracker, check_tracking_uri, heatmap, line_chart, resolve_tracking_uri
from kd_core.errors import ConfigError
from kd_core.imm import (
    METHODS, CurrentModel, DomainPlan, IMMSettings, PlanResult, RunLayout, baseline_plans, initial_plans,
    similarity_weights, transfer_plans,
)
from kd_core.data.domains import DataSettings, DomainData, as_names, prepare_domains
from kd_core.run_files import remove_outputs, write_atomic

STATE_FILE = "state.json"
#: What a fresh run removes from its run directory first (a resumed run keeps them).
RUN_OUTPUTS = ("models", "knowledge", "checkpoints", "results", "tokenizer", STATE_FILE, "summary.json",
               "summary_table.txt")


@dataclass(frozen=True)
class IMMJobConfig(IMMSettings, DataSettings):
    """Every option of ``jobs/imm.py``: the data settings, the algorithm's hyperparameters and the job's own."""

    method: str = "imm"
    baselines: tuple[str, ...] = ()
    run_dir: str = "runs/imm"
    tracking_uri: str | None = None
    experiment: str = "imm"
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", as_names(self.baselines))
        DataSettings.__post_init__(self)
        IMMSettings.__post_init__(self)
        if self.method not in METHODS:
            raise ConfigError("imm", "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        for baseline in self.baselines:
            if baseline not in METHODS or baseline == "imm":
                raise ConfigError("imm", "baselines", f"unknown baseline {baseline!r}; known: {', '.join(METHODS[1:])}")
        if self.method in self.baselines or len(set(self.baselines)) != len(self.baselines):
            raise ConfigError("imm", "baselines", "each method may be run once per job")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError("imm", "max_concurrency", f"must be >= 1, got {self.max_concurrency}")
        check_tracking_uri(self.tracking_uri, "imm")

    @property
    def data(self) -> DataSettings:
        return DataSettings(**{f.name: getattr(self, f.name) for f in fields(DataSettings)})

    @property
    def settings(self) -> IMMSettings:
        return IMMSettings(**{f.name: getattr(self, f.name) for f in fields(IMMSettings)})

    @property
    def methods(self) -> tuple[str, ...]:
        return (self.method, *self.baselines)


def check_inputs(config: IMMJobConfig) -> dict[str, DomainData]:
    """Load and featurise every domain (bad data or options stop here, before any cluster work)."""
    return prepare_domains(config.data)[1]


@dataclass
class JobState:
    """What a resumed job needs besides the result files: the config and the MLflow run ids."""

    config: dict[str, Any]
    parent_run_id: str | None = None
    child_runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self, run_dir: Path) -> None:
        write_atomic(run_dir / STATE_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, run_dir: Path) -> JobState:
        path = run_dir / STATE_FILE
        if not path.exists():
            raise ConfigError(str(run_dir), STATE_FILE, "no IMM run to resume here (state.json is missing)")
        return cls(**json.loads(path.read_text()))


def resume_config(run_dir: str | Path) -> IMMJobConfig:
    """The config of the run in ``run_dir`` (``--resume``), with ``run_dir`` made absolute."""
    root = Path(run_dir).resolve()
    saved = JobState.load(root).config
    return IMMJobConfig(**{**saved, "run_dir": str(root)})


class Coordinator:
    """Runs the methods of one job over the domain actors (module doc)."""

    def __init__(self, config: IMMJobConfig, domains: dict[str, DomainData], similarity: np.ndarray,
                 run_dir: Path, state: JobState, tracker: Tracker, parent: RunRef) -> None:
        self.config = config
        self.settings = config.settings
        self.names = list(domains)
        self.similarity = similarity
        self.run_dir = run_dir
        self.layout = RunLayout(run_dir)
        self.state = state
        self.tracker = tracker
        self.parent = parent
        self.concurrency = config.max_concurrency or len(self.names)
        self.timings: dict[str, float] = {}
        placement = model_placement(len(self.names), self.concurrency)
        # Held for the job: restarted actors re-read their constructor arguments from the object store.
        self.data_ref = ray.put(domains)
        self.actors = {name: create_domain_actor(self.data_ref, str(run_dir / "tokenizer"), self.settings, placement)
                       for name in self.names}

    def shutdown(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)

    # ------------------------------------------------------------------ runs

    def _child(self, plan: DomainPlan, stage: str) -> RunRef:
        known = self.state.child_runs.get(plan.key)
        if known is not None:
            return self.tracker.reopen(known["run_id"]) if not known["finished"] else self.tracker.ref(known["run_id"])
        run = self.tracker.start_child(
            self.parent, f"{plan.method} iter {plan.iteration} {plan.domain}",
            tags={"kd.method": plan.method, "kd.iteration": str(plan.iteration), "kd.domain": plan.domain,
                  "kd.stage": stage},
            params={"init": plan.init, "stages": [s.name for s in plan.stages],
                    "sources": {s.name: {p.domain: round(p.weight, 4) for p in s.parts} for s in plan.stages},
                    "knowledge": any(s.uses_knowledge for s in plan.stages), "previous_f1": plan.previous_f1},
        )
        self.state.child_runs[plan.key] = {"run_id": run.run_id, "finished": False}
        self.state.save(self.run_dir)
        return run

    def _finish(self, plan: DomainPlan, run: RunRef, result: PlanResult) -> None:
        if self.state.child_runs[plan.key]["finished"]:
            return
        metrics = {f"dev_f1/{d}": f1 for d, f1 in result.f1.items()} | {f"dev_em/{d}": em for d, em in result.em.items()}
        metrics |= {"dev_f1": result.target_f1, "kept": float(result.kept), "plan_s": result.seconds}
        if result.previous_f1 is not None:
            metrics["previous_f1"] = result.previous_f1
        self.tracker.log_metrics(run, metrics)
        if result.kept and result.model_dir:
            self.tracker.log_artifacts(run, result.model_dir, "model")
        self.tracker.end_run(run)
        self.state.child_runs[plan.key]["finished"] = True
        self.state.save(self.run_dir)

    def run_plans(self, plans: Sequence[DomainPlan], stage: str) -> list[PlanResult]:
        """Run ``plans`` on their domains' actors at once (at most ``max_concurrency``); wait for all."""
        runs = [self._child(plan, stage) for plan in plans]
        started = time.perf_counter()
        raw = run_bounded(
            [lambda p=p, r=r: self.actors[p.domain if p.domain in self.actors else self.names[0]].run_plan.remote(p, r)
             for p, r in zip(plans, runs)],
            self.concurrency,
        )
        self.timings[f"{plans[0].method}_{stage}_{plans[0].iteration}_s"] = round(time.perf_counter() - started, 2)
        results = [PlanResult(**r) for r in raw]
        for plan, run, result in zip(plans, runs, results):
            self._finish(plan, run, result)
        return results

    def write_knowledge(self, current: dict[str, CurrentModel], iteration: int) -> None:
        """Every current ``theta_j`` reads its own training features (skipped where already stored)."""
        started = time.perf_counter()
        run_bounded(
            [lambda n=n: self.actors[n].write_knowledge.remote(n, current[n].model_dir,
                                                             str(self.layout.knowledge_path(n, current[n].iteration)))
             for n in self.names],
            self.concurrency,
        )
        self.timings[f"imm_knowledge_{iteration}_s"] = round(time.perf_counter() - started, 2)

    # ------------------------------------------------------------------ methods

    def run_imm(self) -> dict[str, Any]:
        """Iteration 0, then up to K knowledge + transfer iterations (module doc)."""
        results = self.run_plans(initial_plans(self.layout, self.settings, self.names, self.config.model), "initial")
        current = {r.domain: CurrentModel(0, str(r.model_dir), r.target_f1) for r in results}
        history = {name: [current[name].f1] for name in self.names}
        kept = {name: [True] for name in self.names}
        self._log_iteration(0, current)
        stopped_early = False
        for k in range(self.settings.iterations):
            if not (self.settings.no_kd1 and self.settings.no_kd2):
                self.write_knowledge(current, k)
            plans = transfer_plans(self.layout, self.settings, self.names, self.config.model, self.similarity, current, k)
            results = self.run_plans(plans, "transfer")
            for r in results:
                if r.kept:
                    current[r.domain] = CurrentModel(k + 1, str(r.model_dir), r.target_f1)
                history[r.domain].append(current[r.domain].f1)
                kept[r.domain].append(r.kept)
            self._log_iteration(k + 1, current)
            if not any(r.kept for r in results):
                stopped_early = k + 1 < self.settings.iterations
                break
        return {"iterations_f1": history, "kept": kept, "stopped_early": stopped_early,
                "final_models": {n: current[n].model_dir for n in self.names}}

    def run_baseline(self, method: str, imm: dict[str, Any] | None) -> dict[str, Any]:
        """A baseline's per-domain F1 (``single`` reuses IMM's iteration 0 when IMM ran: the same plans)."""
        if method == "single" and imm is not None:
            return {"iterations_f1": {n: f1s[:1] for n, f1s in imm["iterations_f1"].items()}}
        results = self.run_plans(baseline_plans(self.layout, self.settings, self.names, self.config.model, method), method)
        if method == "mix":
            return {"iterations_f1": {n: [results[0].f1[n]] for n in self.names}}
        return {"iterations_f1": {r.domain: [r.target_f1] for r in results}}

    def _log_iteration(self, iteration: int, current: dict[str, CurrentModel]) -> None:
        f1 = {name: current[name].f1 for name in self.names}
        self.tracker.log_metrics(self.parent, {**{f"f1/{n}": v for n, v in f1.items()},
                                               "average_f1": float(np.mean(list(f1.values())))}, step=iteration)


def method_summary(outcome: dict[str, Any]) -> dict[str, Any]:
    """Final F1 per domain (last entry of each history) and their average."""
    final = {name: f1s[-1] for name, f1s in outcome["iterations_f1"].items()}
    return {**outcome, "final_f1": final, "average_f1": float(np.mean(list(final.values())))}


def format_table(summary: dict[str, Any]) -> str:
    """Domains x iterations of the main method, then one column per baseline; the average last."""
    history = summary["iterations_f1"]
    names = list(history)
    width = max(len(history[n]) for n in names)
    label = "iter" if summary["method"] == "imm" else summary["method"]
    columns = [f"{label} {i}" if summary["method"] == "imm" else label for i in range(width)]
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


def run_imm(config: IMMJobConfig, address: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) the whole job in ``config.run_dir``; returns the summary."""
    started = time.perf_counter()
    run_dir = Path(config.run_dir).resolve()
    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    tokenizer, domains = prepare_domains(config.data)
    similarity = similarity_weights({n: d.questions for n, d in domains.items()}, uniform=config.no_similarity)
    if resume:
        state = JobState.load(run_dir)
    else:
        remove_outputs(run_dir, RUN_OUTPUTS)
        run_dir.mkdir(parents=True, exist_ok=True)
        state = JobState(config=asdict(config))
    if not (run_dir / "tokenizer").exists():
        tokenizer.save_pretrained(run_dir / "tokenizer")

    connect(tracking_uri, address)
    tracker = Tracker(tracking_uri)
    if state.parent_run_id is None:
        parent = tracker.start_run(config.experiment, f"imm {config.method}",
                                   tags={"kd.method": config.method}, params=asdict(config))
        state.parent_run_id = parent.run_id
        state.save(run_dir)
        names = list(domains)
        tracker.log_dict(parent, {"domains": names, "similarity": similarity.tolist()}, "similarity.json")
        tracker.log_figure(parent, heatmap(similarity, names, "Domain similarity s_ij (row i learns from column j)"),
                           "plots/similarity.png")
    else:
        parent = tracker.reopen(state.parent_run_id)
    with tracker.scope(parent):
        coordinator = Coordinator(config, domains, similarity, run_dir, state, tracker, parent)
        try:
            outcomes: dict[str, dict[str, Any]] = {}
            for method in config.methods:
                outcomes[method] = method_summary(
                    coordinator.run_imm() if method == "imm" else coordinator.run_baseline(method, outcomes.get("imm")))
        finally:
            coordinator.shutdown()
        main = outcomes[config.method]
        summary: dict[str, Any] = {
            "method": config.method,
            **main,
            "baselines": {m: {"final_f1": o["final_f1"], "average_f1": o["average_f1"]}
                          for m, o in outcomes.items() if m != config.method},
            "similarity": {n: dict(zip(domains, map(float, row))) for n, row in zip(domains, similarity)},
            "timings": coordinator.timings,
            "mlflow_run_id": parent.run_id, "tracking_uri": tracking_uri, "run_dir": str(run_dir),
            "seconds": round(time.perf_counter() - started, 1),
        }
        _log_summary(tracker, parent, summary)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _log_summary(tracker: Tracker, parent: RunRef, summary: dict[str, Any]) -> None:
    table = format_table(summary)
    (Path(summary["run_dir"]) / "summary_table.txt").write_text(table + "\n")
    tracker.log_text(parent, table, "summary_table.txt")
    tracker.log_dict(parent, summary, "summary.json")
    series = dict(summary["iterations_f1"])
    if summary["method"] == "imm":
        width = max(len(v) for v in series.values())
        series["average"] = [float(np.mean([v[min(i, len(v) - 1)] for v in summary["iterations_f1"].values()]))
                             for i in range(width)]
        tracker.log_figure(parent, line_chart(series, "iteration", "dev F1", "IMM: F1 per domain per iteration"),
                           "plots/f1_per_iteration.png")
    metrics = {"final_average_f1": summary["average_f1"], **{f"final_f1/{n}": f for n, f in summary["final_f1"].items()}}
    metrics |= {f"baseline/{m}/average_f1": b["average_f1"] for m, b in summary["baselines"].items()}
    tracker.log_metrics(parent, metrics | {f"time/{k}": v for k, v in summary["timings"].items()})
