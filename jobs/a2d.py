"""A2D on Ray: an ensemble of readers distilled into one student (``python jobs/a2d.py --help``).

Thin entry point (:class:`cluster.job_cli.Job`): options (generated from the config dataclasses;
a ``--config`` file plus overrides), checked with the data before any cluster work; then the
recipe :func:`kd_core.methods.a2d.a2d_recipe` runs on the job runtime (:mod:`cluster.job`):
members at once on Ray workers, every step a child run in MLflow, resumable with ``--resume``.
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
from kd_core.engine.data_options import SpanQAData  # noqa: E402
from kd_core.engine.local import Recipe  # noqa: E402
from kd_core.engine.steps import Result  # noqa: E402
from kd_core.io.options import MethodConfig, option  # noqa: E402
from kd_core.methods.a2d import A2DSettings, a2d_recipe, format_table, summarise, summary_metrics  # noqa: E402

if TYPE_CHECKING:
    from cluster.tracking import RunRef, Tracker
    from kd_core.engine.workspace import Workspace


@dataclass(frozen=True)
class A2DJobConfig(MethodConfig, A2DSettings, SpanQAData, JobOptions):
    """Every option of ``jobs/a2d.py``: the data, the recipe's hyperparameters and the job's own."""

    run_dir: str = option("runs/a2d", "run directory: models, knowledge, results, state (absolute under ray job "
                          "submit)", "job")
    experiment: str = option("a2d", "MLflow experiment name", "job")


class A2DJob(Job[A2DJobConfig]):
    method = "a2d"
    config_class = A2DJobConfig
    prog = "python jobs/a2d.py"
    description = ("Attention-Guided Answer Distillation (Hu et al. 2018) on Ray: N ensemble members train and read "
                   "the data at once on workers, their merged knowledge trains one student (on Ray Train with "
                   "--student-workers > 1); every step is a child run in MLflow.")

    def prepare(self, config: A2DJobConfig) -> Workspace:
        """Every input read and featurised, settings checked (bad data stops here, before any cluster work)."""
        from kd_core.engine.prepare import build_span_workspace  # datasets, tokenizers: not needed for --help

        return build_span_workspace(config.data, config.teacher_model, config.student_model, config.run_dir)

    def recipe(self, config: A2DJobConfig, ws: Workspace) -> Recipe:
        return a2d_recipe(config.settings, ws)

    def summarise(self, results: dict[str, Result], config: A2DJobConfig, ws: Workspace) -> dict[str, Any]:
        return summarise(results, config.settings, ws)

    def format_table(self, summary: Mapping[str, Any]) -> str:
        return format_table(summary)

    def run_name(self, config: A2DJobConfig, ws: Workspace) -> str:
        return f"a2d {Path(config.train).name if config.train else 'synthetic'}"

    def log(self, tracker: Tracker, parent: RunRef, summary: dict[str, Any], ws: Workspace) -> None:
        """Test F1 of the members, the ensemble and the students (bar chart), the speed table, the summary metrics."""
        from cluster.tracking import bar_chart

        test = summary["test"]
        bars = {f"member {i}": f1 for i, f1 in enumerate(test["members_f1"])}
        bars |= {"ensemble": test["ensemble_f1"], "student": test["student_f1"]}
        if "student_no_kd_f1" in test:
            bars["student without kd"] = test["student_no_kd_f1"]
        tracker.log_figure(parent, bar_chart(bars, "Test F1: members, ensemble, students", "F1"), "plots/f1.png")
        tracker.log_dict(parent, summary["speed_table"], "speed_table.json")
        tracker.log_metrics(parent, summary_metrics(summary))


JOB = A2DJob()
parser, run, main = JOB.parser, JOB.run, JOB.main

if __name__ == "__main__":
    sys.exit(JOB.cli())
