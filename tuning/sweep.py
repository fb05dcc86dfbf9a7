"""Ray Tune sweeps over the distillation hyperparameters (``python tuning/sweep.py --help``).

One sweep is one MLflow parent run and, in order:

1. **Teachers, once.** Every method is a recipe on the engine (:data:`kd_core.methods.METHODS`;
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
   the best trial's model(s) copied to ``<run dir>/best`` in ``save_pretrained`` form.

The run directory (``teachers/``, ``trials/<id>/``, ``ray_results/``, ``best/``) is a path or a
``pyarrow.fs`` URI: every file goes through :mod:`kd_core.run_store`, as in a job.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script and under `ray job submit`

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.air.integrations.mlflow import MLflowLoggerCallback  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402

from cluster.runtime import connect  # noqa: E402
from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # noqa: E402

from cluster.output_paths import job_run_dir  # noqa: E402
from kd_core.run_store import RunStore, is_uri, join  # noqa: E402
from cluster.tracking import Tracker, check_tracking_uri, resolve_tracking_uri  # noqa: E402
from kd_core.cli import print_summary, run_cli  # noqa: E402
from kd_core.config_files import build_config, parse_overrides, read_config_file  # noqa: E402
from kd_core.errors import ConfigError  # noqa: E402
from kd_core.methods import METHODS  # noqa: E402
from kd_core.options import add_options, cli_values, option, options_error  # noqa: E402
from kd_core.run_files import write_atomic  # noqa: E402
from tuning.recipe_sweep import RecipeSweep, prepare_recipe_sweep, run_teachers  # noqa: E402
from tuning.results import format_summary, log_results, summarise  # noqa: E402
from tuning.spaces import SEARCHES, Param, param_space, parse_space  # noqa: E402
from tuning.trials import RECIPE_METRIC, RecipeTrialInputs, recipe_trial  # noqa: E402

SWEEP_OUTPUTS = ("teachers", "trials", "ray_results", "best", "trials.csv", "summary.json")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: method, search, early stopping, resources, teachers' knowledge, base job options."""

    method: str = option("a2d", "the method whose recipe is swept: a2d, imm, kd, mtdnn or students")
    search: str = option("random", "random, grid (choices become grid axes) or optuna")
    num_samples: int | None = option(None, "trials (grid: repeats of the grid); default: the method's (8; 4 for imm)")
    max_concurrent: int | None = option(None, "trials at once (default: one per CPU, or per GPU when present)")
    grace_period: int = option(1, "ASHA: reports (epochs or iterations) every trial makes")
    reduction_factor: float = option(2.0, "ASHA: keep 1/factor of the trials per rung")
    knowledge_from: str | None = option(None, "reuse the teacher steps of an earlier job or sweep of the method "
                                        "(RUN_DIR) instead of running them")
    space: dict[str, Any] = field(default_factory=dict)  # from the config file's space: mapping
    job: dict[str, Any] = field(default_factory=dict)  # the config file's job: mapping and --set
    run_dir: str | None = option(None, "where teachers, trials and the best model go: a path or a URI such as "
                                 "s3://bucket/sweep (default runs/sweep-<method>)")
    tracking_uri: str | None = option(None, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                      "sqlite:///<cwd>/mlflow.db)")
    experiment: str = option("sweep", "MLflow experiment name")
    seed: int = option(0, "seed of the search and of the base job")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("sweep", "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.search not in SEARCHES:
            raise ConfigError("sweep", "search", f"must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        checks = {"num_samples": self.num_samples is None or self.num_samples >= 1,
                  "max_concurrent": self.max_concurrent is None or self.max_concurrent >= 1,
                  "grace_period": self.grace_period >= 1, "reduction_factor": self.reduction_factor > 1}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError("sweep", name, f"invalid value {getattr(self, name)!r}")
        check_tracking_uri(self.tracking_uri, "sweep")
        if is_uri(self.knowledge_from or ""):
            raise ConfigError("sweep", "knowledge_from", "reused teachers are read from a local or shared-file-system "
                              "path, not a URI")

    @property
    def samples(self) -> int:
        return self.num_samples or METHODS[self.method].samples

    @property
    def metric(self) -> str:
        return RECIPE_METRIC

    @property
    def root(self) -> str:
        """The sweep's run directory: an absolute path, or a URI (:mod:`kd_core.run_store`)."""
        return job_run_dir(self.run_dir or f"runs/sweep-{self.method}", is_default=self.run_dir is None)


@dataclass
class Prepared:
    """A validated sweep: the config, the space and the recipe's sweep; everything before cluster work."""

    config: SweepConfig
    space: dict[str, Param]
    recipe: RecipeSweep

    @property
    def max_t(self) -> int:
        """ASHA's horizon: the most reports any configuration of the space makes."""
        spec, settings = self.recipe.spec, self.recipe.settings
        return max([self.recipe.horizon, *(spec.horizon(replace(settings, **{p.name: v}))
                                           for p in self.space.values() for v in p.values)])

    def horizon(self, trial_config: dict[str, Any]) -> int:
        """Reports a trial makes unless ASHA stops it."""
        return self.recipe.spec.horizon(replace(self.recipe.settings, **trial_config))


def prepare(config: SweepConfig) -> Prepared:
    """Validate the job options, the space and its values, load the data, check reused knowledge."""
    space = parse_space(config.method, config.space)
    param_space(space, config.search)  # refuses ranges under grid search, grid axes under Optuna
    recipe = prepare_recipe_sweep(config.method, config.job, config.seed, space, config.root, config.knowledge_from)
    return Prepared(config, space, recipe)


# ---------------------------------------------------------------------------- the sweep


def run_sweep(config: SweepConfig, address: str | None = None) -> dict[str, Any]:
    """Run the whole sweep (module doc) and return its summary."""
    started = time.perf_counter()
    p = prepare(config)
    store = RunStore(config.root)
    run_dir = store.local_root  # where this process writes: the run dir, or its staging folder
    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    store.remove(*SWEEP_OUTPUTS)
    run_dir.mkdir(parents=True, exist_ok=True)

    connect(tracking_uri, address)
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
        concurrent = config.max_concurrent or max(1, capacity)
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
                name=f"sweep-{config.method}", storage_path=join(store.location, "ray_results"),
                callbacks=[MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=config.experiment,
                                                tags={**parent.child_tags(), "kd.role": "trial",
                                                      "kd.method": config.method})],
            ),
        )
        # Tune's MLflowLoggerCallback sets MLflow's process-global tracking URI (and MLFLOW_TRACKING_URI) in this
        # process: keep that to the sweep, so a caller's later MLflow use and child processes see what they had.
        with _use_tracking_uri(tracking_uri):
            grid = tuner.fit()
        tracker.finish_children(parent)  # trials whose runs Tune left open
        summary = summarise(config, p, grid, store, passes)
        summary.update(mlflow_run_id=parent.run_id, tracking_uri=tracking_uri, run_dir=store.location,
                       seconds=round(time.perf_counter() - started, 1))
        log_results(tracker, parent, p, summary, store)
        write_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
        store.push(run_dir / "summary.json")
    return summary


# ---------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python tuning/sweep.py",
        description="Ray Tune sweep of any method's distillation hyperparameters: the recipe's teacher steps run once, "
        "every trial continues the recipe from them, ASHA stops weak trials, MLflow nests one run per trial.",
    )
    p.add_argument("--config", help="YAML or JSON file with sweep options, a 'space:' and a 'job:' mapping")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a new local cluster)")
    p.add_argument("--check", action="store_true", help="validate options, space and data, then exit")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a base option of the method's job, e.g. --set epochs=4 --set members=2 (A2D sweeps default "
                   "to members=1)")
    add_options(p, SweepConfig, skip=("space", "job"))
    return p


def config_from(args: argparse.Namespace) -> SweepConfig:
    """The sweep's options: the config file (with its ``space:`` and ``job:``), the command line over it."""
    values = read_config_file(args.config) if args.config else {}
    job = {**values.pop("job", {}), **parse_overrides(args.set)}
    try:
        return build_config(SweepConfig, {**values, "job": job}, cli_values(SweepConfig, args),
                            args.config or "options")
    except ConfigError as err:
        raise options_error(err, SweepConfig) from err


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = config_from(args)
    if args.check:
        prepare(config)
        print("ok: options, search space and data are valid")
        return 0
    summary = run_sweep(config, address=args.address)
    print_summary(summary, format_summary(summary), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
