"""Where relative output paths land, and why it differs under ``ray job submit``.

A job started by hand writes relative paths (``runs/imm``, ``sqlite:///mlflow.db``) under its
working directory, as users expect. A job submitted with ``ray job submit --working-dir .``
runs in Ray's temporary copy of that directory
(``.../runtime_resources/working_dir_files/_ray_pkg_<hash>/``), which Ray deletes once no
job uses it: outputs written there are lost, and an MLflow UI started in the repository
never sees them. So under a submitted job, relative output paths resolve against a durable
results folder instead, as Ray Tune's ``~/ray_results``:

* the folder is ``$KD_RESULTS_DIR``, else ``~/kd_results``;
* the default MLflow store is ``sqlite:///<results>/mlflow.db`` (``$MLFLOW_TRACKING_URI``,
  when the job's environment sets it, still wins, a relative SQLite path in it resolving
  against the results folder too);
* a job's default run directory gets the submission id appended
  (``<results>/runs/imm/raysubmit_...``), so one submitted job never overwrites another's
  models; a run directory given explicitly is kept as given (made absolute against the
  results folder when relative).

Input paths (data files, configs) are not outputs: they keep resolving against the working
directory, where the uploaded repository is. A run directory given as a ``pyarrow.fs`` URI
(``s3://bucket/runs/imm``; :mod:`kd_core.io.run_store`) is durable already and kept as given.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kd_core.io.run_store import is_uri

RESULTS_ENV = "KD_RESULTS_DIR"
DEFAULT_RESULTS_DIR = "~/kd_results"
#: Set by Ray's job supervisor in a submitted job's driver: the job config, its metadata holding the submission id.
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_SUBMISSION_ID_KEY = "job_submission_id"


def submission_id() -> str | None:
    """The id of the ``ray job submit`` job this process is the driver of, else ``None``."""
    raw = os.environ.get(_JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        metadata = json.loads(raw).get("metadata") or {}
    except (json.JSONDecodeError, AttributeError):
        return None
    value = metadata.get(_SUBMISSION_ID_KEY)
    return str(value) if value else None


def results_root() -> Path:
    """The durable results folder of submitted jobs: ``$KD_RESULTS_DIR`` or ``~/kd_results`` (absolute)."""
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR).expanduser().resolve()


def output_base() -> Path:
    """What relative output paths are relative to: the results folder in a submitted job, else the working directory."""
    return results_root() if submission_id() else Path.cwd().resolve()


def output_path(path: str | Path) -> Path:
    """``path`` made absolute against :func:`output_base` (``~`` expanded; absolute paths unchanged)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (output_base() / path).resolve()


def output_location(location: str | Path) -> str:
    """A run directory as given (a URI) or as an absolute :func:`output_path`."""
    return str(location) if is_uri(location) else str(output_path(location))


def job_run_dir(run_dir: str, is_default: bool) -> str:
    """A job's run directory: a URI as given, a path made absolute; a default one of a submitted job ends in the
    submission id (module doc)."""
    if is_uri(run_dir):
        return run_dir
    resolved = output_path(run_dir)
    job = submission_id()
    return str(resolved / job if is_default and job else resolved)
