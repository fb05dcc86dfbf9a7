"""One restartable Ray worker that runs engine steps (:func:`kd_core.engine.execute.execute`) on one device.

A worker holds no model between calls: every step starts from what is on disk (a base
model or a finished step's output) and ends with its result on disk. The workspace comes
with each call as an object reference that the driver holds for the whole job, so a worker
that Ray restarts (``max_restarts=2``) gets it again when the call is retried, and the
retried step resumes from its last checkpoint. Calls are retried for as long as the worker
can be restarted (``max_task_retries=-1``): a lost node makes its actor unreachable for a
while before Ray declares it dead and restarts it elsewhere, and each attempt in that window
fails; a fixed retry count would be spent there. Retries stay bounded by the restarts: a
step that kills its worker every time ends after three deaths. Nothing is
passed to the constructor through the object store (a restarted actor could not fetch it
again, ray-project/ray#53727); a worker, restarted or not, first sets the job's credentials in
its environment (:func:`cluster.secrets.receive`).

Importing this module loads Ray only: torch and the data libraries load when a worker starts,
MLflow with the first step that logs to a run, and each step kind's code when a step of that
kind runs (:mod:`kd_core.engine.execute`), so the driver that creates workers and a worker
whose steps need less pay for none of the rest.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import ray

from cluster.runtime import Placement, device_for_actor
from cluster.secrets import receive
from kd_core.engine.execute import execute
from kd_core.engine.steps import Result, Step
from kd_core.io.run_store import clear_staging

if TYPE_CHECKING:
    from cluster.tracking import RunRef
    from kd_core.engine.workspace import Workspace


class StepWorker:
    """Runs steps (module doc). Create it with :func:`create_worker`."""

    def __init__(self, torch_threads: int) -> None:
        import datasets
        import torch
        from transformers.utils import logging as hf_logging

        receive()  # the job's credentials, before anything touches MLflow or the store
        torch.set_num_threads(torch_threads)
        hf_logging.disable_progress_bar()
        datasets.disable_progress_bars()  # the driver prints progress per stage (cluster.progress)
        self.device = device_for_actor()

    def close(self) -> None:
        """Remove this worker's local copies of a URI run directory (:func:`kd_core.io.run_store.clear_staging`)."""
        clear_staging()

    def info(self) -> dict[str, Any]:
        import torch

        return {"pid": os.getpid(), "device": self.device, "threads": torch.get_num_threads(),
                "node": ray.util.get_node_ip_address()}

    def run(self, step: Step, ws: Workspace, run: RunRef | None = None, threads: int | None = None) -> Result:
        """Execute ``step`` (with ``threads`` torch threads if given); training metrics go to the MLflow run ``run``."""
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        tracker = None
        if run is not None:
            from cluster.tracking import Tracker

            tracker = Tracker(run.tracking_uri)

        def callbacks_for(_: Step) -> list:
            return [tracker.metrics_callback(run)] if tracker is not None and run is not None else []

        return execute(step, ws, device=self.device, callbacks_for=callbacks_for)


def create_worker(placement: Placement) -> ray.actor.ActorHandle:
    """Start a :class:`StepWorker` with ``placement``'s resources; restartable twice, calls retried while it can be
    (module doc)."""
    remote = ray.remote(max_restarts=2, max_task_retries=-1)(StepWorker)
    return remote.options(**placement.actor_options()).remote(placement.torch_threads)
