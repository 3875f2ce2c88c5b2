"""Read side of the results store: sweeps, manifests, results, trials and the best config."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from morphtune.store._best import (
    BestResult,
    best_row,
    last_per_trial,
    validate_mode,
    validate_scope,
)
from morphtune.store._errors import CorruptFileError, NoResults, SweepNotFound
from morphtune.store._files import (
    OnCorrupt,
    concat_promoted,
    keep_last,
    list_parts,
    read_part,
    read_row,
    read_schema,
    validate_on_corrupt,
)
from morphtune.store._schema import (
    METRICS_PREFIX,
    RESULT_BASE_SCHEMA,
    TRIAL_SCHEMA,
    TRIAL_STATES,
    validate_sweep_id,
)
from morphtune.store._writer import MANIFEST_NAME

__all__ = ["DEFAULT_ROOT", "SweepStore", "TrialSummary"]

DEFAULT_ROOT = "morphtune-results"
_KEY = ("trial_id", "iteration")


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
    """Reads sweeps under ``root`` (see :mod:`morphtune.store._schema` for the layout).

    Within a sweep, rows repeating a (trial_id, iteration) key are resolved to the last written
    one. A file with a final part name that is not valid Parquet raises
    :class:`~morphtune.store.CorruptFileError`, or is skipped with a ``RuntimeWarning`` when
    ``on_corrupt="warn"``; temp files (``.*.tmp``) are never read.
    """

    def __init__(
        self, root: str | os.PathLike[str] = DEFAULT_ROOT, *, on_corrupt: str = "raise"
    ) -> None:
        self._root = Path(root)
        self._on_corrupt: OnCorrupt = validate_on_corrupt(on_corrupt)

    @property
    def root(self) -> Path:
        return self._root

    # -- sweeps and manifests -------------------------------------------------------------

    def list_sweeps(self) -> list[str]:
        """Sweep ids under the root, sorted; a missing root has none."""
        if not self._root.is_dir():
            return []
        return sorted(
            path.name
            for path in self._root.iterdir()
            if path.is_dir() and _is_sweep_id(path.name) and _looks_like_sweep(path)
        )

    def has_sweep(self, sweep_id: str) -> bool:
        path = self._root / validate_sweep_id(sweep_id)
        return path.is_dir() and _looks_like_sweep(path)

    def _sweep_dir(self, sweep_id: str) -> Path:
        if not self.has_sweep(sweep_id):
            raise SweepNotFound(sweep_id, self._root)
        return self._root / sweep_id

    def manifest(self, sweep_id: str) -> dict[str, Any]:
        """The sweep's manifest; just ``{"sweep_id": ...}`` if there is none yet."""
        path = self._sweep_dir(sweep_id) / MANIFEST_NAME
        if not path.is_file():
            return {"sweep_id": sweep_id}
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CorruptFileError(path, str(error)) from error
        if not isinstance(manifest, dict):
            raise CorruptFileError(path, f"expected a JSON object, got {type(manifest).__name__}")
        return manifest

    # -- results ----------------------------------------------------------------------------

    def _read_all(
        self, directory: Path, columns: Sequence[str] | None, base: pa.Schema
    ) -> pa.Table:
        tables = [read_part(path, columns, self._on_corrupt) for path in list_parts(directory)]
        return concat_promoted([table for table in tables if table is not None], base)

    def result_columns(self, sweep_id: str) -> list[str]:
        """Every column name found in the sweep's result parts (read from footers only)."""
        names: set[str] = set()
        for path in list_parts(self._sweep_dir(sweep_id) / "results"):
            schema = read_schema(path, self._on_corrupt)
            names.update(schema.names if schema is not None else ())
        return [name for name in RESULT_BASE_SCHEMA.names if name in names] + sorted(
            names - set(RESULT_BASE_SCHEMA.names)
        )

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
        columns are combined (missing -> null, conflicting types -> string).
        """
        directory = self._sweep_dir(sweep_id) / "results"
        if columns is not None:
            known = self.result_columns(sweep_id) or RESULT_BASE_SCHEMA.names
            unknown = [name for name in columns if name not in known]
            if unknown:
                raise ValueError(f"columns {unknown} not in sweep {sweep_id!r}; available: {known}")
            wanted = list(dict.fromkeys([*_KEY, *columns]))
            table = keep_last(self._read_all(directory, wanted, RESULT_BASE_SCHEMA))
            return table.select(list(columns))
        return keep_last(self._read_all(directory, None, RESULT_BASE_SCHEMA))

    # -- trials -----------------------------------------------------------------------------

    def trial_records(self, sweep_id: str) -> pa.Table:
        """Every trial status record of the sweep, in write order."""
        return self._read_all(self._sweep_dir(sweep_id) / "trials", None, TRIAL_SCHEMA)

    def _latest_records(self, sweep_id: str) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for record in self.trial_records(sweep_id).to_pylist():
            latest[record["trial_id"]] = record
        return latest

    def trial_states(self, sweep_id: str) -> dict[str, str]:
        """Each trial's state: its latest status record, or ``"running"`` if it has none.

        The latest record of any state wins (not only terminal ones), so a failed trial that
        Tune restarted reads as running again.
        """
        states = {trial_id: "running" for trial_id in self._result_trial_ids(sweep_id)}
        for trial_id, record in self._latest_records(sweep_id).items():
            states[trial_id] = record["status"]
        return states

    def _result_trial_ids(self, sweep_id: str) -> set[str]:
        table = self._read_all(
            self._sweep_dir(sweep_id) / "results", ["trial_id"], RESULT_BASE_SCHEMA
        )
        return set(table.column("trial_id").unique().to_pylist()) if table.num_rows else set()

    def trial_counts(self, sweep_id: str) -> dict[str, int]:
        """Number of trials per state, with every state of ``TRIAL_STATES`` present."""
        counts = Counter(self.trial_states(sweep_id).values())
        return {state: counts.get(state, 0) for state in TRIAL_STATES} | dict(counts)

    def trials(self, sweep_id: str) -> list[TrialSummary]:
        """One summary per trial, sorted by trial_id.

        ``config`` comes from the latest status record, else from the last result row;
        ``last_iteration`` is the highest stored iteration, else the record's own.
        """
        records = self._latest_records(sweep_id)
        last_rows = {row["trial_id"]: row for row in self._last_rows(sweep_id).to_pylist()}
        return [
            _summary(trial_id, records.get(trial_id), last_rows.get(trial_id))
            for trial_id in sorted(records.keys() | last_rows.keys())
        ]

    def _last_rows(self, sweep_id: str) -> pa.Table:
        table = self.results(sweep_id, ["trial_id", "iteration", "config_json", "metrics_json"])
        return last_per_trial(table) if table.num_rows else table

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

        ``scope="last"``: each trial's last iteration that reported the metric; ``"all"``:
        any iteration. Only finite values count and trials whose status is ``"failed"`` are
        skipped. Raises ``ValueError`` (bad mode or scope; a metric the sweep never reported,
        listing those it did), :class:`SweepNotFound`, or :class:`NoResults` (nothing finite;
        also the objective metric, or any metric of a sweep without results, not reported yet).
        """
        directory = self._sweep_dir(sweep_id) / "results"
        objective = self.manifest(sweep_id).get("objective") or {}
        metric, mode = self._resolve_objective(sweep_id, objective, metric, mode)
        scope = validate_scope(scope)
        column = METRICS_PREFIX + metric
        parts = list_parts(directory)
        table, reported = self._metric_table(parts, column)
        if not reported:
            available = self.metric_names(sweep_id)
            if not parts or metric == objective.get("metric"):  # a young sweep, not a bad request
                raise NoResults(sweep_id, metric, f"not reported yet; available: {available}")
            raise ValueError(
                f"metric {metric!r} not reported in sweep {sweep_id!r}; available: {available}"
            )
        records = self._latest_records(sweep_id)
        failed = {trial_id for trial_id, record in records.items() if record["status"] == "failed"}
        row = best_row(table, column, mode, scope, failed)
        if row is None:
            raise NoResults(
                sweep_id,
                metric,
                f"{table.num_rows} rows, {len(failed)} failed trials skipped, "
                "no finite value among the rest",
            )
        picked = read_row(parts[row["__part"]], row["__row"], ["config_json", "metrics_json"])
        return BestResult(
            sweep_id=sweep_id,
            trial_id=row["trial_id"],
            iteration=row["iteration"],
            metric=metric,
            mode=mode,
            value=row[column],
            config=json.loads(picked["config_json"]),
            metrics=json.loads(picked["metrics_json"]),
        )

    def _metric_table(self, parts: list[Path], column: str) -> tuple[pa.Table, bool]:
        """(trial_id, iteration, column, __part, __row) over all parts, deduplicated, and
        whether any part has the column at all."""
        schema = pa.schema(
            [
                ("trial_id", pa.string()),
                ("iteration", pa.int64()),
                (column, pa.float64()),
                ("__part", pa.int64()),
                ("__row", pa.int64()),
            ]
        )
        tables, reported = [], False
        for index, path in enumerate(parts):
            table = read_part(path, ["trial_id", "iteration", column], self._on_corrupt)
            if table is None:
                continue
            reported |= column in table.column_names
            rows = table.num_rows
            tables.append(
                pa.table(
                    [
                        table.column("trial_id").cast(pa.string()),
                        table.column("iteration").cast(pa.int64()),
                        _numeric_values(table, column, path),
                        pa.array(np.full(rows, index, dtype=np.int64)),
                        pa.array(np.arange(rows, dtype=np.int64)),
                    ],
                    schema=schema,
                )
            )
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        return keep_last(table.combine_chunks()), reported


def _numeric_values(table: pa.Table, column: str, path: Path) -> pa.ChunkedArray | pa.Array:
    if column not in table.column_names:
        return pa.nulls(table.num_rows, pa.float64())
    data_type = table.schema.field(column).type
    if not (
        pa.types.is_floating(data_type)
        or pa.types.is_integer(data_type)
        or pa.types.is_null(data_type)
    ):
        raise ValueError(
            f"metric {column.removeprefix(METRICS_PREFIX)!r} is not numeric in {path} "
            f"(Arrow type {data_type})"
        )
    return table.column(column).cast(pa.float64())


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


def _looks_like_sweep(path: Path) -> bool:
    return any((path / name).exists() for name in (MANIFEST_NAME, "results", "trials"))
