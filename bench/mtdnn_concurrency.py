"""MT-DNN KD on step workers: stage barriers (before) against dataflow (after), the whole recipe;
then the multi-task student's inference against the teacher ensembles'.

1. **The recipe.** The members' multi-task pre-training (``teacher-mt-m``; with
   ``--no-teacher-multitask`` single-task members instead), every task's member fine-tunings,
   their knowledge and merges, the students (the KD student and the no-KD ``student-vanilla``),
   the evaluations: driven from nothing into a fresh run dir per timed run, both ways, on pools
   of ``--workers`` step workers, alternating (:mod:`dataflow_timing`). Where dataflow can
   help: ``<task>-member-m`` waits for ``teacher-mt-m`` only (three pre-trainings on two
   workers leave one idle behind a barrier), a member's knowledge and evaluation wait for that
   member only, and ``student-vanilla`` reads nothing, so it may fill any idle worker.
2. **Inference.** On every task-with-a-teacher's test split, with the models of the last timed
   run: the student (one model, one pass, every task's head) against the ensembles
   (``members`` models per task), timed side by side, alternating, median of ``--repeats``.

Prints one JSON line per run on stderr, then the summary, also written to
``bench/results/mtdnn_dataflow_<date>.json``.

    python bench/mtdnn_concurrency.py --workers 2,1 --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402
from dataflow_timing import compare, environment, write_result  # noqa: E402

from cluster.runtime import connect  # noqa: E402
from cluster.tracking import default_tracking_uri  # noqa: E402
from kd_core.engine.inputs import load_model  # noqa: E402
from kd_core.engine.prepare import MultiTaskData, build_multitask_workspace  # noqa: E402
from kd_core.engine.workspace import Workspace  # noqa: E402
from kd_core.methods.mtdnn import MTDNNSettings, member_name, mtdnn_recipe  # noqa: E402


def inference(settings: MTDNNSettings, ws: Workspace, repeats: int) -> dict[str, float | int]:
    """The student against the ensembles on the test rows of the tasks with a teacher (module doc, 2.)."""
    taught = ws.task.describe()["with_teacher"]
    student = load_model("@student", 0, "student", ws, "cpu")
    _, student_arrays = ws.features("student", "test")
    keep = [i for i, t in enumerate(student_arrays["task_index"]) if ws.task.describe()["tasks"][t]["name"] in taught]
    student_arrays = {k: v[keep] for k, v in student_arrays.items()}
    members = {t: [load_model(f"@{member_name(t, m)}", 0, "teacher", ws.view(t), "cpu")
                   for m in range(settings.members)] for t in taught}
    infer: dict[str, list[float]] = {"student": [], "ensembles": []}
    for _ in range(repeats):
        started = time.perf_counter()
        ws.task.infer(student, student_arrays)
        infer["student"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for t in taught:
            view = ws.view(t)
            arrays = view.features("teacher", "test")[1]
            for model in members[t]:
                view.task.infer(model, arrays)
        infer["ensembles"].append(time.perf_counter() - started)
    student_s, ensembles_s = statistics.median(infer["student"]), statistics.median(infer["ensembles"])
    return {"test_examples": len(keep), "student_infer_s": round(student_s, 4),
            "ensembles_infer_s": round(ensembles_s, 4), "ratio_ensembles_over_student": round(ensembles_s / student_s, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="2,1", help="worker counts, comma-separated (1: the reference)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--teacher-epochs", type=float, default=2.0)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--no-teacher-multitask", action="store_true")
    p.add_argument("--out", help="result file (default: bench/results/mtdnn_dataflow_<date>.json)")
    args = p.parse_args()
    settings = MTDNNSettings(teacher_epochs=args.teacher_epochs, teacher_fine_tune_epochs=1.0, epochs=args.epochs,
                             teacher_multitask=not args.no_teacher_multitask, single_task=False)
    work = Path(tempfile.mkdtemp(prefix="mtdnn-dataflow-"))
    ws = build_multitask_workspace(MultiTaskData(), settings.teacher_model, settings.student_model, work / "base")
    connect(default_tracking_uri())
    summary = compare(lambda w: mtdnn_recipe(settings, w), ws, work, [int(n) for n in args.workers.split(",")],
                      args.repeats, keep_last=True)
    env = environment(sys.argv)
    ray.shutdown()
    torch.set_num_threads(2)
    result = {"benchmark": "mtdnn_dataflow", **env,
              "settings": {"members": settings.members, "teacher_epochs": args.teacher_epochs,
                           "teacher_fine_tune_epochs": settings.teacher_fine_tune_epochs, "epochs": args.epochs,
                           "teacher_multitask": settings.teacher_multitask, "baseline": settings.baseline},
              **summary, "inference": inference(settings, ws, max(3, args.repeats))}  # ws: the last run's dir
    write_result("mtdnn_dataflow", result, args.out)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
