"""Write side of the results store: result rows, trial records and the sweep manifest."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from morphtune.store._errors import CorruptFileError
from morphtune.store._files import (
    atomic_write_bytes,
    atomic_write_table,
    concat_promoted,
    fsync_directory,
    keep_last,
    list_parts,
    new_part_name,
    read_part,
)
from morphtune.store._schema import (
    CONFIG_PREFIX,
    METRICS_PREFIX,
    RESULT_BASE_SCHEMA,
    TRIAL_SCHEMA,
    TRIAL_STATES,
    flatten_scalars,
    scalar_columns,
    to_json,
    validate_sweep_id,
)

__all__ = ["MANIFEST_NAME", "OBJECTIVE_MODES", "ResultWriter", "validate_objective"]

MANIFEST_NAME = "manifest.json"
OBJECTIVE_MODES = ("max", "min")
_ROW_KEYS = ("trial_id", "iteration", "status", "config", "metrics")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def validate_objective(objective: object) -> dict[str, str]:
    """``{"metric": str, "mode": "max" | "min"}`` or ``ValueError`` naming the field."""
    if not isinstance(objective, Mapping):
        raise ValueError(f"objective must be a mapping with metric and mode, got {objective!r}")
    metric, mode = objective.get("metric"), objective.get("mode")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"objective.metric must be a non-empty string, got {metric!r}")
    if mode not in OBJECTIVE_MODES:
        raise ValueError(f"objective.mode must be one of {list(OBJECTIVE_MODES)}, got {mode!r}")
    return {**objective, "metric": metric, "mode": mode}


def _check_row(index: int, row: object) -> Mapping[str, Any]:
    where = f"rows[{index}]"
    if not isinstance(row, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(row).__name__}")
    missing = [key for key in _ROW_KEYS if key not in row]
    if missing:
        raise ValueError(f"{where} is missing required keys {missing}")
    trial_id, iteration, status = row["trial_id"], row["iteration"], row["status"]
    if not isinstance(trial_id, str) or not trial_id:
        raise ValueError(f"{where}.trial_id must be a non-empty string, got {trial_id!r}")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"{where}.iteration must be an int >= 0, got {iteration!r}")
    if not isinstance(status, str) or not status:
        raise ValueError(f"{where}.status must be a non-empty string, got {status!r}")
    for key in ("config", "metrics"):
        if not isinstance(row[key], Mapping):
            raise ValueError(f"{where}.{key} must be a mapping, got {type(row[key]).__name__}")
    timestamp = row.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int | float)
        or not math.isfinite(timestamp)
    ):
        raise ValueError(f"{where}.timestamp must be finite unix seconds, got {timestamp!r}")
    return row


def _read_whole(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a part, raising :class:`CorruptFileError` if it does not parse."""
    table = read_part(path, columns, "raise")
    if table is None:  # only with on_corrupt="warn", which the writer never uses
        raise CorruptFileError(path, "unreadable")
    return table


class ResultWriter:
    """Appends to one sweep's directory under ``root``; see :mod:`morphtune.store._schema`.

    Result rows are deduplicated on ``(sweep_id, trial_id, iteration)``: keys already on disk
    when the writer opens (a resumed sweep) or written since, and repeats within a batch, are
    dropped; the first write of a key wins. Safe to share between threads of one process;
    several processes writing one sweep at once are not deduplicated against each other (the
    reader then keeps the last written row per key).
    """

    def __init__(self, root: str | os.PathLike[str], sweep_id: str) -> None:
        self._sweep_id = validate_sweep_id(sweep_id)
        self._directory = Path(root) / sweep_id
        self._results = self._directory / "results"
        self._trials = self._directory / "trials"
        self._results.mkdir(parents=True, exist_ok=True)
        self._trials.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._written: set[tuple[str, int]] = self._keys_on_disk()

    @property
    def sweep_id(self) -> str:
        return self._sweep_id

    @property
    def directory(self) -> Path:
        return self._directory

    def _keys_on_disk(self) -> set[tuple[str, int]]:
        keys: set[tuple[str, int]] = set()
        for path in list_parts(self._results):
            # A corrupt part must not be silently overwritten with duplicates: raise.
            table = _read_whole(path, ["trial_id", "iteration"])
            if table.num_columns != 2:
                raise CorruptFileError(path, "missing trial_id or iteration column")
            trial_ids = table.column("trial_id").to_pylist()
            keys.update(zip(trial_ids, table.column("iteration").to_pylist(), strict=True))
        return keys

    def write_results(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write new rows as one part file; return how many were new (0: no file)."""
        checked = [_check_row(index, row) for index, row in enumerate(rows)]
        with self._lock:
            fresh: dict[tuple[str, int], Mapping[str, Any]] = {}
            for row in checked:
                key = (row["trial_id"], row["iteration"])
                if key not in self._written and key not in fresh:
                    fresh[key] = row
            if not fresh:
                return 0
            table = self._results_table(list(fresh.values()))
            atomic_write_table(self._results / new_part_name(), table)
            self._written.update(fresh)
            return len(fresh)

    def _results_table(self, rows: list[Mapping[str, Any]]) -> pa.Table:
        now = time.time()
        base = {
            "sweep_id": [self._sweep_id] * len(rows),
            "trial_id": [row["trial_id"] for row in rows],
            "iteration": [row["iteration"] for row in rows],
            "timestamp": [
                now if row.get("timestamp") is None else float(row["timestamp"]) for row in rows
            ],
            "status": [row["status"] for row in rows],
            "config_json": [to_json(row["config"], field="config") for row in rows],
            "metrics_json": [to_json(row["metrics"], field="metrics") for row in rows],
        }
        columns = {
            name: pa.array(values, type=RESULT_BASE_SCHEMA.field(name).type)
            for name, values in base.items()
        }
        for key, prefix in (("config", CONFIG_PREFIX), ("metrics", METRICS_PREFIX)):
            flat = [flatten_scalars(row[key], field=key) for row in rows]
            columns.update(scalar_columns(flat, prefix))
        return pa.table(columns)

    def write_trial(
        self,
        trial_id: str,
        status: str,
        *,
        config: Mapping[str, Any],
        error: str | None = None,
        last_iteration: int | None = None,
    ) -> None:
        """Record a trial's status change as one part file in ``trials/``."""
        if not isinstance(trial_id, str) or not trial_id:
            raise ValueError(f"trial_id must be a non-empty string, got {trial_id!r}")
        if status not in TRIAL_STATES:
            raise ValueError(f"status must be one of {list(TRIAL_STATES)}, got {status!r}")
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a mapping, got {type(config).__name__}")
        if error is not None and not isinstance(error, str):
            raise ValueError(f"error must be a string or None, got {type(error).__name__}")
        if last_iteration is not None and (
            isinstance(last_iteration, bool) or not isinstance(last_iteration, int)
        ):
            raise ValueError(f"last_iteration must be an int or None, got {last_iteration!r}")
        record = {
            "sweep_id": [self._sweep_id],
            "trial_id": [trial_id],
            "status": [status],
            "timestamp": [time.time()],
            "config_json": [to_json(config, field="config")],
            "error": [error],
            "last_iteration": [last_iteration],
        }
        table = pa.table(record, schema=TRIAL_SCHEMA)
        with self._lock:
            atomic_write_table(self._trials / new_part_name(), table)

    def compact(self) -> int:
        """Merge the parts of ``results/`` (one row per key, the last written) and of
        ``trials/`` into one new part each; return how many part files were removed.

        Readers stay correct throughout: the merged part is written atomically before the old
        parts are deleted, and repeated rows resolve to the same values. A part that another
        process renames into place while this runs is left alone.
        """
        removed = 0
        with self._lock:
            for directory, base, dedupe in (
                (self._results, RESULT_BASE_SCHEMA, True),
                (self._trials, TRIAL_SCHEMA, False),
            ):
                parts = list_parts(directory)
                if len(parts) < 2:
                    continue
                merged = concat_promoted([_read_whole(path) for path in parts], base)
                atomic_write_table(
                    directory / new_part_name(), keep_last(merged) if dedupe else merged
                )
                for path in parts:
                    path.unlink()
                fsync_directory(directory)
                removed += len(parts)
        return removed

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        """Replace ``manifest.json`` atomically.

        Fills ``sweep_id``, ``name`` (the sweep id), ``status`` (``"created"``), ``spec``
        (``{}``) and ``created`` (ISO 8601 UTC) when absent and sets ``updated``; validates
        ``objective`` when present.
        """
        if not isinstance(manifest, Mapping):
            raise ValueError(f"manifest must be a mapping, got {type(manifest).__name__}")
        content = dict(manifest)
        sweep_id = content.setdefault("sweep_id", self._sweep_id)
        if sweep_id != self._sweep_id:
            raise ValueError(
                f"manifest.sweep_id must equal the writer's sweep id {self._sweep_id!r}, "
                f"got {sweep_id!r}"
            )
        if "objective" in content:
            content["objective"] = validate_objective(content["objective"])
        content.setdefault("name", self._sweep_id)
        content.setdefault("status", "created")
        content.setdefault("spec", {})
        content.setdefault("created", utc_now())
        content["updated"] = utc_now()
        text = to_json(content, field="manifest", indent=2) + "\n"
        with self._lock:
            atomic_write_bytes(self._directory / MANIFEST_NAME, text.encode())

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest (top level) and write it; return the result."""
        path = self._directory / MANIFEST_NAME
        with self._lock:
            current: dict[str, Any] = {}
            if path.is_file():
                try:
                    current = json.loads(path.read_text())
                except (OSError, ValueError) as error:
                    raise CorruptFileError(path, str(error)) from error
            self.write_manifest({**current, **fields})
            return json.loads(path.read_text())
