"""The driver's progress: one line per stage (stage k of n, steps done / total, elapsed, what is running where).

A job's recipe yields stages: steps that run at once on the workers. Workers print nothing
per step (their bars would interleave into noise in ``ray job logs``); the driver prints the
stage instead, on stderr:

* on a terminal, one line per stage rewritten in place as steps finish::

      [imm 0:01:12] stage 4 of 11 | 1/3 steps | theta-medicine-1 @ w1 cpu, theta-finance-1 @ w2 cpu

  and left on screen, finished, when the stage ends;
* elsewhere (``ray job logs``, a file), a line when a stage starts and one when it ends, no
  carriage returns.

``0:01:12`` is the time since the job's progress began (``h:mm:ss``); a finished stage also
says how long it took. ``of 11`` is the recipe's planned number of stages
(:func:`kd_core.engine.local.stage_plan`): ``of at most 11`` when the method may stop early
(IMM), left out when the recipe does not know it. A place is ``w<i> <device>``, plus the node's
address only on a cluster of more than one alive node (:func:`worker_place`).

``--quiet`` (every job) turns it off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import TextIO


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def stage_label(stage: int, planned: int | None = None, at_most: bool = False) -> str:
    """``stage k of n``, ``stage k of at most n``, or ``stage k`` (``n`` unknown, or passed: no false total)."""
    if planned is None or stage > planned:
        return f"stage {stage}"
    return f"stage {stage} of {'at most ' if at_most else ''}{planned}"


def alive_nodes(nodes: Sequence[Mapping[str, object]]) -> int:
    """How many of ``nodes`` (as ``ray.nodes()`` lists them) are alive."""
    return sum(1 for node in nodes if node.get("Alive"))


def worker_place(index: int, device: str, node: str, nodes: Sequence[Mapping[str, object]]) -> str:
    """Where a worker runs, for progress lines: ``w<index> <device>``, and its node's address when ``nodes``
    (as ``ray.nodes()`` lists them) has more than one alive node (on one machine the address says nothing)."""
    return f"w{index} {device} {node}" if alive_nodes(nodes) > 1 else f"w{index} {device}"


class StageProgress:
    """Progress lines of one job (module doc)."""

    def __init__(self, method: str, enabled: bool = True, stream: TextIO | None = None,
                 planned: int | None = None, at_most: bool = False) -> None:
        self.method = method
        self.planned = planned
        self.at_most = at_most
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.stage = 0
        self._steps: list[str] = []
        self._places: dict[str, str] = {}
        self._done: set[str] = set()
        self._stage_started = 0.0

    def plan(self, planned: int | None, at_most: bool = False) -> None:
        """The number of stages the job's recipe plans (``at_most``: it may stop before), or None if unknown."""
        self.planned, self.at_most = planned, at_most

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
        return f"[{self.method} {clock(time.monotonic() - self.started)}] {stage_label(self.stage, self.planned, self.at_most)}"

    def _rewrite(self) -> None:
        running = ", ".join(f"{name} @ {place}" for name, place in self._places.items() if name not in self._done)
        self.stream.write(f"\r{self._prefix()} | {len(self._done)}/{len(self._steps)} steps | {running}\x1b[K")
        self.stream.flush()

    def _line(self, text: str) -> None:
        print(f"{self._prefix()} | {text}", file=self.stream, flush=True)
