"""Shared command-line behaviour: library errors become one line on stderr and exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

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
