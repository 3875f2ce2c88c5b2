"""A reader's per-sweep cache: what it read of each part, and answers keyed on the listing.

Parts never change once written (a part with a new name, or on object stores a new size or
modification time, is a new part), so a :class:`SweepIndex` reads each part at most once:

* for result parts: the keys (trial codes, iterations) when the part first appears, and each
  other column the first time a query asks for it (``*_json`` columns are not kept; they are
  large and only one row of them is usually needed);
* for trial parts: the whole (small) table.

On every query the reader lists the sweep (cheap) and hands the listing to :meth:`refresh`:
new parts are loaded, vanished ones (compacted away) dropped, the deduplication mask is
recomputed, and the memo of derived answers (:meth:`memo`) is cleared whenever the listing's
fingerprint changed. A cold reader therefore pays for reading the key columns once; a warm
one pays for a listing.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from morphtune.store._compact import dedupe_records
from morphtune.store._errors import CorruptFileError
from morphtune.store._files import (
    FALLBACK_COLUMNS,
    OnCorrupt,
    PartRef,
    concat_promoted,
    is_part_name,
    last_positions,
    order_parts,
    read_keys,
    read_part,
)
from morphtune.store._location import FileEntry, Location
from morphtune.store._schema import RESULT_BASE_SCHEMA, TRIAL_SCHEMA

__all__ = ["Listing", "PartColumns", "SweepIndex", "listing_fingerprint"]

T = TypeVar("T")
_KEY = ("trial_id", "iteration")


@dataclass(frozen=True)
class Listing:
    """What a sweep holds right now, from listings and metadata only."""

    results: tuple[FileEntry, ...]
    trials: tuple[FileEntry, ...]
    manifest: str | None  # the manifest file's identity, None when absent

    @property
    def fingerprint(self) -> str:
        return listing_fingerprint(self)


def listing_fingerprint(listing: Listing) -> str:
    digest = hashlib.sha256()
    for sub, entries in (("results", listing.results), ("trials", listing.trials)):
        for entry in sorted(entries, key=lambda item: item.name):
            if is_part_name(entry.name):
                digest.update(f"{sub}/{entry.name}@{entry.size}:{entry.mtime_ns}\n".encode())
    digest.update(f"manifest@{listing.manifest}".encode())
    return digest.hexdigest()[:32]


@dataclass
class PartColumns:
    """One result part as the index holds it."""

    ref: PartRef
    rows: int
    codes: np.ndarray  # int64 codes into SweepIndex.trial_ids
    iterations: np.ndarray  # int64
    names: frozenset[str]  # the part's columns (from its schema)
    columns: dict[str, pa.ChunkedArray] = field(default_factory=dict)
    numeric: dict[str, tuple[np.ndarray, np.ndarray] | str] = field(default_factory=dict)


def _entry_key(entry: FileEntry) -> str:
    return f"{entry.name}@{entry.size}:{entry.mtime_ns}"


class SweepIndex:
    """Cached reads of one sweep; every public method is called under :attr:`lock`."""

    def __init__(self, location: Location, results: str, trials: str, on_corrupt: OnCorrupt):
        self.lock = threading.RLock()
        self._location = location
        self._results_dir = results
        self._trials_dir = trials
        self._on_corrupt: OnCorrupt = on_corrupt
        self._stamps: dict[str, float] = {}
        self.fingerprint: str | None = None
        self.trial_ids: list[str] = []
        self._trial_code: dict[str, int] = {}
        self._parts: dict[str, PartColumns] = {}
        self._ordered_parts: list[PartColumns] = []
        self._trial_parts: dict[str, pa.Table] = {}
        self._trial_order: list[str] = []
        self._codes = np.zeros(0, dtype=np.int64)
        self._iterations = np.zeros(0, dtype=np.int64)
        self._offsets = np.zeros(1, dtype=np.int64)
        self._keep: np.ndarray | None = None  # None: every row is kept
        self._memo: dict[Any, Any] = {}
        self._listing = Listing((), (), None)
        self._results_stale = self._trials_stale = False

    # -- refreshing ---------------------------------------------------------------------------

    def refresh(self, listing: Listing) -> None:
        """Take a new listing; parts are (re)loaded lazily, when a query needs them."""
        fingerprint = listing.fingerprint
        if fingerprint == self.fingerprint:
            return
        self._memo.clear()
        self._listing = listing
        self._results_stale = self._trials_stale = True
        self.fingerprint = fingerprint

    def forget(self) -> None:
        """Drop the fingerprint, so the next refresh reloads from its listing."""
        self.fingerprint = None
        self._memo.clear()

    def result_refs(self) -> list[PartRef]:
        """The listed result parts in part order (without loading them)."""
        return self._ordered(self._listing.results)

    @property
    def result_entries(self) -> tuple[FileEntry, ...]:
        """The listing's entries of ``results/`` (parts and any other files), unloaded."""
        return self._listing.results

    @property
    def results_loaded(self) -> bool:
        return not self._results_stale

    def _ensure_results(self) -> None:
        if self._results_stale:
            self._refresh_results(self._listing.results)
            self._results_stale = False

    def _ensure_trials(self) -> None:
        if self._trials_stale:
            self._refresh_trials(self._listing.trials)
            self._trials_stale = False

    @property
    def parts(self) -> list[PartColumns]:
        self._ensure_results()
        return self._ordered_parts

    @property
    def codes(self) -> np.ndarray:
        self._ensure_results()
        return self._codes

    @property
    def iterations(self) -> np.ndarray:
        self._ensure_results()
        return self._iterations

    @property
    def offsets(self) -> np.ndarray:
        self._ensure_results()
        return self._offsets

    @property
    def keep(self) -> np.ndarray | None:
        self._ensure_results()
        return self._keep

    def _ordered(self, entries: Sequence[FileEntry]) -> list[PartRef]:
        return order_parts(self._location, entries, self._stamps)

    def _refresh_results(self, entries: Sequence[FileEntry]) -> None:
        refs = self._ordered(entries)
        loaded: dict[str, PartColumns] = {}
        parts: list[PartColumns] = []
        for ref in refs:
            key = _entry_key(ref.entry)
            part = self._parts.get(key) or self._load_part(ref)
            if part is None:
                continue  # a corrupt part skipped with a warning
            loaded[key] = part
            parts.append(part)
        self._parts, self._ordered_parts = loaded, parts
        self._offsets = np.cumsum([0, *(part.rows for part in parts)], dtype=np.int64)
        if parts:
            self._codes = np.concatenate([part.codes for part in parts])
            self._iterations = np.concatenate([part.iterations for part in parts])
        else:
            self._codes = np.zeros(0, dtype=np.int64)
            self._iterations = np.zeros(0, dtype=np.int64)
        positions = last_positions(self._codes, self._iterations)
        if positions is None:
            self._keep = None
        else:
            keep = np.zeros(len(self._codes), dtype=bool)
            keep[positions] = True
            self._keep = keep

    def _load_part(self, ref: PartRef) -> PartColumns | None:
        loaded = read_keys(self._location, ref.path, self._on_corrupt)
        if loaded is None:
            return None
        table, names = loaded
        codes = np.empty(table.num_rows, dtype=np.int64)
        column = table.column("trial_id")
        if not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        column = column.unify_dictionaries()  # one dictionary for every row group
        mapping = np.zeros(0, dtype=np.int64)
        if column.num_chunks:
            ids = column.chunk(0).dictionary.to_pylist()
            mapping = np.fromiter((self._code(trial_id) for trial_id in ids), np.int64, len(ids))
        start = 0
        for chunk in column.chunks:
            indices = np.asarray(chunk.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
            codes[start : start + len(chunk)] = mapping[indices] if len(mapping) else indices
            start += len(chunk)
        iterations = np.asarray(
            table.column("iteration").to_numpy(zero_copy_only=False), dtype=np.int64
        )
        return PartColumns(ref, table.num_rows, codes, iterations, names)

    def trial_code(self, trial_id: str) -> int | None:
        return self._trial_code.get(trial_id)

    def _code(self, trial_id: str) -> int:
        code = self._trial_code.get(trial_id)
        if code is None:
            code = self._trial_code[trial_id] = len(self.trial_ids)
            self.trial_ids.append(trial_id)
        return code

    def _refresh_trials(self, entries: Sequence[FileEntry]) -> None:
        refs = self._ordered(entries)
        tables: dict[str, pa.Table] = {}
        order: list[str] = []
        for ref in refs:
            key = _entry_key(ref.entry)
            table = self._trial_parts.get(key)
            if table is None:
                table = read_part(self._location, ref.path, None, self._on_corrupt)
                if table is None:
                    continue
            tables[key] = table
            order.append(key)
        self._trial_parts, self._trial_order = tables, order

    # -- reading ------------------------------------------------------------------------------

    def memo(self, key: Any, compute: Callable[[], T]) -> T:
        """``compute()`` once per fingerprint for ``key``."""
        if key not in self._memo:
            self._memo[key] = compute()
        value: T = self._memo[key]
        return value

    def column_names(self) -> set[str]:
        names: set[str] = set()
        for part in self.parts:
            names |= part.names
        return names

    def _part_column(self, part: PartColumns, name: str) -> pa.ChunkedArray | None:
        if name not in part.names:
            return None
        cached = part.columns.get(name)
        if cached is not None:
            return cached
        table = read_part(self._location, part.ref.path, [name], "raise")
        if table is None:  # pragma: no cover - "raise" never returns None
            raise CorruptFileError(part.ref.path, "unreadable")
        column = table.column(name)
        if not name.endswith("_json"):
            part.columns[name] = column
        return column

    def trial_id_array(self, part: PartColumns) -> pa.Array:
        dictionary = pa.array(self.trial_ids, type=pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(part.codes), dictionary).cast(pa.string())

    def _part_table(self, part: PartColumns, columns: Sequence[str]) -> pa.Table:
        """``columns`` of a part (those it has; ``iteration`` always, from the index)."""
        data: dict[str, pa.Array | pa.ChunkedArray] = {"iteration": pa.array(part.iterations)}
        for name in columns:
            if name in data:
                continue
            if name == "trial_id":
                data[name] = self.trial_id_array(part)
                continue
            column = self._part_column(part, name)
            fallback = FALLBACK_COLUMNS.get(name)
            if column is None and fallback is not None:
                column = self._part_column(part, fallback)
            if column is not None:
                data[name] = column
        return pa.table(data)

    def results(self, columns: Sequence[str] | None) -> pa.Table:
        """The sweep's result rows (one per key, the last written), in part order;
        ``columns=None`` reads every column (and caches nothing)."""
        if columns is None:
            tables = []
            for part in self.parts:
                table = read_part(self._location, part.ref.path, None, "raise")
                if table is None or table.num_rows != part.rows:
                    raise CorruptFileError(part.ref.path, "changed while the sweep was read")
                tables.append(table)
        else:
            tables = [self._part_table(part, columns) for part in self.parts]
        table = concat_promoted(tables, RESULT_BASE_SCHEMA)
        if self.keep is not None:
            table = table.filter(pa.array(self.keep))
        return table if columns is None else table.select(list(columns))

    def numeric(self, column: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(values, reported)`` of ``column`` over all rows as float64 (NaN where not
        reported), or ``None`` when no part has it; ``ValueError`` if a part holds text."""

        def compute() -> tuple[np.ndarray, np.ndarray] | None:
            if not any(column in part.names for part in self.parts):
                return None
            values, reported = [], []
            for part in self.parts:
                pair = self._part_numeric(part, column)
                if isinstance(pair, str):
                    raise ValueError(
                        f"metric {column.split('.', 1)[-1]!r} is not numeric in {part.ref.path} "
                        f"(Arrow type {pair})"
                    )
                values.append(pair[0])
                reported.append(pair[1])
            return np.concatenate(values), np.concatenate(reported)

        return self.memo(("numeric", column), compute)

    def _part_numeric(self, part: PartColumns, column: str) -> tuple[np.ndarray, np.ndarray] | str:
        cached = part.numeric.get(column)
        if cached is not None:
            return cached
        array = self._part_column(part, column)
        if array is None:
            result: tuple[np.ndarray, np.ndarray] | str = (
                np.full(part.rows, np.nan),
                np.zeros(part.rows, dtype=bool),
            )
        else:
            data_type = array.type
            if not (
                pa.types.is_floating(data_type)
                or pa.types.is_integer(data_type)
                or pa.types.is_null(data_type)
            ):
                result = str(data_type)
            else:
                floats = array.cast(pa.float64())
                reported = np.asarray(floats.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
                values = np.asarray(floats.fill_null(np.nan).to_numpy(), dtype=np.float64)
                result = (values, reported)
        part.numeric[column] = result
        part.columns.pop(column, None)  # the numpy form is enough
        return result

    def locate(self, row: int) -> tuple[PartColumns, int]:
        """The part holding global ``row`` and the row within it."""
        index = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return self.parts[index], row - int(self.offsets[index])

    def trial_records(self) -> pa.Table:
        self._ensure_trials()
        return self.memo(
            "trial_records",
            lambda: dedupe_records(
                concat_promoted([self._trial_parts[key] for key in self._trial_order], TRIAL_SCHEMA)
            ),
        )
