"""Tracking URIs: always absolute, so every process (driver, actors, Tune trials) means the same store.

Ray Tune changes each trial's working directory, and a relative ``sqlite:///mlflow.db`` would
silently give every trial its own database; MLflow 3.17 refuses ``file:`` stores. Relative
SQLite paths are relative to :func:`cluster.output_paths.output_base`: the working directory,
or the durable results folder in a ``ray job submit`` job (whose working directory Ray deletes).
"""

from __future__ import annotations

import os
from pathlib import Path

from cluster.output_paths import output_base, output_path
from kd_core.io.errors import ConfigError

DEFAULT_DB_NAME = "mlflow.db"
SQLITE_PREFIX = "sqlite:///"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def default_tracking_uri(cwd: Path | None = None) -> str:
    """MLflow 3's default store, made absolute: ``sqlite:///<cwd or output base>/mlflow.db``."""
    folder = cwd.expanduser().resolve() if cwd is not None else output_base()
    return f"{SQLITE_PREFIX}{folder / DEFAULT_DB_NAME}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """An absolute tracking URI that means the same store from any working directory.

    * ``None``: ``$MLFLOW_TRACKING_URI`` if set (resolved in turn), else :func:`default_tracking_uri`.
    * ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``: made absolute (module doc).
    * A bare path ending in ``.db``, ``.sqlite`` or ``.sqlite3``: that SQLite file, absolute.
    * Any other URI with a scheme (``http(s)://``, ``postgresql://``, ``databricks``...): unchanged.

    Raises:
        ValueError: for ``file:`` URIs and other bare paths (MLflow 3.17 refuses file stores
            unless ``MLFLOW_ALLOW_FILE_STORE=true``; use SQLite), and for in-memory SQLite,
            which no other process can see.
    """
    if uri is None:
        from_env = os.environ.get("MLFLOW_TRACKING_URI")
        return resolve_tracking_uri(from_env) if from_env else default_tracking_uri()
    if uri.startswith(SQLITE_PREFIX):
        path = uri[len(SQLITE_PREFIX) :]
        if path in ("", ":memory:"):
            raise ValueError(f"in-memory SQLite ({uri!r}) cannot be shared with Ray workers; give a file")
        return f"{SQLITE_PREFIX}{output_path(path)}"
    if uri.startswith("sqlite:"):
        raise ValueError(f"expected sqlite:///<path to a file>, got {uri!r}")
    if not uri.startswith("file:") and ("://" in uri or uri.startswith("databricks")):
        return uri
    if uri.startswith("file:") or not uri.endswith(_SQLITE_SUFFIXES):
        raise ValueError(
            f"file stores are refused by MLflow 3.17 (unless MLFLOW_ALLOW_FILE_STORE=true): {uri!r}; "
            "use a SQLite file such as 'sqlite:///mlflow.db' or a path ending in '.db'"
        )
    return f"{SQLITE_PREFIX}{output_path(uri)}"


def check_tracking_uri(uri: str | None, source: str) -> None:
    """Refuse a tracking URI :func:`resolve_tracking_uri` cannot use, as a one-line ``ConfigError`` (before any work)."""
    if uri is None:
        return
    try:
        resolve_tracking_uri(uri)
    except ValueError as err:
        raise ConfigError(source, "tracking_uri", str(err)) from err
