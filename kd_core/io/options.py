"""Command-line options generated from config dataclasses: one field is one option.

Each field of a (frozen) config dataclass becomes ``--field-name`` with the field's type,
default and help (``field(metadata={"help": ...})``); ``metadata={"flag": "--lr"}`` adds an
alias and ``metadata={"group": "data"}`` a help section. Types: ``int``, ``float``, ``str``,
``bool`` (``--x`` sets true; a default-true field gets ``--no-x``), ``X | None``, and
``tuple[str, ...]`` (comma-separated or repeated; with ``split=False`` repeated only). The same names, with ``_``, are the keys
of a YAML/JSON ``--config`` file; the command line overrides the file.

:func:`config_from_cli` builds the config, and a :class:`~kd_core.io.errors.ConfigError` about
a field is re-raised naming the option as the user writes it (``--top-k``, not ``top_k``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

from kd_core.io.config_files import build_config, read_config_file
from kd_core.io.errors import ConfigError

T = TypeVar("T")


def flag(name: str) -> str:
    """``top_k`` -> ``--top-k``."""
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of a field annotation such as ``int | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def add_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """Add one option per field of dataclass ``cls`` (module doc), in field order, grouped by ``group``."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        kind, _ = _base_type(hints[field.name])
        group_name = field.metadata.get("group")
        target = parser if group_name is None else groups.setdefault(group_name, parser.add_argument_group(group_name))
        names = [flag(field.name), *([field.metadata["flag"]] if "flag" in field.metadata else [])]
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = field.metadata.get("help", "")
        if kind is bool:
            if default:
                target.add_argument(f"--no-{field.name.replace('_', '-')}", dest=field.name, action="store_false",
                                    default=None, help=f"turn off: {help_text} (on by default)")
            else:
                target.add_argument(*names, dest=field.name, action="store_true", default=None, help=help_text)
            continue
        shown = f" (default {default})" if default not in (None, "", ()) else ""
        if typing.get_origin(kind) is tuple and not field.metadata.get("split", True):
            target.add_argument(*names, dest=field.name, action="append", metavar="VALUE",
                                help=f"{help_text}{shown}; repeatable")
        elif typing.get_origin(kind) is tuple:
            target.add_argument(*names, dest=field.name, action="append", metavar="NAME[,NAME]",
                                help=f"{help_text}{shown}; comma-separated or repeated")
        else:
            target.add_argument(*names, dest=field.name, type=kind, help=f"{help_text}{shown}")


def cli_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (unset options are left out)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, None)
        if value is None:
            continue
        if isinstance(value, list):  # appended tuple options
            split = field.metadata.get("split", True)
            value = tuple(name for item in value for name in (_names(item) if split else (item,)))
        values[field.name] = value
    return values


def options_error(err: ConfigError, cls: type) -> ConfigError:
    """``err`` with a field name in its ``where`` written as the option (``top_k`` -> ``--top-k``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    if err.where in names:
        return type(err)(err.source, flag(err.where), err.what)
    return err


def file_values_for(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Config-file values as the fields' types want them: a list or a comma-separated string for a tuple field."""
    hints = typing.get_type_hints(cls)
    splits = {f.name: f.metadata.get("split", True) for f in dataclasses.fields(cls)}
    out = dict(values)
    for name, value in values.items():
        kind = _base_type(hints[name])[0] if name in hints else None
        if typing.get_origin(kind) is tuple and isinstance(value, (list, str)):
            if isinstance(value, str):
                out[name] = _names(value) if splits.get(name, True) else (value,)
            else:
                out[name] = tuple(str(v) for v in value)
    return out


def config_from_cli(cls: type[T], args: argparse.Namespace) -> T:
    """``cls`` from ``--config FILE`` (if given) overridden by the options set on the command line."""
    file_values = file_values_for(cls, read_config_file(args.config)) if getattr(args, "config", None) else {}
    try:
        return build_config(cls, file_values, cli_values(cls, args), source=getattr(args, "config", None) or "options")
    except ConfigError as err:
        raise options_error(err, cls) from err


def part(cls: type[T], config: Any) -> T:
    """The ``cls`` part of a config that inherits ``cls``'s fields (e.g. a job's data options)."""
    return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})


class MethodConfig:
    """A config made of parts, declared ``class XConfig(MethodConfig, Settings, Data, *More)`` (a frozen dataclass).

    Its options are the method's settings (the second base), its data options (the third) and
    any further parts (a job's own options, :class:`cluster.job.JobOptions`; the last base's
    options come first in ``--help``, as a dataclass orders fields from the last base to the
    first). The settings and the data are also parts of it (:attr:`settings`, :attr:`data`).
    Each part is validated by its own ``__post_init__``: the data, the settings, then the others.
    """

    def __post_init__(self) -> None:
        settings, data, *more = type(self).__bases__[1:]
        for part_class in (data, settings, *more):
            part_class.__post_init__(self)

    @property
    def settings(self) -> Any:
        """The method's settings (its recipe's dataclass)."""
        return part(type(self).__bases__[1], self)

    @property
    def data(self) -> Any:
        """The data options (what builds the workspace)."""
        return part(type(self).__bases__[2], self)


def option(default: Any, help: str, group: str | None = None, alias: str | None = None, split: bool = True) -> Any:
    """A dataclass field with its command-line help (and optional help group and alias).

    ``split=False``: a tuple field's values are taken whole (they may hold commas themselves).
    """
    metadata: dict[str, Any] = {"help": help}
    if group is not None:
        metadata["group"] = group
    if alias is not None:
        metadata["flag"] = alias
    if not split:
        metadata["split"] = False
    return dataclasses.field(default=default, metadata=metadata)
