"""MT-DNN knowledge distillation (Liu et al. 2019) on Ray (``python jobs/mtdnn.py --help``).

Thin entry point: options (generated from the config dataclasses; a ``--config`` file plus
overrides) and the task definitions are checked with the data before any cluster work; then
the recipe :func:`kd_core.methods.mtdnn.mtdnn_recipe` runs on the job runtime
(:mod:`cluster.job`): every task's ensemble members train at once on Ray workers, their
knowledge is collected once, the multi-task student and its baselines train at once; every
step is a child run in MLflow, the per-task table and a grouped bar chart go on the parent.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

from cluster.job import JobOptions, JobRuntime, job_config  # noqa: E402
from cluster.tracking import grouped_bar_chart  # noqa: E402
from kd_core.cli import print_summary, quiet_progress, run_cli  # noqa: E402
from kd_core.engine.prepare import MultiTaskData, build_multitask_workspace  # noqa: E402
from kd_core.engine.workspace import Workspace  # noqa: E402
from kd_core.methods.mtdnn import MTDNNSettings, format_table, mtdnn_recipe, summarise  # noqa: E402
from kd_core.options import add_options, add_run_flags, option, part  # noqa: E402

TABLE_LABELS = {"single": "single task", "vanilla_mt": "vanilla MT", "mt_kd": "MT-KD", "vanilla_mt_ft": "vanilla MT+ft",
                "mt_kd_ft": "MT-KD+ft", "ensemble": "teacher ensemble"}


@dataclass(frozen=True)
class MTDNNJobConfig(MTDNNSettings, MultiTaskData, JobOptions):
    """Every option of ``jobs/mtdnn.py``: the tasks, the recipe's hyperparameters and the job's own."""

    run_dir: str = option("runs/mtdnn", "run directory: models, knowledge, results, state (absolute under ray job "
                          "submit)", "job")
    experiment: str = option("mtdnn", "MLflow experiment name", "job")

    def __post_init__(self) -> None:
        MultiTaskData.__post_init__(self)
        MTDNNSettings.__post_init__(self)
        JobOptions.__post_init__(self)

    @property
    def data(self) -> MultiTaskData:
        return part(MultiTaskData, self)

    @property
    def settings(self) -> MTDNNSettings:
        return part(MTDNNSettings, self)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python jobs/mtdnn.py",
        description="MT-DNN knowledge distillation (Liu et al. 2019) on Ray: per-task teacher ensembles train at once "
        "on workers, their averaged soft targets teach one multi-task student (shared encoder, a head per task); "
        "the vanilla multi-task and single-task baselines train alongside. With no options: embedded synthetic "
        "tasks, tiny models. Real GLUE: --tasks glue --data-root ../shared/data/glue.",
    )
    add_run_flags(p, "continue the job in RUN_DIR with its saved options (others given must equal them)")
    add_options(p, MTDNNJobConfig)
    return p


def workspace(config: MTDNNJobConfig) -> Workspace:
    """Task definitions and every data file read and featurised (bad input stops here, before any cluster work)."""
    return build_multitask_workspace(config.data, config.teacher_model, config.student_model, config.run_dir)


def run(config: MTDNNJobConfig, address: str | None = None, resume: bool = False, quiet: bool = False) -> dict:
    """Run (or continue) the job; returns its summary."""
    started = time.perf_counter()
    ws = workspace(config)
    runtime = JobRuntime("mtdnn", asdict(config), config.run_dir, config.tracking_uri, config.experiment, resume)
    ws.relocate(runtime.store.location)
    tasks = ",".join(ws.task.describe()["with_teacher"])
    with runtime.session(address, config.max_concurrency, f"mtdnn {config.tasks}",
                         tags={"kd.task": ws.task.name, "kd.teacher_tasks": tasks}, quiet=quiet) as job:
        results = job.drive(mtdnn_recipe(config.settings, ws), ws)
        summary = summarise(results, config.settings, ws)
        summary.update(task_definitions=ws.task.describe(), reused_steps=job.reused_steps,
                       seconds=round(time.perf_counter() - started, 1))
        assert job.tracker is not None and job.parent is not None
        groups = {name: {TABLE_LABELS[label]: value for label, value in row["test"].items()}
                  for name, row in summary["tasks"].items()}
        job.tracker.log_figure(job.parent, grouped_bar_chart(groups, "Test score per task (each task's primary metric)",
                                                             "score"), "plots/tasks.png")
        job.tracker.log_dict(job.parent, summary["tasks"], "per_task_table.json")
        job.tracker.log_metrics(job.parent, {f"test_average/{label}": value
                                             for label, value in summary["average_test"].items()})
        return job.finish(summary, format_table(summary))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_progress(args.quiet)
    config = job_config(MTDNNJobConfig, "mtdnn", args)
    if args.check:
        workspace(config)
        print("ok: options, task definitions and data are valid")
        return 0
    summary = run(config, address=args.address, resume=bool(args.resume), quiet=args.quiet)
    table = "\n".join([format_table(summary), f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}",
                       f"run dir: {summary['run_dir']} ({summary['seconds']} s)"])
    print_summary(summary, table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
