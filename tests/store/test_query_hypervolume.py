"""Hypervolume (exact) against an independent brute-force grid, and non-dominated sorting
against a direct pairwise definition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morphtune.hypervolume import hypervolume
from morphtune.store._pareto import non_dominated_mask, reference_point


def grid_volume(points: np.ndarray, reference: np.ndarray, directions: list[str]) -> float:
    """Sum of the cells of the grid spanned by every coordinate that some point dominates.

    Independent of the slicing algorithm: cells come from the sorted coordinates; a cell
    counts when some point is no worse than its best corner in every objective.
    """
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    minimised, ref = points * signs, reference * signs
    axes = []
    for dim in range(len(ref)):
        values = np.unique(np.append(minimised[:, dim], ref[dim]))
        axes.append(values[values <= ref[dim]])
    lows = np.stack(np.meshgrid(*(axis[:-1] for axis in axes), indexing="ij"), axis=-1)
    sizes = np.stack(np.meshgrid(*(np.diff(axis) for axis in axes), indexing="ij"), axis=-1)
    lows, sizes = lows.reshape(-1, len(ref)), sizes.reshape(-1, len(ref))
    if len(minimised) == 0 or len(lows) == 0:
        return 0.0
    covered = np.any(np.all(minimised[None, :, :] <= lows[:, None, :], axis=2), axis=1)
    return float(np.sum(np.prod(sizes[covered], axis=1)))


def pairwise_front(values: np.ndarray, directions: list[str]) -> np.ndarray:
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    minimised = values * signs
    mask = np.ones(len(values), dtype=bool)
    for i, j in itertools.product(range(len(values)), repeat=2):
        if np.all(minimised[j] <= minimised[i]) and np.any(minimised[j] < minimised[i]):
            mask[i] = False
    return mask


def _fronts(max_dims: int = 4, max_points: int = 7) -> st.SearchStrategy:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[str]]:
        dims = draw(st.integers(1, max_dims))
        count = draw(st.integers(0, max_points))
        # small integers make ties, duplicates and points on the reference likely
        coordinate = st.integers(0, 6).map(float)
        points = np.array(
            [[draw(coordinate) for _ in range(dims)] for _ in range(count)], dtype=float
        ).reshape(count, dims)
        directions = [draw(st.sampled_from(["max", "min"])) for _ in range(dims)]
        reference = np.array([draw(coordinate) for _ in range(dims)], dtype=float)
        return points, reference, directions

    return build()


@settings(max_examples=150, deadline=None)
@given(_fronts())
def test_hypervolume_equals_brute_force_grid(
    case: tuple[np.ndarray, np.ndarray, list[str]],
) -> None:
    points, reference, directions = case
    assert hypervolume(points, reference, directions) == pytest.approx(
        grid_volume(points, reference, directions), abs=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(_fronts(max_dims=3, max_points=6))
def test_hypervolume_ignores_order_and_dominated_points(
    case: tuple[np.ndarray, np.ndarray, list[str]],
) -> None:
    points, reference, directions = case
    volume = hypervolume(points, reference, directions)
    shuffled = points[np.random.default_rng(len(points)).permutation(len(points))]
    assert hypervolume(shuffled, reference, directions) == pytest.approx(volume)
    if len(points):
        signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
        worse = points[:1] + signs  # one step worse than the first point everywhere
        stacked = np.concatenate([points, worse])
        assert hypervolume(stacked, reference, directions) == pytest.approx(volume)


def test_hypervolume_matches_monte_carlo_in_4d() -> None:
    rng = np.random.default_rng(7)
    points = rng.uniform(0, 1, size=(25, 4))
    reference = np.ones(4)
    directions = ["min"] * 4
    samples = rng.uniform(0, 1, size=(200_000, 4))
    dominated = np.zeros(len(samples), dtype=bool)
    for point in points:
        dominated |= np.all(samples >= point, axis=1)
    estimate = dominated.mean()  # the box [0, 1]^4 has volume 1
    exact = hypervolume(points, reference, directions)
    standard_error = np.sqrt(estimate * (1 - estimate) / len(samples))
    assert abs(exact - estimate) < 5 * standard_error


def test_known_values() -> None:
    # two boxes [1,3]x[2,3] and [2,3]x[1,3] overlapping in [2,3]x[2,3]: 2 + 2 - 1
    assert hypervolume([[1, 2], [2, 1]], [3, 3], ["min", "min"]) == pytest.approx(3.0)
    # maximised accuracy, minimised params
    assert hypervolume([[0.9, 10.0]], [0.5, 20.0], ["max", "min"]) == pytest.approx(4.0)
    assert hypervolume(np.empty((0, 2)), [1, 1], ["min", "min"]) == 0.0
    assert hypervolume([[5, 5]], [1, 1], ["min", "min"]) == 0.0  # worse than the reference
    assert hypervolume([[0, 0, 0]], [1, 2, 3], ["min"] * 3) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("points", "reference", "directions", "message"),
    [
        ([[1, 2]], [3], ["min", "min"], "reference must have one value per objective"),
        ([[1, 2, 3]], [3, 3], ["min", "min"], "points must have one column per objective"),
        ([[1, 2]], [3, 3], ["min", "up"], r"directions\[1\] must be one of \['max', 'min'\]"),
        ([[1, float("nan")]], [3, 3], ["min", "min"], "points must be finite"),
        ([[1, 2]], [3, float("inf")], ["min", "min"], "reference must be finite"),
        ([1, 2], [3, 3], ["min", "min"], "points must be a 2-D array"),
    ],
)
def test_bad_input_names_the_argument(
    points: object, reference: object, directions: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        hypervolume(points, reference, directions)  # type: ignore[arg-type]


@settings(max_examples=120, deadline=None)
@given(_fronts(max_dims=4, max_points=12))
def test_non_dominated_mask_matches_pairwise_definition(
    case: tuple[np.ndarray, np.ndarray, list[str]],
) -> None:
    points, _, directions = case
    expected = pairwise_front(points, directions)
    assert non_dominated_mask(points, directions).tolist() == expected.tolist()


def test_non_dominated_mask_across_chunks() -> None:
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=(1500, 3)), 1)  # > one chunk, many ties
    directions = ["max", "min", "max"]
    assert non_dominated_mask(values, directions).tolist() == (
        pairwise_front_fast(values, directions).tolist()
    )


def pairwise_front_fast(values: np.ndarray, directions: list[str]) -> np.ndarray:
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    v = values * signs
    no_worse = np.all(v[:, None, :] <= v[None, :, :], axis=2)
    better = np.any(v[:, None, :] < v[None, :, :], axis=2)
    return ~np.any(no_worse & better, axis=0)


def test_reference_point_is_worst_per_objective() -> None:
    values = np.array([[0.9, 10.0], [0.5, 30.0], [0.7, 5.0]])
    assert reference_point(values, ["max", "min"]).tolist() == [0.5, 30.0]
