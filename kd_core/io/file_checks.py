"""Cheap checks that a run directory's files are whole, so a corrupt or partial file is found before it is used.

A file is judged by what can be read without loading it:

* **JSON** (results, ``state.json``, a model's ``config.json``): it parses, to a mapping.
* **Arrow IPC** (knowledge tables): its footer opens (memory-mapped, :func:`pyarrow.ipc.open_file`; the
  record batches are not read), and its row count and schema metadata (the manifest) agree with what
  its step recorded.
* **safetensors** (models, checkpoints): the 8-byte little-endian header length, the JSON header
  it announces, each tensor's byte range the size its dtype and shape need, and the file exactly
  ``8 + header length + the largest data_offsets end`` bytes long. A file cut short, padded or
  overwritten with other bytes fails one of these; the tensors themselves are not read.

A failed check raises :class:`CorruptFile` (``<file>: corrupt: <problem>``, a
:class:`~kd_core.io.errors.DataError`, so the command line prints it as one line and exits 2);
where the file can be made again instead, the caller prints :func:`warn`'s one line and does so.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from kd_core.io.errors import DataError

#: Bytes per element of the safetensors dtypes (others are accepted without the size check).
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
#: The largest header the safetensors library reads (100 MB); a longer one is not a safetensors file.
MAX_HEADER = 100_000_000
#: How a Hugging Face folder names its weights: one file, or an index of shards.
WEIGHTS_FILE, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"


class CorruptFile(DataError):
    """A file that exists (or should) but is not whole; ``where`` is ``corrupt`` (see :func:`corrupt`)."""


def corrupt(path: str | Path, problem: str) -> CorruptFile:
    """The error for the file ``path`` and its ``problem``: ``<path>: corrupt: <problem>``."""
    return CorruptFile(str(path), "corrupt", problem)


def warn(path: str | Path, problem: str, then: str) -> None:
    """Print the one warning line of a corrupt file that is made again: ``warning: <path>: corrupt (<problem>);
    <then>`` (on stderr)."""
    print(f"warning: {path}: corrupt ({problem}); {then}", file=sys.stderr, flush=True)


def first_line(err: BaseException) -> str:
    """The first line of an error message (Arrow's run to several), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def parse_json_mapping(text: str, source: str | Path) -> dict[str, Any]:
    """``text`` parsed as a JSON mapping; anything else raises :class:`CorruptFile` naming ``source``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise corrupt(source, str(err)) from err
    if not isinstance(value, dict):
        raise corrupt(source, f"a JSON {type(value).__name__}, not a mapping")
    return value


def read_json_mapping(path: Path) -> dict[str, Any]:
    """The JSON mapping in the file ``path`` (:func:`parse_json_mapping`); a missing or unreadable file is corrupt."""
    if not path.is_file():
        raise corrupt(path, "missing")
    try:
        return parse_json_mapping(path.read_text(encoding="utf-8"), path)
    except UnicodeDecodeError as err:
        raise corrupt(path, f"not UTF-8 text (byte {err.start})") from err


def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensors a safetensors file's header describes (name -> dtype, shape, data_offsets), checked against the
    file's size (module doc); a file that fails raises :class:`CorruptFile`."""
    if not path.is_file():
        raise corrupt(path, "missing")
    size = path.stat().st_size
    if size < 8:
        raise corrupt(path, f"the file has {size} bytes, fewer than the 8 of its header length")
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        if length > min(size - 8, MAX_HEADER):
            raise corrupt(path, f"its header length says {length} bytes, the file has {size - 8} after it")
        raw = stream.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise corrupt(path, f"the header is not JSON ({first_line(err)})") from err
    if not isinstance(header, dict):
        raise corrupt(path, "the header is not a mapping of tensors")
    tensors = {name: entry for name, entry in header.items() if name != "__metadata__"}
    end = max((_tensor_end(path, name, entry) for name, entry in tensors.items()), default=0)
    if size != 8 + length + end:
        cut = " (cut short)" if size < 8 + length + end else ""
        raise corrupt(path, f"the file has {size} bytes, its header describes {8 + length + end}{cut}")
    return tensors


def _tensor_end(path: Path, name: str, entry: Any) -> int:
    """Where tensor ``name``'s bytes end in the data part (after checking its entry is well formed)."""
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    shape = entry.get("shape") if isinstance(entry, dict) else None
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(v, int) for v in offsets)
            or not 0 <= offsets[0] <= offsets[1] or not isinstance(shape, list)
            or not all(isinstance(v, int) and v >= 0 for v in shape)):
        raise corrupt(path, f"the header's entry of tensor {name!r} is malformed")
    width = DTYPE_BYTES.get(entry.get("dtype"))
    if width is not None and offsets[1] - offsets[0] != width * math.prod(shape):
        raise corrupt(path, f"tensor {name!r} has {offsets[1] - offsets[0]} bytes, its dtype and shape need "
                      f"{width * math.prod(shape)}")
    return offsets[1]


def check_model_folder(folder: Path, require_weights: bool = False) -> None:
    """A Hugging Face model folder's ``config.json`` (and any other JSON file) parses and its safetensors weights
    (``model.safetensors``, or every shard its index names) have whole headers (module doc).

    A folder without safetensors weights passes unless ``require_weights`` (a folder this project saved
    always has them; for any other the loader refuses ``pytorch_model.bin`` by itself).
    """
    for path in sorted(folder.glob("*.json")):
        if path.name != "config.json":
            _parse_json_file(path)
    read_json_mapping(folder / "config.json")
    for path in weight_files(folder, require_weights):
        safetensors_header(path)


def weight_files(folder: Path, require: bool = False) -> list[Path]:
    """The safetensors files a model folder's weights are in: ``model.safetensors``, or the shards its index
    names (an unreadable index is corrupt); none when it has neither, unless ``require``."""
    if (folder / WEIGHTS_INDEX).is_file():
        index = read_json_mapping(folder / WEIGHTS_INDEX)
        shards = index.get("weight_map")
        if not isinstance(shards, dict) or not shards or not all(isinstance(v, str) for v in shards.values()):
            raise corrupt(folder / WEIGHTS_INDEX, "no weight_map of tensor names to shard files")
        return [folder / name for name in sorted(set(shards.values()))]
    if (folder / WEIGHTS_FILE).exists() or require:
        return [folder / WEIGHTS_FILE]
    return []


def _parse_json_file(path: Path) -> None:
    """Whether the JSON file ``path`` parses (any value: a tokenizer's files are not all mappings)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise corrupt(path, first_line(err)) from err


def unreadable_arrow(err: BaseException, path: Path) -> str:
    """The problem of an Arrow IPC file Arrow could not read, in one line (a Parquet table of a version before
    schema 4 says so)."""
    try:
        with open(path, "rb") as stream:
            if stream.read(4) == b"PAR1":
                return "a Parquet table of an older version, not an Arrow IPC file"
    except OSError:
        pass
    return f"not a readable Arrow IPC file ({first_line(err)})"


def check_table_file(path: Path, rows: int | None = None, metadata_keys: Iterable[bytes] = ()) -> None:
    """The Arrow IPC file ``path`` opens (its footer), has ``rows`` rows (when given) and JSON schema metadata under
    each of ``metadata_keys``; otherwise :class:`CorruptFile`. (Its size is not compared with the result's: a table
    rewritten whole, e.g. in another row order, is still whole.)"""
    if not path.is_file():
        raise corrupt(path, "missing")
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
        found = sum(reader.get_batch(index).num_rows for index in range(reader.num_record_batches))
        schema = reader.schema.metadata or {}
    except (pa.ArrowException, OSError) as err:
        raise corrupt(path, unreadable_arrow(err, path)) from err
    if rows is not None and found != rows:
        raise corrupt(path, f"{found} rows, its step wrote {rows}")
    for key in metadata_keys:
        try:
            json.loads(schema[key])
        except (KeyError, UnicodeDecodeError, json.JSONDecodeError):
            raise corrupt(path, f"no readable {key.decode()} in its schema metadata") from None
