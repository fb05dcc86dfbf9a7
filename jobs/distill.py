"""Single-process A2D distillation: the A2D recipe run in this process, without Ray or MLflow.

``python jobs/distill.py`` runs :func:`kd_core.methods.a2d.a2d_recipe` with the engine's
local driver (:func:`kd_core.engine.local.run_locally`): the same steps and results as
``jobs/a2d.py``, executed one after another here. Defaults: one teacher (``--members 1``),
its knowledge written once as Parquet, a student trained with A2D's joint objective
``L = CE + tau^2 KD + gamma ANS + delta ATT``; ``--baseline`` also trains the same student
without knowledge (the baseline). Models are saved in ``save_pretrained`` form under
``<run dir>/steps/<step>/model``; the run directory's earlier steps are removed first. As a Ray job, it
refuses a run directory that holds another run unless ``--overwrite``, and holds its lock while it runs
(:mod:`cluster.run_dirs`; no Ray is imported for it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script from any directory

import numpy as np  # noqa: E402

from cluster.run_dirs import SUMMARY_FILE, claim, refuse_other_run  # noqa: E402
from kd_core.engine.data_options import SpanQAData  # noqa: E402
from kd_core.engine.local import run_locally  # noqa: E402
from kd_core.engine.steps import Result  # noqa: E402
from kd_core.io.cli import Command  # noqa: E402
from kd_core.io.config_files import read_config_file  # noqa: E402
from kd_core.io.errors import ConfigError  # noqa: E402
from kd_core.io.options import MethodConfig, option, part  # noqa: E402
from kd_core.io.run_files import write_atomic  # noqa: E402
from kd_core.knowledge.table import read_knowledge  # noqa: E402
from kd_core.methods.a2d import A2DSettings, a2d_recipe, summarise  # noqa: E402
from kd_core.training.compute import Compute, local_device  # noqa: E402

if TYPE_CHECKING:
    from kd_core.engine.workspace import Workspace

#: What a fresh distillation removes from its run directory first.
DISTILL_OUTPUTS = ("steps", SUMMARY_FILE)

#: Settings a single process has no use for (no data-parallel workers here).
NOT_HERE = ("student_workers",)


@dataclass(frozen=True)
class DistillConfig(MethodConfig, A2DSettings, SpanQAData, Compute):
    """Every option of ``python jobs/distill.py``: the A2D settings, the data and the compute settings (validated)."""

    members: int = option(1, "teacher ensemble size N", "model")
    baseline: bool = option(False, "also train the student without knowledge (student-no-kd)", "model")
    run_dir: str = option("runs/distill", "where knowledge, models and the summary go", "job")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.student_workers != 1:
            raise ConfigError("distill", "student_workers", "one process trains on one worker; use jobs/a2d.py")


#: Options of the Ray job (jobs/a2d.py) that a single-process distillation has no use for.
JOB_ONLY = ("run_dir", "experiment", "tracking_uri", "max_concurrency", "register_as")


def values_from_job_config(config_file: str | None, overrides: dict[str, Any],
                           defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keys of a ``jobs/a2d.py`` config file (if any) with ``overrides`` on top, as options of this command:
    the Ray job's own options (:data:`JOB_ONLY`) dropped; ``defaults`` under both."""
    values = {**(defaults or {}), **(read_config_file(config_file) if config_file else {}), **overrides}
    return {key: value for key, value in values.items() if key not in JOB_ONLY}


def workspace(config: DistillConfig) -> Workspace:
    """Data read, split, tokenised (bad data or options raise here; datasets and the tokenizers load here, not for
    ``--help``)."""
    from kd_core.engine.prepare import build_span_workspace

    ws = build_span_workspace(config.data, config.teacher_model, config.student_model, config.run_dir)
    ws.compute = part(Compute, config)
    return ws


def run_distillation(config: DistillConfig, overwrite: bool = False) -> dict[str, Any]:
    """Run the recipe here (module doc); returns the summary."""
    started = time.perf_counter()
    ws = workspace(config)
    # A fresh run: another run's directory is refused unless overwrite, the lock is held to the end and the earlier
    # run's steps are removed (no earlier step is reused).
    with claim(ws.store, DISTILL_OUTPUTS, fresh=True, overwrite=overwrite, can_resume=False):
        results = run_locally(a2d_recipe(config.settings, ws), ws, progress=True, device=local_device())
        summary = describe(results, config, ws)
        summary.update(run_dir=ws.store.location, seconds=round(time.perf_counter() - started, 1))
        write_atomic(ws.run_dir / SUMMARY_FILE, json.dumps(summary, indent=1))
        ws.store.push(ws.run_dir / SUMMARY_FILE)
    return summary


def describe(results: dict[str, Result], config: DistillConfig, ws: Workspace) -> dict[str, Any]:
    """The A2D summary plus the teacher's and students' EM, parameters, data sizes and the confusing-answer share."""
    summary = summarise(results, config.settings, ws)
    ensemble, student = results["eval-ensemble-dev"], results["eval-student-dev"]
    summary.update(teacher_f1=ensemble["scores"]["f1"], teacher_em=ensemble["scores"]["exact_match"],
                   teacher_parameters=ensemble["parameters"], student_em=student["scores"]["exact_match"],
                   student_parameters=student["parameters"], train_examples=len(ws.examples("train")),
                   dev_examples=len(ws.examples("dev")), test_examples=len(ws.examples("test")),
                   train_features=len(ws.features("teacher", "train")[0]))
    if "knowledge" in results:
        table = read_knowledge(ws.local(ws.resolve(results["knowledge"]["path"])))
        confusing = table.column("confusing_start").to_numpy()
        summary["confusing_answer_share"] = float(np.mean(confusing >= 0))
    if config.baseline:
        summary["no_kd_student_em"] = results["student-no-kd"]["scores"]["dev"]["exact_match"]
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable table of the run."""
    test = summary["test"]
    rows = [("teacher", summary["teacher_f1"], test["ensemble_f1"], summary["teacher_parameters"]),
            ("student", summary["student_f1"], test["student_f1"], summary["student_parameters"])]
    if "student_no_kd_f1" in summary:
        rows.append(("student without kd", summary["student_no_kd_f1"], test["student_no_kd_f1"],
                     summary["student_parameters"]))
    lines = [f"{'model':<20} {'dev F1':>7} {'test F1':>8} {'params':>9}"]
    lines += [f"{name:<20} {dev:>7.2f} {reported:>8.2f} {params:>9,}" for name, dev, reported, params in rows]
    if "confusing_answer_share" in summary:
        lines.append(f"knowledge: {summary['knowledge_bytes_per_feature']:.0f} bytes/feature, "
                     f"{100 * summary['confusing_answer_share']:.0f}% of features have a confusing answer")
    lines.append(f"run dir: {summary['run_dir']} ({summary['seconds']} s)")
    return "\n".join(lines)


class Distill(Command[DistillConfig]):
    config_class = DistillConfig
    prog = "python jobs/distill.py"
    description = ("Single-process A2D distillation (teacher -> knowledge -> student) on one machine: the A2D recipe "
                   "without Ray or MLflow.")
    skip = NOT_HERE

    def prepare(self, config: DistillConfig) -> Workspace:
        return workspace(config)

    def run_flags(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir if it holds one "
                            "(without it such a directory is refused)")

    def config(self, args: argparse.Namespace) -> DistillConfig:
        config = super().config(args)
        refuse_other_run(config.run_dir, args.overwrite, can_resume=False)  # --check says so too
        return config

    def execute(self, config: DistillConfig, args: argparse.Namespace) -> dict[str, Any]:
        return run_distillation(config, overwrite=args.overwrite)

    def table(self, summary: dict[str, Any]) -> str:
        return format_summary(summary)


DISTILL = Distill()
parser, main = DISTILL.parser, DISTILL.main

if __name__ == "__main__":
    sys.exit(DISTILL.cli())
