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

A result file is trusted only when whole: a JSON mapping with the keys every result and its
kind hold (:data:`RESULT_KEYS`, :data:`KIND_KEYS`), and, for the files a step wrote itself, a
model folder whose config and safetensors headers are whole or a knowledge table whose Parquet
footer, row count and manifest agree with the result (:meth:`Workspace.check_outputs`;
cheap checks of :mod:`kd_core.io.file_checks`). Anything else raises
:class:`~kd_core.io.file_checks.CorruptFile` naming the file; :meth:`Workspace.discard_result`
then makes the step unfinished, so it runs again.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerFast

from kd_core.data.features import FeatureConfig
from kd_core.io.errors import ConfigError, StorageError
from kd_core.io.file_checks import CorruptFile, check_model_folder, check_table_file, corrupt, parse_json_mapping
from kd_core.io.run_files import write_atomic
from kd_core.io.run_store import RESULT_NAME, RunStore, is_uri, join
from kd_core.knowledge.manifest import MANIFEST_KEY, FeatureContext, tokenizer_hash
from kd_core.tasks.base import Task
from kd_core.training.compute import Compute

if TYPE_CHECKING:
    from transformers import PreTrainedModel

RESULT_FILE = RESULT_NAME
#: What every step result holds (the executor adds them to what the step returns).
RESULT_KEYS = ("kind", "name", "seconds")
#: What a result of each step kind holds besides :data:`RESULT_KEYS`: a result without them is corrupt.
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "train": ("model_dir", "scores", "primary"),
    "collect": ("path", "rows", "bytes"),
    "merge": ("path", "rows", "bytes", "members"),
    "evaluate": ("split", "models", "scores", "primary"),
    "select": ("kept", "model_dir", "primary", "scores"),
    "speed": ("split", "models"),
}


def own_outputs(result: dict[str, Any]) -> list[str]:
    """The files a result names that its step wrote (a select step's ``model_dir`` is its candidate's)."""
    key = {"train": "model_dir", "collect": "path", "merge": "path"}.get(result.get("kind", ""))
    return [result[key]] if key is not None else []
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

    def check_features(self) -> dict[str, int]:
        """Featurise every split with every distinct tokenizer now, so bad data or window settings raise here.

        Returns, and prints one line (stderr) for each, the splits where featurising cut examples
        (:meth:`~kd_core.tasks.base.Task.truncated`: span-QA questions over ``max_query_length``
        tokens), with how many, counted with the first tokenizer.
        """
        seen: list[PreTrainedTokenizerFast] = []
        for name, tokenizer in self.tokenizers.items():
            if any(tokenizer is other for other in seen):
                continue
            seen.append(tokenizer)
            for split in self.splits:
                self.features(name, split)
        truncated = {}
        for split, examples in self.splits.items():
            count = self.task.truncated(examples, seen[0], self.windows) if seen else 0
            if count:
                truncated[split] = count
                print(f"features: {count} of {len(examples)} questions of split {split!r} are longer than "
                      f"max_query_length={self.windows.max_query_length} tokens and were cut to it",
                      file=sys.stderr, flush=True)
        return truncated

    def feature_context(self, tokenizer: str, split: str) -> FeatureContext:
        """What a knowledge table paired with these features must have been made for."""
        if tokenizer not in self._hashes:
            self._hashes[tokenizer] = tokenizer_hash(self.tokenizer(tokenizer))
        data_key = f"data:{split}"  # hashing every example once per split, not once per table read
        if data_key not in self._hashes:
            self._hashes[data_key] = self.task.data_fingerprint(self.examples(split))
        return FeatureContext(task=self.task.name, key=self.task.key, data=self._hashes[data_key],
                              tokenizer=self._hashes[tokenizer], max_length=self.windows.max_length,
                              doc_stride=self.windows.doc_stride, max_query_length=self.windows.max_query_length)

    def step_dir(self, name: str) -> Path:
        return self.run_dir / "steps" / name

    def result_path(self, name: str) -> Path:
        return self.step_dir(name) / RESULT_FILE

    def result(self, name: str) -> dict[str, Any] | None:
        """The result of step ``name`` as the run directory's store holds it, ``None`` if it has not finished.

        A result file that is not a JSON mapping with the keys of its kind (module doc), or that is
        another step's, raises :class:`~kd_core.io.file_checks.CorruptFile` naming it.
        """
        path = self.result_path(name)
        text = self.store.read_text(path)
        if text is None:
            return None
        source = self.store.location_of(path)
        result = parse_json_mapping(text, source)
        kind = result.get("kind")
        if kind not in KIND_KEYS:
            raise corrupt(source, f"no step kind of {', '.join(KIND_KEYS)}, got {kind!r}")
        missing = [key for key in (*RESULT_KEYS, *KIND_KEYS[kind]) if key not in result]
        if missing:
            raise corrupt(source, f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} result without {', '.join(missing)}")
        if result["name"] != name:
            raise corrupt(source, f"the result of step {result['name']!r}, not {name!r}")
        return result

    def check_outputs(self, result: dict[str, Any]) -> None:
        """The files a finished step wrote itself, as its ``result`` names them, are whole (module doc): a train
        step's model folder, a collect or merge step's knowledge table; else
        :class:`~kd_core.io.file_checks.CorruptFile` naming the file (read through :meth:`local`, so a URI's)."""
        for location in map(self.resolve, own_outputs(result)):
            try:
                local = Path(self.local(location))
            except StorageError as err:
                raise corrupt(location, "missing from the store") from err
            try:
                if result["kind"] == "train":
                    check_model_folder(local, require_weights=True)
                else:
                    check_table_file(local, result["rows"], (MANIFEST_KEY,))
            except CorruptFile as err:  # named as the result names it: a URI's file by its URI, not the local copy
                if not is_uri(location):
                    raise
                inner = Path(err.source).relative_to(local).as_posix()
                raise CorruptFile(join(location, inner) if inner != "." else location, err.where, err.what) from err

    def discard_result(self, name: str, result: dict[str, Any] | None) -> None:
        """Make step ``name`` unfinished after its result file, or a file its ``result`` names, was found corrupt.

        The result file goes (from the store too), and so do the local copies of the step's own files
        (:meth:`check_outputs`) that lie in this run's local folder, so nothing reads them before the step
        writes them again; a file of another run directory that a result names is left alone.
        """
        self.store.remove(self.result_path(name).relative_to(self.run_dir).as_posix())
        for location in map(self.resolve, own_outputs(result or {})):
            try:
                local = Path(self.local(location)).resolve()
            except StorageError:
                continue
            if not local.is_relative_to(self.run_dir.resolve()):
                continue
            if local.is_dir():
                shutil.rmtree(local, ignore_errors=True)
            else:
                local.unlink(missing_ok=True)

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
        from kd_core.models.build import save_model  # torch: a driver that saves no model never loads it
        from kd_core.serving.description import describe_saved_model

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
