"""IMM on Ray: domain models improve each other over K iterations (``python jobs/imm.py --help``).

Thin entry point: parse the config file and options, validate them and the data before any
cluster work, run :func:`cluster.imm.run_imm` (or continue a killed run with ``--resume``),
print the summary table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # importable under `ray job submit` too

from cluster.imm import IMMJobConfig, check_inputs, format_table, resume_config, run_imm  # noqa: E402
from kd_core.cli import print_summary, run_cli  # noqa: E402
from kd_core.config_files import config_from_args  # noqa: E402
from kd_core.errors import ConfigError  # noqa: E402
from kd_core.imm import METHODS  # noqa: E402
from kd_core.options import add_run_flags  # noqa: E402

#: Options that may accompany --resume (they change how the run is watched, not what it computes).
RESUME_OPTIONS = {"resume", "json", "address", "check"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python jobs/imm.py",
        description="Iterative multi-source mutual knowledge transfer for MRC (Liu et al., IJCAI 2020) on Ray: "
        "one actor per domain model, every domain's transfer of an iteration at once, tracked in MLflow. "
        "With no options: 3 synthetic domains, tiny models, K=2.",
    )
    add_run_flags(p, "continue the run in RUN_DIR with its saved options")
    data = p.add_argument_group("data")
    data.add_argument("--domain", action="append", dest="domains", metavar="NAME=TRAIN[,DEV]",
                      help="a domain and its data (SQuAD JSON, MRQA jsonl(.gz) or hf:NAME); repeat for each domain. "
                      "Without DEV, dev is split off TRAIN by context. Default: the embedded synthetic domains")
    data.add_argument("--data-root", help="folder that relative --domain paths are read from")
    data.add_argument("--synthetic-domains", help="comma-separated synthetic domains (default sports,medicine,finance)")
    data.add_argument("--synthetic-per-domain", type=int, help="synthetic questions per domain (default 150)")
    data.add_argument("--max-train-examples", type=int, help="keep at most this many training questions per domain "
                      "(whole contexts)")
    data.add_argument("--max-dev-examples", type=int, help="keep at most this many dev questions per domain")
    data.add_argument("--dev-fraction", type=float, help="share of contexts split off as dev when DEV is absent")
    data.add_argument("--max-length", type=int, help="tokens per window")
    data.add_argument("--doc-stride", type=int, help="overlap between windows, in tokens")
    model = p.add_argument_group("model and algorithm")
    model.add_argument("--model", help="preset (tiny-bert, small-bert), HF id or local path of every domain model")
    model.add_argument("--vocab-size", type=int, help="WordPiece vocabulary trained for preset models")
    model.add_argument("--method", choices=METHODS, help="imm (default) or a baseline: single, mix, ft, mft")
    model.add_argument("--baselines", help="comma-separated baselines to run in the same job, e.g. single,ft")
    model.add_argument("--iterations", "-K", type=int, help="IMM iterations K (default 2; the paper finds 3 enough)")
    model.add_argument("--lambda-schedule", help="weight of the NLL: 'linear:0:1' (default, the paper) or a constant")
    model.add_argument("--phi-init", choices=("model", "theta"),
                       help="phi_i starts from the base model (default) or from theta_i^(k)")
    model.add_argument("--no-similarity", action="store_true", default=None, help="ablation: all s_ij equal")
    model.add_argument("--no-kd1", action="store_true", default=None, help="ablation: phi without the MSE term")
    model.add_argument("--no-kd2", action="store_true", default=None, help="ablation: theta without the MSE term")
    model.add_argument("--epochs", type=float, help="epochs of each single-domain model (default 6)")
    model.add_argument("--transfer-epochs", type=float, help="epochs of phi on the other domains (default: --epochs)")
    model.add_argument("--finetune-epochs", type=float, help="epochs of theta on its own domain (default: --epochs)")
    model.add_argument("--batch-size", type=int)
    model.add_argument("--learning-rate", "--lr", type=float, dest="learning_rate")
    model.add_argument("--max-answer-length", type=int, help="longest answer span, in tokens")
    model.add_argument("--seed", type=int)
    job = p.add_argument_group("job")
    job.add_argument("--run-dir", help="where models, knowledge, checkpoints and results go (default runs/imm); "
                     "use an absolute path under ray job submit")
    job.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    job.add_argument("--experiment", help="MLflow experiment name (default imm)")
    job.add_argument("--max-concurrency", type=int, help="at most this many domain actors work at once "
                     "(default: all; 1 = one after another)")
    return p


def format_summary(summary: dict) -> str:
    lines = [format_table(summary)]
    if summary.get("stopped_early"):
        lines.append("stopped early: no domain improved in the last iteration")
    lines.append(f"MLflow run {summary['mlflow_run_id']} in {summary['tracking_uri']}")
    lines.append(f"run dir: {summary['run_dir']} ({summary['seconds']} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.resume:
        extra = sorted(k for k, v in vars(args).items() if v not in (None, False) and k not in RESUME_OPTIONS)
        if extra:
            raise ConfigError("options", f"--{extra[0].replace('_', '-')}",
                              "--resume continues with the run's saved options; give no others")
        config = resume_config(args.resume)
    else:
        config = config_from_args(IMMJobConfig, args)
    if args.check:
        check_inputs(config)
        print("ok: options and data are valid")
        return 0
    summary = run_imm(config, address=args.address, resume=bool(args.resume))
    print_summary(summary, format_summary(summary), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
