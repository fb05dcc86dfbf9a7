"""Command-line options generated from config dataclasses: one field is one option.

Each field of a (frozen) config dataclass becomes ``--field-name`` with the field's type,
default and help (``field(metadata={"help": ...})``, or :func:`option`); ``metadata={"flag": "--lr"}`` adds an
alias, ``metadata={"group": "data"}`` a help section and ``choices`` the values listed in ``--help``.
Types: ``int``, ``float``, ``str``,
``bool`` (``--x`` / ``--no-x``; a field named ``no_x`` is ``--no-x`` alone), ``X | None``, and
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

from kd_core.io.config_files import RENAMED, build_config, read_config_file
from kd_core.io.errors import ConfigError
from kd_core.io.values import check_finite

T = TypeVar("T")


def flag(name: str) -> str:
    """``top_k`` -> ``--top-k``."""
    return "--" + name.replace("_", "-")


#: Command-line spellings gone with no config key of their own: old flag -> new flag.
RENAMED_FLAGS = {"--compare": "--baseline", "--no-vanilla": "--no-baseline"}


def renamed_flag(arg: str) -> str | None:
    """The new spelling of a renamed option (``--kd-weight`` -> ``--alpha``, ``--no-vanilla`` -> ``--no-baseline``)."""
    name = arg.split("=", 1)[0]
    if name in RENAMED_FLAGS:
        return RENAMED_FLAGS[name]
    key = name[2:].replace("-", "_") if name.startswith("--") else ""
    return flag(RENAMED[key]) if key in RENAMED else None


def refuse_renamed(argv: list[str], source: str = "options") -> None:
    """A :class:`ConfigError` for the first option of ``argv`` that has been renamed, naming its new name."""
    for arg in argv:
        new = renamed_flag(arg)
        if new:
            raise ConfigError(source, arg.split("=", 1)[0], f"is now {new}")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of a field annotation such as ``int | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def user_value(value: Any) -> str:
    """``value`` as a user writes it on the command line or in a config file: ``0.5``, ``squad,news``, ``none``, ``true``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(user_value(v) for v in value) if value else "none"
    if value == "":
        return "''"
    return str(value)


def choices_of(field: dataclasses.Field, kind: Any) -> tuple[str, ...]:
    """The fixed values a field takes (``option(choices=...)`` or a ``Literal`` type; a tuple's items), or ``()``."""
    if "choices" in field.metadata:
        return tuple(field.metadata["choices"])
    item = typing.get_args(kind)[0] if typing.get_origin(kind) is tuple else kind
    return tuple(typing.get_args(item)) if typing.get_origin(item) is typing.Literal else ()


#: Metavars by what a field holds (its name, or the name's ending), where its type alone says too little.
_NAMED_METAVARS = {"model": "MODEL", "assistant": "MODEL", "train": "FILE", "dev": "FILE", "test": "FILE",
                   "eval": "FILE", "pos_lexicon": "FILE", "experiment": "NAME", "register_as": "NAME"}
_METAVARS = (("_model", "MODEL"), ("_dir", "DIR"), ("_root", "DIR"), ("_from", "RUN_DIR"), ("_uri", "URI"))
_TYPE_METAVARS = {int: "N", float: "X"}


def _metavar(field: dataclasses.Field, kind: Any, choices: tuple[str, ...]) -> str:
    """A readable metavar: the field's own, ``{a,b}`` for choices, ``N`` / ``X`` for numbers, ``MODEL``, ``DIR``..."""
    if "metavar" in field.metadata:
        return str(field.metadata["metavar"])
    if typing.get_origin(kind) is tuple:
        if choices:
            return "{" + ",".join(choices) + "}[,...]"
        item = typing.get_args(kind)[0]
        one = _TYPE_METAVARS.get(item, _NAMED_METAVARS.get(field.name, "NAME"))
        return f"{one}[,{one}...]" if field.metadata.get("split", True) else "VALUE"
    if choices:
        return "{" + ",".join(choices) + "}"
    if kind in _TYPE_METAVARS:
        return _TYPE_METAVARS[kind]
    if field.name in _NAMED_METAVARS:
        return _NAMED_METAVARS[field.name]
    return next((var for end, var in _METAVARS if field.name.endswith(end)), field.name.upper())


def add_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """Add one option per field of dataclass ``cls`` (module doc), in field order, grouped by ``group``.

    Help lists a field's choices (as its metavar, ``{a,b,c}``; the config's own checks refuse
    other values, with one line, also from a config file) and its default as a user writes it
    (:func:`user_value`), unless the help text already says what the default is.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    groups: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        kind, _ = _base_type(hints[field.name])
        group_name = field.metadata.get("group")
        target = parser if group_name is None else groups.setdefault(group_name, parser.add_argument_group(group_name))
        names = [flag(field.name), *([field.metadata["flag"]] if "flag" in field.metadata else [])]
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = field.metadata.get("help", "").replace("%", "%%")
        shown = "" if "default" in help_text.lower() else f" (default: {user_value(default)})"
        if kind is bool:
            if field.name.startswith("no_") and not default:  # --no-kd: no --no-no-kd
                target.add_argument(*names, dest=field.name, action="store_true", default=None,
                                    help=f"{help_text}{shown}")
            else:
                target.add_argument(*names, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                                    help=f"{help_text}{shown}")
            continue
        choices = choices_of(field, kind)
        metavar = _metavar(field, kind, choices)
        if typing.get_origin(kind) is tuple and not field.metadata.get("split", True):
            target.add_argument(*names, dest=field.name, action="append", metavar=metavar,
                                help=f"{help_text}{shown}; repeatable")
        elif typing.get_origin(kind) is tuple:
            target.add_argument(*names, dest=field.name, action="append", metavar=metavar,
                                help=f"{help_text}{shown}; comma-separated or repeated")
        else:
            target.add_argument(*names, dest=field.name, type=kind if kind in (int, float) else str, metavar=metavar,
                                help=f"{help_text}{shown}")


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
    any further parts (a job's own options, :class:`cluster.job_options.JobOptions`; the last base's
    options come first in ``--help``, as a dataclass orders fields from the last base to the
    first). The settings and the data are also parts of it (:attr:`settings`, :attr:`data`).
    Each part is validated by its own ``__post_init__``: the data, the settings, then the others, after
    :func:`~kd_core.io.values.check_finite` has refused any NaN or infinite number.
    """

    def __post_init__(self) -> None:
        check_finite(self, "options")  # before the parts' range checks, which NaN would pass
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


def option(default: Any, help: str, group: str | None = None, alias: str | None = None, split: bool = True,
           choices: Sequence[str] | None = None, metavar: str | None = None) -> Any:
    """A dataclass field with its command-line help (and optional help group and alias).

    ``split=False``: a tuple field's values are taken whole (they may hold commas themselves).
    ``choices``: the values it takes, listed in ``--help`` (the config's ``__post_init__`` checks them).
    ``metavar``: the placeholder ``--help`` shows for its value (default: from its type and name).
    """
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if metavar is not None:
        metadata["metavar"] = metavar
    if group is not None:
        metadata["group"] = group
    if alias is not None:
        metadata["flag"] = alias
    if not split:
        metadata["split"] = False
    return dataclasses.field(default=default, metadata=metadata)
