"""One check every config runs: no number it holds may be NaN or infinite.

Range checks written ``x > 0`` or ``x < 0`` are false for NaN either way, so ``--gamma nan``
would slip past a check of ``gamma < 0`` and silently drop the term, and ``--epochs inf`` would
pass until training started. :func:`check_finite` refuses every non-finite float of a config
(a field, or an item of a tuple field) before any of its own range checks run; it is called by
:func:`kd_core.io.config_files.build_config` (the command line, config files, the sweep's
settings) and by the configs' ``__post_init__`` (a config built from Python).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from kd_core.io.errors import ConfigError


def non_finite(value: Any) -> float | None:
    """The first NaN or infinity of ``value`` (a number, or a tuple/list of them), else ``None``."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            return item
    return None


def check_finite(config: Any, source: str) -> None:
    """Refuse a dataclass ``config`` holding a NaN or infinite number (module doc): one :class:`ConfigError` naming
    the field, whose ``source`` is ``source`` (the option group, e.g. ``kd``, or the config file)."""
    check_finite_values({field.name: getattr(config, field.name) for field in dataclasses.fields(config)}, source)


def check_finite_values(values: dict[str, Any], source: str) -> None:
    """:func:`check_finite` on a mapping of field names to values (before the config is built)."""
    for name, value in values.items():
        bad = non_finite(value)
        if bad is not None:
            raise ConfigError(source, name, f"must be a finite number, got {bad}")


#: A name that becomes part of a folder or step name: letters, digits, ``_``, ``-`` and ``.``, not first a ``.``.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name: str, source: str, what: str) -> str:
    """``name`` if it is a :data:`SAFE_NAME` (step folders are named from domain and task names, so ``../x``, ``a/b``
    or a space would put files outside the run dir or break commands), else a one-line :class:`ConfigError`."""
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(source, what, f"{name!r} is not a usable name: letters, digits, _, - and . only, not "
                          f"starting with '.', no '..'")
    return name
