"""A pool of step workers: independent steps fan out to free workers, results come back in order.

Shutting the pool down (at a job's end, or when a stop or a failure cuts a stage short) lets the
idle workers clean up and kills the busy ones at once: a stop does not wait for a running step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray

from cluster.progress import worker_place
from cluster.runtime import model_placement
from cluster.worker import create_worker
from kd_core.io.errors import KDError
from kd_core.io.stops import reclaim_signals

#: Seconds any single step may take before the job gives up on it (no silent hangs).
STEP_TIMEOUT_S = 24 * 3600.0
#: Seconds a new worker may take to start (e.g. waiting for a node with a free GPU) before the job gives up.
STARTUP_TIMEOUT_S = 3600.0
#: How long shutting down waits for the idle workers to remove their staging folders (a busy one is killed at once).
CLOSE_TIMEOUT_S = 5.0

Call = Callable[[ray.actor.ActorHandle], ray.ObjectRef]


class WorkerPool:
    """``size`` workers, each placed by :func:`~cluster.runtime.model_placement` (one GPU each when there are)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, got {size}")
        self.size = size
        self.busy: list[ray.actor.ActorHandle] = []  # workers with a call running
        self.workers = self._start()

    def _start(self) -> list[ray.actor.ActorHandle]:
        placement = model_placement(self.size, self.size)
        workers = [create_worker(placement) for _ in range(self.size)]
        infos = ray.get([worker.info.remote() for worker in workers], timeout=STARTUP_TIMEOUT_S)
        #: Where each worker is, for progress lines: ``w<index> <device>`` (and its node on a multi-node cluster).
        nodes = ray.nodes()
        self.places = [worker_place(i, info["device"], info["node"], nodes) for i, info in enumerate(infos)]
        return workers

    def threads(self, running: int) -> int:
        """Torch threads for each of ``running`` steps at once: the node's cores shared among them."""
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return max(1, cpus // max(1, min(running, self.size)))

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the workers (freeing their CPUs and GPUs, e.g. for a Ray Train group) and start them again after.

        Ray Train's ``fit`` replaces the SIGINT handler for good: the stop handlers are put back after the block.
        """
        self.shutdown()
        try:
            yield
        finally:
            reclaim_signals()
            self.workers = self._start()

    def run(self, calls: Sequence[Call], timeout_s: float = STEP_TIMEOUT_S,
            on_start: Callable[[int, str], None] | None = None, on_done: Callable[[int], None] | None = None) -> list[Any]:
        """Give each call a free worker (at most one call per worker at once); results in the order of ``calls``.

        ``on_start(i, place)`` and ``on_done(i)`` hear of call ``i`` starting on a worker and finishing.
        A call that fails (after Ray's retries) re-raises here; a library error (:class:`KDError`, e.g. a full
        run directory) re-raises as itself, so the job ends with its one line.
        """
        free = list(self.workers)
        pending: dict[ray.ObjectRef, tuple[int, ray.actor.ActorHandle]] = {}
        results: list[Any] = [None] * len(calls)
        started = 0
        while started < len(calls) or pending:
            while started < len(calls) and free:
                worker = free.pop(0)
                pending[calls[started](worker)] = (started, worker)
                self.busy.append(worker)
                if on_start is not None:
                    on_start(started, self.places[self.workers.index(worker)])
                started += 1
            done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout_s)
            if not done:
                raise TimeoutError(f"no step finished within {timeout_s} s")
            for ref in done:
                index, worker = pending.pop(ref)
                self.busy.remove(worker)
                try:
                    results[index] = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    if isinstance(err.cause, KDError):  # bad input or a full run dir: its one line, not a traceback
                        raise err.cause from None
                    raise
                free.append(worker)
                if on_done is not None:
                    on_done(index)
        return results

    def shutdown(self) -> None:
        """Let every idle worker clean up (its staging folders), then stop them all; a busy one (its step cut
        short by a stop or a failure elsewhere) is killed at once, its call would only queue behind the step."""
        closing = [worker.close.remote() for worker in self.workers if worker not in self.busy]
        ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)  # a dead worker's call just fails
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers, self.busy = [], []
