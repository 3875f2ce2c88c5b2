"""``best`` over every iteration from Parquet row-group statistics: read the footers, then
only the row groups that can hold the answer.

Row groups are visited from the most promising statistic (the largest maximum for ``max``)
down; one whose bound is worse than the best value found so far ends the search. Parquet
statistics leave NaN out, and a group without statistics (or with an infinite bound, which
may hide a finite extreme) is read whenever it is reached, so the answer equals a full scan's.

A row is superseded by a later copy of its key (:func:`morphtune.store._files.keep_last`).
Without reading keys, the search proves the winner is not: no row group of a later part may
have a ``trial_id`` and ``iteration`` range that includes the winner's key (parts written by
the store never repeat a key within themselves). When that cannot be shown (a compaction
crashed halfway, a concurrent writer repeated a key, a footer lacks statistics) the search
gives up with :data:`UNSURE` and the caller scans the keys.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from morphtune.store._errors import CorruptFileError, PartVanished
from morphtune.store._files import PartRef, vanished
from morphtune.store._location import Location

__all__ = ["UNSURE", "StatsWinner", "best_from_statistics"]


class _Unsure:
    def __repr__(self) -> str:
        return "UNSURE"


UNSURE: Final = _Unsure()


@dataclass(frozen=True)
class StatsWinner:
    part: PartRef
    row: int  # within the part
    trial_id: str
    iteration: int
    value: float


@dataclass(frozen=True)
class _Group:
    bound: float
    part: int
    group: int


_KeyRange = tuple[str, str, int, int]


def _footer(location: Location, ref: PartRef) -> pq.FileMetaData:
    try:
        with location.open_input(ref.path) as source:
            return pq.read_metadata(source)
    except (pa.ArrowException, OSError) as error:
        if vanished(location, ref.path, error):
            raise PartVanished(ref.path) from error
        raise CorruptFileError(ref.path, f"{type(error).__name__}: {error}") from error


def _key_range(group: pq.RowGroupMetaData, trial: int, iteration: int) -> _KeyRange | None:
    trial_stats = group.column(trial).statistics
    iteration_stats = group.column(iteration).statistics
    if (
        trial_stats is None
        or iteration_stats is None
        or not trial_stats.has_min_max
        or not iteration_stats.has_min_max
    ):
        return None
    return (
        str(trial_stats.min),
        str(trial_stats.max),
        int(iteration_stats.min),
        int(iteration_stats.max),
    )


def best_from_statistics(
    location: Location,
    refs: Sequence[PartRef],
    column: str,
    mode: str,
    failed: Collection[str],
) -> StatsWinner | _Unsure:
    """The best finite ``column`` value over all rows (rows of ``failed`` trials skipped;
    ties to the smallest (trial_id, iteration)), or :data:`UNSURE`."""
    sign = 1.0 if mode == "max" else -1.0
    groups: list[_Group] = []
    ranges: list[list[_KeyRange | None]] = []
    for position, ref in enumerate(refs):
        footer = _footer(location, ref)
        schema = footer.schema.to_arrow_schema()
        trial, iteration = schema.get_field_index("trial_id"), schema.get_field_index("iteration")
        if trial < 0 or iteration < 0:
            return UNSURE
        index = schema.get_field_index(column)
        if index >= 0 and not (
            pa.types.is_floating(schema.field(index).type)
            or pa.types.is_integer(schema.field(index).type)
        ):
            return UNSURE  # the key scan reports the type error
        part_ranges: list[_KeyRange | None] = []
        for number in range(footer.num_row_groups):
            group = footer.row_group(number)
            part_ranges.append(_key_range(group, trial, iteration))
            if index < 0 or group.num_rows == 0:
                continue
            stats = group.column(index).statistics
            if stats is not None and stats.null_count == group.num_rows:
                continue
            bound = math.inf
            if stats is not None and stats.has_min_max:
                extreme = float(stats.max if mode == "max" else stats.min) * sign
                bound = math.inf if math.isinf(extreme) else extreme
            groups.append(_Group(bound, position, number))
        ranges.append(part_ranges)
    if not groups:
        return UNSURE  # nothing reported: the key scan words the error
    groups.sort(key=lambda item: -item.bound)
    best: tuple[float, str, int, int, int] | None = None  # (score, trial, iteration, part, row)
    excluded = pa.array(sorted(failed), type=pa.string())
    for item in groups:
        if best is not None and item.bound < best[0]:
            break
        found = _group_best(location, refs[item.part], item.group, column, sign, excluded)
        if found is None:
            continue
        score, trial_id, iteration, row = found
        if best is None or _better(score, trial_id, iteration, best):
            best = (score, trial_id, iteration, item.part, row)
    if best is None:
        return UNSURE
    score, trial_id, iteration, part, row = best
    for later in ranges[part + 1 :]:
        for key_range in later:
            if key_range is None:
                return UNSURE
            low_trial, high_trial, low_iteration, high_iteration = key_range
            if low_trial <= trial_id <= high_trial and low_iteration <= iteration <= high_iteration:
                return UNSURE  # a later part may hold a newer copy of this key
    return StatsWinner(refs[part], row, trial_id, iteration, score * sign)


def _better(
    score: float, trial_id: str, iteration: int, best: tuple[float, str, int, int, int]
) -> bool:
    """A higher score wins; equal scores go to the smaller (trial_id, iteration)."""
    if score != best[0]:
        return score > best[0]
    return (trial_id, iteration) < (best[1], best[2])


def _group_best(
    location: Location, ref: PartRef, number: int, column: str, sign: float, excluded: pa.Array
) -> tuple[float, str, int, int] | None:
    """(score, trial_id, iteration, row in part) of the group's best eligible row."""
    try:
        with location.open_input(ref.path) as source:
            part = pq.ParquetFile(source)
            first = sum(part.metadata.row_group(g).num_rows for g in range(number))
            table = part.read_row_group(
                number, columns=["trial_id", "iteration", column], use_threads=False
            )
    except (pa.ArrowException, OSError) as error:
        if vanished(location, ref.path, error):
            raise PartVanished(ref.path) from error
        raise CorruptFileError(ref.path, f"{type(error).__name__}: {error}") from error
    values = np.asarray(
        table.column(column).cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64
    )
    eligible = np.isfinite(values)
    if len(excluded):
        failed = pc.is_in(table.column("trial_id"), value_set=excluded)
        eligible &= ~np.asarray(failed.to_numpy(zero_copy_only=False), dtype=bool)
    rows = np.flatnonzero(eligible)
    if len(rows) == 0:
        return None
    scores = values[rows] * sign
    top = scores.max()
    ties = rows[scores == top]
    trial_ids = table.column("trial_id").take(pa.array(ties)).to_pylist()
    iterations = table.column("iteration").take(pa.array(ties)).to_pylist()
    trial_id, iteration, row = min(zip(trial_ids, iterations, ties.tolist(), strict=True))
    return float(top), str(trial_id), int(iteration), first + int(row)
