"""Write side of the results store: result rows, trial records and the sweep manifest."""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from morphtune.store._columnar import columnar_table
from morphtune.store._compact import compact_directory
from morphtune.store._errors import CorruptFileError
from morphtune.store._files import (
    keyed_part_name,
    list_parts,
    new_part_name,
    read_part,
    write_part,
)
from morphtune.store._keyindex import KeyIndex
from morphtune.store._lastindex import write_last_index
from morphtune.store._location import LocalLocation, Location, open_location
from morphtune.store._rows import ConfigCache, check_row, results_table
from morphtune.store._schema import (
    RESULT_BASE_SCHEMA,
    TRIAL_SCHEMA,
    TRIAL_STATES,
    to_json,
    validate_sweep_id,
)

__all__ = [
    "DEFAULT_COMPACT_BYTES",
    "MANIFEST_NAME",
    "OBJECTIVE_MODES",
    "ResultWriter",
    "validate_objective",
]

MANIFEST_NAME = "manifest.json"
OBJECTIVE_MODES = ("max", "min")
#: Parts at least this large are left alone by :meth:`ResultWriter.compact`.
DEFAULT_COMPACT_BYTES = 64 << 20
#: ``write_trial`` compacts ``trials/`` after this many new trial parts (see ``__init__``).
TRIAL_COMPACT_EVERY = 256
#: Temp files older than this are a killed writer's leftovers (see ``compact``).
STALE_TEMP_S = 3600.0


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


class ResultWriter:
    """Appends to one sweep under ``root`` (a path or a pyarrow filesystem URI such as
    ``s3://bucket/prefix``); see :mod:`morphtune.store._schema` for the columns.

    Result rows are deduplicated on ``(sweep_id, trial_id, iteration)``: keys already stored
    when the writer opens (a resumed sweep) or written since, and repeats within a batch, are
    dropped; the first write of a key wins. Safe to share between threads of one process;
    several processes writing one sweep at once are not deduplicated against each other (the
    reader then keeps the last written row per key).

    Every ``compact_trials_every`` trial records (default 256; ``None``: never) the writer
    compacts ``trials/``; result parts are compacted only by :meth:`compact`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Location,
        sweep_id: str,
        *,
        compact_trials_every: int | None = TRIAL_COMPACT_EVERY,
    ) -> None:
        if compact_trials_every is not None and (
            isinstance(compact_trials_every, bool)
            or not isinstance(compact_trials_every, int)
            or compact_trials_every < 2
        ):
            raise ValueError(
                f"compact_trials_every must be an int >= 2 or None, got {compact_trials_every!r}"
            )
        self._compact_trials_every = compact_trials_every
        self._trial_parts_written = 0
        self._sweep_id = validate_sweep_id(sweep_id)
        self._location = open_location(root)
        self._path = self._location.join(sweep_id)
        self._results = self._location.join(sweep_id, "results")
        self._trials = self._location.join(sweep_id, "trials")
        self._location.makedirs(self._results)
        self._location.makedirs(self._trials)
        self._lock = threading.RLock()
        self._stamps: dict[str, float] = {}
        self._configs = ConfigCache()
        self._last_written_at = 0.0
        self._written = KeyIndex()
        self._load_keys()

    @property
    def sweep_id(self) -> str:
        return self._sweep_id

    @property
    def location(self) -> Location:
        return self._location

    @property
    def directory(self) -> Path | str:
        """The sweep's directory: a ``Path`` on local disk, else the filesystem path."""
        if isinstance(self._location, LocalLocation):
            return Path(self._path)
        return self._path

    def _load_keys(self) -> None:
        for part in list_parts(self._location, self._results, self._stamps):
            # A corrupt part must not be silently overwritten with duplicates: raise.
            table = read_part(self._location, part.path, ["trial_id", "iteration"], "raise")
            if table is None or table.num_columns != 2:
                raise CorruptFileError(part.path, "missing trial_id or iteration column")
            self._written.add_table(table)

    def _next_written_at(self) -> float:
        """Wall-clock seconds, strictly increasing per writer even if the clock steps back."""
        now = max(time.time(), math.nextafter(self._last_written_at, math.inf))
        self._last_written_at = now
        return now

    def write_results(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write new rows as one part file; return how many were new (0: no file).

        Every row is validated first (``ValueError`` naming ``rows[i].<field>``), so an
        invalid batch writes nothing.
        """
        keys = [check_row(index, row) for index, row in enumerate(rows)]
        with self._lock:
            fresh: dict[tuple[str, int], Mapping[str, Any]] = {}
            contains = self._written.contains
            for key, row in zip(keys, rows, strict=True):
                if key not in fresh and not contains(*key):
                    fresh[key] = row
            if not fresh:
                return 0
            written_at = self._next_written_at()
            table = results_table(list(fresh.values()), self._sweep_id, written_at, self._configs)
            self._write(self._results, table, written_at, list(fresh))
            for trial_id, iteration in fresh:
                self._written.add(trial_id, iteration)
            return len(fresh)

    def write_columns(
        self,
        trial_id: Sequence[str] | pa.Array | np.ndarray,
        iteration: Sequence[int] | pa.Array | np.ndarray,
        *,
        metrics: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        status: str | Sequence[str] = "running",
        timestamp: float | Sequence[float] | None = None,
    ) -> int:
        """Write a batch given column-wise, as one part; return how many rows were new.

        The bulk-ingest path: ``trial_id`` and ``iteration`` are sequences of one value per
        row; ``metrics`` and ``config`` map *flattened* names (``"model.width"``) to a
        sequence of numbers or strings each (lists, numpy or Arrow arrays; ``None`` for a
        missing value); ``status`` and ``timestamp`` are one value for all rows or one per
        row (``timestamp=None``: the write time). Deduplicated like :meth:`write_results`
        (first write of a key wins). The stored columns equal the row path's; the JSON
        columns differ only as :mod:`morphtune.store._columnar` documents.
        """
        with self._lock:
            written_at = self._next_written_at()
            table = columnar_table(
                trial_id,
                iteration,
                metrics=metrics,
                config=config,
                status=status,
                timestamp=timestamp,
                sweep_id=self._sweep_id,
                written_at=written_at,
            )
            contains = self._written.contains
            fresh: dict[tuple[str, int], int] = {}
            trial_ids = table.column("trial_id").to_pylist()
            iterations = table.column("iteration").to_pylist()
            for position, key in enumerate(zip(trial_ids, iterations, strict=True)):
                if key not in fresh and not contains(*key):
                    fresh[key] = position
            if not fresh:
                return 0
            if len(fresh) < table.num_rows:
                table = table.take(pa.array(list(fresh.values()), type=pa.int64()))
            self._write(self._results, table, written_at, list(fresh))
            for key in fresh:
                self._written.add(*key)
            return len(fresh)

    def _write(
        self, directory: str, table: pa.Table, stamp: float, keys: list[tuple[str, int]]
    ) -> None:
        if self._location.atomic_rename:
            name = new_part_name()
        else:  # an object store: a replayed batch must land on the same object
            name = keyed_part_name(
                self._sweep_id, (key[0] for key in keys), (key[1] for key in keys)
            )
        write_part(self._location, f"{directory}/{name}", table, stamp)

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
        config_json = to_json(config, field="config")
        with self._lock:
            stamp = self._next_written_at()
            record = {
                "sweep_id": [self._sweep_id],
                "trial_id": [trial_id],
                "status": [status],
                "timestamp": [stamp],
                "config_json": [config_json],
                "error": [error],
                "last_iteration": [last_iteration],
            }
            table = pa.table(record, schema=TRIAL_SCHEMA)
            if self._location.atomic_rename:
                name = new_part_name()
            else:  # same record again (a replay): same object, now ordered as the newest
                content = json.dumps([self._sweep_id, trial_id, status, error, last_iteration])
                digest = hashlib.sha256(f"{content}\0{config_json}".encode()).hexdigest()[:32]
                name = f"part-{digest}.parquet"
            write_part(self._location, f"{self._trials}/{name}", table, stamp)
            self._trial_parts_written += 1
            every = self._compact_trials_every
            if every is not None and self._trial_parts_written >= every:
                # one small part per status change adds up (two per trial): merge them so
                # readers open a few files, not thousands; records are tiny, this is cheap
                self._trial_parts_written = 0
                compact_directory(
                    self._location,
                    self._trials,
                    TRIAL_SCHEMA,
                    "records",
                    DEFAULT_COMPACT_BYTES,
                    self._stamps,
                )

    def compact(self, *, max_part_bytes: int = DEFAULT_COMPACT_BYTES) -> int:
        """Merge each run of consecutive small parts (under ``max_part_bytes``) of
        ``results/`` (one row per key, the last written) and of ``trials/`` into one new part;
        return how many part files were removed. Then writes the sweep's last-row side index
        (``last_rows.parquet``, see :mod:`morphtune.store._lastindex`) for the result parts
        now listed, unless the one there already covers exactly them. On local disk, also
        removes temp files that killed writers left more than an hour ago.

        Crash-safe and invisible to readers: the merged part is written whole (and, on local
        disk, fsynced) before the parts it replaces are deleted, it sorts where the newest of
        them did, and until they are gone the reader resolves the repeated rows to the same
        values. A part written by another process while this runs is left alone.
        """
        if isinstance(max_part_bytes, bool) or not isinstance(max_part_bytes, int):
            raise ValueError(f"max_part_bytes must be an int, got {max_part_bytes!r}")
        with self._lock:
            removed = compact_directory(
                self._location,
                self._results,
                RESULT_BASE_SCHEMA,
                "keys",
                max_part_bytes,
                self._stamps,
            )
            # the side index a cold best(scope="last") reads (see _lastindex), for exactly
            # the parts now listed; skipped when the one there already covers them
            write_last_index(self._location, self._path, self._results, self._stamps)
            removed += compact_directory(
                self._location,
                self._trials,
                TRIAL_SCHEMA,
                "records",
                max_part_bytes,
                self._stamps,
            )
            if isinstance(self._location, LocalLocation):
                self.remove_stale_temp_files(STALE_TEMP_S)
            return removed

    def remove_stale_temp_files(self, min_age_s: float = STALE_TEMP_S) -> int:
        """Remove temp files (``.*.tmp``) at least ``min_age_s`` old that killed writers left
        in this sweep (local disk only; object stores have none). Pass 0 only when no other
        process writes the sweep. Returns how many were removed."""
        if not isinstance(self._location, LocalLocation):
            return 0
        return sum(
            self._location.remove_stale_temp_files(directory, min_age_s)
            for directory in (self._path, self._results, self._trials)
        )

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
        data = (to_json(content, field="manifest", indent=2) + "\n").encode()
        with self._lock:
            self._location.write_whole(
                self._location.join(self._sweep_id, MANIFEST_NAME), lambda out: out.write(data)
            )

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the manifest (top level) and write it; return the result."""
        path = self._location.join(self._sweep_id, MANIFEST_NAME)
        with self._lock:
            current: dict[str, Any] = {}
            if self._location.stat(path) is not None:
                try:
                    current = json.loads(self._location.read_bytes(path))
                except (OSError, ValueError) as error:
                    raise CorruptFileError(path, str(error)) from error
            self.write_manifest({**current, **fields})
            result: dict[str, Any] = json.loads(self._location.read_bytes(path))
            return result
