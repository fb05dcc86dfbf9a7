"""MLflow runs through one client: run handles, job trees, params, metrics, artifacts.

* Everything goes through ``MlflowClient(tracking_uri)``: no ``mlflow.start_run`` and no
  process-global active run, so the same code is safe in the driver, in Ray actors, in Tune
  trials and in concurrent processes writing to one store.
* Runs are addressed by :class:`RunRef`, a frozen, picklable handle (store URI, run id,
  experiment id, job id) that is passed to actors instead of a client.
* A job is a tree of runs: :meth:`Tracker.start_run` opens a root run, :meth:`Tracker.start_child`
  opens a run nested under another one (tag ``mlflow.parentRunId``). Every run of the tree carries
  the tag ``kd_job_id`` (the root run's id), so a whole job is one query:
  ``search_runs(filter_string="tags.kd_job_id = '<id>'")``. MLflow itself sets no root-run tag.
* Runs read well in the MLflow UI: experiments are created as "custom model development"
  (tag ``mlflow.experimentKind``, so MLflow 3 opens them in its model-training view, not the
  GenAI one); a root run carries MLflow's standard context tags (``mlflow.user``,
  ``mlflow.source.name`` and ``.type``, ``mlflow.source.git.commit`` when the job's script is
  in a git checkout), and every run of its tree carries the same ones.
* Params and tags are logged with every credential in their values redacted
  (:func:`kd_core.io.redaction.redact`: a run directory ``s3://KEY:SECRET@bucket/run`` is the
  param ``s3://KEY:***@bucket/run``), as are a logged model's. For a tracking URI holding
  credentials (``https://user:password@host``), MLflow's own "View run ... at: <URI>" lines are
  turned off in the process (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``): they print the URI whole.
* Tracking URIs are made absolute by :mod:`cluster.tracking.uris`; experiments created in a
  SQLite store keep their artifacts beside the database (``<db folder>/mlruns/<experiment>``),
  wherever the creating process runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from cluster.tracking.uris import SQLITE_PREFIX, resolve_tracking_uri
from kd_core.io.redaction import holds_credentials, redact

if TYPE_CHECKING:
    from matplotlib.figure import Figure

JOB_ID_TAG = "kd_job_id"
#: The experiment tag MLflow 3's UI picks an experiment's view from, and the value of its model-training view.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
#: MLflow's standard context tags a root run gets from where it was started, copied to every run of its tree.
SOURCE_TAGS = ("mlflow.user", "mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit",
               "mlflow.source.git.branch", "mlflow.source.git.repoURL")
_TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
_BAD_NAME_CHARS = re.compile(r"[^\w.\- /]")  # MLflow allows these (plus ':' off Windows)


@dataclass(frozen=True)
class RunRef:
    """Picklable handle on one MLflow run: what a Ray actor needs to log to it.

    ``job_id`` is the id of the root run of the run's tree (a root run's own id).
    """

    tracking_uri: str
    run_id: str
    experiment_id: str
    job_id: str

    @property
    def is_root(self) -> bool:
        """Whether this run is the root of its job tree."""
        return self.run_id == self.job_id

    def child_tags(self) -> dict[str, str]:
        """Tags that nest a run under this one and put it in the same job tree.

        Pass them to code that creates runs itself, e.g. Ray Tune's
        ``MLflowLoggerCallback(tags=parent.child_tags())``.
        """
        return {MLFLOW_PARENT_RUN_ID: self.run_id, JOB_ID_TAG: self.job_id}


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings and dataclass instances flattened to ``{"a.b.c": str(value)}``.

    Keys are made valid MLflow names (see :func:`mlflow_name`); values are redacted
    (:func:`kd_core.io.redaction.redact`), then truncated to MLflow's parameter length limit.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[mlflow_name(name)] = redact(str(value))[:MAX_PARAM_VAL_LENGTH]
    return flat


def mlflow_name(name: str) -> str:
    """``name`` made valid as an MLflow metric or parameter name.

    Characters other than letters, digits, ``_ - . /`` and space become ``_``; empty, ``.``
    and ``..`` path segments are dropped (MLflow rejects names that are not normalised paths).
    """
    segments = _BAD_NAME_CHARS.sub("_", name).split("/")
    cleaned = "/".join(s for s in segments if s not in ("", ".", ".."))
    if not cleaned:
        raise ValueError(f"{name!r} gives an empty MLflow name")
    return cleaned


def _redacted(values: Mapping[str, Any]) -> dict[str, str]:
    """``values`` as strings with every credential redacted (:func:`kd_core.io.redaction.redact`)."""
    return {key: redact(str(value)) for key, value in values.items()}


def _check_terminal(status: str) -> None:
    if status not in _TERMINAL_STATUSES:
        raise ValueError(f"run status must be one of {_TERMINAL_STATUSES}, got {status!r}")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Tracker:
    """Logs to one MLflow store through an ``MlflowClient``; cheap to build in each actor.

    A tracker pickles as its URI, so it can also be passed to Ray tasks and actors.
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if holds_credentials(self.tracking_uri):  # MLflow would print the URI, credentials included (module doc)
            os.environ[MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name] = "true"
        self.client = MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)  # the registry in the same store
        self._source_tags: dict[str, dict[str, str]] = {}  # job id -> its root run's context tags

    def __reduce__(self) -> tuple[type[Tracker], tuple[str]]:
        return (Tracker, (self.tracking_uri,))

    def __repr__(self) -> str:
        return f"Tracker({self.tracking_uri!r})"

    # ------------------------------------------------------------------ runs

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created if missing (safe against a concurrent creator).

        In a SQLite store a new experiment keeps its artifacts in ``<db folder>/mlruns/<name, made file-safe>``.
        """
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name, artifact_location=self._artifact_location(name),
                                                     tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
            except MlflowException:
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise ValueError(f"experiment {name!r} is deleted; restore it or choose another name")
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by other code: open it in the training view too
            self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        return experiment.experiment_id

    def start_run(
        self,
        experiment: str,
        run_name: str,
        *,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> RunRef:
        """Open the root run of a job in ``experiment`` (created if missing).

        Its ``kd_job_id`` tag is its own run id; it gets MLflow's context tags (module doc).
        """
        experiment_id = self.experiment_id(experiment)
        run = self.client.create_run(experiment_id, run_name=run_name, tags=_redacted(resolve_tags(dict(tags or {}))))
        ref = RunRef(self.tracking_uri, run.info.run_id, experiment_id, job_id=run.info.run_id)
        self.set_tags(ref, {JOB_ID_TAG: ref.job_id})
        self.log_params(ref, params or {})
        return ref

    def start_child(
        self,
        parent: RunRef,
        run_name: str,
        *,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> RunRef:
        """Open a run nested under ``parent``, in its experiment and its job tree."""
        self._check_store(parent)
        run = self.client.create_run(
            parent.experiment_id, run_name=run_name,
            tags=_redacted({**self.source_tags(parent), **(tags or {}), **parent.child_tags()}))
        ref = RunRef(self.tracking_uri, run.info.run_id, parent.experiment_id, parent.job_id)
        self.log_params(ref, params or {})
        return ref

    def source_tags(self, run: RunRef) -> dict[str, str]:
        """MLflow's context tags of ``run``'s root run (who started the job, from which script and commit)."""
        if run.job_id not in self._source_tags:
            tags = self.client.get_run(run.job_id).data.tags
            self._source_tags[run.job_id] = {k: tags[k] for k in SOURCE_TAGS if k in tags}
        return self._source_tags[run.job_id]

    def ref(self, run_id: str) -> RunRef:
        """A :class:`RunRef` for an existing run of this store (its job id read from its tags)."""
        run = self.client.get_run(run_id)
        return RunRef(self.tracking_uri, run_id, run.info.experiment_id, run.data.tags.get(JOB_ID_TAG, run_id))

    def reopen(self, run_id: str) -> RunRef:
        """Mark an existing run RUNNING again (a resumed job continues its runs) and return its ref."""
        ref = self.ref(run_id)
        self.client.update_run(run_id, status="RUNNING")
        return ref

    def end_run(self, run: RunRef, status: str = "FINISHED") -> None:
        """Mark ``run`` terminated with ``status`` (FINISHED, FAILED or KILLED)."""
        _check_terminal(status)
        self.client.set_terminated(self._check_store(run), status=status)

    @contextmanager
    def scope(self, run: RunRef, *, close_children: bool = True) -> Iterator[RunRef]:
        """End ``run`` when the block exits: FINISHED, FAILED on an exception, KILLED on an interrupt (Ctrl-C, or
        SIGTERM / SIGINT stopping a command: :class:`kd_core.io.stops.Stopped`, a ``KeyboardInterrupt``).

        With ``close_children`` (the default), descendants still RUNNING are first marked KILLED
        (see :meth:`finish_children`). The exception propagates.
        """
        status = "FINISHED"
        try:
            yield run
        except Exception:
            status = "FAILED"
            raise
        except BaseException:  # KeyboardInterrupt (a stop signal too), SystemExit: stopped, not broken
            status = "KILLED"
            raise
        finally:
            if close_children:
                self.finish_children(run)
            self.end_run(run, status)

    def finish_children(self, parent: RunRef, status: str = "KILLED") -> list[str]:
        """Terminate with ``status`` every descendant of ``parent`` still RUNNING; returns their ids.

        Ray Tune kills trial actors without ending their runs, and a crashed actor cannot end its
        own, so such runs stay RUNNING forever unless the driver closes them. Descendants are found
        through ``mlflow.parentRunId`` (so runs created by other code are included) in the parent's
        experiment.
        """
        _check_terminal(status)
        closed: list[str] = []
        pending = [self._check_store(parent)]
        while pending:
            for child in self._search(parent.experiment_id, f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{pending.pop()}'"):
                pending.append(child.info.run_id)
                if child.info.status == "RUNNING":
                    self.client.set_terminated(child.info.run_id, status=status)
                    closed.append(child.info.run_id)
        return closed

    # --------------------------------------------------------- params, tags, metrics

    def log_params(self, run: RunRef, params: Mapping[str, Any]) -> None:
        """Log ``params`` flattened by :func:`flatten_params` and redacted (module doc), in batches of MLflow's maximum
        size.

        MLflow refuses to change a parameter already logged with another value.
        """
        items = [Param(key, value) for key, value in flatten_params(params).items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self._check_store(run), params=chunk)

    def set_tags(self, run: RunRef, tags: Mapping[str, Any]) -> None:
        """Set ``tags`` (values stringified, redacted and truncated to MLflow's limit) in batches."""
        items = [RunTag(key, value[:MAX_TAG_VAL_LENGTH]) for key, value in _redacted(tags).items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self._check_store(run), tags=chunk)

    def log_metrics(self, run: RunRef, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` (0 when ``None``, as MLflow does) with ``log_batch``.

        Names are made valid with :func:`mlflow_name`; values are converted with ``float``.
        """
        timestamp = get_current_time_millis()
        items = [Metric(mlflow_name(k), float(v), timestamp, step or 0) for k, v in metrics.items()]
        for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self._check_store(run), metrics=chunk)

    def metrics_callback(self, run: RunRef, prefix: str = "", every: int = 1) -> Callable[[dict[str, float]], None]:
        """A ``kd_core.training.loop`` metrics callback that logs to ``run``.

        Each call receives a dict with a ``"step"`` entry (e.g. ``{"step": 10, "epoch": 0.5,
        "lr": ..., "loss": ..., "loss/ce": ..., "weight/ce": ...}``); every other entry is logged
        as metric ``prefix + name`` at that step, in one ``log_batch``. Calls whose step is not a
        multiple of ``every`` are skipped. ``prefix`` should end with a separator, e.g. ``"train/"``.
        """
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self._check_store(run)

        def log(metrics: dict[str, float]) -> None:
            step = int(metrics["step"])
            if step % every == 0:
                self.log_metrics(run, {f"{prefix}{k}": v for k, v in metrics.items() if k != "step"}, step)

        return log

    # ------------------------------------------------------------------ artifacts

    def log_artifact(self, run: RunRef, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy one local file into the run's artifacts (under ``artifact_path`` if given)."""
        self.client.log_artifact(self._check_store(run), str(path), artifact_path)

    def log_artifacts(self, run: RunRef, directory: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local directory's content, e.g. a ``save_pretrained`` folder, into the run's artifacts."""
        self.client.log_artifacts(self._check_store(run), str(directory), artifact_path)

    def log_model(self, run: RunRef, name: str, model_dir: str | Path, description: Mapping[str, Any],
                  input_example: Mapping[str, str], tags: Mapping[str, str] | None = None,
                  registered_name: str | None = None, metrics: Mapping[str, float] | None = None,
                  params: Mapping[str, str] | None = None) -> str:
        """Log a ``save_pretrained`` folder as a servable pyfunc logged model of ``run`` (optionally registered
        under ``registered_name``); returns its model id (:mod:`cluster.tracking.logged_models`, imported here:
        it reads the serving code, which a step that logs no model does not need)."""
        from cluster.tracking.logged_models import log_served_model

        if registered_name:
            try:
                self.client.create_registered_model(registered_name)
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        return log_served_model(self.client, run.experiment_id, self._check_store(run), name, model_dir, description,
                                input_example, _redacted({**self.source_tags(run), **(tags or {}), JOB_ID_TAG: run.job_id}),
                                registered_name, metrics=metrics, params=_redacted(params) if params else params)

    def log_figure(self, run: RunRef, figure: Figure, artifact_file: str) -> None:
        """Save a matplotlib figure as artifact ``artifact_file`` (its extension picks the format)."""
        self.client.log_figure(self._check_store(run), figure, artifact_file)

    def log_dict(self, run: RunRef, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        """Save ``dictionary`` as artifact ``artifact_file``: YAML for ``.yaml``/``.yml``, else JSON."""
        self.client.log_dict(self._check_store(run), dict(dictionary), artifact_file)

    def log_table(self, run: RunRef, columns: Mapping[str, Sequence[Any]], artifact_file: str) -> None:
        """Save a table (column name -> values) as MLflow table artifact ``artifact_file`` (``.json``; shown as a
        table in the UI and read back with ``mlflow.load_table``)."""
        self.client.log_table(self._check_store(run), {k: list(v) for k, v in columns.items()}, artifact_file)

    def log_text(self, run: RunRef, text: str, artifact_file: str) -> None:
        """Save ``text`` as artifact ``artifact_file``."""
        self.client.log_text(self._check_store(run), text, artifact_file)

    # ------------------------------------------------------------------ helpers

    def _check_store(self, run: RunRef) -> str:
        """``run.run_id``, after checking that the run lives in this tracker's store."""
        if run.tracking_uri != self.tracking_uri:
            raise ValueError(f"run {run.run_id} is in {run.tracking_uri}, not in {self.tracking_uri}")
        return run.run_id

    def _search(self, experiment_id: str, filter_string: str) -> Iterator[Any]:
        """All runs of one experiment matching ``filter_string``, following result pages."""
        token = None
        while True:
            page = self.client.search_runs([experiment_id], filter_string, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _artifact_location(self, experiment: str) -> str | None:
        """Beside the database for SQLite stores; the store's default (``None``) otherwise."""
        if not self.tracking_uri.startswith(SQLITE_PREFIX):
            return None
        database = Path(self.tracking_uri[len(SQLITE_PREFIX) :].split("?")[0])
        return (database.parent / "mlruns" / re.sub(r"[^\w-]+", "_", experiment)).as_uri()
