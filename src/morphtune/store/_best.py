"""The best-row query, in pyarrow compute (no Python loop over rows)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from morphtune.store._files import trial_codes

__all__ = [
    "BEST_SCOPES",
    "BestResult",
    "best_position",
    "best_row",
    "last_per_trial",
    "validate_mode",
    "validate_scope",
]

BEST_SCOPES = ("last", "all")
_MODES = ("max", "min")


@dataclass(frozen=True)
class BestResult:
    """The best reported row of a sweep for one metric and direction."""

    sweep_id: str
    trial_id: str
    iteration: int
    metric: str
    mode: str
    value: float
    config: dict[str, Any]
    metrics: dict[str, Any]


def validate_mode(mode: object) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
    return str(mode)


def validate_scope(scope: object) -> str:
    if scope not in BEST_SCOPES:
        raise ValueError(f"scope must be one of {list(BEST_SCOPES)}, got {scope!r}")
    return str(scope)


def last_per_trial(table: pa.Table) -> pa.Table:
    """Per trial, the row of the highest iteration (rows are unique per trial and iteration)."""
    codes = trial_codes(table.column("trial_id"))
    iterations = np.asarray(table.column("iteration").to_numpy(zero_copy_only=False))
    last = np.full(int(codes.max()) + 1, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, codes, iterations)
    return table.filter(pa.array(iterations == last[codes]))


def best_row(
    table: pa.Table, value: str, mode: str, scope: str, excluded_trials: Collection[str]
) -> dict[str, Any] | None:
    """The best row of ``table`` (``trial_id``, ``iteration``, ``value`` and any others) as a
    dict, or ``None`` when no row has a finite value.

    ``table`` must hold one row per (trial_id, iteration). ``scope="last"`` compares each
    trial's last iteration that reported ``value`` (a NaN there disqualifies the trial; it
    does not fall back to an earlier iteration); ``"all"`` compares every row. Ties go to the
    smallest (trial_id, iteration).
    """
    if excluded_trials:
        excluded = pa.array(sorted(excluded_trials), type=pa.string())
        table = table.filter(pc.invert(pc.is_in(table.column("trial_id"), value_set=excluded)))
    table = table.filter(pc.is_valid(table.column(value)))
    if scope == "last" and table.num_rows:
        table = last_per_trial(table)
    table = table.filter(pc.is_finite(table.column(value)))
    if table.num_rows == 0:
        return None
    extreme = pc.max(table.column(value)) if mode == "max" else pc.min(table.column(value))
    ties = table.filter(pc.equal(table.column(value), extreme))
    order = pc.sort_indices(ties, sort_keys=[("trial_id", "ascending"), ("iteration", "ascending")])
    return ties.take(order.slice(0, 1)).to_pylist()[0]


def best_position(
    values: np.ndarray,
    reported: np.ndarray,
    codes: np.ndarray,
    iterations: np.ndarray,
    eligible: np.ndarray | None,
    mode: str,
    scope: str,
    trial_ids: Sequence[str],
) -> int | None:
    """The row (index into the arrays) of the best value, or ``None`` if none is finite.

    Same rules as :func:`best_row`, on numpy arrays over all rows: ``reported`` marks rows
    that reported the value (NaN included), ``eligible`` the rows that count at all (the
    last written copy of a key, of a trial that did not fail; ``None``: every row).
    Ties go to the smallest (trial_id, iteration).
    """
    mask = reported if eligible is None else reported & eligible
    rows = np.flatnonzero(mask)
    if scope == "last" and len(rows):
        row_codes, row_iterations = codes[rows], iterations[rows]
        last = np.full(int(row_codes.max()) + 1, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, row_codes, row_iterations)
        rows = rows[row_iterations == last[row_codes]]
    rows = rows[np.isfinite(values[rows])]
    if len(rows) == 0:
        return None
    candidates = values[rows]
    extreme = candidates.max() if mode == "max" else candidates.min()
    ties = rows[candidates == extreme]
    if len(ties) == 1:
        return int(ties[0])
    return int(
        min(ties.tolist(), key=lambda row: (trial_ids[int(codes[row])], int(iterations[row])))
    )
