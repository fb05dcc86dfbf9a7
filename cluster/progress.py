"""The driver's progress: a line per step started and finished (its stage k of n, elapsed, where it ran).

Steps start as soon as the steps they read have finished (:func:`kd_core.engine.local.flow`),
so steps of two stages may run at once. Workers print nothing per step (their bars would
interleave into noise in ``ray job logs``); the driver prints, on stderr:

* elsewhere (``ray job logs``, a file), a line when a step starts and one when it ends, no
  carriage returns::

      [imm 0:01:12] stage 4 of 11 | started theta-medicine-1 @ w1 cpu
      [imm 0:01:31] stage 4 of 11 | theta-medicine-1 done in 19.2 s @ w1 cpu | 9 steps done; running phi-law-1 @ w2 cpu

* on a terminal, the finished lines and, below them, one status line rewritten in place as
  steps start and end: ``[imm 0:01:12] stages 4-5 of 11 | 9 steps done | theta-medicine-1 @ w1
  cpu, phi-law-2 @ w2 cpu``.

A resumed job first says how many steps it found finished (``12 step(s) done before``).
``0:01:12`` is the time since the job's progress began (``h:mm:ss``). ``of 11`` is the recipe's
planned number of stages (:func:`kd_core.engine.local.stage_plan`): ``of at most 11`` when
the method may stop early (IMM), left out when the recipe does not know it. A place is
``w<i> <device>``, plus the node's address only on a cluster of more than one alive node
(:func:`worker_place`).

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


def stage_label(stage: int, planned: int | None = None, at_most: bool = False, last: int | None = None) -> str:
    """``stage k of n``, ``stage k of at most n``, ``stage k`` (``n`` unknown, or passed: no false total), or
    ``stages k-m of n`` when steps of stages ``k`` to ``last`` run at once."""
    span = f"stages {stage}-{last}" if last is not None and last != stage else f"stage {stage}"
    if planned is None or (last or stage) > planned:
        return span
    return f"{span} of {'at most ' if at_most else ''}{planned}"


def alive_nodes(nodes: Sequence[Mapping[str, object]]) -> int:
    """How many of ``nodes`` (as ``ray.nodes()`` lists them) are alive."""
    return sum(1 for node in nodes if node.get("Alive"))


def worker_place(index: int, device: str, node: str, nodes: Sequence[Mapping[str, object]]) -> str:
    """Where a worker runs, for progress lines: ``w<index> <device>``, and its node's address when ``nodes``
    (as ``ray.nodes()`` lists them) has more than one alive node (on one machine the address says nothing)."""
    return f"w{index} {device} {node}" if alive_nodes(nodes) > 1 else f"w{index} {device}"


class StepProgress:
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
        self.done = 0
        self._reused: list[str] = []
        self._running: dict[str, tuple[int | None, str, float]] = {}  # name -> (stage, place, start)

    def plan(self, planned: int | None, at_most: bool = False) -> None:
        """The number of stages the job's recipe plans (``at_most``: it may stop before), or None if unknown."""
        self.planned, self.at_most = planned, at_most

    def reused(self, name: str) -> None:
        """Step ``name`` had finished before (a resumed job): said once, before the next step starts."""
        self._reused.append(name)
        self.done += 1

    def step_started(self, name: str, stage: int | None, place: str) -> None:
        """Step ``name`` of ``stage`` runs on ``place`` (a worker, its device and node)."""
        if self.enabled and self._reused:
            self._print(f"{self._prefix()} | {len(self._reused)} step(s) done before: {', '.join(self._reused)}")
        self._reused = []
        self._running[name] = (stage, place, time.monotonic())
        if self.enabled and not self.live:
            self._print(f"{self._prefix(stage)} | started {name} @ {place}")
        self._status()

    def step_finished(self, name: str) -> None:
        """Step ``name`` has finished."""
        stage, place, started = self._running.pop(name)
        self.done += 1
        if not self.enabled:
            return
        line = f"{self._prefix(stage)} | {name} done in {time.monotonic() - started:.1f} s @ {place}"
        if self.live:
            self._print(line)
        else:
            running = ", ".join(f"{other} @ {where}" for other, (_, where, _) in self._running.items())
            self._print(f"{line} | {self.done} steps done" + (f"; running {running}" if running else ""))
        self._status()

    def _status(self) -> None:
        """On a terminal: the running steps, rewritten in place (module doc)."""
        if not (self.enabled and self.live and self._running):
            return
        stages = [stage for stage, _, _ in self._running.values() if stage is not None]
        label = stage_label(min(stages), self.planned, self.at_most, max(stages)) if stages else "running"
        running = ", ".join(f"{name} @ {place}" for name, (_, place, _) in self._running.items())
        self.stream.write(f"\r[{self.method} {clock(time.monotonic() - self.started)}] {label} | {self.done} steps "
                          f"done | {running}\x1b[K")
        self.stream.flush()

    def _prefix(self, stage: int | None = None) -> str:
        label = f" {stage_label(stage, self.planned, self.at_most)}" if stage is not None else ""
        return f"[{self.method} {clock(time.monotonic() - self.started)}]{label}"

    def _print(self, line: str) -> None:
        if self.live:  # over the status line, which the next one writes again
            self.stream.write(f"\r{line}\x1b[K\n")
            self.stream.flush()
        else:
            print(line, file=self.stream, flush=True)
