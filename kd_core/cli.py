"""Shared command-line behaviour: library errors become one line on stderr and exit status 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import datasets
from transformers.utils import logging as hf_logging

from kd_core.errors import KDError

EXIT_BAD_INPUT = 2


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a :class:`KDError` prints ``error: <source>: <where>: <what>`` and returns 2."""
    try:
        code = main(argv)
    except KDError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return int(code or 0)


def quiet_progress(quiet: bool) -> None:
    """With ``quiet``, no progress bars from this process's data preparation (``datasets``, ``transformers``)."""
    if quiet:
        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()


def print_summary(summary: dict[str, Any], table: str, as_json: bool) -> None:
    """Print the human-readable table; with ``as_json`` also the summary as one JSON line, last."""
    print(table)
    if as_json:
        print(json.dumps(summary))
