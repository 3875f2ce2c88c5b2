"""Exact hypervolume of a set of points with respect to a reference point (numpy only).

The hypervolume (S-metric, Zitzler & Thiele 1998) of points ``P`` is the volume of the region
that at least one point of ``P`` dominates and that dominates the reference point ``r``:
for minimised objectives, the volume of the union of the boxes ``[p, r]``. Objectives may mix
directions; ``"max"`` objectives are negated internally.

* 1-D: ``r - min(P)``.
* 2-D: a sweep line over the points sorted by the first objective, ``O(n log n)``.
* d >= 3: hypervolume by slicing objectives (HSO, While et al. 2006): sort by the last
  objective and sum ``slab depth x (d-1)-dimensional hypervolume`` of the points below each
  slab, recursively down to the 2-D sweep. ``O(n^(d-1) log n)``: exact and quick for the
  fronts a sweep produces (tens to a few hundred points, up to 4 objectives).

Points that are not strictly better than the reference in every objective bound no volume
and are ignored, as are dominated points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["DIRECTIONS", "hypervolume", "to_minimisation"]

DIRECTIONS = ("max", "min")


def to_minimisation(
    points: ArrayLike, reference: ArrayLike, directions: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Validate the inputs and return ``(points, reference)`` with every objective minimised."""
    values = np.asarray(points, dtype=np.float64)
    if values.ndim == 1 and values.size == 0:
        values = values.reshape(0, len(directions))
    if values.ndim != 2:
        raise ValueError(
            f"points must be a 2-D array (n points x d objectives), got {values.ndim}-D"
        )
    ref = np.asarray(reference, dtype=np.float64)
    dims = len(directions)
    if dims < 1:
        raise ValueError("directions must name at least one objective, got none")
    for index, direction in enumerate(directions):
        if direction not in DIRECTIONS:
            raise ValueError(
                f"directions[{index}] must be one of {list(DIRECTIONS)}, got {direction!r}"
            )
    if ref.shape != (dims,):
        raise ValueError(
            f"reference must have one value per objective ({dims}), got shape {ref.shape}"
        )
    if values.shape[1] != dims:
        raise ValueError(
            f"points must have one column per objective ({dims}), got {values.shape[1]}"
        )
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference must be finite, got {ref.tolist()}")
    if not np.all(np.isfinite(values)):
        raise ValueError("points must be finite (drop NaN/inf rows first)")
    signs = np.array([-1.0 if direction == "max" else 1.0 for direction in directions])
    return values * signs, ref * signs


def hypervolume(points: ArrayLike, reference: ArrayLike, directions: Sequence[str]) -> float:
    """The exact hypervolume of ``points`` (n x d) bounded by ``reference`` (d,).

    ``directions[i]`` is ``"max"`` or ``"min"`` for objective ``i``. Raises ``ValueError`` on
    shapes that do not match, non-finite values or an unknown direction.
    """
    values, ref = to_minimisation(points, reference, directions)
    values = values[np.all(values < ref, axis=1)]
    if len(values) == 0:
        return 0.0
    return float(_volume(values, ref))


def _volume(points: NDArray[np.float64], ref: NDArray[np.float64]) -> float:
    """Hypervolume of minimised ``points``, each strictly below ``ref`` in every objective."""
    dims = points.shape[1]
    if dims == 1:
        return float(ref[0] - points[:, 0].min())
    if dims == 2:
        return _volume_2d(points, ref)
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    depths = points[:, -1]
    total = 0.0
    # Points strictly below slab [depths[i], next) in the last objective are points[: i + 1].
    for index in range(len(points)):
        upper = depths[index + 1] if index + 1 < len(points) else ref[-1]
        if upper <= depths[index]:
            continue  # equal depths: the slab starts at the last of them
        below = points[: index + 1, :-1]
        if below.shape[1] > 2:  # the 2-D sweep skips dominated points by itself
            below = _non_dominated(below)
        total += (upper - depths[index]) * _volume(below, ref[:-1])
    return total


def _volume_2d(points: NDArray[np.float64], ref: NDArray[np.float64]) -> float:
    order = np.lexsort((points[:, 1], points[:, 0]))
    xs, ys = points[order, 0], points[order, 1]
    # After sorting by x, a point adds area only where its y is below every earlier y.
    best_y = np.minimum.accumulate(ys)
    next_x = np.append(xs[1:], ref[0])
    return float(np.sum((next_x - xs) * (ref[1] - best_y)))


def _non_dominated(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """The points no other point weakly dominates (duplicates kept once)."""
    if len(points) <= 1:
        return points
    unique = np.unique(points, axis=0)
    no_worse = np.all(unique[:, None, :] <= unique[None, :, :], axis=2)
    np.fill_diagonal(no_worse, False)
    return unique[~no_worse.any(axis=0)]
