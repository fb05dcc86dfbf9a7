"""IMM on Ray: domain models improve each other over K iterations (``python jobs/imm.py --help``).

Thin entry point: options (generated from the config dataclasses; a ``--config`` file plus
overrides), checked with the data before any cluster work; then the recipe
:func:`kd_core.methods.imm.imm_recipe` runs on the job runtime (:mod:`cluster.job`): every
domain's step of a stage at once on Ray workers (one model per device), every step a child
run in MLflow, resumable with ``--resume``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

import numpy as np  # noqa: E402

from cluster.job import JobOptions, JobRuntime, job_config  # noqa: E402
from cluster.tracking import RunRef, Tracker, heatmap, line_chart  # noqa: E402
from kd_core.cli import print_summary, quiet_progress, run_cli  # noqa: E402
from kd_core.data.domains import DataSettings  # noqa: E402
from kd_core.engine.prepare import build_domain_workspace  # noqa: E402
from kd_core.engine.workspace import Workspace  # noqa: E402
from kd_core.methods.imm import TOKENIZER, IMMSettings, domain_names, format_table, imm_recipe, summarise  # noqa: E402
from kd_core.options import add_options, add_run_flags, option, part  # noqa: E402


@dataclass(frozen=True)
class IMMJobConfig(IMMSettings, DataSettings, JobOptions):
    """Every option of ``jobs/imm.py``: the domains, the algorithm's hyperparameters and the job's own."""

    run_dir: str = option("runs/imm", "run directory: models, knowledge, results, state (absolute under ray job "
                          "submit)", "job")
    experiment: str = option("imm", "MLflow experiment name", "job")
    max_concurrency: int | None = option(None, "workers, i.e. steps running at once (default: one per domain; 1 = "
                                         "one after another)", "job")

    def __post_init__(self) -> None:
        DataSettings.__post_init__(self)
        IMMSettings.__post_init__(self)
        JobOptions.__post_init__(self)

    @property
    def data(self) -> DataSettings:
        return part(DataSettings, self)

    @property
    def settings(self) -> IMMSettings:
        return part(IMMSettings, self)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python jobs/imm.py",
        description="Iterative multi-source mutual knowledge transfer for MRC (Liu et al., IJCAI 2020) on Ray: "
        "one worker per domain model, every domain's step of a stage at once, every step a child run in MLflow. "
        "With no options: 3 synthetic domains, tiny models, K=2.",
    )
    add_run_flags(p, "continue the run in RUN_DIR with its saved options (others given must equal them)")
    add_options(p, IMMJobConfig)
    return p


def workspace(config: IMMJobConfig) -> Workspace:
    """Every domain read, split, tokenised and featurised (bad data stops here, before any cluster work)."""
    return build_domain_workspace(config.data, config.max_answer_length, TOKENIZER, config.run_dir)


def run(config: IMMJobConfig, address: str | None = None, resume: bool = False, quiet: bool = False) -> dict:
    """Run (or continue) the job; returns its summary."""
    started = time.perf_counter()
    ws = workspace(config)
    runtime = JobRuntime("imm", asdict(config), config.run_dir, config.tracking_uri, config.experiment, resume)
    ws.relocate(runtime.store.location)
    workers = config.max_concurrency or len(domain_names(ws))
    with runtime.session(address, workers, f"imm {config.method}", tags={"kd.task": ws.task.name}, quiet=quiet) as job:
        results = job.drive(imm_recipe(config.settings, ws), ws)
        summary = summarise(results, config.settings, ws)
        summary.update(reused_steps=job.reused_steps, seconds=round(time.perf_counter() - started, 1))
        assert job.tracker is not None and job.parent is not None
        log_summary(job.tracker, job.parent, summary)
        return job.finish(summary, format_table(summary))


def log_summary(tracker: Tracker, parent: RunRef, summary: dict) -> None:
    """Similarity (JSON, heat map); per method dev and test F1 per domain; IMM's dev history (by step, plot); timings."""
    names = list(summary["similarity"])
    matrix = np.array([[summary["similarity"][i][j] for j in names] for i in names])
    tracker.log_dict(parent, {"domains": names, "similarity": matrix.tolist()}, "similarity.json")
    tracker.log_figure(parent, heatmap(matrix, names, "Domain similarity s_ij (row i learns from column j)"),
                       "plots/similarity.png")
    tracker.log_dict(parent, {"splits": summary["splits"], "methods": methods_table(summary)}, "methods_table.json")
    if "iterations_f1" in summary:
        history = summary["iterations_f1"]
        width = max(len(v) for v in history.values())
        average = [float(np.mean([v[min(i, len(v) - 1)] for v in history.values()])) for i in range(width)]
        for i in range(width):
            tracker.log_metrics(parent, {**{f"dev_f1/{n}": v[min(i, len(v) - 1)] for n, v in history.items()},
                                         "average_dev_f1": average[i]}, step=i)
        tracker.log_figure(parent, line_chart({**history, "average": average}, "iteration", "dev F1",
                                              "IMM: dev F1 per domain per iteration"), "plots/f1_per_iteration.png")
    metrics = {f"{split}/{method}/{name}": value for method, scores in methods_table(summary).items()
               for split in ("dev", "test") for name, value in scores[split].items()}
    tracker.log_metrics(parent, metrics | {f"time/{k}": v for k, v in summary["timings"].items()})


def methods_table(summary: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {"dev" | "test": {domain or "average": F1}}}`` for the main method and every baseline."""
    methods = {summary["method"]: summary, **summary["baselines"]}
    return {m: {split: {**s[f"{split}_f1"], "average": s[f"average_{split}_f1"]} for split in ("dev", "test")}
            for m, s in methods.items()}


def format_summary(summary: dict) -> str:
    lines = [format_table(summary)]
    if summary.get("stopped_early"):
        lines.append("stopped early: no domain improved in the last iteration")
    lines.append(f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}")
    lines.append(f"run dir: {summary['run_dir']} ({summary['seconds']} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_progress(args.quiet)
    config = job_config(IMMJobConfig, "imm", args)
    if args.check:
        workspace(config)
        print("ok: options and data are valid")
        return 0
    summary = run(config, address=args.address, resume=bool(args.resume), quiet=args.quiet)
    print_summary(summary, format_summary(summary), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
