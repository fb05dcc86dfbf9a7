"""A sweep's options and its preparation: everything checked and loaded before any cluster work.

:class:`SweepConfig` holds the method, the search, ASHA's settings, the teachers' knowledge
and the base job options (fixed settings: a config file's ``job:`` mapping, the method's own
job options on the command line, ``--set``), validated at construction; :func:`prepare`
checks the space and its values against the method's recipe, loads the data and checks
reused knowledge (:class:`Prepared`); :func:`config_from` reads the options from a command
line (:mod:`jobs.sweep`): the sweep's own first, then the rest with the method's settings and
data options, spelt as its job spells them (:func:`job_options`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from cluster.output_paths import job_run_dir
from cluster.tracking import check_tracking_uri
from kd_core.io.config_files import build_config, parse_overrides, read_config_file
from kd_core.io.errors import ConfigError
from kd_core.io.options import add_options, cli_values, option, options_error, part, refuse_renamed
from kd_core.io.run_store import is_uri
from kd_core.io.values import check_finite
from kd_core.methods.registry import METHODS
from kd_core.training.compute import Compute
from tuning.spaces import RECIPE_METRIC, SEARCHES, Param, param_space, parse_space

if TYPE_CHECKING:
    from tuning.recipe_sweep import RecipeSweep


@dataclass(frozen=True)
class SweepConfig(Compute):
    """A sweep: method, search, early stopping, resources, teachers' knowledge, base job options, and how its
    steps use the hardware (:class:`~kd_core.training.compute.Compute`: every teacher step and trial)."""

    method: str = option("a2d", "the method whose recipe is swept", choices=tuple(METHODS))
    search: str = option("random", "random, grid (choices become grid axes) or optuna", choices=SEARCHES)
    num_samples: int | None = option(None, "trials (grid: repeats of the grid); default: the method's (8; 4 for imm)")
    max_concurrency: int | None = option(None, "trials at once (default: one per CPU, or per GPU when present)")
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
        check_finite(self, "sweep")
        Compute.__post_init__(self)
        if self.method not in METHODS:
            raise ConfigError("sweep", "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.search not in SEARCHES:
            raise ConfigError("sweep", "search", f"must be one of {', '.join(SEARCHES)}, got {self.search!r}")
        checks = {"num_samples": self.num_samples is None or self.num_samples >= 1,
                  "max_concurrency": self.max_concurrency is None or self.max_concurrency >= 1,
                  "grace_period": self.grace_period >= 1, "reduction_factor": self.reduction_factor > 1}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError("sweep", name, f"invalid value {getattr(self, name)!r}")
        check_tracking_uri(self.tracking_uri, "sweep")
        if not self.experiment.strip():
            raise ConfigError("sweep", "experiment", "must not be empty (an MLflow experiment name)")
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
        """The sweep's run directory: an absolute path, or a URI (:mod:`kd_core.io.run_store`)."""
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
    """Validate the job options, the space and its values, load the data, check reused knowledge (the recipe sweep's
    code, Ray's and the workers', is imported here: listing the options needs none of it)."""
    from tuning.recipe_sweep import prepare_recipe_sweep

    space = parse_space(config.method, config.space)
    param_space(space, config.search)  # refuses ranges under grid search, grid axes under Optuna
    recipe = prepare_recipe_sweep(config.method, config.job, config.seed, space, config.root, config.knowledge_from)
    recipe.ws.compute = part(Compute, config)
    return Prepared(config, space, recipe)


#: Settings or data options of a method that are also the sweep's own options (``--method``, ``--seed``): on a sweep's
#: command line they are the sweep's (its seed is the base job's too); imm's ``method`` is given as ``--set method=...``.
SWEEP_OWN = ("method", "seed")


def job_parser(method: str) -> argparse.ArgumentParser:
    """The method's settings and data options as its job spells them (no job-only options such as ``--run-dir``)."""
    spec = METHODS[method]
    parser = argparse.ArgumentParser(prog=f"python jobs/sweep.py --method {method}", add_help=False,
                                     allow_abbrev=False, exit_on_error=False)
    add_options(parser, spec.settings, skip=SWEEP_OWN)
    add_options(parser, spec.data, skip=(*SWEEP_OWN, *(f.name for f in fields(spec.settings))))
    return parser


def job_options(method: str, argv: list[str]) -> dict[str, Any]:
    """The fixed settings given as the method's job options (``["--epochs", "2"]`` -> ``{"epochs": 2.0}``)."""
    if not argv:
        return {}
    if method not in METHODS:
        raise ConfigError("sweep", "--method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    spec = METHODS[method]
    try:
        args, rest = job_parser(method).parse_known_args(argv)
    except argparse.ArgumentError as err:
        raise ConfigError("sweep", err.argument_name or "options", err.message) from err
    refuse_renamed(rest, "sweep")
    if rest:
        raise ConfigError("sweep", rest[0], f"not an option of the sweep, nor a setting or data option of the "
                          f"{method} job (python jobs/{method}.py --help)")
    return {**cli_values(spec.data, args), **cli_values(spec.settings, args)}


def config_from(args: argparse.Namespace) -> SweepConfig:
    """The sweep's options: the config file (with its ``space:`` and ``job:``), the command line over it.

    The fixed settings are the file's ``job:`` mapping, overridden by ``--set KEY=VALUE`` and by
    the method's own job options left over from the sweep's parse (``args.job_argv``).
    """
    values = read_config_file(args.config) if args.config else {}
    method = args.method or values.get("method", SweepConfig.method)
    job = {**values.pop("job", {}), **parse_overrides(args.set), **job_options(method, getattr(args, "job_argv", []))}
    try:
        return build_config(SweepConfig, {**values, "job": job}, cli_values(SweepConfig, args),
                            args.config or "options")
    except ConfigError as err:
        raise options_error(err, SweepConfig) from err
