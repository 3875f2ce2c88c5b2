"""Read side of the results store: sweeps, manifests, results, trials and the best config."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from morphtune.store._best import BestResult, best_position, validate_mode, validate_scope
from morphtune.store._errors import CorruptFileError, NoResults, PartVanished, SweepNotFound
from morphtune.store._files import OnCorrupt, read_row, read_rows, validate_on_corrupt
from morphtune.store._index import Listing, SweepIndex
from morphtune.store._lastindex import LAST_INDEX_NAME, LastWinner, best_from_last_index
from morphtune.store._location import LocalLocation, Location, open_location
from morphtune.store._schema import (
    METRICS_PREFIX,
    RESULT_BASE_SCHEMA,
    TRIAL_STATES,
    VALUE_PREFIXES,
    column_for,
    validate_sweep_id,
)
from morphtune.store._stats_best import StatsWinner, best_from_statistics
from morphtune.store._writer import MANIFEST_NAME

__all__ = ["DEFAULT_ROOT", "SweepStore", "TrialSummary"]

DEFAULT_ROOT = "morphtune-results"
_RETRIES = 4
T = TypeVar("T")


@dataclass(frozen=True)
class TrialSummary:
    """One trial: its status, config and the metrics of its last reported iteration."""

    trial_id: str
    status: str
    config: dict[str, Any]
    last_iteration: int | None
    error: str | None
    metrics: dict[str, Any]


class SweepStore:
    """Reads sweeps under ``root`` (a path or a pyarrow filesystem URI such as
    ``s3://bucket/prefix``; see :mod:`morphtune.store._schema` for the layout).

    Within a sweep, rows repeating a (trial_id, iteration) key are resolved to the last written
    one. A file with a final part name that is not valid Parquet raises
    :class:`~morphtune.store.CorruptFileError`, or is skipped with a ``RuntimeWarning`` when
    ``on_corrupt="warn"``; temp files (``.*.tmp``) are never read.

    A store object caches what it read per sweep (see :mod:`morphtune.store._index`) and
    answers again from the cache while :meth:`fingerprint` is unchanged; keep one object per
    process (it is safe to share between threads) to benefit.
    """

    def __init__(
        self, root: str | os.PathLike[str] | Location = DEFAULT_ROOT, *, on_corrupt: str = "raise"
    ) -> None:
        self._location = open_location(root)
        self._on_corrupt: OnCorrupt = validate_on_corrupt(on_corrupt)
        self._indexes: dict[str, SweepIndex] = {}
        self._lock = threading.Lock()

    @property
    def root(self) -> Path | str:
        """The root: a ``Path`` on local disk, else the URI (without its query)."""
        if isinstance(self._location, LocalLocation):
            return self._location.path
        return self._location.display

    @property
    def location(self) -> Location:
        return self._location

    # -- sweeps and manifests -------------------------------------------------------------

    def list_sweeps(self) -> list[str]:
        """Sweep ids under the root, sorted; a missing root has none."""
        return sorted(
            name
            for name in self._location.list_dirs(self._location.root)
            if _is_sweep_id(name) and self._looks_like_sweep(name)
        )

    def has_sweep(self, sweep_id: str) -> bool:
        return self._looks_like_sweep(validate_sweep_id(sweep_id))

    def _looks_like_sweep(self, sweep_id: str) -> bool:
        location = self._location
        return (
            location.stat(location.join(sweep_id, MANIFEST_NAME)) is not None
            or location.is_dir(location.join(sweep_id, "results"))
            or location.is_dir(location.join(sweep_id, "trials"))
        )

    def _listing(self, sweep_id: str) -> Listing:
        """The sweep's listing; :class:`SweepNotFound` if there is no such sweep."""
        location = self._location
        validate_sweep_id(sweep_id)
        listing = Listing(
            tuple(location.list_files_cached(location.join(sweep_id, "results"))),
            tuple(location.list_files_cached(location.join(sweep_id, "trials"))),
            location.identity(location.join(sweep_id, MANIFEST_NAME)),
        )
        if not (listing.results or listing.trials or listing.manifest) and not self.has_sweep(
            sweep_id
        ):
            raise SweepNotFound(sweep_id, self.root)
        return listing

    def _index(self, sweep_id: str) -> SweepIndex:
        with self._lock:
            index = self._indexes.get(sweep_id)
            if index is None:
                location = self._location
                index = self._indexes[sweep_id] = SweepIndex(
                    location,
                    location.join(sweep_id, "results"),
                    location.join(sweep_id, "trials"),
                    self._on_corrupt,
                )
            return index

    def _query(self, sweep_id: str, answer: Callable[[SweepIndex], T]) -> T:
        """``answer(index)`` on the sweep's index, refreshed from a new listing and locked.

        A part listed but gone when read was compacted away meanwhile: list again and retry
        (the merged part holds its rows), so readers never see a gap.
        """
        for _ in range(_RETRIES - 1):
            index = self._index(sweep_id)
            with index.lock:
                index.refresh(self._listing(sweep_id))
                try:
                    return answer(index)
                except PartVanished:
                    index.forget()
        index = self._index(sweep_id)
        with index.lock:
            index.refresh(self._listing(sweep_id))
            return answer(index)

    def fingerprint(self, sweep_id: str) -> str:
        """A value that changes whenever the sweep's results, trial records or manifest
        change, from listings and file metadata only (no Parquet is read). Cache answers
        derived from a sweep under it. Raises :class:`SweepNotFound`."""
        return self._listing(sweep_id).fingerprint

    def manifest(self, sweep_id: str) -> dict[str, Any]:
        """The sweep's manifest; just ``{"sweep_id": ...}`` if there is none yet."""
        return self._query(
            sweep_id,
            lambda index: copy.deepcopy(
                index.memo("manifest", lambda: self._read_manifest(sweep_id))
            ),
        )

    def _read_manifest(self, sweep_id: str) -> dict[str, Any]:
        path = self._location.join(sweep_id, MANIFEST_NAME)
        if self._location.stat(path) is None:
            return {"sweep_id": sweep_id}
        try:
            manifest = json.loads(self._location.read_bytes(path))
        except (OSError, ValueError) as error:
            raise CorruptFileError(path, str(error)) from error
        if not isinstance(manifest, dict):
            raise CorruptFileError(path, f"expected a JSON object, got {type(manifest).__name__}")
        return manifest

    # -- results ----------------------------------------------------------------------------

    def result_columns(self, sweep_id: str) -> list[str]:
        """Every column name found in the sweep's result parts (read from footers only)."""
        return self._query(sweep_id, lambda index: list(_columns(index)))

    def column_for(self, sweep_id: str, name: str) -> str:
        """The result column holding the reported ``name``: a bare name (``accuracy``,
        ``params``, ``density``) resolves to ``metrics.<name>``, then ``cost.<name>``,
        ``signal.<name>``, ``config.<name>``; a prefixed name must exist as is. Raises
        ``ValueError`` naming the known names when the sweep has no such column."""
        return column_for(name, self.result_columns(sweep_id), where=f"sweep {sweep_id!r}")

    def metric_names(self, sweep_id: str) -> list[str]:
        """Names of the flattened metrics (without the ``metrics.`` prefix), sorted."""
        return sorted(
            name.removeprefix(METRICS_PREFIX)
            for name in self.result_columns(sweep_id)
            if name.startswith(METRICS_PREFIX)
        )

    def results(self, sweep_id: str, columns: Sequence[str] | None = None) -> pa.Table:
        """All result rows of a sweep, one per (trial_id, iteration), in write order.

        ``columns`` selects columns (unknown names raise ``ValueError``); parts with different
        columns are combined (missing -> null, conflicting types -> string). Selected columns
        other than ``*_json`` stay cached, so asking again after new parts arrived reads only
        the new parts.
        """
        wanted = None if columns is None else list(columns)

        def answer(index: SweepIndex) -> pa.Table:
            if wanted is not None:
                known = _columns(index) or RESULT_BASE_SCHEMA.names
                unknown = [name for name in wanted if name not in known]
                if unknown:
                    raise ValueError(
                        f"columns {unknown} not in sweep {sweep_id!r}; available: {known}"
                    )
            return index.results(wanted)

        return self._query(sweep_id, answer)

    # -- trials -----------------------------------------------------------------------------

    def trial_records(self, sweep_id: str) -> pa.Table:
        """Every trial status record of the sweep, in write order."""
        return self._query(sweep_id, lambda index: index.trial_records())

    def _latest_records(self, index: SweepIndex) -> dict[str, dict[str, Any]]:
        def compute() -> dict[str, dict[str, Any]]:
            latest: dict[str, dict[str, Any]] = {}
            for record in index.trial_records().to_pylist():
                latest[record["trial_id"]] = record
            return latest

        return index.memo("latest_records", compute)

    def _states(self, index: SweepIndex) -> dict[str, str]:
        def compute() -> dict[str, str]:
            kept = index.codes if index.keep is None else index.codes[index.keep]
            present = np.flatnonzero(np.bincount(kept, minlength=len(index.trial_ids)))
            states = {index.trial_ids[code]: "running" for code in present.tolist()}
            for trial_id, record in self._latest_records(index).items():
                states[trial_id] = record["status"]
            return states

        return index.memo("states", compute)

    def trial_states(self, sweep_id: str) -> dict[str, str]:
        """Each trial's state: its latest status record, or ``"running"`` if it has none.

        The latest record of any state wins (not only terminal ones), so a failed trial that
        Tune restarted reads as running again.
        """
        return self._query(sweep_id, lambda index: dict(self._states(index)))

    def trial_counts(self, sweep_id: str) -> dict[str, int]:
        """Number of trials per state, with every state of ``TRIAL_STATES`` present."""
        counts = Counter(self.trial_states(sweep_id).values())
        return {state: counts.get(state, 0) for state in TRIAL_STATES} | dict(counts)

    def trials(self, sweep_id: str) -> list[TrialSummary]:
        """One summary per trial, sorted by trial_id.

        ``config`` comes from the latest status record, else from the last result row;
        ``last_iteration`` is the highest stored iteration, else the record's own.
        """
        return self._query(
            sweep_id, lambda index: list(index.memo("trials", lambda: self._summaries(index)))
        )

    def _summaries(self, index: SweepIndex) -> list[TrialSummary]:
        records = self._latest_records(index)
        last_rows = self._last_rows(index)
        return [
            _summary(trial_id, records.get(trial_id), last_rows.get(trial_id))
            for trial_id in sorted(records.keys() | last_rows.keys())
        ]

    def _last_rows(self, index: SweepIndex) -> dict[str, dict[str, Any]]:
        """Per trial, its highest stored iteration's row (iteration and JSON columns)."""
        rows = np.arange(len(index.codes)) if index.keep is None else np.flatnonzero(index.keep)
        if len(rows) == 0:
            return {}
        codes, iterations = index.codes[rows], index.iterations[rows]
        last = np.full(int(codes.max()) + 1, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, codes, iterations)
        chosen = rows[iterations == last[codes]]
        found: dict[str, dict[str, Any]] = {}
        part_of = np.searchsorted(index.offsets, chosen, side="right") - 1
        for part_index in np.unique(part_of).tolist():
            part = index.parts[part_index]
            mine = chosen[part_of == part_index]
            local = mine - int(index.offsets[part_index])
            table = read_rows(
                self._location, part.ref.path, local.tolist(), ["config_json", "metrics_json"]
            )
            for row, config, metrics in zip(
                mine.tolist(),
                table.column("config_json").to_pylist(),
                table.column("metrics_json").to_pylist(),
                strict=True,
            ):
                trial_id = index.trial_ids[index.codes[row]]
                found[trial_id] = {
                    "iteration": int(index.iterations[row]),
                    "config_json": config,
                    "metrics_json": metrics,
                }
        return found

    # -- best -------------------------------------------------------------------------------

    def _resolve_objective(
        self, sweep_id: str, objective: dict[str, Any], metric: str | None, mode: str | None
    ) -> tuple[str, str]:
        default_metric, default_mode = objective.get("metric"), objective.get("mode")
        if metric is None:
            if not default_metric:
                raise ValueError(
                    f"metric: none given and the manifest of sweep {sweep_id!r} has no "
                    "objective.metric to default to"
                )
            metric = default_metric
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be a non-empty string, got {metric!r}")
        if mode is None:
            if metric != default_metric or not default_mode:
                raise ValueError(
                    f"mode: none given and metric {metric!r} is not the objective of sweep "
                    f"{sweep_id!r} ({default_metric!r}), so it has no default; pass 'max' or 'min'"
                )
            mode = default_mode
        return metric, validate_mode(mode)

    def best(
        self,
        sweep_id: str,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
    ) -> BestResult:
        """The best row for ``metric`` (default: the manifest objective) in direction ``mode``.

        ``metric`` is a reported name (``val_acc``, ``params``) or a prefixed column
        (``metrics.x``, ``cost.x``, ``signal.x``). ``scope="last"``: each trial's last
        iteration that reported the metric; ``"all"``: any iteration. Only finite values
        count and trials whose status is ``"failed"`` are skipped. Raises ``ValueError`` (bad
        mode or scope; a metric the sweep never reported, listing those it did),
        :class:`SweepNotFound`, or :class:`NoResults` (nothing finite; also the objective
        metric, or any metric of a sweep without results, not reported yet).
        """

        def answer(index: SweepIndex) -> BestResult:
            manifest = index.memo("manifest", lambda: self._read_manifest(sweep_id))
            objective = manifest.get("objective") or {}
            name, direction = self._resolve_objective(sweep_id, objective, metric, mode)
            where = validate_scope(scope)
            return index.memo(
                ("best", name, direction, where),
                lambda: self._best(index, sweep_id, objective, name, direction, where),
            )

        best = self._query(sweep_id, answer)
        # a copy: the cached answer must not change if the caller edits its dicts
        return dataclasses.replace(
            best, config=copy.deepcopy(best.config), metrics=copy.deepcopy(best.metrics)
        )

    def _best(
        self,
        index: SweepIndex,
        sweep_id: str,
        objective: dict[str, Any],
        metric: str,
        mode: str,
        scope: str,
    ) -> BestResult:
        if scope == "all" and not index.results_loaded:
            # a cold index: the footers' statistics usually point at the answer directly
            found = self._best_from_statistics(index, metric, mode)
            if found is not None:
                return self._best_result(sweep_id, metric, mode, found)
        if scope == "last" and not index.results_loaded:
            # a cold index: the side index of the last compaction, if it covers the listing
            answer = self._best_from_last_index(index, sweep_id, metric, mode)
            if answer is not None:
                return answer
        names = index.column_names()
        column = _metric_column(metric, names)
        pair = index.numeric(column) if column is not None else None
        if pair is None:
            available = sorted(
                name.removeprefix(METRICS_PREFIX)
                for name in names
                if name.startswith(METRICS_PREFIX)
            )
            if not index.parts or metric == objective.get("metric"):  # a young sweep
                raise NoResults(sweep_id, metric, f"not reported yet; available: {available}")
            raise ValueError(
                f"metric {metric!r} not reported in sweep {sweep_id!r}; available: {available}"
            )
        values, reported = pair
        states = self._states(index)
        failed = [trial_id for trial_id, state in states.items() if state == "failed"]
        eligible = index.keep
        if failed:
            failed_codes = np.zeros(len(index.trial_ids), dtype=bool)
            for trial_id in failed:
                code = index.trial_code(trial_id)
                if code is not None:
                    failed_codes[code] = True
            not_failed = ~failed_codes[index.codes]
            eligible = not_failed if eligible is None else eligible & not_failed
        row = best_position(
            values,
            reported,
            index.codes,
            index.iterations,
            eligible,
            mode,
            scope,
            index.trial_ids,
        )
        if row is None:
            rows = len(values) if index.keep is None else int(index.keep.sum())
            raise NoResults(
                sweep_id,
                metric,
                f"{rows} rows, {len(failed)} failed trials skipped, no finite value among the rest",
            )
        part, local = index.locate(row)
        winner = StatsWinner(
            part.ref,
            local,
            index.trial_ids[index.codes[row]],
            int(index.iterations[row]),
            float(values[row]),
        )
        return self._best_result(sweep_id, metric, mode, winner)

    def _best_from_statistics(
        self, index: SweepIndex, metric: str, mode: str
    ) -> StatsWinner | None:
        """The winner from footer statistics, or ``None`` to scan the keys instead."""
        column = metric if metric.startswith(VALUE_PREFIXES) else METRICS_PREFIX + metric
        failed = index.memo("failed", lambda: _failed_trials(index.trial_records()))
        found = best_from_statistics(self._location, index.result_refs(), column, mode, failed)
        return found if isinstance(found, StatsWinner) else None

    def _best_from_last_index(
        self, index: SweepIndex, sweep_id: str, metric: str, mode: str
    ) -> BestResult | None:
        """The ``scope="last"`` answer from the sweep's side index, or ``None`` (no usable
        index for this listing and metric, or its winner row does not hold its key and
        value): then the caller scans the keys."""
        failed = index.memo("failed", lambda: _failed_trials(index.trial_records()))
        found = best_from_last_index(
            self._location,
            self._location.join(sweep_id, LAST_INDEX_NAME),
            index.result_entries,
            lambda names: _metric_column(metric, names),
            mode,
            failed,
        )
        if found is None:
            return None
        try:
            picked = read_rows(
                self._location,
                found.path,
                [found.row],
                ["trial_id", "iteration", found.column, "config_json", "metrics_json"],
            ).to_pylist()[0]
        except (CorruptFileError, PartVanished):
            return None  # the key scan reports it, or lists again and retries
        key = (picked.get("trial_id"), picked.get("iteration"))
        value = picked.get(found.column)
        if key != (found.trial_id, found.iteration) or not (
            isinstance(value, int | float) and float(value) == found.value
        ):
            return None  # the index does not describe this row: do not believe it
        try:
            return _row_result(sweep_id, metric, mode, found, picked)
        except (KeyError, TypeError, ValueError):
            return None

    def _best_result(
        self, sweep_id: str, metric: str, mode: str, winner: StatsWinner
    ) -> BestResult:
        picked = read_row(
            self._location, winner.part.path, winner.row, ["config_json", "metrics_json"]
        )
        return _row_result(sweep_id, metric, mode, winner, picked)


def _row_result(
    sweep_id: str, metric: str, mode: str, winner: StatsWinner | LastWinner, row: dict[str, Any]
) -> BestResult:
    """The :class:`BestResult` of a winner found without the key scan, from its stored row
    (its ``config_json`` and ``metrics_json``)."""
    return BestResult(
        sweep_id=sweep_id,
        trial_id=winner.trial_id,
        iteration=winner.iteration,
        metric=metric,
        mode=mode,
        value=winner.value,
        config=json.loads(row["config_json"]),
        metrics=json.loads(row["metrics_json"]),
    )


def _metric_column(metric: str, names: set[str]) -> str | None:
    """The column of a metric for ``best``: a prefixed name as is, else ``metrics.<name>``,
    then ``cost.<name>``, ``signal.<name>``; ``None`` if the sweep has none of them."""
    if metric.startswith(VALUE_PREFIXES):
        return metric if metric in names else None
    for prefix in VALUE_PREFIXES[:3]:
        if prefix + metric in names:
            return prefix + metric
    return None


def _failed_trials(records: pa.Table) -> set[str]:
    """Trials whose latest status record says ``failed`` (vectorised)."""
    if records.num_rows == 0:
        return set()
    positions = records.select(["trial_id"]).append_column(
        "__position", pa.array(np.arange(records.num_rows, dtype=np.int64))
    )
    latest = positions.group_by("trial_id", use_threads=False).aggregate([("__position", "max")])
    statuses = records.column("status").take(latest.column("__position_max"))
    failed = latest.column("trial_id").filter(pc.equal(statuses, "failed"))
    return set(failed.to_pylist())


def _columns(index: SweepIndex) -> list[str]:
    return index.memo("columns", lambda: _ordered_columns(index.column_names()))


def _ordered_columns(names: set[str]) -> list[str]:
    names = set(names)
    if "timestamp" in names:
        names.add("written_at")  # older parts: read as their timestamp
    base = RESULT_BASE_SCHEMA.names
    return [name for name in base if name in names] + sorted(names - set(base))


def _summary(
    trial_id: str, record: dict[str, Any] | None, row: dict[str, Any] | None
) -> TrialSummary:
    if record is None and row is None:
        raise ValueError(f"trial {trial_id!r} has neither a status record nor a result row")
    return TrialSummary(
        trial_id=trial_id,
        status=record["status"] if record else "running",
        config=json.loads(record["config_json"] if record else row["config_json"]),  # type: ignore[index]
        last_iteration=row["iteration"] if row else record["last_iteration"],  # type: ignore[index]
        error=record["error"] if record else None,
        metrics=json.loads(row["metrics_json"]) if row else {},
    )


def _is_sweep_id(name: str) -> bool:
    try:
        validate_sweep_id(name)
    except ValueError:
        return False
    return True
