"""Plain teacher -> student distillation (Hinton et al. 2015) on Ray, for any task (``python jobs/kd.py --help``).

Thin entry point: options (generated from the config dataclasses; a ``--config`` file plus
overrides), checked with the data before any cluster work; then the recipe
:func:`kd_core.methods.hinton.hinton_recipe` runs on the job runtime (:mod:`cluster.job`):
its steps on Ray workers, every step a child run in MLflow, resumable with ``--resume``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

from cluster.job import JobOptions, JobRuntime, job_config  # noqa: E402
from kd_core.cli import print_summary, quiet_progress, run_cli  # noqa: E402
from kd_core.engine.prepare import DataOptions, build_workspace  # noqa: E402
from kd_core.methods.hinton import HintonSettings, format_table, hinton_recipe, summarise  # noqa: E402
from kd_core.options import add_options, add_run_flags, option, part  # noqa: E402


@dataclass(frozen=True)
class KDJobConfig(HintonSettings, DataOptions, JobOptions):
    """Every option of ``jobs/kd.py``: the data, the recipe's hyperparameters and the job's own."""

    run_dir: str = option("runs/kd", "run directory: models, knowledge, results, state (absolute under ray job "
                          "submit)", "job")

    def __post_init__(self) -> None:
        DataOptions.__post_init__(self)
        HintonSettings.__post_init__(self)
        JobOptions.__post_init__(self)

    @property
    def data(self) -> DataOptions:
        return part(DataOptions, self)

    @property
    def settings(self) -> HintonSettings:
        return part(HintonSettings, self)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python jobs/kd.py",
        description="Teacher -> student knowledge distillation (Hinton et al. 2015) for any task on Ray: teacher "
        "members train at once on workers, their knowledge is collected once, the student and a no-KD baseline "
        "train at once; everything in MLflow. With no options: the embedded sentiment task, tiny models.",
    )
    add_run_flags(p, "continue the job in RUN_DIR with its saved options (others given must equal them)")
    add_options(p, KDJobConfig)
    return p


def run(config: KDJobConfig, address: str | None = None, resume: bool = False, quiet: bool = False) -> dict:
    """Run (or continue) the job; returns its summary."""
    started = time.perf_counter()
    ws = build_workspace(config.data, config.teacher_model, config.student_model, config.run_dir)
    runtime = JobRuntime("kd", asdict(config), config.run_dir, config.tracking_uri, config.experiment, resume)
    ws.relocate(runtime.store.location)
    with runtime.session(address, config.max_concurrency, f"kd {config.task}",
                         tags={"kd.task": config.task}, quiet=quiet) as job:
        results = job.drive(hinton_recipe(config.settings), ws)
        summary = summarise(results, config.settings, ws.task.name, ws.task.primary_metric)
        summary.update(task_definition=ws.task.describe(), reused_steps=job.reused_steps,
                       seconds=round(time.perf_counter() - started, 1))
        return job.finish(summary, format_table(summary))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_progress(args.quiet)
    config = job_config(KDJobConfig, "kd", args)
    if args.check:
        build_workspace(config.data, config.teacher_model, config.student_model, config.run_dir)
        print("ok: options and data are valid")
        return 0
    summary = run(config, address=args.address, resume=bool(args.resume), quiet=args.quiet)
    table = "\n".join([format_table(summary), f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}",
                       f"run dir: {summary['run_dir']} ({summary['seconds']} s)"])
    print_summary(summary, table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
