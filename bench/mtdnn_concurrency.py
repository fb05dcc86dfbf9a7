"""MT-DNN KD speed: every task's ensemble members trained at once on step workers versus one after
another, and the multi-task student's inference against the teacher ensembles'.

1. **Teachers.** The recipe's teacher training steps (the members' multi-task pre-training,
   then every task's member fine-tunings; or single-task members with
   ``--no-teacher-multitask``) run stage by stage on a pool of ``--workers`` step workers
   (each step given the node's cores shared among the steps running at once, as the job
   does) and on a pool of one worker, alternating, each repeat into a fresh folder, so
   machine noise hits both alike. Worker start-up is excluded (a job starts its workers once).
2. **Inference.** On every task-with-a-teacher's test split: the student (one model, one
   pass, every task's head) against the ensembles (``members`` models per task), timed
   side by side, alternating, median of ``--repeats``.

Prints one JSON line per timed run and, last, the medians and ratios (above 1: concurrency /
the student pays).

    python bench/mtdnn_concurrency.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402

from cluster.runtime import connect  # noqa: E402
from cluster.scheduler import WorkerPool  # noqa: E402
from cluster.tracking import default_tracking_uri  # noqa: E402
from kd_core.engine.inputs import load_model  # noqa: E402
from kd_core.engine.local import run_locally  # noqa: E402
from kd_core.engine.prepare import MultiTaskData, build_multitask_workspace  # noqa: E402
from kd_core.engine.steps import TrainStep  # noqa: E402
from kd_core.methods.mtdnn import MTDNNSettings, member_name, mtdnn_recipe  # noqa: E402


def teacher_stages(settings: MTDNNSettings, ws) -> list[list[TrainStep]]:
    """The recipe's teacher train stages, planned (no step runs)."""
    recipe, done, stages = mtdnn_recipe(settings, ws), {}, []
    while True:
        steps = [s for s in recipe(done) if s.teacher]
        if not steps or not isinstance(steps[0], TrainStep):
            return stages
        stages.append(steps)
        done |= {s.name: {} for s in steps}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--teacher-epochs", type=float, default=2.0)
    p.add_argument("--no-teacher-multitask", action="store_true")
    args = p.parse_args()
    settings = MTDNNSettings(teacher_epochs=args.teacher_epochs, teacher_fine_tune_epochs=1.0, epochs=2.0,
                             teacher_multitask=not args.no_teacher_multitask, single_task=False, baseline=False)
    work = Path(tempfile.mkdtemp(prefix="mtdnn-concurrency-"))
    ws = build_multitask_workspace(MultiTaskData(), settings.teacher_model, settings.student_model, work / "base")
    stages = teacher_stages(settings, ws)
    connect(default_tracking_uri())

    times: dict[str, list[float]] = {"concurrent": [], "sequential": []}
    for repeat in range(args.repeats):
        for mode, size in (("concurrent", args.workers), ("sequential", 1)):
            pool = WorkerPool(size)
            pool.run([lambda worker: worker.info.remote() for _ in range(size)])  # wait until every worker is up
            ws.run_dir = work / f"{mode}-{repeat}"
            ws_ref = ray.put(ws)
            started = time.perf_counter()
            for steps in stages:
                threads = pool.threads(len(steps))
                pool.run([lambda worker, s=s: worker.run.remote(s, ws_ref, None, threads) for s in steps])
            seconds = time.perf_counter() - started
            pool.shutdown()
            times[mode].append(seconds)
            print(json.dumps({"mode": mode, "repeat": repeat, "teachers_s": round(seconds, 2)}), flush=True)
    ray.shutdown()

    # Inference: the whole recipe once, here; then the student against the ensembles on the same test rows.
    ws.run_dir = work / "base"
    run_locally(mtdnn_recipe(settings, ws), ws)
    torch.set_num_threads(2)
    taught = ws.task.describe()["with_teacher"]
    student = load_model("@student", 0, "student", ws, "cpu")
    _, student_arrays = ws.features("student", "test")
    rows = torch.from_numpy(student_arrays["task_index"]).numpy()
    keep = [i for i, t in enumerate(rows) if ws.task.describe()["tasks"][t]["name"] in taught]
    student_arrays = {k: v[keep] for k, v in student_arrays.items()}
    members = {t: [load_model(f"@{member_name(t, m)}", 0, "teacher", ws.view(t), "cpu")
                   for m in range(settings.members)] for t in taught}
    infer: dict[str, list[float]] = {"student": [], "ensembles": []}
    for _ in range(max(3, args.repeats)):
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
    concurrent, sequential = statistics.median(times["concurrent"]), statistics.median(times["sequential"])
    student_s, ensembles_s = statistics.median(infer["student"]), statistics.median(infer["ensembles"])
    print(json.dumps({
        "benchmark": "mtdnn_concurrency", "teacher_stages": [[s.name for s in stage] for stage in stages],
        "workers": args.workers, "repeats": args.repeats, "teacher_epochs": args.teacher_epochs,
        "concurrent_teachers_s": round(concurrent, 2), "sequential_teachers_s": round(sequential, 2),
        "ratio_sequential_over_concurrent": round(sequential / concurrent, 2),
        "test_examples": len(keep), "student_infer_s": round(student_s, 4), "ensembles_infer_s": round(ensembles_s, 4),
        "ratio_ensembles_over_student": round(ensembles_s / student_s, 2),
        "machine": platform.machine(), "cpus": 2, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/mtdnn_concurrency.py " + " ".join(sys.argv[1:]),
    }))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
