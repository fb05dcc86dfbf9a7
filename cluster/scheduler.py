"""A pool of step workers: a call goes to a free worker (:meth:`WorkerPool.submit`), finished calls come back as
they finish (:meth:`WorkerPool.wait`), or a list of calls runs and returns in order (:meth:`WorkerPool.run`).

Shutting the pool down (at a job's end, or when a stop or a failure cuts a stage short) lets the
idle workers clean up and kills the busy ones at once: a stop does not wait for a running step.

``WorkerPool(size, wait=False)`` starts the workers and returns while they start (each imports
torch and the data libraries); :meth:`WorkerPool.ready` waits for them, so a job sets up its MLflow
runs in the meantime.
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

    def __init__(self, size: int, wait: bool = True) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one worker, got {size}")
        self.size = size
        self.pending: dict[ray.ObjectRef, ray.actor.ActorHandle] = {}  # running calls and their workers
        #: Where each worker is, for progress lines: ``w<index> <device>`` (and its node on a multi-node cluster).
        self.places: list[str] = []
        self._start()
        if wait:
            self.ready()

    def _start(self) -> None:
        """Create the workers; their starts (:meth:`ready` waits for them) run meanwhile."""
        placement = model_placement(self.size, self.size)
        self.workers = [create_worker(placement) for _ in range(self.size)]
        self._starting: list[ray.ObjectRef] | None = [worker.info.remote() for worker in self.workers]

    def ready(self) -> WorkerPool:
        """Wait until every worker has started (at most :data:`STARTUP_TIMEOUT_S`); the pool itself."""
        if self._starting is not None:
            infos = ray.get(self._starting, timeout=STARTUP_TIMEOUT_S)
            nodes = ray.nodes()
            self.places = [worker_place(i, info["device"], info["node"], nodes) for i, info in enumerate(infos)]
            self._starting = None
        return self

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
            self._start()
            self.ready()

    @property
    def busy(self) -> list[ray.actor.ActorHandle]:
        """The workers with a call running."""
        return list(self.pending.values())

    def idle(self) -> int:
        """How many workers have no call running."""
        return len(self.workers) - len(self.busy)

    def submit(self, call: Call) -> tuple[ray.ObjectRef, str]:
        """Give ``call`` a free worker (there must be one); its reference and the worker's place."""
        worker = next(w for w in self.workers if w not in self.busy)
        ref = call(worker)
        self.pending[ref] = worker
        return ref, self.places[self.workers.index(worker)]

    def wait(self, timeout_s: float = STEP_TIMEOUT_S) -> list[tuple[ray.ObjectRef, Any]]:
        """Block until at least one submitted call finishes; each finished call's reference and result.

        A call that fails (after Ray's retries) re-raises here; a library error (:class:`KDError`, e.g. a full
        run directory) re-raises as itself, so the job ends with its one line.
        """
        done, _ = ray.wait(list(self.pending), num_returns=1, timeout=timeout_s)
        if not done:
            raise TimeoutError(f"no step finished within {timeout_s} s")
        finished = []
        for ref in done:
            del self.pending[ref]
            try:
                finished.append((ref, ray.get(ref)))
            except ray.exceptions.RayTaskError as err:
                if isinstance(err.cause, KDError):  # bad input or a full run dir: its one line, not a traceback
                    raise err.cause from None
                raise
        return finished

    def run(self, calls: Sequence[Call], timeout_s: float = STEP_TIMEOUT_S) -> list[Any]:
        """Run ``calls``, each on a free worker as one frees up (at most one call per worker at once); their
        results in the order of ``calls`` (a failure re-raises as :meth:`wait` says)."""
        index: dict[ray.ObjectRef, int] = {}
        results: list[Any] = [None] * len(calls)
        started = 0
        while started < len(calls) or index:
            while started < len(calls) and self.idle():
                index[self.submit(calls[started])[0]] = started
                started += 1
            for ref, result in self.wait(timeout_s):
                results[index.pop(ref)] = result
        return results

    def shutdown(self) -> None:
        """Let every idle worker clean up (its staging folders), then stop them all; a busy one (its step cut
        short by a stop or a failure elsewhere) is killed at once, its call would only queue behind the step."""
        closing = [worker.close.remote() for worker in self.workers if worker not in self.busy]
        ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT_S)  # a dead worker's call just fails
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers, self.pending = [], {}
