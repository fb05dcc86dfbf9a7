"""What a resumed job's saved ``state.json`` must hold, checked before anything is made from it.

A state file edited by hand, written by another version or damaged on disk is refused with one
:class:`~kd_core.io.errors.ConfigError` line naming the file and the problem (exit status 2,
before any cluster work), instead of a ``TypeError`` or ``KeyError`` when the job's config is
rebuilt from it: keys a job state does not have, fields of the wrong type (:func:`state_fields`),
and saved options the job's config class refuses: an unknown option, a value of the wrong type
or out of range (:func:`check_saved_options`, the same checks as a config file's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cluster.output_paths import output_location
from kd_core.io.config_files import build_config
from kd_core.io.errors import ConfigError
from kd_core.io.run_store import RunStore

STATE_FILE = "state.json"
STATE_VERSION = 1
#: What each field of a job state holds: a test of the saved value and how the error line describes it.
FIELD_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "method": (lambda value: isinstance(value, str), "a string"),
    "options": (lambda value: isinstance(value, dict), "a mapping of option names"),
    "version": (lambda value: isinstance(value, int), "an integer"),
    "parent_run_id": (lambda value: value is None or isinstance(value, str), "a run id or null"),
    "steps": (lambda value: isinstance(value, dict) and all(
        isinstance(step, dict) and isinstance(step.get("run_id"), str) and isinstance(step.get("finished"), bool)
        for step in value.values()), "a mapping of step -> {run_id, finished}"),
}
REQUIRED = ("method", "options")


def state_fields(saved: Mapping[str, Any], source: str, known: Sequence[str]) -> dict[str, Any]:
    """``saved`` (a parsed state file at ``source``) if it has only the ``known`` fields, the required ones, and
    each of the type :data:`FIELD_TYPES` gives; otherwise one :class:`ConfigError` naming the field."""
    unknown = sorted(set(saved) - set(known))
    if unknown:
        raise ConfigError(source, unknown[0], f"unknown key of a job state; known: {', '.join(known)}")
    missing = [name for name in REQUIRED if name not in saved]
    if missing:
        raise ConfigError(source, missing[0], "missing: not a job state")
    for name, value in saved.items():
        accepts, description = FIELD_TYPES.get(name, (lambda _: True, ""))
        if not accepts(value):
            raise ConfigError(source, name, f"must be {description}, got {value!r}"[:300])
    return dict(saved)


def check_saved_options(cls: type, saved: Mapping[str, Any], run_dir: str | Path) -> None:
    """Refuse saved options that the config class ``cls`` could not be made from (module doc), naming the state file
    of ``run_dir``: ``<run dir>/state.json: options: <option>: <problem>``."""
    store = RunStore(output_location(run_dir))
    source = store.location_of(store.local_root / STATE_FILE)
    try:
        build_config(cls, saved, {}, source)
    except ConfigError as err:
        raise ConfigError(source, f"options: {err.where}", err.what) from err
