"""Knowledge tables on disk: fixed-size-list columns, schema metadata, atomic Parquet writes.

A table holds one row per key (feature id or example id) and fixed-width numeric columns
(logits ``[S]``, members' logits ``[N, C]``, ...), stored as Arrow fixed-size lists so a
column converts to an ``[F, *shape]`` NumPy array without copying row by row. A file that
is not a whole Parquet file (cut short, overwritten) is refused by :func:`read_knowledge`
with one line naming it (:class:`~kd_core.io.file_checks.CorruptFile`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kd_core.io.errors import DataError
from kd_core.io.file_checks import corrupt, unreadable_parquet

#: Schema metadata key of a table's shape information (kind, members, widths).
METADATA_KEY = b"kd_knowledge"


def fixed(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    """``[F, ...]`` array -> one fixed-size list per row."""
    rows = values.reshape(len(values), -1)
    flat = pa.array(rows.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])


def unfixed(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Inverse of :func:`fixed`: fixed-size lists -> ``[F, *shape]`` array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.array(array.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(len(array), *shape)


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


def rows_for(table: pa.Table, key_column: str, keys: list[str] | tuple[str, ...], source: str = "knowledge") -> pa.Table:
    """The rows of ``table`` whose ``key_column`` is ``keys[i]``, in that order; a missing key raises."""
    row_of = {key: row for row, key in enumerate(table.column(key_column).to_pylist())}
    missing = [key for key in keys if key not in row_of]
    if missing:
        raise DataError(source, f"{key_column} {missing[0]!r}", f"no knowledge for {len(missing)} of {len(keys)} keys")
    return table.take(pa.array([row_of[key] for key in keys], pa.int64()))


def write_knowledge(table: pa.Table, path: str | Path) -> Path:
    """Write a knowledge table as Parquet atomically (a temporary file renamed into place)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    pq.write_table(table, partial, compression="zstd")
    partial.replace(target)
    return target


def read_knowledge(path: str | Path) -> pa.Table:
    """Read a knowledge table written by :func:`write_knowledge`; a file Parquet cannot read is corrupt (one line)."""
    target = Path(path)
    if not target.exists():
        raise DataError(str(target), "knowledge", "file not found")
    try:
        return pq.read_table(target)
    except (pa.ArrowException, OSError) as err:
        raise corrupt(target, unreadable_parquet(err)) from err
