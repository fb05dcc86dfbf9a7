"""Different students (Sucik 2020) on Ray: one teacher into smaller BERTs and a BiLSTM (``python jobs/students.py --help``).

Thin entry point (:class:`cluster.job_cli.Job`): options (generated from the config dataclasses;
a ``--config`` file plus overrides), the data, the students' shapes and any reused knowledge
are checked before any cluster work; then the recipe
:func:`kd_core.methods.students.students_recipe` runs on the job runtime (:mod:`cluster.job`):
the teacher trains and its knowledge is collected once, the students (with and without KD)
train at once on Ray workers, every model is scored on test and timed side by side; every
step is a child run in MLflow, the per-student table
(``students_table.json``) and the metric-against-speed-up plot (``plots/students.png``) go on
the parent.
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
from kd_core.engine.data_options import StudentsData  # noqa: E402
from kd_core.engine.local import Recipe  # noqa: E402
from kd_core.engine.steps import Result  # noqa: E402
from kd_core.io.options import MethodConfig, option  # noqa: E402
from kd_core.methods.students import StudentsSettings, format_table, plan_students, students_recipe, summarise  # noqa: E402

if TYPE_CHECKING:
    from cluster.tracking import RunRef, Tracker
    from kd_core.engine.workspace import Workspace

#: The columns of the per-student table on the parent run.
TABLE_COLUMNS = ["parameters", "disk_bytes", "latency_ms_b1", "throughput_b32", "speedup_b1", "speedup_b32", "test",
                 "test_no_kd", "kd_gain"]


@dataclass(frozen=True)
class StudentsJobConfig(MethodConfig, StudentsSettings, StudentsData, JobOptions):
    """Every option of ``jobs/students.py``: the data, the recipe's hyperparameters and the job's own."""

    knowledge_from: str | None = option(None, "reuse the teacher and its knowledge from an earlier students run "
                                        "(RUN_DIR) with the same data and teacher settings", "job")
    run_dir: str = option("runs/students", "run directory: models, knowledge, results, state (absolute under ray "
                          "job submit)", "job")
    experiment: str = option("students", "MLflow experiment name", "job")


class StudentsJob(Job[StudentsJobConfig]):
    method = "students"
    config_class = StudentsJobConfig
    prog = "python jobs/students.py"
    description = ("Different students (Sucik 2020) on Ray: a BERT teacher distilled into a shallower BERT copied "
                   "from its layers, a small BERT from scratch and a BiLSTM with its own tokenizer, with and without "
                   "KD, trained at once on workers; size, speed-up and test metric per student in MLflow. With no "
                   "options: the embedded sentiment task, tiny models. Real data: --tasks glue --data-root "
                   "../shared/data/glue --task sst2.")
    checked = "options, data and students"

    def prepare(self, config: StudentsJobConfig) -> Workspace:
        """The workspace, and the students planned (bad data or student shapes stop here, before any cluster work)."""
        from kd_core.engine.prepare import build_students_workspace  # datasets, tokenizers: not needed for --help

        ws = build_students_workspace(config.data, config.teacher_model, config.run_dir)
        plan_students(config.settings)
        return ws

    def reused(self, config: StudentsJobConfig, ws: Workspace) -> dict[str, Result]:
        """With ``--knowledge-from``: the earlier run's teacher steps, their knowledge checked against ``ws``."""
        if not config.knowledge_from:
            return {}
        from kd_core.methods.registry import METHODS  # the workspace builders: not needed for --help

        return METHODS["students"].reused_teachers(config.settings, ws, config.knowledge_from)

    def recipe(self, config: StudentsJobConfig, ws: Workspace) -> Recipe:
        return students_recipe(config.settings, ws)

    def summarise(self, results: dict[str, Result], config: StudentsJobConfig, ws: Workspace) -> dict[str, Any]:
        summary = summarise(results, config.settings, ws.task.name, ws.task.primary_metric)
        return {**summary, "task_definition": ws.task.describe(),
                "augmented_rows": len(ws.splits["transfer"]) - len(ws.splits["train"]) if "transfer" in ws.splits
                else 0}

    def format_table(self, summary: Mapping[str, Any]) -> str:
        return format_table(summary)

    def run_name(self, config: StudentsJobConfig, ws: Workspace) -> str:
        return f"students {config.task}"

    def log(self, tracker: Tracker, parent: RunRef, summary: dict[str, Any], ws: Workspace) -> None:
        """The per-student table, the metric against speed-up (scatter) and each student's test metric."""
        from cluster.tracking import labelled_scatter

        rows = summary["models"]
        tracker.log_table(parent, {"model": list(rows), **{c: [row.get(c) for row in rows.values()]
                                                           for c in TABLE_COLUMNS}}, "students_table.json")
        metric = summary["primary_metric"]
        tracker.log_figure(parent, labelled_scatter(
            {name: (row["speedup_b32"], row["test"]) for name, row in rows.items()},
            "speed-up over the teacher (batch 32)", f"test {metric}", f"{ws.task.name}: {metric} against speed-up",
            log_x=True), "plots/students.png")
        tracker.log_metrics(parent, {f"test/{name}": row["test"] for name, row in rows.items()}
                            | {f"test_no_kd/{name}": row["test_no_kd"] for name, row in rows.items()
                               if "test_no_kd" in row})


JOB = StudentsJob()
parser, run, main = JOB.parser, JOB.run, JOB.main

if __name__ == "__main__":
    sys.exit(JOB.cli())
