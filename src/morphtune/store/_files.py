"""Part files: names, order, whole writes, reads and combining parts.

A part is one immutable Parquet file in ``results/`` or ``trials/``. Final names match
``part-*.parquet``; readers list only those, so temp files (``.<name>.<random>.tmp``, local
disk only) are never read.

Names and order:

* on local disk a part is ``part-<time_ns>-<seq>-<token>.parquet`` (written to a temp file,
  fsynced and renamed); parts are ordered by name, i.e. by write time;
* on an object store a part is ``part-<hash>.parquet``, the hash of the sweep id and the
  batch's (trial_id, iteration) keys, uploaded straight to that name: a replayed batch
  writes the same object again instead of a second copy. Parts are ordered by the largest
  ``written_at`` of their rows, kept in the footer (:data:`STAMP_KEY`), then by name;
* a compacted part is named after the newest part it replaces plus ``~c<hash>``, so it sorts
  where that part did: parts written while compaction ran still sort after it.

Within that order, a later row with a repeated (trial_id, iteration) supersedes an earlier
one (:func:`keep_last`).
"""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from morphtune.store._errors import CorruptFileError, PartVanished
from morphtune.store._location import FileEntry, Location

__all__ = [
    "STAMP_KEY",
    "OnCorrupt",
    "PartRef",
    "compacted_part_name",
    "concat_promoted",
    "is_part_name",
    "keep_last",
    "keyed_part_name",
    "list_parts",
    "new_part_name",
    "order_parts",
    "read_keys",
    "read_part",
    "read_row",
    "read_rows",
    "read_schema",
    "trial_codes",
    "validate_on_corrupt",
    "vanished",
    "write_part",
]

OnCorrupt = Literal["raise", "warn"]
_ON_CORRUPT = ("raise", "warn")
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
#: Footer metadata key holding the part's largest ``written_at`` (decimal text).
STAMP_KEY = b"morphtune.written_at"
# Small enough that fetching one row (the best config) decodes little of a compacted part.
ROW_GROUP_ROWS = 16384
_sequence = itertools.count()


@dataclass(frozen=True)
class PartRef:
    """A part in a listing and its place in the part order."""

    entry: FileEntry
    order: tuple[float, str]

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def path(self) -> str:
        return self.entry.path


def validate_on_corrupt(on_corrupt: str) -> OnCorrupt:
    if on_corrupt not in _ON_CORRUPT:
        raise ValueError(f"on_corrupt must be one of {list(_ON_CORRUPT)}, got {on_corrupt!r}")
    return on_corrupt  # type: ignore[return-value]


def is_part_name(name: str) -> bool:
    return name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)


def new_part_name() -> str:
    """A unique local part name that sorts after every part this process named before."""
    return f"part-{time.time_ns():020d}-{next(_sequence):06d}-{uuid.uuid4().hex[:12]}.parquet"


def keyed_part_name(sweep_id: str, trial_ids: Iterable[str], iterations: Iterable[int]) -> str:
    """The deterministic object-store name of a batch: a hash of its sorted keys."""
    digest = hashlib.sha256(sweep_id.encode() + b"\0")
    for trial_id, iteration in sorted(zip(trial_ids, iterations, strict=True)):
        digest.update(f"{trial_id}\0{iteration}\n".encode())
    return f"part-{digest.hexdigest()[:32]}.parquet"


def compacted_part_name(merged: Sequence[str]) -> str:
    """A compacted part's name: the newest merged part's stem, ``~c``, a hash of all the
    merged names; it sorts right after that newest part, before anything newer."""
    stem = merged[-1].removesuffix(PART_SUFFIX).split("~", 1)[0]
    digest = hashlib.sha256("\n".join(merged).encode()).hexdigest()[:12]
    return f"{stem}~c{digest}{PART_SUFFIX}"


def list_parts(
    location: Location, directory: str, stamps: dict[str, float] | None = None
) -> list[PartRef]:
    """Final-named parts of ``directory`` in part order (see :func:`order_parts`)."""
    return order_parts(location, location.list_files(directory), stamps)


def order_parts(
    location: Location, entries: Iterable[FileEntry], stamps: dict[str, float] | None = None
) -> list[PartRef]:
    """The final-named parts among ``entries``, in part order.

    On local disk the order is the name. On an object store it is (largest ``written_at``,
    name), which needs the footers: ``stamps`` caches them by name, size and modification
    time (a corrupt part gets ``-inf`` and fails again when read).
    """
    parts = [entry for entry in entries if is_part_name(entry.name)]
    if location.atomic_rename:
        refs = [PartRef(entry, (0.0, entry.name)) for entry in parts]
    else:
        known = {} if stamps is None else stamps
        refs = []
        for entry in parts:
            key = f"{entry.name}@{entry.size}:{entry.mtime_ns}"
            if key not in known:
                known[key] = _read_stamp(location, entry.path)
            refs.append(PartRef(entry, (known[key], entry.name)))
    return sorted(refs, key=lambda ref: ref.order)


def _read_stamp(location: Location, path: str) -> float:
    try:
        with location.open_input(path) as source:
            metadata = pq.read_metadata(source).metadata or {}
        return float(metadata.get(STAMP_KEY, b"-inf"))
    except (pa.ArrowException, OSError, ValueError):
        return float("-inf")


def write_part(location: Location, path: str, table: pa.Table, stamp: float | None) -> None:
    """Write ``table`` as one zstd Parquet part, whole or not at all."""
    if stamp is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), STAMP_KEY: repr(float(stamp)).encode()}
        )

    def write(handle: BinaryIO) -> None:
        pq.write_table(table, handle, compression="zstd", row_group_size=ROW_GROUP_ROWS)

    location.write_whole(path, write)


def vanished(location: Location, path: str, error: BaseException) -> bool:
    """Whether a read failed because the file is gone (compacted away since the listing;
    object stores report that as a generic I/O error, hence the second look)."""
    if isinstance(error, FileNotFoundError):
        return True
    return isinstance(error, OSError) and location.stat(path) is None


def _corrupt(location: Location, path: str, error: Exception, on_corrupt: OnCorrupt) -> None:
    if vanished(location, path, error):
        raise PartVanished(path) from error
    failure = CorruptFileError(path, f"{type(error).__name__}: {error}")
    if on_corrupt == "raise":
        raise failure from error
    warnings.warn(f"skipping {failure}", RuntimeWarning, stacklevel=3)


def read_part(
    location: Location,
    path: str,
    columns: Sequence[str] | None,
    on_corrupt: OnCorrupt,
    *,
    dictionary: Sequence[str] = (),
) -> pa.Table | None:
    """Read ``columns`` of a part (those it lacks are left out; ``dictionary`` ones as
    dictionary arrays); ``None`` for a skipped corrupt part. The file is closed on return."""
    try:
        with location.open_input(path) as source:
            part = pq.ParquetFile(source, read_dictionary=list(dictionary) or None)
            if columns is not None:
                present = set(part.schema_arrow.names)
                columns = [name for name in columns if name in present]
            return part.read(columns=columns, use_threads=False)
    except (pa.ArrowException, OSError) as error:
        _corrupt(location, path, error, on_corrupt)
        return None


def read_keys(
    location: Location, path: str, on_corrupt: OnCorrupt
) -> tuple[pa.Table, frozenset[str]] | None:
    """A result part's ``trial_id`` (dictionary-encoded) and ``iteration`` columns and the
    names of all its columns, from one open; ``None`` for a skipped corrupt part."""
    try:
        with location.open_input(path) as source:
            part = pq.ParquetFile(source, read_dictionary=["trial_id"])
            names = frozenset(part.schema_arrow.names)
            if "trial_id" not in names or "iteration" not in names:
                raise ValueError("missing trial_id or iteration column")
            table = part.read(columns=["trial_id", "iteration"], use_threads=False)
            if table.column("trial_id").null_count or table.column("iteration").null_count:
                raise ValueError("null trial_id or iteration")
    except (pa.ArrowException, OSError, ValueError) as error:
        _corrupt(location, path, error, on_corrupt)
        return None
    return table, names


def read_schema(location: Location, path: str, on_corrupt: OnCorrupt) -> pa.Schema | None:
    """A part's Arrow schema from its footer alone; ``None`` for a skipped corrupt part."""
    try:
        with location.open_input(path) as source:
            return pq.read_schema(source)
    except (pa.ArrowException, OSError) as error:
        _corrupt(location, path, error, on_corrupt)
        return None


def read_rows(
    location: Location, path: str, rows: Sequence[int], columns: Sequence[str]
) -> pa.Table:
    """The given rows of a part, in the order given, decoding only the row groups that
    hold them."""
    wanted = np.asarray(rows, dtype=np.int64)
    try:
        with location.open_input(path) as source:
            part = pq.ParquetFile(source)
            sizes = [
                part.metadata.row_group(g).num_rows for g in range(part.metadata.num_row_groups)
            ]
            starts = np.cumsum([0, *sizes], dtype=np.int64)
            if len(wanted) and (wanted.min() < 0 or wanted.max() >= starts[-1]):
                raise CorruptFileError(path, f"has {int(starts[-1])} rows, no row {wanted.max()}")
            groups = np.unique(np.searchsorted(starts, wanted, side="right") - 1)
            present = set(part.schema_arrow.names)
            names = [name for name in columns if name in present]
            if len(groups) == 0:
                return part.schema_arrow.empty_table().select(names)
            table = part.read_row_groups(groups.tolist(), columns=names, use_threads=False)
    except (pa.ArrowException, OSError) as error:
        if vanished(location, path, error):
            raise PartVanished(path) from error
        raise CorruptFileError(path, f"{type(error).__name__}: {error}") from error
    group_start = np.cumsum([0, *(sizes[g] for g in groups)], dtype=np.int64)
    position = np.searchsorted(groups, np.searchsorted(starts, wanted, side="right") - 1)
    local = group_start[position] + (wanted - starts[groups[position]])
    return table.take(pa.array(local))


def read_row(location: Location, path: str, row: int, columns: Sequence[str]) -> dict[str, Any]:
    """One row of a part, decoding only the row group that holds it."""
    result: dict[str, Any] = read_rows(location, path, [row], columns).to_pylist()[0]
    return result


def _resolve_type(types: list[pa.DataType]) -> pa.DataType:
    concrete = {data_type for data_type in types if data_type != pa.null()}
    if not concrete:
        return pa.null()
    if len(concrete) == 1:
        return concrete.pop()
    return pa.string()  # e.g. float64 in one part, string in another: see _schema


#: Columns added to the schema later, read from an older column in parts that lack them.
FALLBACK_COLUMNS = {"written_at": "timestamp"}


def concat_promoted(tables: Sequence[pa.Table], base: pa.Schema) -> pa.Table:
    """Concatenate tables whose columns differ: missing columns become nulls, conflicting
    types become string. Base columns come first, then the others sorted by name."""
    types: dict[str, list[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            data_type = field.type
            if pa.types.is_dictionary(data_type):
                data_type = data_type.value_type
            types.setdefault(field.name, []).append(data_type)
    names = [
        name
        for name in base.names
        if name in types or not tables or FALLBACK_COLUMNS.get(name) in types
    ]
    names += sorted(name for name in types if name not in base.names)
    schema = pa.schema(
        [
            pa.field(
                name, base.field(name).type if name in base.names else _resolve_type(types[name])
            )
            for name in names
        ]
    )
    if not tables:
        return schema.empty_table()
    aligned = [
        pa.table([_aligned_column(table, field) for field in schema], schema=schema)
        for table in tables
    ]
    return pa.concat_tables(aligned)


def _aligned_column(table: pa.Table, field: pa.Field) -> pa.ChunkedArray | pa.Array:
    if field.name in table.column_names:
        return table.column(field.name).cast(field.type)
    fallback = FALLBACK_COLUMNS.get(field.name)
    if fallback is not None and fallback in table.column_names:
        return table.column(fallback).cast(field.type)
    return pa.nulls(table.num_rows, field.type)


def trial_codes(trial_ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Small integer per distinct trial id (same id, same code across chunks)."""
    return np.asarray(
        pc.index_in(trial_ids, value_set=pc.unique(trial_ids)).to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )


def last_positions(codes: np.ndarray, iterations: np.ndarray) -> np.ndarray | None:
    """Positions of the last row per (code, iteration) key, ascending; ``None`` when every
    key is unique (nothing to drop). ``codes`` are small non-negative ints."""
    rows = len(codes)
    if rows == 0:
        return None
    if iterations.min() < 0 or iterations.max() >= 2**32:
        keys = None
    else:
        span = int(iterations.max()) + 1
        dense = (int(codes.max()) + 1) * span
        if dense <= max(4 * rows, 1 << 20):  # a bincount over the key space is cheap
            flat = codes.astype(np.int64) * span + iterations
            if int(np.bincount(flat, minlength=dense).max()) <= 1:
                return None
            last = np.full(dense, -1, dtype=np.int64)
            np.maximum.at(last, flat, np.arange(rows, dtype=np.int64))
            return np.sort(last[last >= 0])
        keys = (codes.astype(np.int64) << 32) | iterations
    if keys is None:
        order = np.lexsort((np.arange(rows), iterations, codes))
        sorted_codes, sorted_iterations = codes[order], iterations[order]
        boundary = np.ones(rows, dtype=bool)
        boundary[:-1] = (sorted_codes[1:] != sorted_codes[:-1]) | (
            sorted_iterations[1:] != sorted_iterations[:-1]
        )
        if boundary.all():
            return None
        return np.sort(order[boundary])
    _, first_from_end = np.unique(keys[::-1], return_index=True)
    if len(first_from_end) == rows:
        return None
    return np.sort(rows - 1 - first_from_end)


def keep_last(table: pa.Table) -> pa.Table:
    """Drop rows whose (trial_id, iteration) repeats a later row's; keep row order otherwise."""
    if table.num_rows == 0:
        return table
    if table.column("iteration").null_count or table.column("trial_id").null_count:
        raise ValueError("trial_id and iteration must not be null in result parts")
    iterations = np.asarray(table.column("iteration").to_numpy(zero_copy_only=False), np.int64)
    keep = last_positions(trial_codes(table.column("trial_id")), iterations)
    return table if keep is None else table.take(pa.array(keep))
