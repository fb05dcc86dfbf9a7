"""Provenance of a knowledge table: what it was made from, and the check that refuses a mismatch.

Every knowledge table carries a :class:`Manifest` in its Parquet schema metadata:

* ``task`` (name and kind) and ``key`` (``feature_id`` for span QA, ``example_id`` for
  sentence tasks);
* ``teachers``: each teacher's name and the SHA-256 of its weights (:func:`weights_hash`);
* ``tokenizer``: the SHA-256 of the teacher tokenizer's serialised form (:func:`tokenizer_hash`),
  ``max_length``, ``doc_stride`` and ``max_query_length`` (the windows that made the features);
* ``data``: a fingerprint of what the rows cover (:func:`fingerprint`);
* ``schema_version``.

A reader describes the features it is about to pair the knowledge with as a
:class:`FeatureContext` and calls :func:`check_manifest`. Feature-keyed tables must match
the task, tokenizer, window settings and data: teacher logits are per token position, so
another tokenizer or stride would silently pair them with the wrong tokens. Example-keyed
tables must match the task and the data only: a student with its own tokenizer reads them.
A mismatch raises :class:`~kd_core.io.errors.DataError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from kd_core.io.errors import DataError
from kd_core.knowledge.table import metadata_entry, with_metadata

if TYPE_CHECKING:
    import torch

#: 3: sentence-task tables carry a ``gold`` column (false for rows without a gold label).
#: 4: tables are Arrow IPC files read in place; span-QA manifests record ``max_query_length``.
SCHEMA_VERSION = 4
MANIFEST_KEY = b"kd_manifest"
KEYS = ("feature_id", "example_id")


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state dict: every tensor's name, dtype, shape and bytes, by name."""
    import torch  # here: the driver reads and checks manifests without torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def tokenizer_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 of what maps text to ids: a fast tokenizer's serialised form without its truncation and
    padding state (which every call with ``max_length`` or ``stride`` changes), else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state: object = tokenizer.get_vocab()
    else:
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def fingerprint(items: Iterable[str]) -> str:
    """SHA-256 over a sequence of strings (each length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for item in items:
        encoded = item.encode("utf-8", "surrogatepass")
        digest.update(f"{len(encoded)}:".encode())
        digest.update(encoded)
    return digest.hexdigest()


@dataclass(frozen=True)
class Teacher:
    """One teacher behind a table: its name (preset, id or path) and the hash of its weights."""

    name: str
    weights: str


@dataclass(frozen=True)
class FeatureContext:
    """The features a reader will pair knowledge with (what a manifest must match)."""

    task: str
    key: str
    data: str
    tokenizer: str | None = None
    max_length: int | None = None
    doc_stride: int | None = None
    max_query_length: int | None = None


@dataclass(frozen=True)
class Manifest:
    """What a knowledge table was made from (module doc)."""

    task: str
    kind: str
    key: str
    data: str
    teachers: tuple[Teacher, ...] = ()
    tokenizer: str | None = None
    max_length: int | None = None
    doc_stride: int | None = None
    max_query_length: int | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.key not in KEYS:
            raise ValueError(f"manifest key must be one of {KEYS}, got {self.key!r}")
        object.__setattr__(self, "teachers", tuple(t if isinstance(t, Teacher) else Teacher(**t) for t in self.teachers))

    def with_teachers(self, teachers: Iterable[Teacher]) -> Manifest:
        """The same manifest for a table made by ``teachers`` (e.g. the merge of members)."""
        return Manifest(**{**asdict(self), "teachers": tuple(teachers)})


def attach_manifest(table: pa.Table, manifest: Manifest) -> pa.Table:
    """``table`` with ``manifest`` stored in its schema metadata."""
    return with_metadata(table, {MANIFEST_KEY: asdict(manifest)})


def read_manifest(table: pa.Table, source: str = "knowledge") -> Manifest:
    """The manifest of ``table``; a table without one (an older version's) raises :class:`DataError`."""
    return Manifest(**metadata_entry(table, MANIFEST_KEY, source))


def _short(value: object) -> str:
    return value[:12] if isinstance(value, str) and len(value) == 64 else repr(value)


def check_manifest(manifest: Manifest, expected: FeatureContext, source: str) -> None:
    """Refuse (one-line :class:`DataError`) a table made for other features than ``expected`` (module doc)."""
    if manifest.schema_version != SCHEMA_VERSION:
        raise DataError(source, "manifest", f"schema version {manifest.schema_version}, this version reads "
                        f"{SCHEMA_VERSION}; collect the knowledge again")
    fields = ["task", "key", "data"]
    if manifest.key == "feature_id":
        fields += ["tokenizer", "max_length", "doc_stride", "max_query_length"]
    names = {"data": "data fingerprint", "key": "key column"}
    for name in fields:
        found, wanted = getattr(manifest, name), getattr(expected, name)
        if found != wanted:
            raise DataError(source, "manifest", f"made for {names.get(name, name)} {_short(found)}, but these "
                            f"features have {_short(wanted)}; the teacher logits would be paired with the wrong "
                            "rows or tokens")
