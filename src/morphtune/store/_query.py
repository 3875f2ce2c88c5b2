"""Queries over one sweep's result rows: filtered, ordered pages (:func:`select_rows`) and
the best row under constraints (:func:`best_under`); pyarrow compute and numpy, no Python
loop over rows. Also the one import for the whole query API (conditions in
:mod:`._conditions`, frames in :mod:`._frame`, the Pareto front in :mod:`._pareto`).

Rules shared with the Pareto query: rows of trials whose state is ``failed`` never win (they
are listed by :func:`select_rows`); ``scope="last"`` takes each trial's last report, *then*
applies the conditions, so a constraint holds on the trial's final result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from morphtune.store._best import BestResult
from morphtune.store._conditions import CONDITION_OPS, Condition, InvalidArgument, make_condition
from morphtune.store._errors import NoResults
from morphtune.store._frame import (
    BUILTIN_COLUMNS,
    KEY,
    QUERY_SCOPES,
    SweepFrame,
    last_per_trial,
    not_failed,
    numeric_metrics,
    require_numeric,
    rows_where,
    valid_rows,
    validate_query_scope,
)
from morphtune.store._pareto import (
    MAX_OBJECTIVES,
    ParetoPoint,
    ParetoResult,
    manifest_objectives,
    pareto_front,
)

__all__ = [  # the query API; conditions, frames and the Pareto front live next door
    "BUILTIN_COLUMNS",
    "CONDITION_OPS",
    "DEFAULT_PAGE_SIZE",
    "MAX_OBJECTIVES",
    "MAX_PAGE_SIZE",
    "QUERY_SCOPES",
    "Condition",
    "InvalidArgument",
    "ParetoPoint",
    "ParetoResult",
    "SweepFrame",
    "TrialPage",
    "best_under",
    "decode_page_token",
    "encode_page_token",
    "make_condition",
    "manifest_objectives",
    "numeric_metrics",
    "pareto_front",
    "resolve_objective",
    "select_rows",
    "validate_page_size",
    "validate_query_scope",
]

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000


@dataclass(frozen=True)
class TrialPage:
    """One page of rows (every stored column plus ``state``) and where the next starts."""

    rows: list[dict[str, Any]]
    total: int
    next_offset: int | None


def validate_page_size(page_size: object, field: str = "page_size") -> int:
    if not isinstance(page_size, int) or isinstance(page_size, bool):
        raise InvalidArgument(field, f"must be an integer, got {page_size!r}")
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            field,
            f"must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}), got {page_size}",
        )
    return page_size


def select_rows(
    frame: SweepFrame,
    conditions: Sequence[Condition] = (),
    *,
    order_by: str = "",
    descending: bool = False,
    scope: str = "last",
    offset: int = 0,
    limit: int = DEFAULT_PAGE_SIZE,
) -> TrialPage:
    """Rows matching every condition, ordered, from ``offset``, at most ``limit``.

    Order: ``order_by`` (nulls and NaN last), then trial_id and iteration ascending; with no
    ``order_by``, trial_id and iteration (both descending when ``descending``).
    """
    scope = validate_query_scope(scope)
    if not frame.columns:  # no result part yet: nothing to list, nothing to check against
        return TrialPage([], 0, None)
    resolved = [frame.resolve(c.column, f"{c.field}.column") for c in conditions]
    order_column = frame.resolve(order_by, "order_by") if order_by else ""
    table = frame.table([*resolved, *([order_column] if order_column else [])])
    rows = np.arange(table.num_rows, dtype=np.int64)
    if scope == "last":
        rows = last_per_trial(table, rows)
    rows = rows_where(frame, table, rows, conditions)
    subset = table.take(pa.array(rows))
    direction = "descending" if descending else "ascending"
    if order_column:
        ties = [(name, "ascending") for name in KEY if name != order_column]
        keys = [(order_column, direction), *ties]
    else:
        keys = [(name, direction) for name in KEY]
    sort_keys = [(name, how, "at_end") for name, how in keys]
    order = pc.sort_indices(subset, sort_keys=sort_keys)
    ordered = rows[np.asarray(order.to_numpy(), dtype=np.int64)]
    page = ordered[offset : offset + limit]
    everything = frame.table(frame.all_columns()).take(pa.array(page, type=pa.int64()))
    end = offset + len(page)
    return TrialPage(everything.to_pylist(), len(ordered), end if end < len(ordered) else None)


def encode_page_token(query_key: bytes, offset: int) -> str:
    """An opaque token for ``offset`` in the query whose canonical bytes are ``query_key``."""
    body = json.dumps({"q": hashlib.sha256(query_key).hexdigest()[:24], "o": offset})
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_page_token(token: str, query_key: bytes, field: str = "page_token") -> int:
    """The offset in ``token``; :class:`InvalidArgument` if it is malformed or was issued
    for another query."""
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        digest, offset = body["q"], body["o"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise InvalidArgument(field, "is not a page token this service issued") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgument(field, "is not a page token this service issued") from None
    if digest != hashlib.sha256(query_key).hexdigest()[:24]:
        raise InvalidArgument(
            field,
            "was issued for a different query (sweep_id, filter, order_by, descending or "
            "scope changed); start again without a token",
        )
    return offset


def resolve_objective(
    manifest: Mapping[str, Any], sweep_id: str, metric: str | None, mode: str | None
) -> tuple[str, str]:
    """``(metric, mode)`` with the manifest objective's defaults (as ``SweepStore.best``)."""
    objective = manifest.get("objective") or {}
    default_metric = objective.get("metric") if isinstance(objective, Mapping) else None
    default_mode = objective.get("mode") if isinstance(objective, Mapping) else None
    if not metric:
        if not default_metric:
            raise InvalidArgument(
                "metric",
                f"must be given: the manifest of sweep {sweep_id!r} has no objective.metric "
                "to default to",
            )
        metric = str(default_metric)
    if not mode:
        if metric != default_metric or not default_mode:
            raise InvalidArgument(
                "mode",
                f"must be given ('max' or 'min'): metric {metric!r} is not the objective of "
                f"sweep {sweep_id!r} ({default_metric!r}), so it has no default",
            )
        mode = str(default_mode)
    if mode not in ("max", "min"):
        raise InvalidArgument("mode", f"must be one of ['max', 'min'], got {mode!r}")
    return metric, mode


def best_under(
    frame: SweepFrame,
    metric: str,
    mode: str,
    scope: str,
    constraints: Sequence[Condition],
) -> BestResult:
    """The best row for ``metric`` among rows meeting every constraint.

    Same rules as ``SweepStore.best`` (failed trials skipped; ``last``: each trial's last
    report of the metric, a NaN there disqualifies it; ties to the smallest trial_id and
    iteration); a trial whose last report breaks a constraint is out.
    """
    scope = validate_query_scope(scope)
    if not frame.columns:
        raise NoResults(frame.sweep_id, metric, "no result rows yet")
    column = frame.resolve(metric, "metric")
    resolved = [frame.resolve(c.column, f"{c.field}.column") for c in constraints]
    table = frame.table([column, *resolved])
    require_numeric(frame, table, column, "metric")
    rows = not_failed(frame, table, valid_rows(table, [column]))
    if scope == "last":
        rows = last_per_trial(table, rows)
    rows = rows_where(frame, table, rows, constraints)
    values = np.asarray(
        table.column(column).cast(pa.float64()).take(pa.array(rows)).to_numpy(), dtype=float
    )
    finite = np.isfinite(values)
    rows, values = rows[finite], values[finite]
    if len(rows) == 0:
        raise NoResults(
            frame.sweep_id,
            metric,
            f"no finite value among the {scope} rows of trials that did not fail "
            f"and meet the {len(constraints)} constraint(s)",
        )
    extreme = values.max() if mode == "max" else values.min()
    winners = rows[values == extreme]
    keys = table.select(KEY).take(pa.array(winners))
    first = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in KEY])[0].as_py()
    row = int(winners[first])
    picked = frame.table(["config_json", "metrics_json"]).slice(row, 1).to_pylist()[0]
    return BestResult(
        sweep_id=frame.sweep_id,
        trial_id=picked["trial_id"],
        iteration=picked["iteration"],
        metric=metric,
        mode=mode,
        value=float(extreme),
        config=json.loads(picked["config_json"]),
        metrics=json.loads(picked["metrics_json"]),
    )
