"""The Pareto front of a sweep: non-dominated sorting with mixed directions (numpy, no
Python loop per point) and :func:`pareto_front` over a :class:`SweepFrame`.

Point ``a`` dominates ``b`` when ``a`` is no worse in every objective and strictly better in
one. Equal points do not dominate each other, so duplicates on the front are all kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from morphtune.hypervolume import hypervolume, to_minimisation
from morphtune.store._conditions import Condition, InvalidArgument
from morphtune.store._errors import NoResults
from morphtune.store._frame import (
    SweepFrame,
    last_per_trial,
    not_failed,
    numeric_metrics,
    require_numeric,
    rows_where,
    valid_rows,
    validate_query_scope,
)

__all__ = [
    "MAX_OBJECTIVES",
    "MIN_OBJECTIVES",
    "ParetoPoint",
    "ParetoResult",
    "manifest_objectives",
    "non_dominated_mask",
    "pareto_front",
    "reference_point",
]

MIN_OBJECTIVES, MAX_OBJECTIVES = 2, 4

_CHUNK = 512


def non_dominated_mask(values: NDArray[np.float64], directions: Sequence[str]) -> NDArray[np.bool_]:
    """``mask[i]`` is True when no row of ``values`` (n x d, finite) dominates row ``i``.

    After a lexicographic sort only an earlier point can dominate a later one, and whoever
    dominates a point is dominated by (or is) a front point. So each chunk of sorted points is
    compared with the front found so far and with itself: ``O(n x (front + chunk) x d)``.
    """
    minimised, _ = to_minimisation(values, np.zeros(len(directions)), directions)
    mask = np.zeros(len(minimised), dtype=bool)
    if len(minimised) == 0:
        return mask
    # Points some pivot dominates are out; whatever dominates a survivor survives too.
    candidates = np.flatnonzero(~_dominated_by(_pivots(minimised), minimised))
    mask[candidates] = _front_of(minimised[candidates])
    return mask


def _pivots(points: NDArray[np.float64], weights: int = 16) -> NDArray[np.float64]:
    """Points that are likely on the front: the minimisers of a few positive weighted sums
    of the range-normalised objectives (each one dominates much of a large cloud)."""
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    normalised = (points - low) / span
    rng = np.random.default_rng(0)
    mixes = np.vstack(
        [np.eye(points.shape[1]) + 1e-3, rng.uniform(0.05, 1.0, size=(weights, points.shape[1]))]
    )
    return points[np.unique(np.argmin(normalised @ mixes.T, axis=0))]


def _front_of(minimised: NDArray[np.float64]) -> NDArray[np.bool_]:
    count = len(minimised)
    mask = np.zeros(count, dtype=bool)
    if count == 0:
        return mask
    order = np.lexsort(minimised.T[::-1])
    ordered = minimised[order]
    front = np.empty((0, ordered.shape[1]))
    for start in range(0, count, _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        # the front so far first (usually small), then the few survivors among themselves
        alive = np.flatnonzero(~_dominated_by(front, chunk))
        survivors = chunk[alive]
        kept = alive[~_dominated_by(survivors, survivors)]
        front = np.concatenate([front, chunk[kept]])
        mask[order[start + kept]] = True
    return mask


def _dominated_by(others: NDArray[np.float64], points: NDArray[np.float64]) -> NDArray[np.bool_]:
    """For each of ``points``, whether some row of ``others`` dominates it (minimised)."""
    if len(others) == 0:
        return np.zeros(len(points), dtype=bool)
    no_worse = np.all(others[:, None, :] <= points[None, :, :], axis=2)
    better = np.any(others[:, None, :] < points[None, :, :], axis=2)
    return np.any(no_worse & better, axis=0)


def reference_point(values: NDArray[np.float64], directions: Sequence[str]) -> NDArray[np.float64]:
    """The worst value per objective (min for ``"max"``, max for ``"min"``) of ``values``."""
    worst = [
        values[:, index].min() if direction == "max" else values[:, index].max()
        for index, direction in enumerate(directions)
    ]
    return np.asarray(worst, dtype=np.float64)


@dataclass(frozen=True)
class ParetoPoint:
    trial_id: str
    iteration: int
    values: tuple[float, ...]
    config: dict[str, Any]
    metrics: dict[str, float]


@dataclass(frozen=True)
class ParetoResult:
    sweep_id: str
    objectives: tuple[tuple[str, str], ...]
    points: tuple[ParetoPoint, ...]
    reference: tuple[float, ...]
    hypervolume: float
    candidates: int


def _validate_objectives(
    objectives: Sequence[tuple[str, str]], field: str = "objectives"
) -> list[tuple[str, str]]:
    if not MIN_OBJECTIVES <= len(objectives) <= MAX_OBJECTIVES:
        raise InvalidArgument(
            field,
            f"must hold {MIN_OBJECTIVES} to {MAX_OBJECTIVES} objectives, got {len(objectives)}",
        )
    for index, (metric, mode) in enumerate(objectives):
        if not isinstance(metric, str) or not metric:
            raise InvalidArgument(
                f"{field}[{index}].metric", f"must be a non-empty name, got {metric!r}"
            )
        if mode not in ("max", "min"):
            raise InvalidArgument(
                f"{field}[{index}].mode", f"must be one of ['max', 'min'], got {mode!r}"
            )
    return list(objectives)


def manifest_objectives(manifest: Mapping[str, Any], sweep_id: str) -> list[tuple[str, str]]:
    listed = manifest.get("objectives")
    if not isinstance(listed, list) or len(listed) < MIN_OBJECTIVES:
        raise InvalidArgument(
            "objectives",
            f"must be given: the manifest of sweep {sweep_id!r} lists no "
            f"{MIN_OBJECTIVES} or more objectives to default to",
        )
    return [
        (str(item.get("metric", "")), str(item.get("mode", "")))
        for item in listed
        if isinstance(item, Mapping)
    ]


def pareto_front(
    frame: SweepFrame,
    objectives: Sequence[tuple[str, str]],
    *,
    scope: str = "last",
    constraints: Sequence[Condition] = (),
    reference: Sequence[float] | None = None,
) -> ParetoResult:
    """The rows no other candidate dominates, one per trial, and their hypervolume.

    Candidates: rows of trials that did not fail, with a finite value for every objective
    (``last``: each trial's last row reporting all of them), meeting every constraint. With
    ``scope="all"`` every such row competes and a trial with several rows on the front keeps
    its latest. ``reference`` defaults to the worst candidate value per objective.
    """
    objectives = _validate_objectives(objectives)
    scope = validate_query_scope(scope)
    directions = [mode for _, mode in objectives]
    if reference is not None:
        _validate_reference(reference, len(objectives))
    if not frame.columns:
        raise NoResults(frame.sweep_id, objectives[0][0], "no result rows yet")
    columns = [
        frame.resolve(metric, f"objectives[{index}].metric")
        for index, (metric, _) in enumerate(objectives)
    ]
    if len(set(columns)) != len(columns):
        raise InvalidArgument("objectives", f"must name distinct columns, got {columns}")
    resolved = [frame.resolve(c.column, f"{c.field}.column") for c in constraints]
    table = frame.table([*columns, *resolved])
    for index, column in enumerate(columns):
        require_numeric(frame, table, column, f"objectives[{index}].metric")
    rows = not_failed(frame, table, valid_rows(table, columns))
    if scope == "last":
        rows = last_per_trial(table, rows)
    rows = rows_where(frame, table, rows, constraints)
    values = np.column_stack(
        [
            np.asarray(table.column(c).cast(pa.float64()).take(pa.array(rows)).to_numpy())
            for c in columns
        ]
    ).astype(np.float64)
    finite = np.all(np.isfinite(values), axis=1)
    rows, values = rows[finite], values[finite]
    if len(rows) == 0:
        raise NoResults(
            frame.sweep_id,
            ", ".join(metric for metric, _ in objectives),
            "no candidate row with a finite value for every objective",
        )
    front = non_dominated_mask(values, directions)
    front_rows = last_per_trial(table, rows[front])
    ref = (
        np.asarray(reference, dtype=np.float64)
        if reference is not None
        else reference_point(values, directions)
    )
    row_values = dict(zip(rows.tolist(), values.tolist(), strict=True))
    points = [row_values[row] for row in front_rows.tolist()]
    volume = hypervolume(np.asarray(points).reshape(-1, len(columns)), ref, directions)
    details = frame.table(["config_json", "metrics_json"]).take(pa.array(front_rows))
    result_points = sorted(
        (
            ParetoPoint(
                trial_id=row["trial_id"],
                iteration=row["iteration"],
                values=tuple(point),
                config=json.loads(row["config_json"]),
                metrics=numeric_metrics(json.loads(row["metrics_json"])),
            )
            for row, point in zip(details.to_pylist(), points, strict=True)
        ),
        key=lambda point: (point.trial_id, point.iteration),
    )
    return ParetoResult(
        sweep_id=frame.sweep_id,
        objectives=tuple(objectives),
        points=tuple(result_points),
        reference=tuple(float(value) for value in ref),
        hypervolume=volume,
        candidates=len(rows),
    )


def _validate_reference(reference: Sequence[float], count: int) -> None:
    if len(reference) != count:
        raise InvalidArgument(
            "reference", f"must hold one value per objective ({count}), got {len(reference)}"
        )
    if not all(math.isfinite(value) for value in reference):
        raise InvalidArgument("reference", f"must be finite, got {list(reference)}")
