"""Score a predictions file as the official SQuAD ``evaluate-v1.1.py`` does (``python jobs/evaluate.py --help``).

Thin entry point over :func:`kd_core.evaluation.squad_files.score_files`: the official
script's two positional files, one JSON line ``{"exact_match": EM, "f1": F1, ...}`` on
stdout; bad input exits with status 2 and one line ``error: <file>: <where>: <what>``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script from any directory

from kd_core.evaluation.squad_files import score_files  # noqa: E402
from kd_core.io.cli import run_cli  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    """Argument parser with the two positional files of the official script."""
    parser = argparse.ArgumentParser(
        prog="python jobs/evaluate.py",
        description=(
            "Score predictions against a SQuAD-format dataset with the official SQuAD v1.1 "
            "exact match and token F1 (percentages); prints one JSON line. Questions without "
            "a prediction score 0; questions with no reference answer (SQuAD v2 unanswerable) "
            "score 1 only for an empty prediction."
        ),
    )
    parser.add_argument("dataset_file", help="SQuAD-format JSON: data[].paragraphs[].qas[] with id and answers[].text")
    parser.add_argument("prediction_file", help="JSON object mapping question id to predicted answer text")
    parser.add_argument("--adversarial", action="store_true",
                        help="score as adversarial SQuAD (Jia & Liang): per original id (before the first '-'), the "
                             "worst of it and its variants; detected without this flag when some ORIG-suffix id has "
                             "its ORIG in the file")
    parser.add_argument("--na-prob-file", help="SQuAD v2: JSON object of question id -> no-answer score; reports the "
                        "best EM and F1 over thresholds on this file and the thresholds")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the scores of the files named in ``argv`` as one JSON line."""
    args = _parser().parse_args(argv)
    scores, missing, questions = score_files(args.dataset_file, args.prediction_file, args.adversarial,
                                             args.na_prob_file)
    if missing:
        print(f"warning: {missing} of {questions} questions have no prediction and score 0", file=sys.stderr)
    print(json.dumps(scores))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
