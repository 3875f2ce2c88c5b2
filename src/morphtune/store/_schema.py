"""Arrow schema of the results store and the value conversions that feed it.

Result rows (``<root>/<sweep_id>/results/part-*.parquet``), one per reported iteration:

==================  ===========  ==========================================================
column              Arrow type   meaning
==================  ===========  ==========================================================
``sweep_id``        string       the sweep (constant within one sweep directory)
``trial_id``        string       the trial
``iteration``       int64        reported iteration (>= 0); key is (sweep_id, trial_id, it.)
``timestamp``       float64      unix seconds when the row was reported
``written_at``      float64      unix seconds when the writer wrote the batch (monotonic per
                                 writer); parts written before it existed read ``timestamp``
``status``          string       trial status when the row was reported (free form)
``config_json``     string       the trial config as strict JSON (non-finite floats -> null)
``metrics_json``    string       the reported metrics as strict JSON (non-finite -> null)
``node_id``         string       the Ray node id (hex) of the process that reported the row
                                 (a trial's rank-0 worker); nullable: absent from parts whose
                                 rows named no node (rows written outside a sweep, older parts)
``config.<key>``    float64 or   one column per scalar config value; nested keys joined
                    string       with ``.``; int/float/bool -> float64, str -> string
``metrics.<key>``   float64 or   same for every reported metric; NaN and +/-inf are kept
                    string       as such here
``cost.<key>``      float64 or   a copy of ``metrics.<key>`` for keys in :data:`COST_KEYS`
                    string
``signal.<key>``    float64 or   a copy of ``metrics.<key>`` for keys in :data:`SIGNAL_KEYS`
                    string
==================  ===========  ==========================================================

Cost and signal columns are *copies*: a reported ``params`` is ``metrics.params`` (so
queries by metric name, ``best(metric="params")`` and readers of ``metrics.*`` keep working)
and also ``cost.params``. The key map classifies the full flattened name. Use
:func:`column_for` (or ``SweepStore.column_for``) to map a reported name to its column.

Trial records (``<root>/<sweep_id>/trials/part-*.parquet``), one per status change:
``sweep_id`` string, ``trial_id`` string, ``status`` string (one of :data:`TRIAL_STATES`),
``timestamp`` float64, ``config_json`` string, ``error`` string (nullable),
``last_iteration`` int64 (nullable).

Choices, and why:

* JSON columns are strict RFC 8259 JSON so any client can parse them; NaN and +/-inf become
  ``null`` there. The exact non-finite value survives in the flattened float64 column, which is
  what queries read.
* A flattened key whose values mix numbers and strings within one batch, or across parts, is a
  string column (numbers written as ``str(float(value))``). Lists and other non-scalars are
  only in the JSON column. ``None`` is a null in the flattened column; a key that is ``None`` in
  every row of a batch gets no column in that part.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

__all__ = [
    "CONFIG_PREFIX",
    "COST_KEYS",
    "COST_PREFIX",
    "METRICS_PREFIX",
    "NODE_ID_KEY",
    "RESULT_BASE_SCHEMA",
    "SIGNAL_KEYS",
    "SIGNAL_PREFIX",
    "TERMINAL_STATES",
    "TRIAL_SCHEMA",
    "TRIAL_STATES",
    "VALUE_PREFIXES",
    "classify_metric",
    "column_for",
    "flatten_scalars",
    "scalar_columns",
    "to_json",
    "validate_sweep_id",
]

CONFIG_PREFIX = "config."
METRICS_PREFIX = "metrics."
COST_PREFIX = "cost."
SIGNAL_PREFIX = "signal."
VALUE_PREFIXES = (METRICS_PREFIX, COST_PREFIX, SIGNAL_PREFIX, CONFIG_PREFIX)

#: The result key under which a trial reports the Ray node it runs on, and the top-level
#: result column that holds it (not a metric: the Tune callback moves it out of the
#: metrics into the row, next to ``trial_id``).
NODE_ID_KEY = "node_id"

#: Reported metric names that are a cost of the trial (copied to ``cost.<name>``).
COST_KEYS: frozenset[str] = frozenset(
    {
        "params",
        "nonzero_params",
        "flops",
        "train_flops",
        "latency_ms",
        "wall_s",
        "time",
        "time_total_s",
        "device",
    }
)
#: Reported metric names that are a method's own signal (copied to ``signal.<name>``).
SIGNAL_KEYS: frozenset[str] = frozenset(
    {
        "width",
        "depth",
        "density",
        "d_density",
        "balance_ratio",
        "br_skipped",
        "stage",
        "growth_stage",
        "grown",
        "mask_updates",
        "d_updates",
        "subnets",
        "lr",
    }
)

TRIAL_STATES: tuple[str, ...] = ("running", "completed", "failed", "stopped")
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "stopped"})

RESULT_BASE_SCHEMA = pa.schema(
    [
        pa.field("sweep_id", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("iteration", pa.int64(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("written_at", pa.float64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("config_json", pa.string(), nullable=False),
        pa.field("metrics_json", pa.string(), nullable=False),
        pa.field(NODE_ID_KEY, pa.string()),
    ]
)

TRIAL_SCHEMA = pa.schema(
    [
        pa.field("sweep_id", pa.string(), nullable=False),
        pa.field("trial_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("config_json", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("last_iteration", pa.int64()),
    ]
)

_SWEEP_ID_RULE = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_SWEEP_ID_RE = re.compile(_SWEEP_ID_RULE)

Scalar = float | str | None


def validate_sweep_id(sweep_id: object) -> str:
    """Return ``sweep_id`` if it is a safe directory name, else raise ``ValueError``."""
    if not isinstance(sweep_id, str) or _SWEEP_ID_RE.fullmatch(sweep_id) is None:
        raise ValueError(f"sweep_id must match {_SWEEP_ID_RULE}, got {sweep_id!r}")
    return sweep_id


def classify_metric(name: str) -> str | None:
    """``"cost."`` or ``"signal."`` for a reported metric name in the key map, else ``None``."""
    if name in COST_KEYS:
        return COST_PREFIX
    if name in SIGNAL_KEYS:
        return SIGNAL_PREFIX
    return None


def column_for(name: object, columns: Iterable[str], *, where: str = "the store") -> str:
    """The column among ``columns`` that holds the reported ``name``.

    A name with a known prefix (``metrics.``, ``cost.``, ``signal.``, ``config.``) must be a
    column as is; a bare name resolves to ``metrics.<name>``, then ``cost.<name>``,
    ``signal.<name>``, ``config.<name>`` (the first present). Raises ``ValueError`` naming
    ``where`` and the known names otherwise.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    present = set(columns)
    if name.startswith(VALUE_PREFIXES):
        candidates: tuple[str, ...] = (name,)
    else:
        candidates = tuple(prefix + name for prefix in VALUE_PREFIXES)
    for candidate in candidates:
        if candidate in present:
            return candidate
    known = sorted(column for column in present if column.startswith(VALUE_PREFIXES))
    raise ValueError(f"name {name!r} is not a column of {where}; known names: {known}")


def _scalar(value: object) -> tuple[bool, Scalar]:
    """``(True, flattened value)`` for a scalar, ``(False, None)`` for anything else."""
    if value is None or isinstance(value, str):
        return True, value
    if isinstance(value, numbers.Real):  # bool, int, float and numpy scalars
        return True, float(value)
    return False, None


def flatten_scalars(values: Mapping[str, Any], *, field: str) -> dict[str, Scalar]:
    """Flatten nested mappings to ``{"a.b": scalar}``; non-scalar leaves are left out.

    ``field`` names the input in errors (``"config"`` or ``"metrics"``).
    """
    flat: dict[str, Scalar] = {}
    stack: list[tuple[str, Mapping[str, Any]]] = [("", values)]
    while stack:
        prefix, mapping = stack.pop()
        for key, value in mapping.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"{field} keys must be non-empty strings, got {key!r}")
            name = prefix + key
            if isinstance(value, Mapping):
                stack.append((name + ".", value))
                continue
            is_scalar, scalar = _scalar(value)
            if not is_scalar:
                continue
            if name in flat:
                raise ValueError(
                    f"{field} key {name!r} occurs twice once nested keys are joined with '.'"
                )
            flat[name] = scalar
    return flat


def _column_type(values: Iterable[Scalar]) -> pa.DataType | None:
    kinds = {type(value) for value in values if value is not None}
    if not kinds:
        return None
    return pa.float64() if kinds == {float} else pa.string()


def scalar_columns(flat_rows: list[dict[str, Scalar]], prefix: str) -> dict[str, pa.Array]:
    """Turn flattened rows into typed Arrow columns named ``prefix + key``, sorted by name."""
    keys = sorted({key for row in flat_rows for key in row})
    columns: dict[str, pa.Array] = {}
    for key in keys:
        values = [row.get(key) for row in flat_rows]
        column_type = _column_type(values)
        if column_type is None:
            continue
        if column_type == pa.string():
            values = [value if value is None else str(value) for value in values]
        columns[prefix + key] = pa.array(values, type=column_type)
    return columns


def _jsonable(value: object, path: str) -> object:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item, f"{path}[{index}]") for index, item in enumerate(value)]
    tolist = getattr(value, "tolist", None)  # numpy arrays, without importing numpy
    if callable(tolist):
        return _jsonable(tolist(), path)
    raise ValueError(
        f"{path} must be JSON-serialisable (mapping, list, str, number, bool or None), "
        f"got {type(value).__name__}"
    )


def to_json(value: object, *, field: str, indent: int | None = None) -> str:
    """Strict JSON (non-finite floats as ``null``); ``field`` names the value in errors."""
    separators = (",", ":") if indent is None else None
    return json.dumps(
        _jsonable(value, field), allow_nan=False, indent=indent, separators=separators
    )
