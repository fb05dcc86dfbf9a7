"""Hugging Face ``datasets`` progress bars off for a block of library work (featurising, casting).

``Dataset.map`` draws a bar (``featurize: 100%|...``) on stderr unless ``datasets``' bars are
off. The library featurises in Ray workers and in every pyfunc prediction, where those bars
only interleave into noise (``ray job logs``, a model server's log); a job's driver prints its
own progress per stage instead (:mod:`cluster.progress`). :func:`no_progress_bars` turns the
global switch off for the block and back on after it, only if it was on before, so the
caller's own choice (``--quiet``, ``HF_DATASETS_DISABLE_PROGRESS_BARS``) is kept. Nested and
concurrent blocks (a pyfunc model served from several threads) share one count: bars come
back when the last block ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

_lock = threading.Lock()
_depth = 0
_restore = False


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """``datasets`` progress bars off inside the block (module doc)."""
    global _depth, _restore
    with _lock:
        if _depth == 0:
            _restore = not are_progress_bars_disabled()
            if _restore:
                disable_progress_bars()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _restore:
                enable_progress_bars()
