"""The last-row side index: each trial's last reported value per numeric column, written at
compaction, so that a cold ``best(scope="last")`` reads one small file instead of every row.

``<sweep>/last_rows.parquet`` (beside ``manifest.json``, outside ``results/``: listing code
and directory reads of the result parts never see it) holds one row per trial:
``trial_id`` and, for every numeric value column ``<c>`` (``metrics.``, ``cost.``,
``signal.``, ``config.``), ``value:<c>`` (float64), ``iteration:<c>`` and ``row:<c>``
(int64): the trial's last iteration that reported ``<c>`` (a non-null value, NaN and inf
included) after superseded copies of a key are dropped, and that row's position across the
indexed parts (null where the trial never reported ``<c>``). The footer key
:data:`META_KEY` records, as JSON, the indexed parts in part order (name, listing size and
modification time, rows) and every column name they hold.

The index answers only while the sweep's listing of result parts is exactly the indexed set
(same names, and on object stores same sizes and modification times): any newer, missing
or rewritten part, an unreadable file or a column it lacks sends the reader to the full key
scan, so it never changes an answer. The reader also checks the winner's row holds the
indexed key and value before using it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from morphtune.store._errors import CorruptFileError, PartVanished
from morphtune.store._files import PartRef, is_part_name, last_positions, list_parts, read_keys
from morphtune.store._location import FileEntry, Location
from morphtune.store._schema import VALUE_PREFIXES

__all__ = [
    "LAST_INDEX_NAME",
    "META_KEY",
    "LastWinner",
    "best_from_last_index",
    "build_last_index",
    "write_last_index",
]

LAST_INDEX_NAME = "last_rows.parquet"
#: Footer metadata key of the side file: JSON ``{"version", "parts", "columns"}``.
META_KEY = b"morphtune.last_index"
_VERSION = 1
_Identity = tuple[str, int, int]  # (name, size, mtime_ns) as the listing gives them


@dataclass(frozen=True)
class LastWinner:
    """The best trial by its last report, as the side index claims it."""

    column: str  # the value column compared
    path: str  # the part holding the row
    row: int  # within that part
    trial_id: str
    iteration: int
    value: float


def _identity(entry: FileEntry) -> _Identity:
    return (entry.name, entry.size, entry.mtime_ns)


def _is_numeric(data_type: pa.DataType) -> bool:
    return bool(
        pa.types.is_floating(data_type)
        or pa.types.is_integer(data_type)
        or pa.types.is_null(data_type)
    )


# -- writing ---------------------------------------------------------------------------------


def _recorded(metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The side file's parsed metadata, or ``None`` when absent or malformed."""
    raw = (metadata or {}).get(META_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict) or meta.get("version") != _VERSION:
            return None
        parts = [(str(n), int(s), int(m), int(r)) for n, s, m, r in meta["parts"]]
        columns = [str(name) for name in meta["columns"]]
    except (ValueError, TypeError, KeyError):
        return None
    if any(rows < 0 for *_, rows in parts):
        return None
    return {"parts": parts, "columns": columns}


def _indexed_set(location: Location, path: str) -> set[_Identity] | None:
    try:
        with location.open_input(path) as source:
            meta = _recorded(pq.read_schema(source).metadata)
    except (pa.ArrowException, OSError):
        return None
    return None if meta is None else {(n, s, m) for n, s, m, _ in meta["parts"]}


def build_last_index(location: Location, refs: Sequence[PartRef]) -> pa.Table:
    """The side index of the result parts ``refs`` (in part order); raises
    :class:`CorruptFileError` / :class:`PartVanished` if a part cannot be read."""
    codes_of: dict[str, int] = {}
    codes, iterations, sizes = [], [], []
    kinds: dict[str, bool] = {}  # column -> numeric in every part that has it
    names: set[str] = set()
    schemas: list[pa.Schema] = []
    for ref in refs:
        loaded = read_keys(location, ref.path, "raise")
        if loaded is None:  # pragma: no cover - "raise" never returns None
            raise CorruptFileError(ref.path, "unreadable")
        table, part_names = loaded
        names |= part_names
        column = table.column("trial_id")
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        column = column.unify_dictionaries()
        part_codes = np.empty(table.num_rows, dtype=np.int64)
        if column.num_chunks:
            ids = column.chunk(0).dictionary.to_pylist()
            mapping = np.fromiter(
                (codes_of.setdefault(tid, len(codes_of)) for tid in ids), np.int64, len(ids)
            )
            start = 0
            for chunk in column.chunks:
                indices = np.asarray(chunk.indices.to_numpy(zero_copy_only=False), np.int64)
                part_codes[start : start + len(chunk)] = mapping[indices]
                start += len(chunk)
        codes.append(part_codes)
        iterations.append(
            np.asarray(table.column("iteration").to_numpy(zero_copy_only=False), np.int64)
        )
        sizes.append(table.num_rows)
        with location.open_input(ref.path) as source:
            schema = pq.read_schema(source)
        schemas.append(schema)
        for field in schema:
            if field.name.startswith(VALUE_PREFIXES):
                kinds[field.name] = kinds.get(field.name, True) and _is_numeric(field.type)
    trial_ids = sorted(codes_of, key=codes_of.__getitem__)
    all_codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    all_iterations = np.concatenate(iterations) if iterations else np.zeros(0, np.int64)
    offsets = np.cumsum([0, *sizes], dtype=np.int64)
    positions = last_positions(all_codes, all_iterations)
    kept = np.arange(len(all_codes), dtype=np.int64) if positions is None else positions
    order = kept[np.lexsort((all_iterations[kept], all_codes[kept]))]
    trials = len(trial_ids)
    data: dict[str, pa.Array] = {"trial_id": pa.array(trial_ids, type=pa.string())}
    for name in sorted(column for column, numeric in kinds.items() if numeric):
        values = np.full(len(all_codes), np.nan)
        reported = np.zeros(len(all_codes), dtype=bool)
        for position, (ref, schema) in enumerate(zip(refs, schemas, strict=True)):
            if schema.get_field_index(name) < 0:
                continue
            part = _read_column(location, ref, name)
            floats = part.cast(pa.float64())
            start, stop = int(offsets[position]), int(offsets[position + 1])
            if len(floats) != stop - start:
                raise CorruptFileError(ref.path, "changed while it was indexed")
            reported[start:stop] = np.asarray(
                floats.is_valid().to_numpy(zero_copy_only=False), dtype=bool
            )
            values[start:stop] = np.asarray(floats.fill_null(np.nan).to_numpy(), np.float64)
        chosen = order[reported[order]]
        if len(chosen) == 0:
            continue  # nobody reported it: the key scan words the answer
        chosen_codes = all_codes[chosen]
        last = np.ones(len(chosen), dtype=bool)
        last[:-1] = chosen_codes[1:] != chosen_codes[:-1]
        rows = chosen[last]
        owners = all_codes[rows]
        missing = np.ones(trials, dtype=bool)
        missing[owners] = False
        value = np.zeros(trials)
        iteration = np.zeros(trials, dtype=np.int64)
        row = np.zeros(trials, dtype=np.int64)
        value[owners], iteration[owners], row[owners] = values[rows], all_iterations[rows], rows
        data[f"value:{name}"] = pa.array(value, mask=missing)
        data[f"iteration:{name}"] = pa.array(iteration, mask=missing)
        data[f"row:{name}"] = pa.array(row, mask=missing)
    meta = {
        "version": _VERSION,
        "parts": [[*_identity(ref.entry), rows] for ref, rows in zip(refs, sizes, strict=True)],
        "columns": sorted(names),
    }
    return pa.table(data).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def _read_column(location: Location, ref: PartRef, name: str) -> pa.ChunkedArray:
    with location.open_input(ref.path) as source:
        table = pq.ParquetFile(source).read(columns=[name], use_threads=False)
    return table.column(name)


def write_last_index(
    location: Location, sweep_dir: str, results_dir: str, stamps: dict[str, float]
) -> bool:
    """(Re)write the sweep's side index for its current result parts, unless the one there
    already covers exactly them. Returns whether one was written. A part that cannot be
    read, or a failed write, leaves the old file (which the listing then no longer
    matches): the index is an optimisation, never a reason for compaction to fail."""
    path = f"{sweep_dir}/{LAST_INDEX_NAME}"
    refs = list_parts(location, results_dir, stamps)
    if not refs:
        return False
    if _indexed_set(location, path) == {_identity(ref.entry) for ref in refs}:
        return False
    try:
        table = build_last_index(location, refs)
    except (CorruptFileError, PartVanished, pa.ArrowException, OSError, ValueError):
        return False

    def write(handle: Any) -> None:
        pq.write_table(table, handle, compression="zstd")

    try:
        location.write_whole(path, write)  # whole or not at all, like every store file
    except (OSError, pa.ArrowException):
        return False
    return True


# -- reading ---------------------------------------------------------------------------------


def best_from_last_index(
    location: Location,
    path: str,
    entries: Collection[FileEntry],
    resolve: Callable[[set[str]], str | None],
    mode: str,
    failed: Collection[str],
) -> LastWinner | None:
    """The best finite last-reported value of the column ``resolve(column names)`` picks
    (failed trials skipped; ties to the smallest (trial_id, iteration)), from the side
    index at ``path``; ``None`` whenever it cannot answer (absent, unreadable or stale for
    the listed part ``entries``, column not indexed, nothing finite)."""
    current = {_identity(entry): entry for entry in entries if is_part_name(entry.name)}
    try:
        with location.open_input(path) as source:
            side = pq.ParquetFile(source)
            meta = _recorded(side.schema_arrow.metadata)
            if meta is None or {(n, s, m) for n, s, m, _ in meta["parts"]} != set(current):
                return None
            if len(meta["parts"]) != len(current):
                return None  # a part recorded twice
            column = resolve(set(meta["columns"]))
            wanted = [f"value:{column}", f"iteration:{column}", f"row:{column}"]
            if column is None or any(name not in side.schema_arrow.names for name in wanted):
                return None
            table = side.read(columns=["trial_id", *wanted], use_threads=False)
    except (pa.ArrowException, OSError):
        return None
    values = table.column(wanted[0])
    if not (
        pa.types.is_floating(values.type)
        and pa.types.is_integer(table.column(wanted[1]).type)
        and pa.types.is_integer(table.column(wanted[2]).type)
        and pa.types.is_string(table.column("trial_id").type)
    ):
        return None
    eligible = pc.and_(pc.is_valid(values), pc.is_finite(values.fill_null(math.nan)))
    if failed:
        excluded = pa.array(sorted(failed), type=pa.string())
        eligible = pc.and_(
            eligible, pc.invert(pc.is_in(table.column("trial_id"), value_set=excluded))
        )
    table = table.filter(eligible)
    if table.num_rows == 0:
        return None
    values = table.column(wanted[0])
    extreme = pc.max(values) if mode == "max" else pc.min(values)
    ties = table.filter(pc.equal(values, extreme))
    trial_id, iteration, row, value = min(
        zip(
            ties.column("trial_id").to_pylist(),
            ties.column(wanted[1]).to_pylist(),
            ties.column(wanted[2]).to_pylist(),
            ties.column(wanted[0]).to_pylist(),
            strict=True,
        )
    )
    if trial_id is None or iteration is None or row is None:
        return None
    start = 0
    for name, size, mtime_ns, count in meta["parts"]:
        if start <= row < start + count:
            entry = current[(name, size, mtime_ns)]
            return LastWinner(column, entry.path, row - start, trial_id, iteration, float(value))
        start += count
    return None
