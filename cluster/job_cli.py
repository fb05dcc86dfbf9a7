"""A job's command line and run, once for every ``jobs/<method>.py``: the options to the summary.

:class:`Job` is a :class:`~kd_core.io.cli.Command` whose run is always the same: options
(``--resume RUN_DIR``: the saved ones, :func:`cluster.job_options.job_config`) -> a workspace
(:meth:`Job.prepare`, every check before any cluster work) -> the method's recipe on the job
runtime (:class:`cluster.job.JobRuntime`: run directory and its lock, Ray workers, one MLflow
child run per step) -> the method's summary, plus ``reused_steps`` and ``seconds`` -> the method's own
charts and metrics on the parent run (:meth:`Job.log`) -> ``summary.json`` and its table,
printed with the MLflow run and the run directory (credentials redacted, :mod:`kd_core.io.redaction`).
A ``--address`` (or ``RAY_ADDRESS``) where no cluster answers is refused first, before the run
directory is touched (:func:`cluster.runtime.check_address`). A job file says only what is its own: the
config dataclass, the description, the workspace, the recipe, the summary and its table.

A fresh job refuses a run directory that holds another run unless ``--overwrite``
(:mod:`cluster.run_dirs`); the options already say so, before the data are read, so
``--check`` does too.

A stop (SIGTERM, SIGINT: :mod:`kd_core.io.stops`) once the run directory holds the job's state
ends the job cleanly (:meth:`cluster.job.JobRuntime.session`) and its one line says how to go
on: ``stopped: SIGTERM; the run dir keeps every finished step: python jobs/kd.py --resume RUN_DIR
continues it``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from cluster.job_options import job_config
from cluster.run_dirs import refuse_other_run
from kd_core.io.cli import Command, quiet_progress
from kd_core.io.errors import ConfigError
from kd_core.io.options import part
from kd_core.io.redaction import redact
from kd_core.io.run_files import write_atomic
from kd_core.io.stops import stopped
from kd_core.training.compute import Compute

if TYPE_CHECKING:
    from cluster.job import JobRuntime
    from cluster.tracking import RunRef, Tracker
    from kd_core.engine.local import Recipe
    from kd_core.engine.steps import Result
    from kd_core.engine.workspace import Workspace

C = TypeVar("C")


def ui_hint(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """How to open a run in the MLflow UI: the page's address (``?workflowType=machine_learning``: MLflow 3.17's
    UI opens its model-training view from it, not the GenAI one), after ``mlflow ui`` for a local store; any
    credentials in ``tracking_uri`` redacted."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    tracking_uri = redact(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {tracking_uri}, then http://127.0.0.1:5000/{page}"


class RayCommand(Command[C]):
    """A command that runs on a Ray cluster: ``--address`` besides the config's options."""

    def run_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a new local cluster)")


class Job(RayCommand[C]):
    """A method's job on Ray (module doc); a subclass fills in what is its own."""

    #: The method's name: its ``state.json``, MLflow tag ``kd.method`` and ``--resume`` check.
    method: ClassVar[str]
    resume_help: ClassVar[str] = "continue the job in RUN_DIR with its saved options (others given must equal them)"

    # ------------------------------------------------------------------ what a job says of its own

    def prepare(self, config: C) -> Workspace:
        """The workspace: every input read and featurised, settings checked (bad input stops here)."""
        raise NotImplementedError

    def recipe(self, config: C, ws: Workspace) -> Recipe:
        """The method's recipe for ``config`` on ``ws``."""
        raise NotImplementedError

    def summarise(self, results: dict[str, Result], config: C, ws: Workspace) -> dict[str, Any]:
        """The method's summary of the finished steps."""
        raise NotImplementedError

    def format_table(self, summary: Mapping[str, Any]) -> str:
        """The method's table (written beside the summary as ``summary_table.txt``)."""
        raise NotImplementedError

    def reused(self, config: C, ws: Workspace) -> dict[str, Result]:
        """Finished steps of an earlier run to take as they are (checked here, before any cluster work)."""
        return {}

    def workers(self, config: C, ws: Workspace) -> int:
        """Workers, i.e. steps at once."""
        return config.max_concurrency  # type: ignore[attr-defined]

    def run_name(self, config: C, ws: Workspace) -> str:
        """What the parent run's default MLflow name says before the start time: the method and its task."""
        return f"{self.method} {ws.task.name}"

    def tags(self, config: C, ws: Workspace) -> dict[str, str]:
        """The parent run's tags besides ``kd.method``."""
        return {"kd.task": ws.task.name}

    def final_models(self, runtime: JobRuntime, results: dict[str, Result],
                     summary: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
        """The models the job ends with, ``"<role>/<name>"`` -> (step, model), copied to ``RUN_DIR/models/``
        (default: :meth:`cluster.job.JobRuntime.final_models`)."""
        return runtime.final_models(results)

    def log(self, tracker: Tracker, parent: RunRef, summary: dict[str, Any], ws: Workspace) -> None:
        """The method's own charts, tables and metrics on the parent run (none by default)."""

    def notes(self, summary: Mapping[str, Any]) -> list[str]:
        """Lines printed after the table (not written with it)."""
        return []

    # ------------------------------------------------------------------ the same for every job

    def run_flags(self, parser: argparse.ArgumentParser) -> None:
        super().run_flags(parser)
        parser.add_argument("--resume", metavar="RUN_DIR", help=self.resume_help)
        parser.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir if it holds one "
                            "(its results, models and state are removed; without it such a directory is refused)")

    def extra_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--quiet", action="store_true", help="no progress lines or bars (the summary is still "
                            "printed)")

    def start(self, args: argparse.Namespace) -> None:
        quiet_progress(args.quiet)

    def config(self, args: argparse.Namespace) -> C:
        if args.resume and args.overwrite:
            raise ConfigError("--overwrite", "--resume", "--overwrite starts the run afresh, --resume continues it; "
                              "pass one of them")
        config = job_config(self.config_class, self.method, args)
        if not args.resume:
            refuse_other_run(config.run_dir, args.overwrite)  # type: ignore[attr-defined]
        return config

    def check(self, config: C) -> None:
        self.reused(config, self.prepare(config))

    def execute(self, config: C, args: argparse.Namespace) -> dict[str, Any]:
        from cluster.runtime import check_address

        check_address(args.address)  # before the run directory is touched
        return self.run(config, address=args.address, resume=bool(args.resume), quiet=args.quiet,
                        overwrite=args.overwrite)

    def run(self, config: C, address: str | None = None, resume: bool = False, quiet: bool = False,
            overwrite: bool = False) -> dict[str, Any]:
        """Run (or continue) the job; returns its summary (module doc). The run directory is locked from the
        runtime's start to the end of this call, however it ends. The runtime (Ray, MLflow) is imported here: a
        job's ``--help`` and ``--check`` need none of it."""
        from cluster.job import JobRuntime

        started = time.perf_counter()
        ws = self.prepare(config)
        ws.compute = part(Compute, config)
        reused = self.reused(config, ws)
        options: Any = config
        with JobRuntime(self.method, asdict(options), options.run_dir, options.tracking_uri, options.experiment,
                        resume, overwrite) as runtime:
            try:
                return self._run(config, ws, reused, runtime, address, quiet, started)
            except KeyboardInterrupt as interrupt:  # a stop (kd_core.io.stops): the line says how to go on
                stop = stopped(interrupt)
                stop.then = (f"the run dir keeps every finished step: {self.prog} --resume "
                             f"{redact(runtime.store.location)} continues it")
                raise stop from None

    def _run(self, config: C, ws: Workspace, reused: dict[str, Result], runtime: JobRuntime, address: str | None,
             quiet: bool, started: float) -> dict[str, Any]:
        """:meth:`run` once the runtime holds the run directory and its state."""
        options: Any = config
        ws.relocate(runtime.store.location)
        for name, result in reused.items():  # finished steps of the earlier run (absolute: they name its files)
            if not ws.result_path(name).exists():
                write_atomic(ws.result_path(name), json.dumps(result, indent=1))
        run_name = options.run_name or f"{self.run_name(config, ws)} {datetime.now():%Y-%m-%d %H:%M}"
        with runtime.session(address, self.workers(config, ws), run_name,
                             tags=self.tags(config, ws), quiet=quiet) as job:
            results = job.drive(self.recipe(config, ws), ws)
            summary = self.summarise(results, config, ws)
            summary["saved_models"] = job.publish(self.final_models(job, results, summary))
            summary.update(reused_steps=job.reused_steps, seconds=round(time.perf_counter() - started, 1))
            assert job.tracker is not None and job.parent is not None
            self.log(job.tracker, job.parent, summary, ws)
            return job.finish(summary, self.format_table(summary))

    def table(self, summary: dict[str, Any]) -> str:
        saved = summary.get("saved_models", {})
        width = max(map(len, saved), default=0)  # the paths in one column, however long the names
        models = [f"models ({len(saved)}, Hugging Face folders; index: {summary['run_dir']}/models/index.json):",
                  *(f"  {key:<{width}}  {path}" for key, path in saved.items())] if saved else []
        return redact("\n".join([self.format_table(summary), *self.notes(summary), *models,
                          f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}",
                          "  see it: " + ui_hint(summary["tracking_uri"], summary["mlflow_experiment_id"],
                                                 summary["mlflow_run_id"]),
                          f"run dir: {summary['run_dir']} ({summary['seconds']} s)"]))
