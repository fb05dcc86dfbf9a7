"""A2D on Ray: an ensemble of readers distilled into one student (``python jobs/a2d.py --help``).

Thin entry point: options (generated from the config dataclasses; a ``--config`` file plus
overrides), checked with the data before any cluster work; then the recipe
:func:`kd_core.methods.a2d.a2d_recipe` runs on the job runtime (:mod:`cluster.job`): members
at once on Ray workers, every step a child run in MLflow, resumable with ``--resume``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

from cluster.job import JobOptions, JobRuntime, job_config  # noqa: E402
from cluster.tracking import bar_chart  # noqa: E402
from kd_core.cli import print_summary, quiet_progress, run_cli  # noqa: E402
from kd_core.engine.prepare import SpanQAData, build_span_workspace  # noqa: E402
from kd_core.engine.workspace import Workspace  # noqa: E402
from kd_core.methods.a2d import A2DSettings, a2d_recipe, format_table, summarise, summary_metrics  # noqa: E402
from kd_core.options import add_options, add_run_flags, option, part  # noqa: E402


@dataclass(frozen=True)
class A2DJobConfig(A2DSettings, SpanQAData, JobOptions):
    """Every option of ``jobs/a2d.py``: the data, the recipe's hyperparameters and the job's own."""

    run_dir: str = option("runs/a2d", "run directory: models, knowledge, results, state (absolute under ray job "
                          "submit)", "job")
    experiment: str = option("a2d", "MLflow experiment name", "job")

    def __post_init__(self) -> None:
        SpanQAData.__post_init__(self)
        A2DSettings.__post_init__(self)
        JobOptions.__post_init__(self)

    @property
    def data(self) -> SpanQAData:
        return part(SpanQAData, self)

    @property
    def settings(self) -> A2DSettings:
        return part(A2DSettings, self)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python jobs/a2d.py",
        description="Attention-Guided Answer Distillation (Hu et al. 2018) on Ray: N ensemble members train and read "
        "the data at once on workers, their merged knowledge trains one student (on Ray Train with "
        "--student-workers > 1); every step is a child run in MLflow.",
    )
    add_run_flags(p, "continue the job in RUN_DIR with its saved options (others given must equal them)")
    add_options(p, A2DJobConfig)
    return p


def workspace(config: A2DJobConfig) -> Workspace:
    """Every input read and featurised settings checked (bad data stops here, before any cluster work)."""
    return build_span_workspace(config.data, config.teacher_model, config.student_model, config.run_dir)


def run(config: A2DJobConfig, address: str | None = None, resume: bool = False, quiet: bool = False) -> dict:
    """Run (or continue) the job; returns its summary."""
    started = time.perf_counter()
    ws = workspace(config)
    runtime = JobRuntime("a2d", asdict(config), config.run_dir, config.tracking_uri, config.experiment, resume)
    ws.relocate(runtime.store.location)
    with runtime.session(address, config.max_concurrency, "a2d", tags={"kd.task": ws.task.name}, quiet=quiet) as job:
        results = job.drive(a2d_recipe(config.settings, ws), ws)
        summary = summarise(results, config.settings, ws)
        summary.update(reused_steps=job.reused_steps, seconds=round(time.perf_counter() - started, 1))
        assert job.tracker is not None and job.parent is not None
        bars = {f"member {i}": f1 for i, f1 in enumerate(summary["members_f1"])}
        bars |= {"ensemble": summary["ensemble_f1"], "student": summary["student_f1"]}
        job.tracker.log_figure(job.parent, bar_chart(bars, "Dev F1: members, ensemble, student", "F1"), "plots/f1.png")
        job.tracker.log_dict(job.parent, summary["speed_table"], "speed_table.json")
        job.tracker.log_metrics(job.parent, summary_metrics(summary))
        return job.finish(summary, format_table(summary))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_progress(args.quiet)
    config = job_config(A2DJobConfig, "a2d", args)
    if args.check:
        workspace(config)
        print("ok: options and data are valid")
        return 0
    summary = run(config, address=args.address, resume=bool(args.resume), quiet=args.quiet)
    table = "\n".join([format_table(summary), f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}",
                       f"run dir: {summary['run_dir']} ({summary['seconds']} s)"])
    print_summary(summary, table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
