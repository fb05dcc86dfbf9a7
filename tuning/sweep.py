"""Ray Tune sweeps over the distillation hyperparameters (``python jobs/sweep.py --help``).

One sweep is one MLflow parent run and, in order (its options and checks: :mod:`tuning.config`):

1. **Teachers, once.** Every method is a recipe on the engine (:data:`kd_core.methods.registry.METHODS`;
   :mod:`tuning.recipe_sweep`): the steps the recipe marks as teacher steps (A2D's members
   and their knowledge, IMM's iteration 0, plain KD's teacher) run once on workers. With
   ``--knowledge-from RUN_DIR`` (an earlier job or sweep of the method) nothing is run: the
   stored results are reused, their knowledge checked (``teacher_passes = 0``). The teacher
   run is a child of the sweep's parent run, beside the trials.
2. **Trials** (``tune.Tuner`` with a function trainable, :mod:`tuning.trials`): every trial
   continues the recipe from the shared teachers, reporting the validation metric after
   every epoch of the student (A2D, KD) or every iteration (IMM); ASHA stops the weak ones
   early. The search is random, grid or Optuna over the space in :mod:`tuning.spaces`.
   Each trial gets one CPU (one GPU as well when the cluster has GPUs). ``MLflowLoggerCallback``
   writes one child run per trial, nested under the parent (tags ``mlflow.parentRunId`` and
   ``kd_job_id``); runs left RUNNING are closed after ``fit()``.
3. **Results** (:mod:`tuning.results`): the best config and its metric (printed, logged as params/metrics), the
   results table ``trials.csv`` and ``plots/metric_vs_hyperparameters.png`` on the parent, and
   the best trial's model(s) copied to ``<run dir>/best`` in ``save_pretrained`` form. The
   summary names the run directory and tracking URI with their credentials redacted
   (:mod:`kd_core.io.redaction`); Tune gets a URI run directory as a file system and a path.

The run directory (``teachers/``, ``trials/<id>/``, ``ray_results/``, ``best/``) is a path or a
``pyarrow.fs`` URI: every file goes through :mod:`kd_core.io.run_store`, as in a job. As a
job, a sweep holds its run directory's lock while it runs and refuses a directory that holds
another run (a job's or a sweep's) unless ``--overwrite`` (:mod:`cluster.run_dirs`), which
removes an earlier sweep's outputs first.
``pyarrow.fs`` URI: every file goes through :mod:`kd_core.io.run_store`, as in a job.

A stop (SIGTERM, SIGINT: :mod:`kd_core.io.stops`) ends the sweep as it ends a job: Tune's loop
is left at once (Tune's own SIGINT handler, which would end ``fit()`` normally with the trials
unfinished, is turned off with ``TUNE_DISABLE_SIGINT_HANDLER``), the parent run, the teacher run
and every trial's run still RUNNING are marked KILLED, and ``ray.shutdown()`` stops the trials
(and the local cluster the sweep started). A sweep does not resume: it starts over when run again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from cluster.run_dirs import SWEEP_OUTPUTS, claim
from cluster.runtime import announce, connect_stoppable, disconnect
from cluster.secrets import ray_storage
from cluster.tracking import Tracker, resolve_tracking_uri
from kd_core.io.redaction import redact_strings
from kd_core.io.run_files import write_atomic
from kd_core.io.run_store import RunStore, join
from kd_core.io.stops import stopped
from tuning.config import Prepared, SweepConfig, prepare
from tuning.recipe_sweep import run_teachers
from tuning.results import log_results, summarise
from tuning.spaces import param_space
from tuning.trials import RecipeTrialInputs, recipe_trial

TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"


def run_sweep(config: SweepConfig, address: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run the whole sweep (module doc) and return its summary; the run directory is locked until it returns."""
    started = time.perf_counter()
    p = prepare(config)
    store = RunStore(config.root)
    with claim(store, SWEEP_OUTPUTS, fresh=True, overwrite=overwrite, can_resume=False):
        return _sweep(config, p, store, address, started)


def _sweep(config: SweepConfig, p: Prepared, store: RunStore, address: str | None, started: float) -> dict[str, Any]:
    """:func:`run_sweep` in its locked, cleared run directory."""
    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    cluster = connect_stoppable(tracking_uri, address)
    try:
        announce(cluster)
        return _sweep_on_cluster(config, p, store, tracking_uri, started)
    except KeyboardInterrupt as interrupt:  # a stop (kd_core.io.stops): the line says what became of the sweep
        stop = stopped(interrupt)
        stop.then = "its MLflow runs are marked KILLED; a sweep does not resume (run it again to start over)"
        raise stop from None
    finally:
        if cluster is not None:  # connected here: disconnect, stopping the trials and a local cluster started here
            disconnect()


def _sweep_on_cluster(config: SweepConfig, p: Prepared, store: RunStore, tracking_uri: str,
                      started: float) -> dict[str, Any]:
    """The sweep on the connected cluster: the parent run, the teachers, the trials, the results (module doc)."""
    run_dir = store.local_root
    tracker = Tracker(tracking_uri)
    parent = tracker.start_run(config.experiment, f"sweep {config.method}",
                               tags={"kd.method": config.method, "kd.role": "sweep"},
                               params={"method": config.method, "search": config.search, "num_samples": config.samples,
                                       "space": {n: {q.kind: list(q.values)} for n, q in p.space.items()},
                                       "knowledge_from": config.knowledge_from, "job": config.job})
    with tracker.scope(parent):
        resources_total = ray.cluster_resources()
        gpus = resources_total.get("GPU", 0)
        resources = {"CPU": 1.0, "GPU": 1.0} if gpus >= 1 else {"CPU": 1.0}
        capacity = int(gpus) if gpus >= 1 else int(resources_total.get("CPU", 1))
        concurrent = config.max_concurrency or max(1, capacity)
        threads = max(1, int(resources_total.get("CPU", 1)) // concurrent)
        teachers, passes = run_teachers(p.recipe, tracker, parent)
        trainable = tune.with_resources(tune.with_parameters(recipe_trial, inputs=RecipeTrialInputs(
            config.method, p.recipe.settings, p.recipe.ws, teachers, join(store.location, "trials"), threads)), resources)
        # Seeded: the same sweep samples the same configurations (random and grid as well as Optuna).
        search_alg: Any = BasicVariantGenerator(random_state=config.seed)
        if config.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            search_alg = OptunaSearch(seed=config.seed)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(p.space, config.search),
            tune_config=tune.TuneConfig(
                metric=config.metric, mode="max", num_samples=config.samples, max_concurrent_trials=concurrent,
                search_alg=search_alg,
                scheduler=ASHAScheduler(max_t=p.max_t, grace_period=min(config.grace_period, p.max_t),
                                        reduction_factor=config.reduction_factor),
            ),
            run_config=tune.RunConfig(
                name=f"sweep-{config.method}", **ray_storage(join(store.location, "ray_results")),
                callbacks=[MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=config.experiment,
                                                tags={**tracker.source_tags(parent), **parent.child_tags(), "kd.role": "trial",
                                                      "kd.method": config.method})],
            ),
        )
        # Tune's MLflowLoggerCallback sets MLflow's process-global tracking URI (and MLFLOW_TRACKING_URI) in this
        # process: keep that to the sweep, so a caller's later MLflow use and child processes see what they had.
        with _use_tracking_uri(tracking_uri), _no_tune_sigint():
            grid = tuner.fit()
        tracker.finish_children(parent)  # trials whose runs Tune left open
        summary = summarise(config, p, grid, store, passes)
        summary.update(mlflow_run_id=parent.run_id, tracking_uri=tracking_uri, run_dir=store.location,
                       seconds=round(time.perf_counter() - started, 1))
        summary = redact_strings(summary)  # printed, saved and logged: no credentials (kd_core.io.redaction)
        log_results(tracker, parent, p, summary, store)
        write_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
        store.push(run_dir / "summary.json")
    return summary


@contextmanager
def _no_tune_sigint() -> Iterator[None]:
    """Within the block Tune installs no SIGINT handler of its own (``TUNE_DISABLE_SIGINT_HANDLER``): its handler
    ends ``fit()`` as if the sweep were done, with the trials unfinished; SIGINT stops the sweep (module doc)."""
    previous = os.environ.get(TUNE_SIGINT_ENV)
    os.environ[TUNE_SIGINT_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[TUNE_SIGINT_ENV]
        else:
            os.environ[TUNE_SIGINT_ENV] = previous
