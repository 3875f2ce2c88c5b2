"""A sweep's result rows for queries: columns read on demand, kept row-aligned, plus the
row selections every query shares (each trial's last row, rows meeting conditions, rows of
trials that did not fail).

Column names are resolved by :func:`morphtune.store._schema.column_for` (``acc`` ->
``metrics.acc``, ``params`` -> ``metrics.params``; a prefixed ``config.x``, ``cost.x``,
``signal.x`` or ``metrics.x`` as is), plus :data:`BUILTIN_COLUMNS`: ``state`` is the trial's
current state (from its status records), ``status`` the status stored with the row.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from morphtune.store._conditions import Condition, InvalidArgument, condition_mask, is_numeric
from morphtune.store._reader import SweepStore
from morphtune.store._schema import VALUE_PREFIXES, column_for, flatten_scalars

__all__ = [
    "BUILTIN_COLUMNS",
    "QUERY_SCOPES",
    "SweepFrame",
    "last_per_trial",
    "not_failed",
    "numeric_metrics",
    "require_numeric",
    "rows_where",
    "valid_rows",
    "validate_query_scope",
]

BUILTIN_COLUMNS = ("trial_id", "iteration", "timestamp", "written_at", "status", "state")
QUERY_SCOPES = ("last", "all")
KEY = ["trial_id", "iteration"]


class SweepFrame:
    """A sweep's deduplicated result rows, with columns read on demand and kept aligned.

    Build one per fingerprint of the sweep: it never notices later writes. Thread-safe.
    """

    def __init__(self, store: SweepStore, sweep_id: str) -> None:
        self._store = store
        self.sweep_id = sweep_id
        self.columns: list[str] = store.result_columns(sweep_id)
        self._table: pa.Table | None = None
        self._states: dict[str, str] | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> SweepStore:
        return self._store

    def resolve(self, name: object, field: str) -> str:
        """The column holding ``name``, or :class:`InvalidArgument` naming ``field``."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument(field, f"must be a non-empty column name, got {name!r}")
        if name in BUILTIN_COLUMNS:
            return name
        try:
            return column_for(name, self.columns, where=f"sweep {self.sweep_id!r}")
        except ValueError:
            known = sorted(column for column in self.columns if column.startswith(VALUE_PREFIXES))
            raise InvalidArgument(
                field,
                f"must name a column of sweep {self.sweep_id!r}, got {name!r}; known names: "
                f"{known} (or without their prefix); built-in: {list(BUILTIN_COLUMNS)}",
            ) from None

    def states(self) -> dict[str, str]:
        with self._lock:
            if self._states is None:
                self._states = self._store.trial_states(self.sweep_id)
            return self._states

    def table(self, names: Iterable[str]) -> pa.Table:
        """``trial_id``, ``iteration`` and ``names`` (``state`` included) for every row."""
        wanted = [name for name in dict.fromkeys(names) if name not in KEY]
        stored = [name for name in wanted if name != "state"]
        with self._lock:
            table = self._load(stored).select([*KEY, *stored])
        if "state" in wanted:
            table = table.append_column("state", self._state_column(table))
        return table.select([*KEY, *wanted])

    def all_columns(self) -> list[str]:
        """Every stored column of the rows, then ``state``."""
        known = self.columns or [*KEY]
        return [*known, "state"]

    def _load(self, names: Sequence[str]) -> pa.Table:
        """The loaded table, after reading the columns of ``names`` it lacked."""
        loaded = [] if self._table is None else self._table.column_names
        missing = [name for name in names if name not in loaded]
        if self._table is not None and not missing:
            return self._table
        fresh = self._store.results(self.sweep_id, [*KEY, *missing]).combine_chunks()
        if self._table is None:
            self._table = fresh
        elif _same_keys(fresh, self._table):
            for name in missing:
                self._table = self._table.append_column(name, fresh.column(name))
        else:  # the sweep changed between reads: read everything wanted again, together
            every = list(dict.fromkeys([*loaded, *missing]))
            self._table = self._store.results(self.sweep_id, every).combine_chunks()
        return self._table

    def _state_column(self, table: pa.Table) -> pa.Array:
        states = self.states()
        ids = table.column("trial_id").to_pylist()
        return pa.array([states.get(trial_id, "running") for trial_id in ids], type=pa.string())


def _same_keys(left: pa.Table, right: pa.Table) -> bool:
    return left.num_rows == right.num_rows and all(
        left.column(name).equals(right.column(name)) for name in KEY
    )


def last_per_trial(table: pa.Table, rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """Of ``rows`` (indices into ``table``), each trial's row with the highest iteration."""
    if len(rows) == 0:
        return rows
    subset = table.select(KEY).take(pa.array(rows))
    encoded = pc.dictionary_encode(subset.column("trial_id").combine_chunks())
    codes = np.asarray(encoded.indices, dtype=np.int64)
    iterations = np.asarray(subset.column("iteration").to_numpy(), dtype=np.int64)
    order = np.lexsort((iterations, codes))
    is_last = np.ones(len(order), dtype=bool)
    is_last[:-1] = codes[order][1:] != codes[order][:-1]
    return np.sort(rows[order[is_last]])


def rows_where(
    frame: SweepFrame, table: pa.Table, rows: NDArray[np.int64], conditions: Sequence[Condition]
) -> NDArray[np.int64]:
    if not conditions or len(rows) == 0:
        return rows
    subset = table.take(pa.array(rows))
    keep = np.ones(len(rows), dtype=bool)
    for condition in conditions:
        column = frame.resolve(condition.column, f"{condition.field}.column")
        mask = condition_mask(subset, column, condition)
        keep &= np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)
    return rows[keep]


def valid_rows(table: pa.Table, columns: Sequence[str]) -> NDArray[np.int64]:
    keep = np.ones(table.num_rows, dtype=bool)
    for column in columns:
        keep &= np.asarray(pc.is_valid(table.column(column)).to_numpy(zero_copy_only=False))
    return np.flatnonzero(keep).astype(np.int64)


def not_failed(frame: SweepFrame, table: pa.Table, rows: NDArray[np.int64]) -> NDArray[np.int64]:
    failed = sorted(trial for trial, state in frame.states().items() if state == "failed")
    if not failed or len(rows) == 0:
        return rows
    ids = table.column("trial_id").take(pa.array(rows))
    is_failed = pc.is_in(ids, value_set=pa.array(failed, type=pa.string()))
    return rows[~np.asarray(is_failed.to_numpy(zero_copy_only=False), dtype=bool)]


def validate_query_scope(scope: object, field: str = "scope") -> str:
    if scope not in QUERY_SCOPES:
        raise InvalidArgument(field, f"must be one of {list(QUERY_SCOPES)}, got {scope!r}")
    return str(scope)


def require_numeric(frame: SweepFrame, table: pa.Table, column: str, field: str) -> None:
    data_type = table.schema.field(column).type
    if not (is_numeric(data_type) or pa.types.is_null(data_type)):
        raise InvalidArgument(
            field, f"column {column!r} of sweep {frame.sweep_id!r} is not numeric ({data_type})"
        )


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric leaves of reported ``metrics``, nested keys joined with ``.``."""
    flat = flatten_scalars(metrics, field="metrics")
    return {key: value for key, value in flat.items() if isinstance(value, float)}
