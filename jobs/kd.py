"""Plain teacher -> student distillation (Hinton et al. 2015) on Ray, for any task (``python jobs/kd.py --help``).

Thin entry point (:class:`cluster.job_cli.Job`): options (generated from the config dataclasses;
a ``--config`` file plus overrides), checked with the data before any cluster work; then the
recipe :func:`kd_core.methods.hinton.hinton_recipe` runs on the job runtime (:mod:`cluster.job`):
its steps on Ray workers, every step a child run in MLflow, resumable with ``--resume``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

from cluster.job_cli import Job  # noqa: E402
from cluster.job_options import JobOptions  # noqa: E402
from kd_core.engine.data_options import DataOptions  # noqa: E402
from kd_core.engine.local import Recipe  # noqa: E402
from kd_core.engine.steps import Result  # noqa: E402
from kd_core.io.options import MethodConfig, option  # noqa: E402
from kd_core.methods.hinton import HintonSettings, format_table, hinton_recipe, summarise  # noqa: E402

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace


@dataclass(frozen=True)
class KDJobConfig(MethodConfig, HintonSettings, DataOptions, JobOptions):
    """Every option of ``jobs/kd.py``: the data, the recipe's hyperparameters and the job's own."""

    run_dir: str = option("runs/kd", "run directory: models, knowledge, results, state (absolute under ray job "
                          "submit)", "job")


class KDJob(Job[KDJobConfig]):
    method = "kd"
    config_class = KDJobConfig
    prog = "python jobs/kd.py"
    description = ("Teacher -> student knowledge distillation (Hinton et al. 2015) for any task on Ray: teacher "
                   "members train at once on workers, their knowledge is collected once, the student and a no-KD "
                   "baseline train at once; everything in MLflow. With no options: the embedded sentiment task, "
                   "tiny models.")

    def prepare(self, config: KDJobConfig) -> Workspace:
        """The task's data read, split and featurised (bad data or options stop here, before any cluster work)."""
        from kd_core.engine.prepare import build_workspace  # datasets, tokenizers: not needed for --help

        return build_workspace(config.data, config.teacher_model, config.student_model, config.run_dir)

    def recipe(self, config: KDJobConfig, ws: Workspace) -> Recipe:
        return hinton_recipe(config.settings)

    def summarise(self, results: dict[str, Result], config: KDJobConfig, ws: Workspace) -> dict[str, Any]:
        summary = summarise(results, config.settings, ws.task.name, ws.task.primary_metric)
        return {**summary, "task_definition": ws.task.describe()}

    def format_table(self, summary: Mapping[str, Any]) -> str:
        return format_table(summary)

    def run_name(self, config: KDJobConfig, ws: Workspace) -> str:
        return f"kd {config.task}"


JOB = KDJob()
parser, run, main = JOB.parser, JOB.run, JOB.main

if __name__ == "__main__":
    sys.exit(JOB.cli())
