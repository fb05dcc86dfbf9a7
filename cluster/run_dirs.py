"""Whose a run directory is: a fresh job or sweep refuses one holding another run, and holds its lock while it runs.

A fresh job (or sweep) starts by removing what an earlier run left in its run directory
(:data:`JOB_OUTPUTS`, :data:`SWEEP_OUTPUTS`). Pointed by mistake at another run's directory,
that would delete the other run's results without a word, so a fresh run refuses a
directory holding any of them, with one line naming the directory and what it holds,
unless ``--overwrite`` says to replace it (:func:`refuse_other_run`; ``--check`` says the
same, before any cluster work). An empty or missing directory is fine.

While it runs, a job holds the run directory's lock (:mod:`kd_core.io.run_lock`), taken by
:func:`claim` before anything is written, so a second job there (fresh or ``--resume``) is
refused; the check for another run is repeated under the lock, so two fresh jobs started at
once cannot both pass it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.model_folders import MODELS_DIR
from cluster.saved_state import STATE_FILE
from kd_core.io.errors import ConfigError
from kd_core.io.file_checks import CorruptFile, parse_json_mapping
from kd_core.io.run_files import writing
from kd_core.io.run_lock import RunLock
from kd_core.io.run_store import RunStore

SUMMARY_FILE = "summary.json"
TABLE_FILE = "summary_table.txt"
#: What a fresh job removes from its run directory first (a resumed job keeps them).
JOB_OUTPUTS = ("steps", MODELS_DIR, STATE_FILE, SUMMARY_FILE, TABLE_FILE)
#: What a fresh sweep removes from its run directory first (:mod:`tuning.sweep`).
SWEEP_OUTPUTS = ("teachers", "trials", "ray_results", "best", "trials.csv", SUMMARY_FILE)
#: Either kind of run's outputs: a directory holding any of them holds a run.
RUN_OUTPUTS = tuple(dict.fromkeys(JOB_OUTPUTS + SWEEP_OUTPUTS))


def held_run(store: RunStore) -> str | None:
    """What run the directory ``store`` holds, e.g. ``"a a2d job (state.json, steps)"``; ``None`` if none."""
    found = store.present(*RUN_OUTPUTS)
    if not found:
        return None
    if STATE_FILE in found or "steps" in found:
        kind = "job"
    elif set(found) & (set(SWEEP_OUTPUTS) - {SUMMARY_FILE}):
        kind = "sweep"
    else:
        kind = "run"
    method = _method(store, STATE_FILE if STATE_FILE in found else SUMMARY_FILE if SUMMARY_FILE in found else None)
    return f"a{' ' + method if method else ''} {kind} ({', '.join(found)})"


def _method(store: RunStore, name: str | None) -> str | None:
    """The method a run's ``state.json`` or ``summary.json`` names (``None`` if it names none or is unreadable)."""
    text = store.read_text(store.local_root / name) if name else None
    try:
        method = parse_json_mapping(text, name).get("method") if text else None
    except CorruptFile:
        return None
    return method if isinstance(method, str) else None


def refuse_other_run(location: str, overwrite: bool, can_resume: bool = True) -> None:
    """Refuse (one :class:`ConfigError` line) a fresh run in ``location`` when it holds another run, unless
    ``overwrite`` (module doc)."""
    store = RunStore(location)
    held = None if overwrite else held_run(store)
    if held is not None:
        resume = ", or --resume it" if can_resume else ", or use another run directory"
        raise ConfigError(store.location, "run directory", f"holds {held}; pass --overwrite to replace it{resume}")


def claim(store: RunStore, outputs: Sequence[str], fresh: bool, overwrite: bool, can_resume: bool = True) -> RunLock:
    """Lock the run directory ``store``; for a ``fresh`` run, refuse another run's directory (unless ``overwrite``)
    and remove the earlier run's ``outputs``. The lock is released again if any of it fails."""
    lock = RunLock(store).acquire()
    try:
        if fresh:
            refuse_other_run(store.location, overwrite, can_resume)
            with writing(store.location, "run directory"):  # unwritable: one line, before any cluster work
                store.remove(*outputs)
                store.local_root.mkdir(parents=True, exist_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock
