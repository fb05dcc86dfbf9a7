"""Ray Tune sweep of any method's distillation hyperparameters (``python jobs/sweep.py --help``).

Thin entry point (:class:`cluster.job_cli.RayCommand`): the sweep's options (a ``--config``
file with its ``space:`` and ``job:`` mappings; on the command line the sweep's own options, then
the method's job options as fixed settings, e.g. ``--method a2d --epochs 2 --members 3``, and
``--set KEY=VALUE``; :mod:`tuning.config`) are checked with the space and the data before
any cluster work; then :func:`tuning.sweep.run_sweep` runs the recipe's teacher steps once and
the trials on Ray Tune, every trial a child run in MLflow. A run directory holding another run
(a job's or a sweep's) is refused, also by ``--check``, unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script and under `ray job submit`

from cluster.job_cli import RayCommand  # noqa: E402
from cluster.run_dirs import refuse_other_run  # noqa: E402
from tuning.config import Prepared, SweepConfig, config_from, prepare  # noqa: E402


class Sweep(RayCommand[SweepConfig]):
    config_class = SweepConfig
    prog = "python jobs/sweep.py"
    description = ("Ray Tune sweep of any method's distillation hyperparameters: the recipe's teacher steps run "
                   "once, every trial continues the recipe from them, ASHA stops weak trials, MLflow nests one run "
                   "per trial.")
    checked = "options, search space and data"
    config_help = "YAML or JSON file with sweep options, a 'space:' and a 'job:' mapping"
    check_help = "validate options, space and data, then exit"
    skip = ("space", "job")
    epilog = ("Fixed settings: any other option is a setting or data option of the method's job, spelt as that job "
              "spells it (python jobs/<method>.py --help), e.g. python jobs/sweep.py --method a2d --epochs 2 --members "
              "3 --num-samples 4 (A2D sweeps default to --members 1, and no sweep trains the baselines unless told). "
              "--set KEY=VALUE does the same by field name; imm's own --method, which the sweep's --method shadows, is "
              "--set method=NAME.")
    allow_abbrev = False  # a job option is never read as an abbreviated sweep option

    def run_flags(self, parser: argparse.ArgumentParser) -> None:
        super().run_flags(parser)
        parser.add_argument("--overwrite", action="store_true", help="replace the run in the sweep's run directory if "
                            "it holds one (without it such a directory is refused)")

    def extra_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="a fixed setting by its field name, e.g. --set epochs=4 (the same as --epochs 4; "
                            "also imm's method: --set method=mix)")

    def parse(self, argv: list[str] | None) -> argparse.Namespace:
        """The sweep's own options; what is left (``args.job_argv``) is the method's job options (:meth:`config`)."""
        args, rest = self.parser().parse_known_args(argv)
        args.job_argv = rest
        return args

    def config(self, args: argparse.Namespace) -> SweepConfig:
        config = config_from(args)
        refuse_other_run(config.root, args.overwrite, can_resume=False)  # --check says so too
        return config

    def prepare(self, config: SweepConfig) -> Prepared:
        return prepare(config)

    def execute(self, config: SweepConfig, args: argparse.Namespace) -> dict[str, Any]:
        from cluster.runtime import check_address  # Ray, Tune and the workers: imported for a run only
        from tuning.sweep import run_sweep

        check_address(args.address)  # before the run directory is touched
        return run_sweep(config, address=args.address, overwrite=args.overwrite)

    def table(self, summary: dict[str, Any]) -> str:
        from tuning.results import format_summary

        return format_summary(summary)


SWEEP = Sweep()
parser, main = SWEEP.parser, SWEEP.main

if __name__ == "__main__":
    sys.exit(SWEEP.cli())
