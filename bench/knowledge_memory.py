"""Peak memory and time of loading span-QA knowledge with attention, before and after it was read in place (issue 28).

A synthetic ensemble table (one teacher) of ``--features`` features at ``S = --seq-len``
positions and ``Q = --query`` question tokens, the shape of full SQuAD v1.1's training
features with attention (88k x 384 x 64), in the columns :func:`~kd_core.knowledge.span.merge_knowledge`
writes (float16 logits and attention, top-K spans, the confusing answer). Each measurement is
a fresh Python process that imports one version of ``kd_core`` and then:

* **load**: ``read_knowledge(path)`` then ``knowledge_arrays(table, ids)`` in the table's row order
  (what a train step hands to training), timed; and
* **pass**: one pass of ``batch_at`` over every row in batches of ``--batch-size`` (what training
  reads in an epoch, float32 batches), timed.

Memory is read from ``/proc/self/status``: ``VmHWM`` (peak resident set) minus the resident
set after the imports, and ``RssAnon`` / ``RssFile`` (private memory versus pages of mapped
files, which the kernel shares between processes and can drop) after each phase; the arrays'
size is the sum of the arrays' ``nbytes`` as handed to training. Two versions:

* **before**: the code at ``--before-commit`` (a temporary ``git worktree``): a Parquet (zstd)
  table read whole, ``take()`` into the features' order, float32 arrays built per table;
* **after**: this checkout: an Arrow IPC file memory-mapped, float16 views, float32 per batch.

"before" peaks near 3.7x its float32 arrays (~33 GB at 88k features: over this machine's
24 GiB), so it runs at ``--before-features`` (a quarter by default) and "after" runs at both
sizes; the figure for "before" at full size is that measurement scaled by the row count
(marked ``scaled``). The files are read warm (just written, in the page cache): this measures
memory and conversion, not the disk. Prints one JSON object and writes it to ``--out``.
Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from kd_core.knowledge.table import METADATA_KEY, fixed, with_metadata, write_knowledge  # noqa: E402

#: The child: imports the version at ``root``, loads the table, makes one pass of batches, reports memory.
CHILD = r"""
import json, sys, time
root, path, count, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, root)
import numpy as np
from kd_core.data.batches import batch_at
from kd_core.knowledge.span import knowledge_arrays
from kd_core.knowledge.table import read_knowledge
import kd_core
assert kd_core.__file__.startswith(root), kd_core.__file__

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields

ids = [f"q{i}#0" for i in range(count)]
base = status()
start = time.perf_counter()
arrays = knowledge_arrays(read_knowledge(path), ids)
load_s = time.perf_counter() - start
loaded = status()
nbytes = sum(len(v) * int(np.prod(v.shape[1:])) * v.dtype.itemsize for v in arrays.values())
start = time.perf_counter()
for first in range(0, count, batch_size):
    batch = batch_at(arrays, np.arange(first, min(first + batch_size, count)))
pass_s = time.perf_counter() - start
passed = status()
print(json.dumps({"base": base, "loaded": loaded, "passed": passed, "load_s": load_s, "pass_s": pass_s,
                  "arrays_bytes": int(nbytes),
                  "dtypes": {k: str(v.dtype) for k, v in arrays.items()},
                  "batch_dtype": str(batch["teacher_attention"].dtype)}))
"""


def synthetic_table(count: int, seq_len: int, query: int, top_k: int, seed: int, block: int = 4096) -> pa.Table:
    """An ensemble table of one teacher over ``count`` features ``q{i}#0`` (module doc), filled ``block`` rows at
    a time (random logits in [-6, 6], attention in [0, 1))."""
    rng = np.random.default_rng(seed)
    start = np.empty((count, seq_len), np.float16)
    end = np.empty((count, seq_len), np.float16)
    attention = np.empty((count, seq_len * query), np.float16)
    for first in range(0, count, block):
        rows = slice(first, min(first + block, count))
        n = rows.stop - rows.start
        start[rows] = rng.uniform(-6, 6, (n, seq_len))
        end[rows] = rng.uniform(-6, 6, (n, seq_len))
        attention[rows] = rng.random((n, seq_len * query), np.float32)
    spans = rng.integers(0, seq_len, (count, top_k), dtype=np.int32)
    columns = {
        "feature_id": pa.array([f"q{i}#0" for i in range(count)], pa.string()),
        "start_logits": fixed(start, pa.float16()),
        "end_logits": fixed(end, pa.float16()),
        "topk_start": fixed(spans, pa.int32()),
        "topk_end": fixed(spans, pa.int32()),
        "topk_score": fixed(rng.standard_normal((count, top_k), np.float32), pa.float32()),
        "confusing_start": pa.array(spans[:, 0], pa.int32()),
        "confusing_end": pa.array(spans[:, 0], pa.int32()),
        "attention": fixed(attention, pa.float16()),
    }
    meta = {"kind": "ensemble", "members": 1, "seq_len": seq_len, "top_k": top_k, "num_question_tokens": query,
            "confusing": "question"}
    return with_metadata(pa.table(columns), {METADATA_KEY: meta})


def measure(root: Path, path: Path, count: int, batch_size: int) -> dict:
    """One child process's report, with memory in GB and the peak's ratio to the arrays."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(path), str(count), str(batch_size)],
                         capture_output=True, text=True, check=True, cwd=root)
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    gb = 1024 ** 3
    base = raw["base"]["VmRSS"]
    return {
        "load_s": round(raw["load_s"], 2), "pass_s": round(raw["pass_s"], 2),
        "arrays_gb": round(raw["arrays_bytes"] / gb, 3),
        "peak_load_gb": round((raw["loaded"]["VmHWM"] - base) / gb, 3),
        "peak_gb": round((raw["passed"]["VmHWM"] - base) / gb, 3),
        "anon_after_load_gb": round((raw["loaded"]["RssAnon"] - raw["base"]["RssAnon"]) / gb, 3),
        "file_after_pass_gb": round((raw["passed"]["RssFile"] - raw["base"]["RssFile"]) / gb, 3),
        "anon_after_pass_gb": round((raw["passed"]["RssAnon"] - raw["base"]["RssAnon"]) / gb, 3),
        "peak_load_over_arrays": round((raw["loaded"]["VmHWM"] - base) / raw["arrays_bytes"], 3),
        "dtypes": raw["dtypes"], "batch_dtype": raw["batch_dtype"],
    }


def summary(runs: list[dict]) -> dict:
    """Medians (and min-max) of the numeric fields over repeats."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {"median": {k: statistics.median(r[k] for r in runs) for k in keys},
            "range": {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in keys},
            "dtypes": runs[0]["dtypes"], "batch_dtype": runs[0]["batch_dtype"], "runs": runs}


def before_checkout(commit: str, folder: Path) -> Path:
    """A worktree of ``commit`` (the code before the change) at ``folder``."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit], check=True,
                   capture_output=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=88_000)
    parser.add_argument("--before-features", type=int, default=22_000)
    parser.add_argument("--seq-len", type=int, default=384)
    parser.add_argument("--query", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before-commit", default="ce57cad")
    parser.add_argument("--scratch", default=None, help="folder for the tables (default: a temporary one)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        folder = Path(scratch)
        before_root = before_checkout(args.before_commit, folder / "before")
        try:
            results = {}
            small = synthetic_table(args.before_features, args.seq_len, args.query, args.top_k, seed=0)
            pq.write_table(small, folder / "small.parquet", compression="zstd")  # what the old write_knowledge wrote
            write_knowledge(small, folder / "small.arrow")
            del small
            big = synthetic_table(args.features, args.seq_len, args.query, args.top_k, seed=1)
            write_knowledge(big, folder / "big.arrow")
            del big
            sizes = {name: (folder / name).stat().st_size for name in ("small.parquet", "small.arrow", "big.arrow")}
            runs: dict[str, list[dict]] = {"before_small": [], "after_small": [], "after_full": []}
            for _ in range(args.repeats):  # alternating, so both versions see the same machine
                runs["before_small"].append(measure(before_root, folder / "small.parquet", args.before_features,
                                                    args.batch_size))
                runs["after_small"].append(measure(ROOT, folder / "small.arrow", args.before_features,
                                                   args.batch_size))
                runs["after_full"].append(measure(ROOT, folder / "big.arrow", args.features, args.batch_size))
            results = {name: summary(r) for name, r in runs.items()}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_root)], check=False)
    scale = args.features / args.before_features
    before = results["before_small"]["median"]
    report = {
        "bench": "knowledge_memory",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                    "note": "shared with other agents' work during the run"},
        "versions": {"numpy": np.__version__, "pyarrow": pa.__version__},
        "shape": {"features": args.features, "before_features": args.before_features, "seq_len": args.seq_len,
                  "query": args.query, "members": 1, "top_k": args.top_k, "batch_size": args.batch_size},
        "file_bytes": sizes,
        "before_commit": args.before_commit,
        "results": results,
        "before_full_scaled": {"peak_load_gb": round(before["peak_load_gb"] * scale, 2),
                               "load_s": round(before["load_s"] * scale, 1),
                               "arrays_gb": round(before["arrays_gb"] * scale, 2), "scaled": scale},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
