"""Knowledge tables on disk: fixed-size-list columns, schema metadata, atomic Arrow IPC files read in place.

A table holds one row per key (feature id or example id) and fixed-width numeric columns
(logits ``[S]``, members' logits ``[N, C]``, attention ``[S, Q]``, ...), stored as Arrow
fixed-size lists. It is written as one uncompressed Arrow IPC file (one record batch) and read
**memory-mapped**: :func:`column_view` hands out a column as an ``[F, *shape]`` NumPy view of the
file's own bytes, in the stored dtype (float16 for logits and attention), without copying, and
:class:`RowsOf` picks rows of it in another order without copying either. Only the rows a batch
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


def _single(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The column as one array (a table read from a file this module wrote has one chunk: no copy)."""
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def column_view(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """A fixed-size-list column as a read-only ``[F, *shape]`` array of its stored dtype, sharing the column's
    memory (for a table from :func:`read_knowledge`, the memory-mapped file)."""
    array = _single(column)
    flat = array.flatten()  # honours a sliced array's offset
    if flat.null_count:
        raise DataError("knowledge", "column", "a knowledge column has missing values")
    return flat.to_numpy(zero_copy_only=True).reshape(len(array), *shape)


def unfixed(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Inverse of :func:`fixed`: fixed-size lists -> a new ``[F, *shape]`` array of ``dtype`` (a copy)."""
    return column_view(column, shape).astype(dtype)


class RowsOf:
    """Rows ``rows`` of a base array, in that order, picked when indexed (the knowledge of a feature order that is
    not the table's, without a copy of the table).

    It answers what training asks of an array: ``len``, ``shape``, ``dtype``, ``ndim`` and
    ``values[indices]`` (a NumPy array of those rows; ``values[i, ...]`` too); ``np.asarray``
    makes the whole copy.
    """

    def __init__(self, base: np.ndarray, rows: np.ndarray) -> None:
        self.base, self.rows = base, np.asarray(rows, np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        """``key``'s first part picks rows (of this order), the rest indexes within them, as on an array."""
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        rows = self.rows[first]
        picked = self.base[rows]
        if not rest:
            return picked
        return picked[rest] if np.ndim(rows) == 0 else picked[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.base[self.rows]
        return values if dtype is None else values.astype(dtype)


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


def rows_view(view: np.ndarray, rows: np.ndarray | None) -> np.ndarray | RowsOf:
    """``view`` as it is (``rows`` is ``None``: the table's order) or its rows ``rows``, picked when indexed."""
    return view if rows is None else RowsOf(view, rows)


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
    """Write a knowledge table as one uncompressed Arrow IPC record batch, atomically (a temporary file renamed
    into place)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    whole = table.combine_chunks()
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, whole.schema) as writer:
        writer.write_table(whole, max_chunksize=max(whole.num_rows, 1))
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
        raise corrupt(target, unreadable_arrow(err)) from err
