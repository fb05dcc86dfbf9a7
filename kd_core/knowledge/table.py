"""Knowledge tables on disk: fixed-size-list columns, schema metadata, atomic Arrow IPC files read in place.

A table holds one row per key (feature id or example id) and fixed-width numeric columns
(logits ``[S]``, members' logits ``[N, C]``, attention ``[S, Q]``, ...), stored as Arrow
fixed-size lists. It is written as one uncompressed Arrow IPC file and read **memory-mapped**:
:func:`column_rows` hands out a column as an ``[F, *shape]`` NumPy view of the file's own bytes, in
the stored dtype (float16 for logits and attention), without copying; a column of several
record batches (over 2^31 values, e.g. attention of 88k features at 384 x 64) or rows wanted in
another order come as :class:`Rows`, which gathers the rows a batch asks for. Only the rows a batch
reads are paged in; a page read once is shared by every process that maps the file (the
data-parallel workers of one node), so no process holds a private copy of the knowledge.
Training converts each batch to float32 (:func:`~kd_core.data.batches.batch_at`), not the table.
The price is disk: the file is not compressed (float16 logits and attention gain little from it).

A file that is not a whole Arrow IPC file (cut short, overwritten) is refused by
:func:`read_knowledge` with one line naming it (:class:`~kd_core.io.file_checks.CorruptFile`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kd_core.io.errors import DataError
from kd_core.io.file_checks import corrupt, unreadable_arrow

#: Schema metadata key of a table's shape information (kind, members, widths).
METADATA_KEY = b"kd_knowledge"
#: The file name collect and merge steps give their tables.
KNOWLEDGE_FILE = "knowledge.arrow"


def fixed(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    """``[F, ...]`` array -> one fixed-size list per row (no copy when ``values`` is contiguous and of ``dtype``)."""
    rows = values.reshape(len(values), -1)
    flat = pa.array(rows.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])


#: The most values one record batch's column may hold (Arrow IPC lengths are 32-bit): tables are written in
#: record batches of at most this many values of their widest column.
MAX_BATCH_VALUES = 2**31 - 1


def _chunk_views(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Each chunk of a fixed-size-list column as a read-only ``[rows, *shape]`` view of its memory (no copy)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    views = []
    for chunk in chunks:
        flat = chunk.flatten()  # honours a sliced chunk's offset
        if flat.null_count:
            raise DataError("knowledge", "column", "a knowledge column has missing values")
        views.append(flat.to_numpy(zero_copy_only=True).reshape(len(chunk), *shape))
    if not views:
        views.append(np.empty((0, *shape), column.type.value_type.to_pandas_dtype()))
    return views


class Rows:
    """A column held as chunks (views of a mapped file's record batches), optionally in another row order, read
    when indexed: the knowledge of a large table or of a feature order that is not the table's, without a copy.

    It answers what training asks of an array: ``len``, ``shape``, ``dtype``, ``ndim`` and
    ``values[indices]`` (a NumPy array of those rows; ``values[i, ...]`` too); ``np.asarray``
    makes the whole copy.
    """

    def __init__(self, chunks: Sequence[np.ndarray], rows: np.ndarray | None = None) -> None:
        self.chunks = list(chunks)
        self.starts = np.concatenate([[0], np.cumsum([len(chunk) for chunk in self.chunks])]).astype(np.int64)
        self.rows = None if rows is None else np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.chunks[0].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.chunks[0].dtype

    @property
    def ndim(self) -> int:
        return self.chunks[0].ndim

    def _take(self, ids: np.ndarray) -> np.ndarray:
        """Stored rows ``ids`` (positions in the table), gathered from their chunks."""
        if len(self.chunks) == 1:
            return self.chunks[0][ids]
        chunk = np.searchsorted(self.starts, ids, side="right") - 1
        out = np.empty((len(ids), *self.chunks[0].shape[1:]), self.dtype)
        for index in np.unique(chunk):
            where = chunk == index
            out[where] = self.chunks[index][ids[where] - self.starts[index]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        """``key``'s first part picks rows (of this order), the rest indexes within them, as on an array."""
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        ids = (np.arange(len(self)) if self.rows is None else self.rows)[first]
        scalar = np.ndim(ids) == 0
        picked = self._take(np.atleast_1d(ids))
        if scalar:
            picked = picked[0]
        if not rest:
            return picked
        return picked[rest] if scalar else picked[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype)


def column_rows(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...],
                rows: np.ndarray | None = None) -> np.ndarray | Rows:
    """A fixed-size-list column as ``[F, *shape]`` rows of its stored dtype, read in place: a plain read-only view
    (one chunk in the table's order, the usual case) or :class:`Rows` over its chunks in the order ``rows``."""
    chunks = _chunk_views(column, shape)
    return chunks[0] if len(chunks) == 1 and rows is None else Rows(chunks, rows)


def unfixed(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Inverse of :func:`fixed`: fixed-size lists -> a new ``[F, *shape]`` array of ``dtype`` (a copy)."""
    return np.concatenate(_chunk_views(column, shape)).astype(dtype)


def row_indices(table: pa.Table, key_column: str, keys: Sequence[str], source: str = "knowledge") -> np.ndarray | None:
    """The rows of ``table`` whose ``key_column`` is ``keys[i]``, in that order; ``None`` when that is the table's
    own order (nothing to pick). A missing key raises :class:`DataError`."""
    stored = table.column(key_column).to_pylist()
    if len(stored) == len(keys) and stored == list(keys):
        return None
    row_of = {key: row for row, key in enumerate(stored)}
    missing = [key for key in keys if key not in row_of]
    if missing:
        raise DataError(source, f"{key_column} {missing[0]!r}", f"no knowledge for {len(missing)} of {len(keys)} keys")
    return np.fromiter((row_of[key] for key in keys), np.int64, len(keys))


def with_metadata(table: pa.Table, entries: dict[bytes, dict[str, Any]]) -> pa.Table:
    """``table`` with JSON ``entries`` added to (or replacing keys of) its schema metadata."""
    metadata = dict(table.schema.metadata or {})
    metadata.update({key: json.dumps(value).encode() for key, value in entries.items()})
    return table.replace_schema_metadata(metadata)


def metadata_entry(table: pa.Table, key: bytes, source: str = "knowledge") -> dict[str, Any]:
    """The JSON metadata entry ``key`` of ``table``; a table without it raises :class:`DataError`."""
    raw = (table.schema.metadata or {}).get(key)
    if raw is None:
        raise DataError(source, "schema metadata", f"table has no {key.decode()} metadata (not a knowledge table of "
                        "this version)")
    return json.loads(raw)


def write_knowledge(table: pa.Table, path: str | Path) -> Path:
    """Write a knowledge table as an uncompressed Arrow IPC file, atomically (a temporary file renamed into place):
    as few record batches as Arrow's 32-bit lengths allow (one, unless a column holds over 2^31 values)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    widths = [field.type.list_size for field in table.schema if pa.types.is_fixed_size_list(field.type)]
    rows = max(1, MAX_BATCH_VALUES // max(widths, default=1))
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=rows)
    partial.replace(target)
    return target


def read_knowledge(path: str | Path) -> pa.Table:
    """A knowledge table written by :func:`write_knowledge`, memory-mapped (its columns are the file's bytes); a file
    that is not a whole Arrow IPC file is corrupt (one line)."""
    target = Path(path)
    if not target.exists():
        raise DataError(str(target), "knowledge", "file not found")
    try:
        return pa.ipc.open_file(pa.memory_map(str(target), "r")).read_all()
    except (pa.ArrowException, OSError) as err:
        raise corrupt(target, unreadable_arrow(err, target)) from err
