"""A2D on Ray: an ensemble of readers distilled into one student (``python jobs/a2d.py --help``).

Thin entry point: parse the config file and options, validate them and the data before any
cluster work, run :func:`cluster.a2d.run_a2d`, print the summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

from cluster.a2d import A2DJobConfig, check_inputs, run_a2d  # noqa: E402
from kd_core.cli import print_summary, run_cli  # noqa: E402
from kd_core.config_files import config_from_args  # noqa: E402
from kd_core.distill import add_distillation_options  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python jobs/a2d.py",
        description="Attention-Guided Answer Distillation (Hu et al. 2018) on Ray: N ensemble members train and "
        "read the data concurrently on actors, their merged knowledge trains one student (on Ray Train with --student-workers > 1), "
        "everything is tracked in MLflow.",
    )
    add_distillation_options(p)
    p.add_argument("--members", type=int, help="ensemble size N (paper: 12; default 2)")
    p.add_argument("--eval", action="append", help="extra SQuAD-format evaluation file (repeatable)")
    p.add_argument("--student-workers", type=int, help="data-parallel workers for the student (default 1: one actor; more: Ray Train)")
    p.add_argument("--max-concurrency", type=int, help="at most this many actors work at once (1 = one after another)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--experiment", help="MLflow experiment name (default a2d)")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS or a new local cluster)")
    return p


def format_summary(summary: dict) -> str:
    lines = [f"{'model':<16} {'dev F1':>7}"]
    lines += [f"{f'member {i}':<16} {f1:>7.2f}" for i, f1 in enumerate(summary["members_f1"])]
    lines += [f"{'ensemble':<16} {summary['ensemble_f1']:>7.2f}", f"{'student':<16} {summary['student_f1']:>7.2f}"]
    for name, scores in summary["eval"].items():
        lines.append(f"{name}: ensemble {scores['ensemble']:.2f}, student {scores['student']:.2f}")
    table = summary["speed_table"]
    lines.append(f"inference over dev: ensemble {table['ensemble']['infer_s']:.2f} s "
                 f"({table['ensemble']['parameters']:,} params), student {table['student']['infer_s']:.2f} s "
                 f"({table['student']['parameters']:,} params), speedup {table['speedup']:.1f}x")
    if summary["knowledge_bytes_per_feature"] is not None:
        lines.append(f"knowledge: {summary['knowledge_bytes_per_feature']:.0f} bytes per feature")
    lines.append(f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}")
    lines.append(f"run dir: {summary['run_dir']} ({summary['seconds']} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = config_from_args(A2DJobConfig, args)
    if args.check:
        check_inputs(config)
        print("ok: options and data are valid")
        return 0
    summary = run_a2d(config, address=args.address)
    print_summary(summary, format_summary(summary), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
