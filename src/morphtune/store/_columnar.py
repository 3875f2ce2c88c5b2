"""Column-wise result batches: validated and turned into a result table without a Python
loop over rows (except the writer's deduplication).

Input (see :meth:`ResultWriter.write_columns`): ``trial_id`` and ``iteration`` sequences,
``metrics`` and ``config`` mappings from *flattened* names (``model.width``) to value
sequences (numbers or strings; numpy arrays and Arrow arrays are taken as they are).

The JSON columns are built with Arrow string kernels and follow the same strict-JSON rules
as the row path, with three differences that only columnar input has:

* every name appears in every row's JSON; a null (``None``) value, NaN and +/-inf are
  ``null`` there (a row path mapping simply lacks a key it did not report);
* numbers are written as Arrow formats float64 (shortest round trip: ``3.0`` as ``3``,
  ``1e-05`` as ``0.00001``), all valid JSON numbers of the same value;
* ``config_json`` nests dotted names (``{"model": {"width": 64}}``), as the row path's nested
  config would; ``metrics_json`` keeps names as given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from morphtune.store._schema import CONFIG_PREFIX, METRICS_PREFIX, classify_metric

__all__ = ["columnar_table"]

_NULL_TEXT = pa.scalar(None, pa.string())
_CONTROL = r"[\x00-\x1f]"


def _array(name: str, values: Any, rows: int | None) -> pa.Array:
    """``values`` as a float64 or string Arrow array (of ``rows`` values unless None)."""
    try:
        if isinstance(values, pa.ChunkedArray):
            array = values.combine_chunks()
        elif isinstance(values, pa.Array):
            array = values
        else:
            array = pa.array(values if isinstance(values, np.ndarray) else list(values))
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise ValueError(
            f"{name} must hold numbers or strings (one type per name), got {error}"
        ) from None
    if rows is not None and len(array) != rows:
        raise ValueError(f"{name} has {len(array)} values, expected {rows} (one per row)")
    data_type = array.type
    if pa.types.is_dictionary(data_type):
        array, data_type = array.cast(data_type.value_type), data_type.value_type
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type):
        return array.cast(pa.float64())
    if pa.types.is_boolean(data_type) or pa.types.is_null(data_type):
        return array.cast(pa.float64())
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return array.cast(pa.string())
    raise ValueError(f"{name} must hold numbers or strings, got Arrow type {data_type}")


def _value_text(array: pa.Array) -> pa.Array:
    """JSON text of each value; null where the value is null or not finite."""
    if pa.types.is_floating(array.type):
        text = pc.cast(array, pa.string())
        return pc.if_else(pc.is_finite(array), text, _NULL_TEXT)
    if pc.any(pc.match_substring_regex(array, _CONTROL)).as_py():
        return pa.array(
            [None if value is None else json.dumps(value) for value in array.to_pylist()],
            type=pa.string(),
        )
    escaped = pc.replace_substring(pc.replace_substring(array, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', escaped, '"', "")


def _key(name: str) -> str:
    return json.dumps(name)


def _tree(names: Sequence[str], field: str) -> dict[str, Any]:
    """Dotted names as a nested dict of name -> leaf name (str) or subtree (dict)."""
    tree: dict[str, Any] = {}
    for name in names:
        node = tree
        segments = name.split(".")
        if any(not segment for segment in segments):
            raise ValueError(f"{field} name {name!r} has an empty segment between dots")
        for segment in segments[:-1]:
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                raise ValueError(f"{field} key {name!r} nests under the value of another key")
            node = child
        if segments[-1] in node:
            raise ValueError(f"{field} key {name!r} occurs twice once nested keys are joined")
        node[segments[-1]] = name
    return tree


def _json_objects(
    texts: Mapping[str, pa.Array], rows: int, *, nested: bool, field: str
) -> pa.Array:
    """One JSON object per row holding every name of ``texts``."""
    pieces: list[str | pa.Array] = []

    def literal(text: str) -> None:
        if pieces and isinstance(pieces[-1], str):
            pieces[-1] += text
        else:
            pieces.append(text)

    def emit(node: Mapping[str, Any]) -> None:
        literal("{")
        for position, (key, value) in enumerate(node.items()):
            literal(("," if position else "") + _key(key) + ":")
            if isinstance(value, dict):
                emit(value)
            else:
                pieces.append(texts[value])
        literal("}")

    tree = _tree(list(texts), field) if nested else {name: name for name in texts}
    emit(tree)
    if len(pieces) == 1:
        return pa.array([pieces[0]] * rows, type=pa.string())
    arguments = [pa.scalar(piece) if isinstance(piece, str) else piece for piece in pieces]
    return pc.binary_join_element_wise(
        *arguments, "", null_handling="replace", null_replacement="null"
    )


def _flat_names(values: Mapping[str, Any] | None, field: str) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ValueError(
            f"{field} must be a mapping of name -> values, got {type(values).__name__}"
        )
    for name in values:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{field} names must be non-empty strings, got {name!r}")
    return dict(values)


def columnar_table(
    trial_id: Any,
    iteration: Any,
    *,
    metrics: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    status: str | Sequence[str],
    timestamp: float | Sequence[float] | None,
    sweep_id: str,
    written_at: float,
) -> pa.Table:
    """The result table of a column-wise batch (not yet deduplicated); ``ValueError``
    naming the argument for invalid input."""
    trial_ids = _array("trial_id", trial_id, None)
    rows = len(trial_ids)
    if rows == 0:
        trial_ids = pa.array([], type=pa.string())
    if not pa.types.is_string(trial_ids.type):
        raise ValueError(f"trial_id must hold strings, got Arrow type {trial_ids.type}")
    if trial_ids.null_count or pc.any(pc.equal(pc.utf8_length(trial_ids), 0)).as_py():
        raise ValueError("trial_id values must be non-empty strings (no None or '')")
    try:
        iterations = pa.array(
            iteration if isinstance(iteration, pa.Array | np.ndarray) else list(iteration)
        )
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise ValueError(f"iteration must hold ints >= 0, got {error}") from None
    if len(iterations) != rows:
        raise ValueError(f"iteration has {len(iterations)} values, expected {rows} (one per row)")
    if rows and (
        not pa.types.is_integer(iterations.type)
        or iterations.null_count
        or pc.min(iterations).as_py() < 0
    ):
        raise ValueError(f"iteration values must be ints >= 0, got Arrow type {iterations.type}")
    iterations = iterations.cast(pa.int64())

    if isinstance(status, str):
        if not status:
            raise ValueError("status must be a non-empty string, got ''")
        statuses = pa.array([status] * rows, type=pa.string())
    else:
        statuses = _array("status", status, rows)
        if not pa.types.is_string(statuses.type) or statuses.null_count:
            raise ValueError("status values must be non-empty strings")
    if timestamp is None:
        timestamps = pa.array(np.full(rows, written_at))
    elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        timestamps = pa.array(np.full(rows, float(timestamp)))
    else:
        timestamps = _array("timestamp", timestamp, rows)
    if not pa.types.is_floating(timestamps.type) or (
        rows and not pc.all(pc.is_finite(timestamps)).as_py()
    ):
        raise ValueError("timestamp values must be finite unix seconds")

    config_arrays = {
        name: _array(f"config[{name!r}]", values, rows)
        for name, values in sorted(_flat_names(config, "config").items())
    }
    metric_arrays = {
        name: _array(f"metrics[{name!r}]", values, rows)
        for name, values in sorted(_flat_names(metrics, "metrics").items())
    }
    config_json = _json_objects(
        {name: _value_text(array) for name, array in config_arrays.items()},
        rows,
        nested=True,
        field="config",
    )
    metrics_json = _json_objects(
        {name: _value_text(array) for name, array in metric_arrays.items()},
        rows,
        nested=False,
        field="metrics",
    )
    columns: dict[str, pa.Array] = {
        "sweep_id": pa.array([sweep_id] * rows, type=pa.string()),
        "trial_id": trial_ids,
        "iteration": iterations,
        "timestamp": timestamps,
        "written_at": pa.array(np.full(rows, written_at)),
        "status": statuses,
        "config_json": config_json,
        "metrics_json": metrics_json,
    }
    for prefix, arrays in ((CONFIG_PREFIX, config_arrays), (METRICS_PREFIX, metric_arrays)):
        for name, array in arrays.items():
            if array.null_count < rows:  # an all-null name gets no column, as in rows
                columns[prefix + name] = array
    for name, array in metric_arrays.items():
        kind = classify_metric(name)
        if kind is not None and METRICS_PREFIX + name in columns:
            columns[kind + name] = array
    return pa.table(columns)
