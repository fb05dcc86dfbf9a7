"""IMM on step workers: stage barriers (before) against dataflow (after), the whole recipe.

The recipe (every domain's ``theta-d-0``, the knowledge, ``K`` transfers of ``phi-d-k`` then
``theta-d-k`` and the selection, the baselines, the test evaluations) is driven from nothing
into a fresh run dir per timed run, both ways, on pools of ``--workers`` step workers,
alternating (:mod:`dataflow_timing`). Where dataflow can help: a domain's knowledge is read as
soon as its model is trained, ``theta-d-k`` waits for ``phi-d-k`` only and ``select-d-k`` for
``theta-d-k``; the FT baseline's fine-tuning waits for its own pre-training only. The
baselines and the tests are planned after the last iteration's selections (the early stop
reads them), so they cannot overlap the IMM steps. Prints one JSON line per run on stderr, then
the summary, also written to ``bench/results/imm_dataflow_<date>.json``.

    python bench/imm_concurrency.py --workers 2,1 --repeats 3
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
from kd_core.data.domains import DataSettings  # noqa: E402
from kd_core.data.synthetic import DOMAINS  # noqa: E402
from kd_core.engine.prepare import build_domain_workspace  # noqa: E402
from kd_core.methods.imm import TOKENIZER, IMMSettings, domain_names, imm_recipe  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domains", type=int, default=2)
    p.add_argument("--workers", default="2,1", help="worker counts, comma-separated (1: the reference)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--synthetic-size", type=int, default=150)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--baselines", default="single,ft", help="the job's default: single,ft ('' for none)")
    p.add_argument("--out", help="result file (default: bench/results/imm_dataflow_<date>.json)")
    args = p.parse_args()
    settings = IMMSettings(epochs=args.epochs, iterations=args.iterations,
                           baselines=tuple(b for b in args.baselines.split(",") if b))
    work = Path(tempfile.mkdtemp(prefix="imm-dataflow-"))
    ws = build_domain_workspace(DataSettings(synthetic_domains=DOMAINS[: args.domains],
                                             synthetic_size=args.synthetic_size),
                                settings.max_answer_length, TOKENIZER, work / "base")
    names = domain_names(ws)
    connect(default_tracking_uri())
    summary = compare(lambda w: imm_recipe(settings, w), ws, work, [int(n) for n in args.workers.split(",")],
                      args.repeats)
    result = {"benchmark": "imm_dataflow", **environment(sys.argv),
              "settings": {"domains": names, "synthetic_size": args.synthetic_size, "epochs": args.epochs,
                           "iterations": args.iterations, "baselines": list(settings.baselines),
                           "train_features": {n: len(ws.features(TOKENIZER, f"{n}.train")[0]) for n in names}},
              **summary}
    write_result("imm_dataflow", result, args.out)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
