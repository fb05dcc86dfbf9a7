"""A2D on step workers: stage barriers (before) against dataflow (after), the whole recipe.

The recipe (members, their knowledge, the merge, the student and its no-KD baseline, the
evaluations) is driven from nothing into a fresh run dir per timed run, both ways, on pools of
``--workers`` step workers, alternating (:mod:`dataflow_timing`). Where dataflow can help: a
member's knowledge is read as soon as that member is trained, ``student-no-kd`` reads nothing
and may run beside the members, the knowledge or the merge, and the ensemble's evaluation
needs only the members. Prints one JSON line per run on stderr, then the summary, also written
to ``bench/results/a2d_dataflow_<date>.json``.

    python bench/a2d_concurrency.py --workers 2,1 --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataflow_timing import compare, environment, write_result  # noqa: E402

from cluster.runtime import connect  # noqa: E402
from cluster.tracking import default_tracking_uri  # noqa: E402
from kd_core.engine.prepare import SpanQAData, build_span_workspace  # noqa: E402
from kd_core.methods.a2d import A2DSettings, a2d_recipe  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--workers", default="2,1", help="worker counts, comma-separated (1: the reference)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--synthetic-size", type=int, default=100)
    p.add_argument("--teacher-epochs", type=float, default=2.0)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--out", help="result file (default: bench/results/a2d_dataflow_<date>.json)")
    args = p.parse_args()
    settings = A2DSettings(members=args.members, teacher_epochs=args.teacher_epochs, epochs=args.epochs)
    work = Path(tempfile.mkdtemp(prefix="a2d-dataflow-"))
    ws = build_span_workspace(SpanQAData(synthetic_size=args.synthetic_size), settings.teacher_model,
                              settings.student_model, work / "base")
    connect(default_tracking_uri())
    summary = compare(lambda w: a2d_recipe(settings, w), ws, work, [int(n) for n in args.workers.split(",")],
                      args.repeats)
    result = {"benchmark": "a2d_dataflow", **environment(sys.argv),
              "settings": {"members": args.members, "synthetic_size": args.synthetic_size,
                           "teacher_epochs": args.teacher_epochs, "epochs": args.epochs,
                           "train_features": len(ws.features("teacher", "train")[0])},
              **summary}
    write_result("a2d_dataflow", result, args.out)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
