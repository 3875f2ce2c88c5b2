"""Result rows (mappings) to one Arrow table, validated, with little per-row Python.

The conversion follows :mod:`morphtune.store._schema` exactly; the fast paths only skip work
that cannot change the result:

* a flat mapping of plain ``float``/``int``/``bool``/``str``/``None`` values is flattened and
  JSON-encoded directly (C ``json`` encoder; a non-finite float falls back to the general
  path, which writes ``null``), anything else goes through the general path;
* a trial's config is converted once and reused while the row carries *the same object*
  with the same contents (callers such as the Tune callback pass one config object per
  trial), so a batch pays for each config at most once per trial.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from morphtune.store._schema import (
    CONFIG_PREFIX,
    METRICS_PREFIX,
    NODE_ID_KEY,
    Scalar,
    classify_metric,
    flatten_scalars,
    scalar_columns,
    to_json,
)

__all__ = ["ROW_KEYS", "ConfigCache", "check_row", "results_table"]

ROW_KEYS = ("trial_id", "iteration", "status", "config", "metrics")
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_PLAIN = frozenset({float, str, int, bool, type(None)})
_STR_KEYS = {str}
_STRING = pa.string()
_FLOAT = pa.float64()
_INT = pa.int64()


def check_row(index: int, row: object) -> tuple[str, int]:
    """Validate one row; return its key. ``ValueError`` names ``rows[index].<field>``."""
    where = f"rows[{index}]"
    if not isinstance(row, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(row).__name__}")
    try:
        trial_id, iteration, status = row["trial_id"], row["iteration"], row["status"]
        config, metrics = row["config"], row["metrics"]
    except KeyError:
        missing = [key for key in ROW_KEYS if key not in row]
        raise ValueError(f"{where} is missing required keys {missing}") from None
    if not isinstance(trial_id, str) or not trial_id:
        raise ValueError(f"{where}.trial_id must be a non-empty string, got {trial_id!r}")
    if type(iteration) is not int and (
        isinstance(iteration, bool) or not isinstance(iteration, int)
    ):
        raise ValueError(f"{where}.iteration must be an int >= 0, got {iteration!r}")
    if iteration < 0:
        raise ValueError(f"{where}.iteration must be an int >= 0, got {iteration!r}")
    if not isinstance(status, str) or not status:
        raise ValueError(f"{where}.status must be a non-empty string, got {status!r}")
    if type(config) is not dict and not isinstance(config, Mapping):
        raise ValueError(f"{where}.config must be a mapping, got {type(config).__name__}")
    if type(metrics) is not dict and not isinstance(metrics, Mapping):
        raise ValueError(f"{where}.metrics must be a mapping, got {type(metrics).__name__}")
    timestamp = row.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool)
        or not isinstance(timestamp, int | float)
        or not math.isfinite(timestamp)
    ):
        raise ValueError(f"{where}.timestamp must be finite unix seconds, got {timestamp!r}")
    node_id = row.get(NODE_ID_KEY)
    if node_id is not None and (not isinstance(node_id, str) or not node_id):
        raise ValueError(
            f"{where}.{NODE_ID_KEY} must be a non-empty string or None, got {node_id!r}"
        )
    return trial_id, iteration


def _flat_plain(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """``values`` itself if it is a flat dict of plain scalars with non-empty string keys,
    else ``None``. Its ints and bools stay as they are: Arrow converts them to float64
    exactly as ``float()`` does, and :func:`_columns` converts them where it needs text."""
    if type(values) is not dict:
        return None
    if not _PLAIN.issuperset(map(type, values.values())):
        return None
    if values and (_STR_KEYS != set(map(type, values)) or "" in values):
        return None
    return values


def convert(values: Mapping[str, Any], field: str) -> tuple[str, dict[str, Any]]:
    """``(strict JSON, flattened scalars)`` of a config or metrics mapping."""
    flat = _flat_plain(values)
    if flat is None:
        return to_json(values, field=field), flatten_scalars(values, field=field)
    try:
        text = _ENCODER.encode(values)
    except ValueError:  # a non-finite float: the general encoder writes null
        text = to_json(values, field=field)
    return text, flat


class ConfigCache:
    """Per trial: the config object last seen, a snapshot of it, its JSON and scalars."""

    def __init__(self, limit: int = 100_000) -> None:
        self._entries: dict[str, tuple[Mapping[str, Any], Any, str, dict[str, Any]]] = {}
        self._limit = limit

    def convert(self, trial_id: str, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        entry = self._entries.get(trial_id)
        if entry is not None and entry[0] is config and entry[1] == config:
            return entry[2], entry[3]
        text, flat = convert(config, "config")
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[trial_id] = (config, copy.deepcopy(config), text, dict(flat))
        return text, flat


def _number(value: Any) -> Scalar:
    kind = type(value)
    return float(value) if kind is int or kind is bool else value  # type: ignore[no-any-return]


def _columns(flat_rows: list[dict[str, Any]], prefix: str) -> dict[str, pa.Array]:
    """Like :func:`scalar_columns` (which it uses for text and mixed columns), trying the
    all-numeric case first."""
    keys: dict[str, None] = {}
    for flat in flat_rows:
        keys.update(dict.fromkeys(flat))
    columns: dict[str, pa.Array] = {}
    general: list[str] = []
    for key in sorted(keys):
        values = [flat.get(key) for flat in flat_rows]
        try:
            array = pa.array(values, type=_FLOAT)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            general.append(key)
            continue
        if array.null_count < len(array):  # an all-None key gets no column
            columns[prefix + key] = array
    if general:
        rows = [{key: _number(flat.get(key)) for key in general} for flat in flat_rows]
        columns.update(scalar_columns(rows, prefix))
    return dict(sorted(columns.items()))


def results_table(
    rows: Sequence[Mapping[str, Any]], sweep_id: str, written_at: float, configs: ConfigCache
) -> pa.Table:
    """The result table of validated ``rows`` (one per key), stamped ``written_at``."""
    count = len(rows)
    config_json: list[str] = []
    config_flat: list[dict[str, Any]] = []
    metrics_json: list[str] = []
    metrics_flat: list[dict[str, Any]] = []
    timestamps: list[float] = []
    for row in rows:
        text, flat = configs.convert(row["trial_id"], row["config"])
        config_json.append(text)
        config_flat.append(flat)
        text, flat = convert(row["metrics"], "metrics")
        metrics_json.append(text)
        metrics_flat.append(flat)
        timestamp = row.get("timestamp")
        timestamps.append(written_at if timestamp is None else float(timestamp))
    columns: dict[str, pa.Array] = {
        "sweep_id": pa.array([sweep_id] * count, type=_STRING),
        "trial_id": pa.array([row["trial_id"] for row in rows], type=_STRING),
        "iteration": pa.array([row["iteration"] for row in rows], type=_INT),
        "timestamp": pa.array(timestamps, type=_FLOAT),
        "written_at": pa.array([written_at] * count, type=_FLOAT),
        "status": pa.array([row["status"] for row in rows], type=_STRING),
        "config_json": pa.array(config_json, type=_STRING),
        "metrics_json": pa.array(metrics_json, type=_STRING),
    }
    node_ids = [row.get(NODE_ID_KEY) for row in rows]
    if any(node_id is not None for node_id in node_ids):  # else no column, as for a metric
        columns[NODE_ID_KEY] = pa.array(node_ids, type=_STRING)
    columns.update(_columns(config_flat, CONFIG_PREFIX))
    metric_columns = _columns(metrics_flat, METRICS_PREFIX)
    columns.update(metric_columns)
    for name, array in metric_columns.items():
        key = name.removeprefix(METRICS_PREFIX)
        prefix = classify_metric(key)
        if prefix is not None:
            columns[prefix + key] = array
    return pa.table(columns)
