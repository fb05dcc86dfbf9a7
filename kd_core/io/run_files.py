"""Run-directory file operations that never leave a half-written file looking finished.

A write the file system refuses (a full disk, a read-only or unwritable folder, a path
through a file) becomes one :class:`~kd_core.io.errors.StorageError` naming the path, not a
traceback; what was being written is removed, so only finished files keep their final names.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from kd_core.io.errors import StorageError

#: errno values that mean "this place cannot be written", as opposed to a bug or a missing input.
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST,
              errno.EFBIG}
#: How safetensors (Rust) reports the same errors: "I/O error: No space left on device (os error 28)".
_RUST_OS_ERRORS = tuple(f"(os error {code})" for code in sorted(UNWRITABLE))


def storage_problem(err: BaseException) -> str | None:
    """The reason ``err`` is a refused write (one line), or ``None`` if it is something else."""
    if isinstance(err, OSError) and err.errno in UNWRITABLE:
        return err.strerror or str(err)
    if isinstance(err, SafetensorError) and any(code in str(err) for code in _RUST_OS_ERRORS):
        return str(err).strip().splitlines()[0]
    return None


@contextmanager
def writing(path: Path | str, what: str = "write") -> Iterator[None]:
    """Turn a refused write inside the block into a one-line :class:`StorageError` about ``path``."""
    try:
        yield
    except (OSError, SafetensorError) as err:
        reason = storage_problem(err)
        if reason is None:
            raise
        raise StorageError(str(path), what, f"cannot write: {reason}") from err


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place (module doc)."""
    partial = path.with_name(path.name + ".partial")
    with writing(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(text)
            partial.replace(path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def replace_dir(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` (replacing it) with a rename, so ``target`` is complete or absent."""
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)
