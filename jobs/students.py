"""Different students (Sucik 2020) on Ray: one teacher into smaller BERTs and a BiLSTM (``python jobs/students.py --help``).

Thin entry point: options (generated from the config dataclasses; a ``--config`` file plus
overrides), the data, the students' shapes and any reused knowledge are checked before any
cluster work; then the recipe :func:`kd_core.methods.students.students_recipe` runs on the
job runtime (:mod:`cluster.job`): the teacher trains and its knowledge is collected once,
the students (with and without KD) train at once on Ray workers, every model is scored on
test and timed side by side; every step is a child run in MLflow, the per-student table
(``students_table.json``) and the metric-against-speed-up plot (``plots/students.png``) go on
the parent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

from cluster.job import JobOptions, JobRuntime, job_config  # noqa: E402
from cluster.tracking import labelled_scatter  # noqa: E402
from kd_core.cli import print_summary, quiet_progress, run_cli  # noqa: E402
from kd_core.engine.execute import Result  # noqa: E402
from kd_core.engine.prepare import StudentsData, build_students_workspace  # noqa: E402
from kd_core.engine.workspace import Workspace  # noqa: E402
from kd_core.methods import METHODS  # noqa: E402
from kd_core.methods.students import StudentsSettings, format_table, plan_students, students_recipe, summarise  # noqa: E402
from kd_core.options import add_options, add_run_flags, option, part  # noqa: E402
from kd_core.run_files import write_atomic  # noqa: E402


@dataclass(frozen=True)
class StudentsJobConfig(StudentsSettings, StudentsData, JobOptions):
    """Every option of ``jobs/students.py``: the data, the recipe's hyperparameters and the job's own."""

    knowledge_from: str | None = option(None, "reuse the teacher and its knowledge from an earlier students run "
                                        "(RUN_DIR) with the same data and teacher settings", "job")
    run_dir: str = option("runs/students", "run directory: models, knowledge, results, state (absolute under ray "
                          "job submit)", "job")
    experiment: str = option("students", "MLflow experiment name", "job")

    def __post_init__(self) -> None:
        StudentsData.__post_init__(self)
        StudentsSettings.__post_init__(self)
        JobOptions.__post_init__(self)

    @property
    def data(self) -> StudentsData:
        return part(StudentsData, self)

    @property
    def settings(self) -> StudentsSettings:
        return part(StudentsSettings, self)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python jobs/students.py",
        description="Different students (Sucik 2020) on Ray: a BERT teacher distilled into a shallower BERT copied "
        "from its layers, a small BERT from scratch and a BiLSTM with its own tokenizer, with and without KD, "
        "trained at once on workers; size, speed-up and test metric per student in MLflow. With no options: the "
        "embedded sentiment task, tiny models. Real data: --tasks glue --data-root ../shared/data/glue --task sst2.",
    )
    add_run_flags(p, "continue the job in RUN_DIR with its saved options (others given must equal them)")
    add_options(p, StudentsJobConfig)
    return p


def prepare(config: StudentsJobConfig, run_dir: str | Path | None = None) -> tuple[Workspace, dict[str, Result]]:
    """The workspace and the reused teacher steps, with every check that needs no cluster (bad input stops here)."""
    ws = build_students_workspace(config.data, config.teacher_model, run_dir or config.run_dir)
    plan_students(config.settings)
    reused = METHODS["students"].reused_teachers(config.settings, ws, config.knowledge_from) \
        if config.knowledge_from else {}
    return ws, reused


def run(config: StudentsJobConfig, address: str | None = None, resume: bool = False, quiet: bool = False) -> dict:
    """Run (or continue) the job; returns its summary."""
    started = time.perf_counter()
    ws, reused = prepare(config)
    runtime = JobRuntime("students", asdict(config), config.run_dir, config.tracking_uri, config.experiment, resume)
    ws.relocate(runtime.store.location)
    for name, result in reused.items():  # finished steps of the earlier run: the engine does not run them again
        if not ws.result_path(name).exists():
            write_atomic(ws.result_path(name), json.dumps(result, indent=1))
    with runtime.session(address, config.max_concurrency, f"students {config.task}",
                         tags={"kd.task": ws.task.name}, quiet=quiet) as job:
        results = job.drive(students_recipe(config.settings, ws), ws)
        summary = summarise(results, config.settings, ws.task.name, ws.task.primary_metric)
        summary.update(task_definition=ws.task.describe(), reused_steps=job.reused_steps,
                       augmented_rows=len(ws.splits["transfer"]) - len(ws.splits["train"])
                       if "transfer" in ws.splits else 0,
                       seconds=round(time.perf_counter() - started, 1))
        assert job.tracker is not None and job.parent is not None
        rows = summary["models"]
        columns = ["parameters", "disk_bytes", "latency_ms_b1", "throughput_b32", "speedup_b1", "speedup_b32", "test",
                   "test_no_kd", "kd_gain"]
        job.tracker.log_table(job.parent, {"model": list(rows), **{c: [row.get(c) for row in rows.values()]
                                                                   for c in columns}}, "students_table.json")
        metric = summary["primary_metric"]
        job.tracker.log_figure(job.parent, labelled_scatter(
            {name: (row["speedup_b32"], row["test"]) for name, row in rows.items()},
            "speed-up over the teacher (batch 32)", f"test {metric}", f"{ws.task.name}: {metric} against speed-up",
            log_x=True), "plots/students.png")
        job.tracker.log_metrics(job.parent, {f"test/{name}": row["test"] for name, row in rows.items()}
                                | {f"test_no_kd/{name}": row["test_no_kd"] for name, row in rows.items()
                                   if "test_no_kd" in row})
        return job.finish(summary, format_table(summary))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_progress(args.quiet)
    config = job_config(StudentsJobConfig, "students", args)
    if args.check:
        prepare(config)
        print("ok: options, data and students are valid")
        return 0
    summary = run(config, address=args.address, resume=bool(args.resume), quiet=args.quiet)
    table = "\n".join([format_table(summary), f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}",
                       f"run dir: {summary['run_dir']} ({summary['seconds']} s)"])
    print_summary(summary, table, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
