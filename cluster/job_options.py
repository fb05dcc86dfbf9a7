"""A job's options and saved state, without the runtime: what ``--help`` and ``--check`` need.

:class:`JobOptions` (every job's own options), :class:`JobState` (``state.json``) and
:func:`job_config` (the options from the command line or, with ``--resume``, the saved ones)
import neither Ray, MLflow nor torch, so a job's options are parsed and checked before any of
them loads; the runtime that uses them is :mod:`cluster.job`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from cluster.output_paths import job_run_dir, output_location
from cluster.saved_state import STATE_FILE, STATE_VERSION, check_saved_options, state_fields
from cluster.tracking.uris import check_tracking_uri
from kd_core.io.config_files import RENAMED
from kd_core.io.errors import ConfigError
from kd_core.io.file_checks import CorruptFile, parse_json_mapping
from kd_core.io.options import cli_values, config_from_cli, flag, option, options_error
from kd_core.io.redaction import redact_strings
from kd_core.io.run_files import write_atomic
from kd_core.io.run_store import RunStore
from kd_core.training.compute import Compute

T = TypeVar("T")
#: Options ``state.json`` does not keep: where the run directory is (a resumed job is told; a copy is elsewhere).
UNSAVED_OPTIONS = ("run_dir",)


@dataclass(frozen=True)
class JobOptions(Compute):
    """Where a job keeps its outputs and records, how many workers it runs and how its steps use the hardware
    (:class:`~kd_core.training.compute.Compute`, which every step gets through the workspace); validated."""

    run_dir: str = option("runs/job", "run directory: models, knowledge, results, state; a path (absolute under "
                          "ray job submit) or a pyarrow.fs URI such as s3://bucket/run", "job")
    tracking_uri: str | None = option(None, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                      "sqlite:///<cwd>/mlflow.db)", "job")
    experiment: str = option("kd", "MLflow experiment name", "job")
    run_name: str | None = option(None, "the MLflow parent run's name (default: the method, what it ran on and "
                                  "the start time, e.g. 'a2d squad 2026-12-06 23:40')", "job")
    max_concurrency: int = option(2, "workers, i.e. steps running at once (1 = one after another)", "job")
    register_as: str | None = option(None, "also register each student in the MLflow Model Registry, as "
                                     "NAME.<step> (every trained model is a logged model anyway)", "job")

    def __post_init__(self) -> None:
        Compute.__post_init__(self)
        if self.max_concurrency is not None and self.max_concurrency < 1:  # None: a job's own default (IMM)
            raise ConfigError("job", "max_concurrency", f"must be >= 1, got {self.max_concurrency}")
        check_tracking_uri(self.tracking_uri, "job")
        if not self.experiment.strip():
            raise ConfigError("job", "experiment", "must not be empty (an MLflow experiment name)")
        if self.run_name is not None and not self.run_name.strip():
            raise ConfigError("job", "run_name", "must not be empty")
        if self.register_as is not None and (not self.register_as.strip() or "/" in self.register_as):
            raise ConfigError("job", "register_as", f"a registered model name, non-empty and without '/', got "
                              f"{self.register_as!r}")


@dataclass
class JobState:
    """What a resumed job needs besides the step results (module doc)."""

    method: str
    options: dict[str, Any]
    version: int = STATE_VERSION
    parent_run_id: str | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self, store: RunStore) -> None:
        """Write ``state.json`` with every credential in its options redacted (module doc)."""
        write_run_file(store, STATE_FILE, json.dumps(redact_strings(asdict(self)), indent=1))

    @classmethod
    def load(cls, store: RunStore, method: str) -> JobState:
        """The state in ``store``, checked (module doc); a missing, corrupt or foreign one is one
        :class:`~kd_core.io.errors.ConfigError` naming ``state.json`` and the problem."""
        text = store.read_text(store.local_root / STATE_FILE)
        path = store.location_of(store.local_root / STATE_FILE)
        if text is None:
            raise ConfigError(store.location, STATE_FILE, f"no {method} job to resume here (state.json is missing)")
        try:
            saved = parse_json_mapping(text, path)
        except CorruptFile as err:
            raise ConfigError(path, "state", f"corrupt: {err.what}") from err
        version = saved.get("version", STATE_VERSION)
        if isinstance(version, int) and version != STATE_VERSION:  # a later version may have other keys: say so first
            raise ConfigError(path, "version", f"written by state version {version}, this is "
                              f"{STATE_VERSION}")
        state = cls(**state_fields(saved, path, [f.name for f in fields(cls)]))
        if state.method != method:
            raise ConfigError(path, "method", f"the run directory holds a {state.method} job, not {method}")
        return state


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def job_config(cls: type[T], method: str, args: argparse.Namespace) -> T:
    """A job's options from its command line; with ``--resume``, the saved ones (others given must equal them).

    The run directory comes back absolute, where :func:`cluster.output_paths.job_run_dir` puts it
    (a durable folder under ``ray job submit``).
    """
    if not args.resume:
        config = config_from_cli(cls, args)
        default = next(f.default for f in fields(cls) if f.name == "run_dir")
        run_dir = job_run_dir(config.run_dir, is_default=config.run_dir == default)  # type: ignore[attr-defined]
        return replace(config, run_dir=run_dir)  # type: ignore[type-var]
    saved = resume_options(args.resume, method, cli_values(cls, args))
    check_saved_options(cls, saved, args.resume)
    try:
        return cls(**{**saved, "run_dir": output_location(args.resume)})
    except ConfigError as err:
        raise options_error(err, cls) from err


def resume_options(run_dir: str | Path, method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The saved options of the job in ``run_dir``; any of ``given`` that differs from them is refused."""
    from cluster.secrets import with_credentials  # imports Ray: only a resumed job needs it

    state = JobState.load(RunStore(output_location(run_dir)), method)
    saved = {RENAMED.get(key, key): value for key, value in state.options.items()}  # a run from before a rename
    for key, value in given.items():
        if key in saved and _comparable(redact_strings(saved[key])) != _comparable(redact_strings(value)):
            raise ConfigError("--resume", flag(key), f"the run was made with {saved[key]!r}, not "
                              f"{value!r}; resume with the saved options (or none)")
    return with_credentials(saved, given)


def write_run_file(store: RunStore, name: str, text: str) -> None:
    """Write the run directory's file ``name`` atomically, into its store."""
    write_atomic(store.local_root / name, text)
    store.push(store.local_root / name)
