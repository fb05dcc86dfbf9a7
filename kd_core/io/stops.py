"""Clean stops: SIGTERM and SIGINT become an exception in the main thread, so every clean-up runs.

SIGTERM (what ``timeout``, ``ray job stop`` and Kubernetes send) and SIGINT (Ctrl-C) raise
:class:`Stopped` in the main thread while :func:`stops_as_exceptions` is active (the command
line, :func:`kd_core.io.cli.run_cli`). Every ``finally`` and context manager on the way out then
runs: the job's workers are stopped, its MLflow runs are marked KILLED, the Ray cluster it
started is shut down. The command line prints one line, ``stopped: SIGTERM; <what to do
next>``, and exits with ``128 + signal``: 143 for SIGTERM, 130 for SIGINT.

:class:`Stopped` is a ``KeyboardInterrupt``: ``ray.get`` and ``ray.wait`` check for signals
while they block and let only a ``KeyboardInterrupt`` out of a handler (any other exception
ends in ``SystemError: ... returned a result with an exception set``). They raise a fresh
``KeyboardInterrupt`` in its place, so code that catches one turns it back into the stop with
:func:`stopped`, which knows the signal that arrived.

A second signal while the first one's clean-up runs ends the process at once (``os._exit``,
the same status), with a line saying the clean-up was cut short.

Libraries install their own handlers over these: ``ray.init`` sets a SIGTERM handler
(``sys.exit(15)``) and its native core worker then installs a failure handler over it, which
prints a stack dump on SIGTERM and aborts the process about 3 s later (status 134, whatever the
clean-up was doing); Ray Tune and Ray Train replace SIGINT with their own graceful interrupts.
Code that calls such a library calls :func:`reclaim_signals` afterwards, which puts this
module's handler back (outside :func:`stops_as_exceptions`, e.g. a job run from a test, it does
nothing).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals that stop a command cleanly.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGINT) arrived; a ``KeyboardInterrupt`` (module doc), so ``except Exception`` does
    not swallow it.

    ``then`` says what the user can do next (e.g. the ``--resume`` command); code that knows it sets it on the
    way out.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.then: str | None = None

    @property
    def name(self) -> str:
        """The signal's name, e.g. ``SIGTERM``."""
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """``128 + signal``, as a shell reports a process ended by it: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + self.signum

    def line(self) -> str:
        """The one line the command line prints: ``stopped: SIGTERM`` and what to do next, if known."""
        return f"stopped: {self.name}" + (f"; {self.then}" if self.then else "")


_active = False  # inside stops_as_exceptions
_signal: int | None = None  # the stop signal that arrived: the next one exits at once


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    global _signal
    if _signal is not None:
        name = signal.Signals(signum).name
        os.write(2, f"stopped: {name} again during the clean-up; exiting without finishing it\n".encode())
        os._exit(128 + signum)
    _signal = signum
    raise Stopped(signum)


def stopped(interrupt: KeyboardInterrupt) -> Stopped:
    """The stop ``interrupt`` stands for: itself, or (a ``KeyboardInterrupt`` a library raised in its place, module
    doc) a :class:`Stopped` for the signal that arrived, SIGINT when none did (Ctrl-C outside the handlers)."""
    if isinstance(interrupt, Stopped):
        return interrupt
    return Stopped(_signal if _signal is not None else signal.SIGINT)


def _install() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_stop_signal)


@contextmanager
def stops_as_exceptions() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Stopped` in the main thread (module doc); the handlers
    that were there before come back after it. Off the main thread (where Python allows no handler) it does
    nothing."""
    global _active, _signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _active, _signal = True, None
    _install()
    try:
        yield
    finally:
        _active, _signal = False, None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def reclaim_signals() -> None:
    """Put the stop handlers back after a library installed its own (module doc); a no-op outside
    :func:`stops_as_exceptions` or off the main thread, and once a stop is under way."""
    if _active and _signal is None and threading.current_thread() is threading.main_thread():
        _install()
