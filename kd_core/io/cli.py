"""One command-line entry point for every job and CLI: options, ``--check``, ``--json``, the summary, exit codes.

A :class:`Command` is a config dataclass (its fields become the options,
:mod:`kd_core.io.options`; ``--config FILE`` gives them from a YAML/JSON file, the command line
overrides the file), what ``--check`` validates (:meth:`Command.prepare`: everything that
needs no cluster and no training, so bad input stops before any work), what a run does
(:meth:`Command.execute`, returning a summary dict) and how the summary reads
(:meth:`Command.table`). :meth:`Command.main` does the rest, the same way everywhere:

* ``--check``: prepare, print ``ok: <what> are valid``, exit 0;
* otherwise: run, print the table, and with ``--json`` the summary as one JSON line, last;
* a :class:`~kd_core.io.errors.KDError` anywhere (bad options, data, files) prints one line
  ``error: <source>: <where>: <what>`` on stderr and exits with status 2 (:func:`run_cli`);
* SIGTERM or SIGINT (:mod:`kd_core.io.stops`) stops the command cleanly: every clean-up runs,
  one line ``stopped: SIGTERM; <what to do next>`` goes to stderr, and the exit status is
  ``128 + signal`` (143 for SIGTERM, 130 for SIGINT; :func:`run_cli`).

The Ray jobs (``cluster.job_cli``), the sweep and the single-process distillation in ``jobs/``
are its subclasses; ``jobs/evaluate.py`` (the official SQuAD script's two positional files,
no config) shares :func:`run_cli` only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from kd_core.io.errors import KDError
from kd_core.io.options import add_options, config_from_cli, refuse_renamed
from kd_core.io.stops import stopped, stops_as_exceptions

EXIT_BAD_INPUT = 2
C = TypeVar("C")


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`KDError` prints ``error: <source>: <where>: <what>`` and returns 2; a stop
    signal (:class:`~kd_core.io.stops.Stopped`, a ``KeyboardInterrupt``) prints ``stopped: <signal>; <what
    next>`` and returns ``128 + signal`` (module doc)."""
    with stops_as_exceptions():  # a second signal while the line is printed still exits at once
        try:
            code = main(argv)
        except KDError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt as interrupt:  # a stop signal (or a library's KeyboardInterrupt in its place)
            stop = stopped(interrupt)
            print(stop.line(), file=sys.stderr, flush=True)
            return stop.exit_status
    return int(code or 0)


def quiet_progress(quiet: bool) -> None:
    """With ``quiet``, no progress bars from this process's data preparation (``datasets``, ``transformers``; both
    imported only then, so a command's ``--help`` loads neither)."""
    if quiet:
        import datasets
        from transformers.utils import logging as hf_logging

        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()


def print_summary(summary: dict[str, Any], table: str, as_json: bool) -> None:
    """Print the human-readable table; with ``as_json`` also the summary as one JSON line, last."""
    print(table)
    if as_json:
        print(json.dumps(summary))


class Command(Generic[C]):
    """A command line over the config dataclass ``config_class`` (module doc); subclasses say what is their own."""

    prog: ClassVar[str]
    description: ClassVar[str]
    config_class: ClassVar[type]
    #: What ``--check`` validated, as its line says: ``ok: <checked> are valid``.
    checked: ClassVar[str] = "options and data"
    config_help: ClassVar[str] = "YAML or JSON file of options (command-line options override it)"
    check_help: ClassVar[str] = "validate options and data, then exit"
    #: Fields of ``config_class`` that are no option of this command.
    skip: ClassVar[tuple[str, ...]] = ()
    #: Text ``--help`` prints after the options.
    epilog: ClassVar[str | None] = None
    #: Whether an option may be abbreviated (``--num`` for ``--num-samples``).
    allow_abbrev: ClassVar[bool] = True

    # ------------------------------------------------------------------ what a command says of its own

    def prepare(self, config: C) -> Any:
        """Every check that needs no cluster and no training (the data read, the settings planned); its result."""
        raise NotImplementedError

    def execute(self, config: C, args: argparse.Namespace) -> dict[str, Any]:
        """Run the command with ``config`` (``args`` for the flags that are no option); returns its summary."""
        raise NotImplementedError

    def table(self, summary: dict[str, Any]) -> str:
        """The summary as a person reads it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the same everywhere

    def run_flags(self, parser: argparse.ArgumentParser) -> None:
        """Flags of how the command runs (listed after ``--config``; none here)."""

    def extra_flags(self, parser: argparse.ArgumentParser) -> None:
        """Flags listed after ``--json`` (none here)."""

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        """The flags that are no option of the config: ``--config``, the run flags, ``--check``, ``--json``, extras."""
        parser.add_argument("--config", metavar="FILE", help=self.config_help)
        self.run_flags(parser)
        parser.add_argument("--check", action="store_true", help=self.check_help)
        parser.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
        self.extra_flags(parser)

    def parser(self) -> argparse.ArgumentParser:
        """The flags, then one option per field of ``config_class``."""
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description, epilog=self.epilog,
                                         allow_abbrev=self.allow_abbrev)
        self.add_flags(parser)
        add_options(parser, self.config_class, skip=self.skip)
        return parser

    def parse(self, argv: list[str] | None) -> argparse.Namespace:
        """The command line parsed by :meth:`parser`: a renamed option is one line naming its new name, any other
        unknown option argparse's usage error."""
        parser = self.parser()
        args, rest = parser.parse_known_args(argv)
        refuse_renamed(rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args

    def config(self, args: argparse.Namespace) -> C:
        """The config from ``--config`` (if given) overridden by the options set on the command line."""
        return config_from_cli(self.config_class, args)

    def start(self, args: argparse.Namespace) -> None:
        """Called first, with the parsed flags (e.g. to silence progress bars)."""

    def check(self, config: C) -> None:
        """What ``--check`` runs: :meth:`prepare`."""
        self.prepare(config)

    def main(self, argv: list[str] | None = None) -> int:
        """Parse ``argv``; check or run; print the table (and the JSON summary); return the exit status."""
        args = self.parse(argv)
        self.start(args)
        config = self.config(args)
        if args.check:
            self.check(config)
            print(f"ok: {self.checked} are valid")
            return 0
        summary = self.execute(config, args)
        print_summary(summary, self.table(summary), args.json)
        return 0

    def cli(self, argv: list[str] | None = None) -> int:
        """:meth:`main` with library errors as one line and exit status 2 (what ``__main__`` calls)."""
        return run_cli(self.main, argv)
