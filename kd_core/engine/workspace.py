"""A job's workspace: its task, data splits, tokenizers, window settings, run directory and compute settings.

Features depend on (tokenizer, split) only, so they are made once per pair and cached;
every step that reads the same split with the same tokenizer shares them. The workspace is
plain picklable data (datasets, tokenizers, a run directory), so the same object can be
handed to a Ray worker that executes steps.

The run directory is a local path or a ``pyarrow.fs`` URI (:mod:`kd_core.io.run_store`): steps
write under ``run_dir`` (the folder itself, or this process's staging folder of the URI) and
read other steps' results and files through :meth:`Workspace.result` and
:meth:`Workspace.local`, which go to the store. A result names the files of its run relative
to the run directory (:meth:`Workspace.location`), so a run directory can be copied or moved;
readers turn such a name into a place with :meth:`Workspace.resolve`. A result taken into
another run directory (reused teachers) is first made absolute against its own
(:func:`absolute_result`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from kd_core.data.features import FeatureConfig
from kd_core.io.errors import ConfigError
from kd_core.io.run_files import write_atomic
from kd_core.io.run_store import RESULT_NAME, RunStore
from kd_core.knowledge.manifest import FeatureContext, tokenizer_hash
from kd_core.models.build import save_model
from kd_core.serving.description import describe_saved_model
from kd_core.tasks.base import Task
from kd_core.training.compute import Compute

RESULT_FILE = RESULT_NAME
#: The fields of a step's result that name a file or folder of its run directory (a model, a knowledge table).
RESULT_LOCATIONS = ("model_dir", "path")


@dataclass
class Workspace:
    """See the module doc. ``splits`` maps a split name (``train``, ``dev``, ``test``) to examples.

    ``run_dir`` is given as a path or URI; after construction it is the local folder steps
    write in, and ``store`` is where the run directory really is.
    """

    task: Task
    splits: dict[str, Dataset]
    tokenizers: dict[str, PreTrainedTokenizerFast]
    windows: FeatureConfig
    run_dir: Path
    compute: Compute = field(default_factory=Compute)  # how every step uses the hardware (precision, ...)
    store: RunStore = field(init=False, repr=False)
    _features: dict[tuple[str, str], tuple[Dataset, dict[str, np.ndarray]]] = field(default_factory=dict, repr=False)
    _hashes: dict[str, str] = field(default_factory=dict, repr=False)  # tokenizer and split fingerprints
    _views: dict[str, Workspace] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.store = RunStore(str(self.run_dir))
        self.run_dir = self.store.local_root

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_features": {}, "_views": {}}  # a worker rebuilds features rather than receive copies

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.run_dir = self.store.local_root  # another process: its own staging folder of a URI run directory

    def relocate(self, location: str | Path) -> None:
        """Put the run directory at ``location`` (a path or URI), e.g. where the job runtime resolved it."""
        self.store = RunStore(str(location))
        self.run_dir = self.store.local_root
        self._views.clear()

    def view(self, task: str) -> Workspace:
        """Task ``task`` of a multi-task workspace on its own: its splits ``<task>.<split>`` named ``<split>``.

        Steps that name a task (a teacher member, its knowledge, a single-task model) run
        on the view; the view shares the run directory and tokenizers.
        """
        if task not in self._views:
            part = self.task.part(task)
            prefix = f"{task}."
            splits = {name.removeprefix(prefix): rows for name, rows in self.splits.items() if name.startswith(prefix)}
            self._views[task] = Workspace(part, splits, self.tokenizers, self.windows, self.store.location, self.compute)
        return self._views[task]

    def examples(self, split: str) -> Dataset:
        if split not in self.splits:
            raise ConfigError("workspace", "split", f"no split {split!r}; have {', '.join(self.splits)}")
        return self.splits[split]

    def tokenizer(self, name: str) -> PreTrainedTokenizerFast:
        if name not in self.tokenizers:
            raise ConfigError("workspace", "tokenizer", f"no tokenizer {name!r}; have {', '.join(self.tokenizers)}")
        return self.tokenizers[name]

    def features(self, tokenizer: str, split: str) -> tuple[Dataset, dict[str, np.ndarray]]:
        """Features of ``split`` made with tokenizer ``tokenizer`` and their arrays (cached)."""
        key = (tokenizer, split)
        if key not in self._features:
            features = self.task.featurize(self.examples(split), self.tokenizer(tokenizer), self.windows)
            self._features[key] = (features, self.task.arrays(features))
        return self._features[key]

    def check_features(self) -> None:
        """Featurise every split with every distinct tokenizer now, so bad data or window settings raise here."""
        seen: list[PreTrainedTokenizerFast] = []
        for name, tokenizer in self.tokenizers.items():
            if any(tokenizer is other for other in seen):
                continue
            seen.append(tokenizer)
            for split in self.splits:
                self.features(name, split)

    def feature_context(self, tokenizer: str, split: str) -> FeatureContext:
        """What a knowledge table paired with these features must have been made for."""
        if tokenizer not in self._hashes:
            self._hashes[tokenizer] = tokenizer_hash(self.tokenizer(tokenizer))
        data_key = f"data:{split}"  # hashing every example once per split, not once per table read
        if data_key not in self._hashes:
            self._hashes[data_key] = self.task.data_fingerprint(self.examples(split))
        return FeatureContext(task=self.task.name, key=self.task.key, data=self._hashes[data_key],
                              tokenizer=self._hashes[tokenizer], max_length=self.windows.max_length,
                              doc_stride=self.windows.doc_stride)

    def step_dir(self, name: str) -> Path:
        return self.run_dir / "steps" / name

    def result_path(self, name: str) -> Path:
        return self.step_dir(name) / RESULT_FILE

    def result(self, name: str) -> dict[str, Any] | None:
        """The result of step ``name`` as the run directory's store holds it, ``None`` if it has not finished."""
        text = self.store.read_text(self.result_path(name))
        return json.loads(text) if text is not None else None

    def save_result(self, name: str, result: dict[str, Any]) -> None:
        """Write step ``name``'s result file last and atomically, after its other files (into the store)."""
        write_atomic(self.result_path(name), json.dumps(result, indent=1))
        self.store.push(self.step_dir(name))

    def save_model(self, model: PreTrainedModel, tokenizer: str, directory: Path) -> Path:
        """Save a trained ``model`` and its tokenizer so plain Hugging Face code can use them (``save_pretrained``).

        The saved config names this task's labels and carries its serving description, and the
        saved tokenizer's ``model_max_length`` is the window length
        (:func:`~kd_core.serving.description.describe_saved_model`); the workspace's tokenizer is
        left as it was.
        """
        shared = self.tokenizer(tokenizer)
        length = shared.model_max_length
        try:
            describe_saved_model(model, shared, self.task, self.windows)
            return save_model(model, shared, directory)
        finally:
            shared.model_max_length = length

    def location(self, path: Path) -> str:
        """How a result names the file or folder ``path`` of this run: relative to the run directory (module doc)."""
        return self.store.name_of(path)

    def resolve(self, location: str) -> str:
        """Where a location a result named is: a relative one in this run directory (a path or URI), an absolute
        one as it is (:meth:`~kd_core.io.run_store.RunStore.resolve`)."""
        return self.store.resolve(location)

    def local(self, location: str) -> str:
        """A local path for a model source or a resolved location (a URI's file fetched once from the store)."""
        return self.store.local(location)


def absolute_result(result: dict[str, Any], store: RunStore) -> dict[str, Any]:
    """``result`` of a step of the run directory ``store`` with the locations it names made absolute there, so that
    it can be written into another run directory and still name the first one's files."""
    return {key: store.resolve(value) if key in RESULT_LOCATIONS and isinstance(value, str) else value
            for key, value in result.items()}
