"""IMM on Ray: domain models improve each other over K iterations (``python jobs/imm.py --help``).

Thin entry point (:class:`cluster.job_cli.Job`): options (generated from the config dataclasses;
a ``--config`` file plus overrides), checked with the data before any cluster work; then the recipe
:func:`kd_core.methods.imm.imm_recipe` runs on the job runtime (:mod:`cluster.job`): every
domain's step as soon as the steps it reads are done, on Ray workers (one model per device), every step a child
run in MLflow, resumable with ``--resume``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

import numpy as np  # noqa: E402

from cluster.job_cli import Job  # noqa: E402
from cluster.job_options import JobOptions  # noqa: E402
from kd_core.data.domain_settings import DataSettings  # noqa: E402
from kd_core.engine.local import Recipe  # noqa: E402
from kd_core.engine.steps import Result  # noqa: E402
from kd_core.io.options import MethodConfig, option  # noqa: E402
from kd_core.methods.imm import TOKENIZER, IMMSettings, domain_names, imm_recipe  # noqa: E402
from kd_core.methods.imm_summary import format_table, methods_table, summarise  # noqa: E402

if TYPE_CHECKING:
    from cluster.job import JobRuntime
    from cluster.tracking import RunRef, Tracker
    from kd_core.engine.workspace import Workspace


@dataclass(frozen=True)
class IMMJobConfig(MethodConfig, IMMSettings, DataSettings, JobOptions):
    """Every option of ``jobs/imm.py``: the domains, the algorithm's hyperparameters and the job's own."""

    run_dir: str = option("runs/imm", "run directory: models, knowledge, results, state (absolute under ray job "
                          "submit)", "job")
    experiment: str = option("imm", "MLflow experiment name", "job")
    max_concurrency: int | None = option(None, "workers, i.e. steps running at once (default: one per domain; 1 = "
                                         "one after another)", "job")


class IMMJob(Job[IMMJobConfig]):
    method = "imm"
    config_class = IMMJobConfig
    prog = "python jobs/imm.py"
    description = ("Iterative multi-source mutual knowledge transfer for MRC (Liu et al., IJCAI 2020) on Ray: one "
                   "worker per domain model, each step as soon as the ones it reads are done, every step a child run in "
                   "MLflow. With no options: 3 synthetic domains, tiny models, K=2.")
    resume_help = "continue the run in RUN_DIR with its saved options (others given must equal them)"

    def prepare(self, config: IMMJobConfig) -> Workspace:
        """Every domain read, split, tokenised and featurised (bad data stops here, before any cluster work)."""
        from kd_core.engine.prepare import build_domain_workspace  # datasets, tokenizers: not needed for --help

        return build_domain_workspace(config.data, config.max_answer_length, TOKENIZER, config.run_dir)

    def recipe(self, config: IMMJobConfig, ws: Workspace) -> Recipe:
        return imm_recipe(config.settings, ws)

    def summarise(self, results: dict[str, Result], config: IMMJobConfig, ws: Workspace) -> dict[str, Any]:
        return summarise(results, config.settings, ws)

    def format_table(self, summary: Mapping[str, Any]) -> str:
        return format_table(summary)

    def workers(self, config: IMMJobConfig, ws: Workspace) -> int:
        return config.max_concurrency or len(domain_names(ws))

    def run_name(self, config: IMMJobConfig, ws: Workspace) -> str:
        return " ".join(dict.fromkeys(["imm", config.method])) + " " + ",".join(domain_names(ws))

    def final_models(self, runtime: JobRuntime, results: dict[str, Result],
                     summary: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
        """The model each domain ends with (IMM: the kept one after the last iteration), as ``<method>/<domain>``."""
        return {f"{summary['method']}/{d}": (step, summary["final_models"][d]) for d, step in summary["final_steps"].items()}

    def log(self, tracker: Tracker, parent: RunRef, summary: dict[str, Any], ws: Workspace) -> None:
        """Similarity (JSON, heat map), dev and test F1 per method and domain, extra evaluations, IMM's dev history
        (plot), timings."""
        from cluster.tracking import heatmap, line_chart

        names = list(summary["similarity"])
        matrix = np.array([[summary["similarity"][i][j] for j in names] for i in names])
        tracker.log_dict(parent, {"domains": names, "similarity": matrix.tolist()}, "similarity.json")
        tracker.log_figure(parent, heatmap(matrix, names, "Domain similarity s_ij (row i learns from column j)"),
                           "plots/similarity.png")
        tracker.log_dict(parent, {"splits": summary["splits"], "methods": methods_table(summary)}, "methods_table.json")
        if "iterations_f1" in summary:
            history = summary["iterations_f1"]
            width = max(len(v) for v in history.values())
            average = [float(np.mean([v[min(i, len(v) - 1)] for v in history.values()])) for i in range(width)]
            for i in range(width):
                tracker.log_metrics(parent, {**{f"dev_f1/{n}": v[min(i, len(v) - 1)] for n, v in history.items()},
                                             "average_dev_f1": average[i]}, step=i)
            tracker.log_figure(parent, line_chart({**history, "average": average}, "iteration", "dev F1",
                                                  "IMM: dev F1 per domain per iteration"), "plots/f1_per_iteration.png")
        metrics = {f"{split}/{method}/{name}": value for method, scores in methods_table(summary).items()
                   for split in ("dev", "test") for name, value in scores[split].items()}
        metrics |= {f"eval/{file}/{method}/{domain}": f1 for file, methods in summary["eval"].items()
                    for method, domains in methods.items() for domain, f1 in domains.items()}
        metrics |= {f"eval/{file}/{method}/{domain}/{key}": value for file, methods in summary["eval_adversarial"].items()
                    for method, domains in methods.items() for domain, scores in domains.items()
                    for key, value in scores.items() if value is not None}
        tracker.log_metrics(parent, metrics | {f"time/{k}": v for k, v in summary["timings"].items()})

    def notes(self, summary: Mapping[str, Any]) -> list[str]:
        return ["stopped early: no domain improved in the last iteration"] if summary.get("stopped_early") else []


JOB = IMMJob()
parser, run, main = JOB.parser, JOB.run, JOB.main

if __name__ == "__main__":
    sys.exit(JOB.cli())
