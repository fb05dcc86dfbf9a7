"""Config files plus command-line overrides, into validated dataclass configs.

A config file is YAML or JSON holding a mapping of field names to values; the command line
overrides any of them (options left unset on the command line keep the file's value, and
fields missing from both keep the dataclass default). Unknown keys are errors, not typos
silently ignored; a key renamed since (:data:`RENAMED`) is refused naming its new name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kd_core.io.errors import ConfigError
from kd_core.io.values import check_finite_values
from kd_core.io.yaml_files import load_yaml

T = TypeVar("T")

#: Option names changed for one vocabulary across the jobs and the sweep: old key -> new key.
RENAMED = {
    "kd_weight": "alpha",  # a2d, distill
    "teachers": "members",  # kd
    "finetune_epochs": "fine_tune_epochs",  # imm
    "max_concurrent": "max_concurrency",  # sweep
    "vanilla": "baseline",  # mtdnn
    "synthetic_per_domain": "synthetic_size",  # a2d, imm, distill
    "distil_layers": "student_layers",  # students
}


def unknown_key(source: str, key: str, known: Collection[str], of: str = "") -> ConfigError:
    """The error for ``key``, none of ``known``: a renamed key names its new name, any other lists the known ones."""
    if RENAMED.get(key) in known:
        return ConfigError(source, key, f"is now `{RENAMED[key]}`")
    return ConfigError(source, key, f"unknown option{of}; known: {', '.join(sorted(known))}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping; errors name the file and the problem."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(str(source), "file", f"cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(str(source), f"byte {err.start}", "not valid UTF-8") from err
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _unique_json_keys(pairs, str(source))) \
            if source.suffix == ".json" else load_yaml(text, str(source))
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(str(source), "syntax", str(err).splitlines()[0]) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(source), "top level", f"must be a mapping of option names, got {type(data).__name__}")
    return data


def _unique_json_keys(pairs: list[tuple[str, Any]], source: str) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key given twice (``json`` would keep the last, as PyYAML does)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(source, key, "is given twice (the earlier value would be dropped)")
        seen[key] = value
    return seen


def build_config(cls: type[T], file_values: Mapping[str, Any], overrides: Mapping[str, Any], source: str) -> T:
    """``cls(**defaults | file_values | overrides)``, where ``None`` overrides mean "not given"."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(file_values) - fields)
    if unknown:
        raise unknown_key(source, unknown[0], fields)
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None and k in fields}}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if str(field.type).startswith("tuple") and field.name in values:
            values[field.name] = _as_tuple(values[field.name])
    hints = typing.get_type_hints(cls)
    values = {name: _yaml_float(hints.get(name), value) for name, value in values.items()}
    for name, value in values.items():
        wrong = _type_problem(hints.get(name), value)
        if wrong:
            raise ConfigError(source, name, wrong)
    check_finite_values(values, source)
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(source, "options", str(err)) from err


_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _type_problem(annotation: Any, value: Any) -> str | None:
    """Why ``value`` cannot be a field annotated ``annotation`` (``int``, ``float | None``...), or ``None`` if it can.

    Only scalar fields are checked here; tuples and others are the dataclass's own business.
    """
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None and type(None) in allowed:
        return None
    scalars = [kind for kind in allowed if kind in _SCALARS]
    if not scalars or len(scalars) != len([kind for kind in allowed if kind is not type(None)]):
        return None
    for kind in scalars:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind in (bool, str) and isinstance(value, kind):
            return None
    return f"expected {' or '.join(_SCALARS[kind] for kind in scalars)}, got {value!r}"


#: A finite decimal number, exponent allowed (what YAML 1.2 would read as a float; not ``inf`` or ``nan``).
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _yaml_float(annotation: Any, value: Any) -> Any:
    """A number field's value written ``1e-3``: PyYAML (YAML 1.1) reads a float without a dot as a string.

    Where the field takes a float and no string, such a string becomes the float it spells;
    anything else is left for :func:`_type_problem` to judge.
    """
    allowed = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if isinstance(value, str) and float in allowed and str not in allowed and _DECIMAL.fullmatch(value.strip()):
        return float(value)
    return value


def _as_tuple(value: Any) -> Any:
    """A tuple field's value from a file or ``--set``: ``"a,b"`` -> ``("a", "b")``, a scalar -> a 1-tuple."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (int, float)):
        return (value,)
    return value


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The config a command asked for: ``--config FILE`` (if given) overridden by its other options."""
    file_values = read_config_file(args.config) if args.config else {}
    return build_config(cls, file_values, vars(args), source=args.config or "options")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=6", "student_model=tiny-bert"]`` -> ``{"epochs": 6, "student_model": "tiny-bert"}``.

    Values are read as YAML scalars (numbers, booleans, lists); anything else stays a string.
    """
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError("overrides", item, "expected KEY=VALUE")
        values[key] = yaml.safe_load(raw) if raw else ""
    return values
