"""MT-DNN knowledge distillation (Liu et al. 2019) on Ray (``python jobs/mtdnn.py --help``).

Thin entry point (:class:`cluster.job_cli.Job`): options (generated from the config dataclasses;
a ``--config`` file plus overrides) and the task definitions are checked with the data before
any cluster work; then the recipe :func:`kd_core.methods.mtdnn.mtdnn_recipe` runs on the job
runtime (:mod:`cluster.job`): every task's ensemble members train at once on Ray workers, their
knowledge is collected once, the multi-task student and its baselines train at once; every
step is a child run in MLflow, the per-task table and a grouped bar chart go on the parent.
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
from kd_core.engine.data_options import MultiTaskData  # noqa: E402
from kd_core.engine.local import Recipe  # noqa: E402
from kd_core.engine.steps import Result  # noqa: E402
from kd_core.io.options import MethodConfig, option  # noqa: E402
from kd_core.methods.mtdnn import MTDNNSettings, format_table, mtdnn_recipe, summarise  # noqa: E402

if TYPE_CHECKING:
    from cluster.tracking import RunRef, Tracker
    from kd_core.engine.workspace import Workspace

TABLE_LABELS = {"single": "single task", "vanilla_mt": "vanilla MT", "mt_kd": "MT-KD", "vanilla_mt_ft": "vanilla MT+ft",
                "mt_kd_ft": "MT-KD+ft", "ensemble": "teacher ensemble"}


@dataclass(frozen=True)
class MTDNNJobConfig(MethodConfig, MTDNNSettings, MultiTaskData, JobOptions):
    """Every option of ``jobs/mtdnn.py``: the tasks, the recipe's hyperparameters and the job's own."""

    run_dir: str = option("runs/mtdnn", "run directory: models, knowledge, results, state (absolute under ray job "
                          "submit)", "job")
    experiment: str = option("mtdnn", "MLflow experiment name", "job")


class MTDNNJob(Job[MTDNNJobConfig]):
    method = "mtdnn"
    config_class = MTDNNJobConfig
    prog = "python jobs/mtdnn.py"
    description = ("MT-DNN knowledge distillation (Liu et al. 2019) on Ray: per-task teacher ensembles train at once "
                   "on workers, their averaged soft targets teach one multi-task student (shared encoder, a head per "
                   "task); the vanilla multi-task and single-task baselines train alongside. With no options: "
                   "embedded synthetic tasks, tiny models. Real GLUE: --tasks glue --data-root ../shared/data/glue.")
    checked = "options, task definitions and data"

    def prepare(self, config: MTDNNJobConfig) -> Workspace:
        """Task definitions and every data file read and featurised (bad input stops here, before any cluster work)."""
        from kd_core.engine.prepare import build_multitask_workspace  # datasets, tokenizers: not needed for --help

        return build_multitask_workspace(config.data, config.teacher_model, config.student_model, config.run_dir)

    def recipe(self, config: MTDNNJobConfig, ws: Workspace) -> Recipe:
        return mtdnn_recipe(config.settings, ws)

    def summarise(self, results: dict[str, Result], config: MTDNNJobConfig, ws: Workspace) -> dict[str, Any]:
        return {**summarise(results, config.settings, ws), "task_definitions": ws.task.describe()}

    def format_table(self, summary: Mapping[str, Any]) -> str:
        return format_table(summary)

    def run_name(self, config: MTDNNJobConfig, ws: Workspace) -> str:
        return f"mtdnn {config.tasks}"

    def tags(self, config: MTDNNJobConfig, ws: Workspace) -> dict[str, str]:
        return {"kd.task": ws.task.name, "kd.teacher_tasks": ",".join(ws.task.describe()["with_teacher"])}

    def log(self, tracker: Tracker, parent: RunRef, summary: dict[str, Any], ws: Workspace) -> None:
        """Test score per task and model (grouped bar chart), the per-task table, the average test scores."""
        from cluster.tracking import grouped_bar_chart

        groups = {name: {TABLE_LABELS[label]: value for label, value in row["test"].items()}
                  for name, row in summary["tasks"].items()}
        tracker.log_figure(parent, grouped_bar_chart(groups, "Test score per task (each task's primary metric)",
                                                     "score"), "plots/tasks.png")
        tracker.log_dict(parent, summary["tasks"], "per_task_table.json")
        tracker.log_metrics(parent, {f"test_average/{label}": value for label, value in summary["average_test"].items()})


JOB = MTDNNJob()
parser, run, main = JOB.parser, JOB.run, JOB.main

if __name__ == "__main__":
    sys.exit(JOB.cli())
