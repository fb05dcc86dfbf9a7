"""Run-directory file operations that never leave a half-written file looking finished."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def replace_dir(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` (replacing it) with a rename, so ``target`` is complete or absent."""
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)


def remove_outputs(run_dir: Path, names: Iterable[str]) -> None:
    """Delete the files and folders ``names`` of an earlier run in ``run_dir`` (a new run starts clean)."""
    for name in names:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
