"""Compaction: merge runs of small parts into one, crash-safe at every step.

Steps for each run of consecutive small parts (in part order):

1. read every part of the run whole (a corrupt one raises: nothing is changed);
2. merge them, keeping the last row per (trial_id, iteration) for results and dropping
   repeated records for trials;
3. write the merged part whole (local: temp file, fsync, rename, directory fsync) under a
   name that sorts where the newest part of the run did (:func:`compacted_part_name`);
4. delete the parts of the run.

A crash after 3 leaves the merged part beside some of the old ones: they hold the same rows,
so readers (which resolve repeats) answer as before, and the next compaction merges them
again. A crash before 3 leaves the old parts only (plus, locally, a temp file that readers
ignore and :meth:`ResultWriter.remove_stale_temp_files` removes).
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import pyarrow as pa

from morphtune.store._errors import CorruptFileError
from morphtune.store._files import (
    STAMP_KEY,
    PartRef,
    compacted_part_name,
    concat_promoted,
    keep_last,
    list_parts,
    read_part,
    write_part,
)
from morphtune.store._location import LocalLocation, Location

__all__ = ["compact_directory", "dedupe_records", "small_runs"]

Dedupe = Literal["keys", "records"]
_RECORD_KEY = ("trial_id", "status", "timestamp")


def dedupe_records(table: pa.Table) -> pa.Table:
    """Trial records without repeats of one record (same trial_id, status and timestamp;
    the copies a compaction leaves until it deletes the old parts), in order."""
    if table.num_rows < 2:
        return table
    positions = table.select(list(_RECORD_KEY)).append_column(
        "__position", pa.array(np.arange(table.num_rows, dtype=np.int64))
    )
    last = positions.group_by(list(_RECORD_KEY), use_threads=False).aggregate(
        [("__position", "max")]
    )
    if last.num_rows == table.num_rows:
        return table
    rows = np.sort(last.column("__position_max").to_numpy())
    return table.take(pa.array(rows))


def _size(location: Location, part: PartRef) -> int:
    if part.entry.size >= 0:
        return part.entry.size
    try:
        return os.stat(part.path).st_size
    except FileNotFoundError:  # removed meanwhile: never part of a run
        return -1


def small_runs(
    location: Location, parts: list[PartRef], max_part_bytes: int
) -> list[list[PartRef]]:
    """Maximal runs of >= 2 consecutive parts each smaller than ``max_part_bytes``."""
    runs: list[list[PartRef]] = [[]]
    for part in parts:
        size = _size(location, part)
        if 0 <= size < max_part_bytes:
            runs[-1].append(part)
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if len(run) >= 2]


def _stamp(table: pa.Table, part: PartRef) -> float | None:
    raw = (table.schema.metadata or {}).get(STAMP_KEY)
    if raw is not None:
        try:
            return float(raw)
        except ValueError:
            pass
    return part.order[0] if part.order[0] > float("-inf") and part.order[0] != 0.0 else None


def compact_directory(
    location: Location,
    directory: str,
    base: pa.Schema,
    dedupe: Dedupe,
    max_part_bytes: int,
    stamps: dict[str, float],
) -> int:
    """Compact ``directory``; return how many parts were removed."""
    removed = 0
    for run in small_runs(location, list_parts(location, directory, stamps), max_part_bytes):
        tables, run_stamps = [], []
        for part in run:
            table = read_part(location, part.path, None, "raise")
            if table is None:  # only with on_corrupt="warn"
                raise CorruptFileError(part.path, "unreadable")
            tables.append(table)
            stamp = _stamp(table, part)
            if stamp is not None:
                run_stamps.append(stamp)
        merged = concat_promoted(tables, base)
        merged = keep_last(merged) if dedupe == "keys" else dedupe_records(merged)
        name = compacted_part_name([part.name for part in run])
        write_part(location, f"{directory}/{name}", merged, max(run_stamps, default=None))
        for part in run:
            location.delete(part.path)
        if isinstance(location, LocalLocation):
            location.sync_directory(directory)
        removed += len(run)
    return removed
