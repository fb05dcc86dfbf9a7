"""Fan-out/fan-in of actor calls with a bound on how many run at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray

#: Seconds any single actor call may take before the job gives up on it (no silent hangs).
CALL_TIMEOUT_S = 3600.0


def run_bounded(calls: Sequence[Callable[[], ray.ObjectRef]], max_concurrency: int,
                timeout_s: float = CALL_TIMEOUT_S) -> list[Any]:
    """Start ``calls`` (each returns an ObjectRef) with at most ``max_concurrency`` in flight.

    Results come back in the order of ``calls``; ``max_concurrency = 1`` runs them one after
    another. A call that raises re-raises here (after Ray's own retries).
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    results: list[Any] = [None] * len(calls)
    pending: dict[ray.ObjectRef, int] = {}
    next_call = 0
    while next_call < len(calls) or pending:
        while next_call < len(calls) and len(pending) < max_concurrency:
            pending[calls[next_call]()] = next_call
            next_call += 1
        done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout_s)
        if not done:
            raise TimeoutError(f"no actor call finished within {timeout_s} s")
        for ref in done:
            results[pending.pop(ref)] = ray.get(ref)
    return results
