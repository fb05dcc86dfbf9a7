"""The job runtime: run directory, ``state.json``, the MLflow tree, step fan-out on workers, resume, summary.

A job built on the engine is: options -> a workspace -> a recipe -> a summary. This module
does everything around that, once for every job:

* **Run directory.** A local path or a ``pyarrow.fs`` URI (``s3://...``; every file goes
  through :mod:`kd_core.io.run_store`). The job holds the directory's lock from the start to
  its end (:mod:`cluster.run_dirs`): a second job there is refused. A fresh job refuses a
  directory holding another run (``steps/``, ``state.json``, the summary...) unless
  ``--overwrite``, which removes them first; the steps write ``steps/<name>/...``. Nothing
  written there names the directory itself: results name their files relative to it
  (:meth:`kd_core.engine.workspace.Workspace.location`), ``state.json`` keeps no
  ``run_dir`` option, ``summary.json`` names the saved models relative to it (the summary
  returned and printed names them absolutely), so a run directory can be copied or moved
  and resumed where it is.
* **State.** ``state.json`` (written atomically) holds the method, the options, the MLflow
  run ids and which steps' runs are finished. ``--resume RUN_DIR`` reopens the same parent
  and child runs; options given again must equal the saved ones (a difference is refused,
  naming the option). A ``state.json`` that is not JSON, not a mapping, has keys or values a
  job state does not have, or saved options the job's config refuses (an unknown option, a
  wrong type) is refused with one line naming it and the problem, before any cluster work.
* **Credentials.** ``state.json``, the MLflow params and tags, the summary and every line
  printed hold the run directory and tracking URI redacted (:mod:`kd_core.io.redaction`:
  ``s3://KEY:***@bucket/run``); a resumed job takes such a value from the option given again
  (compared in its redacted form) or, for the tracking URI, from ``$MLFLOW_TRACKING_URI``.
* **Steps on workers.** Every step starts as soon as the steps it reads have finished and a
  :class:`~cluster.worker.StepWorker` (one model per device) is free, not stage by stage
  (:func:`kd_core.engine.local.flow`, :mod:`cluster.job_steps`); the steps running at once
  share the node's cores (a step running alone gets all of them); a train step with
  ``workers > 1`` runs on Ray Train (:mod:`cluster.data_parallel`) while the pool is paused.
  Steps whose result file exists are not sent anywhere, so a resumed job recomputes nothing
  completed. The driver
  checks each such result and the model folder or knowledge table it names first
  (:func:`~kd_core.engine.execute.stored_result`): a corrupt one is named in one warning line
  and its step runs again, in its same MLflow child run (reopened, tagged ``kd.rerun``, ending
  FINISHED; the re-run logs its metrics and model again), so the job ends as an uninterrupted
  one.
* **MLflow.** One parent run per job (options as params, tags ``kd.method``, ``kd_job_id``,
  the summary and its table as artifacts) and one child run per step, tagged ``kd.method``,
  ``kd.step``, ``kd.task`` and the step's own tags (``kd.role``, ``kd.domain``,
  ``kd.iteration``...), with per-step training losses, the step's scores and the trained
  model as an MLflow *logged model* linked to the run: a servable ``pyfunc`` holding the
  ``save_pretrained`` files (:mod:`cluster.tracking.logged_models`), with ``--register-as
  NAME`` also registered as ``NAME.<step>`` when it is a student.

A job's options (:class:`~cluster.job_options.JobOptions`), its ``state.json`` and
:func:`~cluster.job_options.job_config` live in :mod:`cluster.job_options`, which imports
none of this runtime: ``--help`` and ``--check`` need only them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from cluster.job_options import UNSAVED_OPTIONS, JobState, write_run_file
from cluster.job_steps import JobSteps
from cluster.model_folders import publish_models
from cluster.output_paths import output_location, submission_id
from cluster.progress import StepProgress
from cluster.run_dirs import JOB_OUTPUTS, SUMMARY_FILE, TABLE_FILE, claim
from cluster.runtime import announce, connect_stoppable, disconnect
from cluster.scheduler import WorkerPool
from cluster.tracking.uris import resolve_tracking_uri
from kd_core.engine.local import Recipe, flow, stage_plan
from kd_core.engine.steps import EvaluateStep, Result, SelectStep, Step, TrainStep, referenced_step
from kd_core.engine.workspace import Workspace
from kd_core.io.redaction import redact, redact_strings
from kd_core.io.run_store import RunStore
from kd_core.serving.description import serving_description, serving_input

if TYPE_CHECKING:
    from cluster.tracking import RunRef, Tracker


class JobRuntime:
    """One job's run directory, state, MLflow runs and workers (module doc).

    Constructing it takes the run directory's lock (a fresh job: after refusing another run's
    directory unless ``overwrite``); :meth:`close`, or leaving ``with JobRuntime(...)``, releases
    it, on any exception too. A construction that fails releases it itself.
    """

    def __init__(self, method: str, options: Mapping[str, Any], run_dir: str | Path, tracking_uri: str | None,
                 experiment: str, resume: bool = False, overwrite: bool = False) -> None:
        self.method = method
        self.store = RunStore(output_location(run_dir))
        self.run_dir = self.store.local_root  # where this process writes: the run dir, or its staging folder
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if submission_id() is not None:  # the user cannot guess these: say where they are before any work
            print(redact(f"{method} job {submission_id()}: run dir {self.store.location}; MLflow store "
                         f"{self.tracking_uri}"), flush=True)
        self.experiment = experiment
        self.lock = claim(self.store, JOB_OUTPUTS, fresh=not resume, overwrite=overwrite)
        try:
            if resume:
                self.state = JobState.load(self.store, method)
            else:
                self.state = JobState(method, {k: v for k, v in options.items() if k not in UNSAVED_OPTIONS})
                self.state.save(self.store)
        except BaseException:
            self.close()
            raise
        self.tracker: Tracker | None = None
        self.parent: RunRef | None = None
        self.pool: WorkerPool | None = None
        self.progress = StepProgress(method, enabled=False)
        self.reused_steps: list[str] = []
        self.train_steps: dict[str, TrainStep] = {}  # every train step the recipe ran or reused, by name

    def close(self) -> None:
        """Release the run directory's lock (idempotent; module doc)."""
        self.lock.release()

    def __enter__(self) -> JobRuntime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def session(self, address: str | None, workers: int, run_name: str, tags: Mapping[str, str] | None = None,
                params: Mapping[str, Any] | None = None, quiet: bool = False) -> Iterator[JobRuntime]:
        """Connect to Ray, start ``workers`` workers and, while they start, open (or reopen) the parent run; close all
        on exit. MLflow loads and opens its store in a thread while Ray starts (neither waits for the other).

        On any exit, in order: the workers stop (a busy one at once), the parent run ends (KILLED on a stop,
        :class:`~kd_core.io.stops.Stopped`, with its running children; FAILED on an error) and, when this call
        connected to Ray, ``ray.shutdown()`` disconnects (a local cluster started here stops with it).

        Unless ``quiet``, the driver prints, on stderr, which cluster it joined and how to watch it (its
        dashboard, ``ray status``: :func:`cluster.runtime.attach_lines`), then a progress line per stage
        (:mod:`cluster.progress`).
        """
        self.progress = StepProgress(self.method, enabled=not quiet)
        opening = ThreadPoolExecutor(1, thread_name_prefix="mlflow-store")
        tracker = opening.submit(open_tracker, self.tracking_uri)  # MLflow loads and opens its store while Ray starts
        opening.shutdown(wait=False)
        cluster = connect_stoppable(self.tracking_uri, address)
        try:
            if not quiet:
                announce(cluster)
            pool = WorkerPool(workers, wait=False)  # the workers start while the parent run is opened
            try:
                self.tracker = tracker.result()
                if self.state.parent_run_id is None:
                    self.parent = self.tracker.start_run(self.experiment, run_name,
                                                         tags={"kd.method": self.method, **(tags or {})},
                                                         params=params or self.state.options)
                    self.state.parent_run_id = self.parent.run_id
                    self.state.save(self.store)
                else:
                    self.parent = self.tracker.reopen(self.state.parent_run_id)
            except BaseException:
                pool.shutdown()
                raise
            with self.tracker.scope(self.parent):  # KILLED (the running children too) on a stop
                try:
                    self.pool = pool.ready()
                    yield self
                finally:
                    pool.shutdown()
        finally:
            if cluster is not None:  # connected here: disconnect, stopping the local cluster this job started
                disconnect()

    # ------------------------------------------------------------------ steps

    def drive(self, recipe: Recipe, ws: Workspace) -> dict[str, Result]:
        """Run ``recipe`` to its end on the workers, each step as soon as its inputs are done (finished steps are
        read from disk; :mod:`cluster.job_steps`)."""
        ws_ref = ray.put(ws)  # held here for the whole job: a restarted worker's retried call fetches it again
        self.progress.plan(*stage_plan(recipe))
        return flow(recipe, JobSteps(self, ws, ws_ref))

    def step_run(self, step: Step, ws: Workspace) -> RunRef:
        """The MLflow child run of ``step``: its own from an earlier start (reopened; a finished one runs again,
        tagged ``kd.rerun``), else a new one under the parent."""
        assert self.tracker is not None and self.parent is not None
        known = self.state.steps.get(step.name)
        if known is not None:
            run = self.tracker.reopen(known["run_id"])
            if known["finished"]:  # its result or files were found corrupt (stored_result): it runs again
                self.tracker.set_tags(run, {"kd.rerun": "its result or files were corrupt or missing on resume"})
                known["finished"] = False
                self.state.save(self.store)
            return run
        run = self.tracker.start_child(
            self.parent, step.name,
            tags={"kd.method": self.method, "kd.step": step.name, "kd.task": getattr(step, "task", None) or ws.task.name,
                  **step.tags},
            params=_step_params(step))
        self.state.steps[step.name] = {"run_id": run.run_id, "finished": False}
        self.state.save(self.store)
        return run

    def finish_step(self, step: Step, run: RunRef, result: Result, ws: Workspace) -> None:
        """Log ``step``'s result on its child ``run`` (metrics; a train step's logged model), end it, mark it finished."""
        assert self.tracker is not None
        metrics: dict[str, float] = {"seconds": float(result["seconds"])}
        if isinstance(step, EvaluateStep):  # scores on one split
            metrics |= {f"{result['split']}/{name}": value for name, value in result["scores"].items()}
        elif isinstance(step, (TrainStep, SelectStep)):  # scores per evaluated split
            metrics |= {f"{split}/{name}": value for split, scores in result["scores"].items()
                        for name, value in scores.items()}
        for key in ("primary", "rows", "bytes", "parameters", "infer_s"):
            if key in result:
                metrics[key] = float(result[key])
        model_scores = {k: v for k, v in metrics.items() if "/" in k} if isinstance(step, TrainStep) else {}
        self.tracker.log_metrics(run, {k: v for k, v in metrics.items() if k not in model_scores})
        if isinstance(step, TrainStep):  # a servable logged model (pyfunc) holding the save_pretrained folder
            view = ws.view(step.task) if step.task else ws
            register = self.state.options.get("register_as")
            example = serving_input(view.task, view.examples(step.sources[0].split if step.sources else step.split)[0])
            self.tracker.log_model(run, step.name, ws.local(ws.resolve(result["model_dir"])), serving_description(view.task, ws.windows),
                                   example,
                                   tags={"kd.method": self.method, "kd.step": step.name, **step.tags},
                                   registered_name=f"{register}.{step.name}" if register and
                                   step.tags.get("kd.role") == "student" else None,
                                   metrics=model_scores,  # the run's scores, logged once, linked to the model
                                   params={"model": step.model, "task": view.task.name, "objective":
                                           " + ".join(term.describe() for term in step.objective)})
        self.tracker.end_run(run)
        self.state.steps[step.name]["finished"] = True
        self.state.save(self.store)

    # ------------------------------------------------------------------ summary

    def final_models(self, results: Mapping[str, Result]) -> dict[str, tuple[str, str]]:
        """The models a job ends with, by default: ``"<role>/<step>"`` -> (step, model) for every train step
        with a ``kd.role`` tag whose model no other train step starts from (e.g. not a warm-up stage)."""
        started_from = {referenced_step(step.model) for step in self.train_steps.values()}
        return {f"{step.tags['kd.role']}/{name}": (name, results[name]["model_dir"])
                for name, step in self.train_steps.items()
                if "kd.role" in step.tags and name not in started_from and name in results}

    def publish(self, models: Mapping[str, tuple[str, str]]) -> dict[str, str]:
        """Copy the job's final ``models`` to ``RUN_DIR/models/`` with an index (:mod:`cluster.model_folders`);
        returns each one's folder relative to the run directory."""
        return publish_models(self.store, models)

    def finish(self, summary: dict[str, Any], table: str) -> dict[str, Any]:
        """Write the summary and its table (once, atomically) and log them on the parent run; returns the summary,
        every credential in it redacted (module doc).

        ``summary.json`` in the run directory names no place of it absolutely (module doc); the summary
        returned (printed, and logged on the parent run) adds the run directory and names the saved models
        where they are.
        """
        assert self.tracker is not None and self.parent is not None
        summary = redact_strings({**summary, "mlflow_run_id": self.parent.run_id,
                                  "mlflow_experiment_id": self.parent.experiment_id, "tracking_uri": self.tracking_uri})
        write_run_file(self.store, TABLE_FILE, table + "\n")
        write_run_file(self.store, SUMMARY_FILE, json.dumps(summary, indent=1))
        summary["run_dir"] = redact(self.store.location)
        if "saved_models" in summary:
            summary["saved_models"] = {key: redact(self.store.resolve(name))
                                       for key, name in summary["saved_models"].items()}
        self.tracker.log_text(self.parent, table, TABLE_FILE)
        self.tracker.log_dict(self.parent, summary, SUMMARY_FILE)
        return summary


def open_tracker(tracking_uri: str) -> Tracker:
    """A :class:`~cluster.tracking.Tracker` of ``tracking_uri``: MLflow imported and its store opened (created and
    migrated if new; seconds of the job's start, hence run in a thread while Ray starts)."""
    from cluster.tracking import Tracker

    return Tracker(tracking_uri)


def _step_params(step: Step) -> dict[str, Any]:
    """A step's definition as MLflow params (its kind and fields; train configs flattened)."""
    params = {k: v for k, v in asdict(step).items() if k not in ("name", "tags")}
    if isinstance(step, TrainStep):
        params["objective"] = " + ".join(term.describe() for term in step.objective)
    return {"kind": type(step).__name__, **params}
