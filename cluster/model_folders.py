"""A job's final models in one place: ``RUN_DIR/models/<role>/<name>/`` and ``RUN_DIR/models/index.json``.

The steps keep their models under ``steps/<step>/model`` (where later steps and a resumed
job read them); once a job has its summary, the models it ends with (members, kept domain
models, students; not the intermediate ones) are copied here, each a plain Hugging Face
``save_pretrained`` folder (docs/models.md says how to load one). Files are hard-linked
where the file system allows it, so a local run dir does not hold them twice. The index
lists, per model, its folder (relative to ``models/``), the step that trained it and its
role; it is written last, so a job stopped while copying leaves no index that names a
missing model. Nothing here names the run directory itself (the models' locations returned
are relative to it), so a copied or moved run directory's index still names its own models.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping

from kd_core.io.run_files import write_atomic
from kd_core.io.run_store import RunStore

MODELS_DIR = "models"
INDEX_FILE = "index.json"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another device, or a file system without hard links
        shutil.copy2(source, target)


def publish_models(store: RunStore, models: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """Copy ``models`` (``"<role>/<name>"`` -> (step, model location as its result names it)) to ``models/`` and
    index them.

    Returns ``"<role>/<name>"`` -> the folder's location relative to the run directory
    (:meth:`~kd_core.io.run_store.RunStore.resolve` finds it). An earlier ``models/`` folder
    of the run (a resumed job) is replaced.
    """
    root = store.local_root / MODELS_DIR
    store.remove(MODELS_DIR)
    index: dict[str, dict[str, str]] = {}
    for key, (step, location) in sorted(models.items()):
        role, _, name = key.partition("/")
        if not role or not name or ".." in key.split("/"):
            raise ValueError(f"a model's key is <role>/<name>, got {key!r}")
        shutil.copytree(store.local(store.resolve(location)), root / key, copy_function=_link_or_copy)
        store.push(root / key)
        index[key] = {"path": key, "role": role, "step": step}
    write_atomic(root / INDEX_FILE, json.dumps({"models": index}, indent=1))
    store.push(root / INDEX_FILE)
    return {key: store.name_of(root / key) for key in index}
