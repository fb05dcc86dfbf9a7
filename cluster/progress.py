"""The driver's progress: one line per stage (steps done / total, elapsed, what is running where).

A job's recipe yields stages: steps that run at once on the workers. Workers print nothing
per step (their bars would interleave into noise in ``ray job logs``); the driver prints the
stage instead, on stderr:

* on a terminal, one line per stage rewritten in place as steps finish::

      [imm 0:01:12] stage 4 | 1/3 steps | theta-medicine-1 @ w1 cpu, theta-finance-1 @ w2 cpu

  and left on screen, finished, when the stage ends;
* elsewhere (``ray job logs``, a file), a line when a stage starts and one when it ends, no
  carriage returns.

``--quiet`` (every job) turns it off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class StageProgress:
    """Progress lines of one job (module doc)."""

    def __init__(self, method: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.method = method
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.stage = 0
        self._steps: list[str] = []
        self._places: dict[str, str] = {}
        self._done: set[str] = set()
        self._stage_started = 0.0

    def stage_started(self, names: Sequence[str], reused: Sequence[str] = ()) -> None:
        """A stage's steps to run begin (``reused``: its steps finished before, e.g. by a resumed job)."""
        self.stage += 1
        self._steps, self._places, self._done = list(names), {}, set()
        self._stage_started = time.monotonic()
        if not self._shown():
            return
        if self.live:
            self._rewrite()
        else:
            again = f"; {len(reused)} done before" if reused else ""
            self._line(f"running {len(names)} step(s): {', '.join(names)}{again}")

    def step_started(self, name: str, place: str) -> None:
        """Step ``name`` runs on ``place`` (a worker, its device and node)."""
        self._places[name] = place
        if self._shown() and self.live:
            self._rewrite()

    def step_finished(self, name: str) -> None:
        self._done.add(name)
        if self._shown() and self.live:
            self._rewrite()

    def stage_finished(self) -> None:
        if not self._shown():
            return
        took = f"{len(self._done)}/{len(self._steps)} steps done in {time.monotonic() - self._stage_started:.1f} s"
        if self.live:
            self.stream.write(f"\r{self._prefix()} | {took}\x1b[K\n")
            self.stream.flush()
        else:
            where = ", ".join(f"{name} @ {self._places.get(name, '?')}" for name in self._steps)
            self._line(f"{took}: {where}")

    def _shown(self) -> bool:
        return self.enabled and bool(self._steps)

    def _prefix(self) -> str:
        return f"[{self.method} {clock(time.monotonic() - self.started)}] stage {self.stage}"

    def _rewrite(self) -> None:
        running = ", ".join(f"{name} @ {place}" for name, place in self._places.items() if name not in self._done)
        self.stream.write(f"\r{self._prefix()} | {len(self._done)}/{len(self._steps)} steps | {running}\x1b[K")
        self.stream.flush()

    def _line(self, text: str) -> None:
        print(f"{self._prefix()} | {text}", file=self.stream, flush=True)
