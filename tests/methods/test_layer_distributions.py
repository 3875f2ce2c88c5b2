"""Uniform / ER / ERK layer densities (METHODS §1.6) and exact per-layer counts."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from morphtune.methods.sparsity import LAYER_DISTRIBUTIONS, layer_counts, layer_densities

layer_shape = st.lists(st.integers(1, 24), min_size=2, max_size=4).map(tuple)
layer_shapes = st.lists(layer_shape, min_size=1, max_size=6).map(
    lambda shapes: {f"layer{i}.weight": shape for i, shape in enumerate(shapes)}
)
densities = st.floats(0.005, 1.0, allow_nan=False)


def erk_raw(shape: tuple[int, ...], power: float = 1.0) -> float:
    return (sum(shape) / math.prod(shape)) ** power


def er_raw(shape: tuple[int, ...]) -> float:
    n_out, n_in = shape[0], shape[1]
    return (n_in + n_out) / (n_in * n_out)


def total(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def check_scaled_raw(
    shapes: dict[str, tuple[int, ...]], result: dict[str, float], raw: dict[str, float]
) -> None:
    assert set(result) == set(shapes)
    assert all(0 < d <= 1.0 for d in result.values())
    uncapped = [name for name, d in result.items() if d < 1.0]
    ratios = [result[name] / raw[name] for name in uncapped]
    for ratio in ratios:
        assert ratio == pytest.approx(ratios[0], rel=1e-12)
    for a in shapes:
        for b in shapes:
            if raw[a] > raw[b]:
                assert result[a] >= result[b]


@settings(max_examples=80, deadline=None)
@given(shapes=layer_shapes, density=densities, power=st.sampled_from([0.0, 0.5, 1.0]))
def test_erk_ratios_caps_monotonicity_and_budget(
    shapes: dict[str, tuple[int, ...]], density: float, power: float
) -> None:
    result = layer_densities(shapes, density, "erk", erk_power=power)
    check_scaled_raw(shapes, result, {name: erk_raw(s, power) for name, s in shapes.items()})
    kept = sum(result[name] * math.prod(shape) for name, shape in shapes.items())
    assert kept == pytest.approx(density * total(shapes), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(shapes=layer_shapes, density=densities)
def test_er_uses_the_first_two_dims(shapes: dict[str, tuple[int, ...]], density: float) -> None:
    result = layer_densities(shapes, density, "er")
    check_scaled_raw(shapes, result, {name: er_raw(s) for name, s in shapes.items()})


@settings(max_examples=60, deadline=None)
@given(shapes=layer_shapes, density=densities)
def test_uniform_gives_equal_densities(shapes: dict[str, tuple[int, ...]], density: float) -> None:
    result = layer_densities(shapes, density, "uniform")
    assert len(set(result.values())) == 1
    assert next(iter(result.values())) == pytest.approx(density, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(shapes=layer_shapes, density=st.floats(0.005, 0.999))
def test_erk_power_zero_is_uniform_before_capping(
    shapes: dict[str, tuple[int, ...]], density: float
) -> None:
    result = layer_densities(shapes, density, "erk", erk_power=0.0)
    for value in result.values():
        assert value == pytest.approx(density, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    kernels=st.lists(st.tuples(*[st.integers(1, 16)] * 4), min_size=1, max_size=5),
    density=densities,
)
def test_erk_is_identical_for_oihw_and_hwio(
    kernels: list[tuple[int, int, int, int]], density: float
) -> None:
    oihw = {f"conv{i}": kernel for i, kernel in enumerate(kernels)}
    hwio = {f"conv{i}": (h, w, i_, o) for i, (o, i_, h, w) in enumerate(kernels)}
    assert layer_densities(oihw, density, "erk") == layer_densities(hwio, density, "erk")


def test_erk_caps_the_small_first_layer() -> None:
    # A 2-input first layer has a huge raw density (0.5 vs 0.008): ERK must cap it at 1.
    shapes = {"first": (256, 2), "middle": (256, 256), "last": (10, 256)}
    result = layer_densities(shapes, 0.1, "erk")
    assert result["first"] == 1.0
    assert max(result.values()) == 1.0


@settings(max_examples=100, deadline=None)
@given(
    shapes=layer_shapes,
    density=densities,
    distribution=st.sampled_from(sorted(LAYER_DISTRIBUTIONS)),
)
def test_counts_meet_the_budget_within_one(
    shapes: dict[str, tuple[int, ...]], density: float, distribution: str
) -> None:
    n_total = total(shapes)
    assume(density * n_total >= len(shapes))  # room for every layer's floor of one
    counts = layer_counts(shapes, layer_densities(shapes, density, distribution))
    budget = math.floor(density * n_total + 0.5)
    assert abs(sum(counts.values()) - budget) <= 1
    assert all(1 <= counts[name] <= math.prod(shapes[name]) for name in shapes)


def test_counts_keep_at_least_one_per_layer() -> None:
    shapes = {"a": (100, 100), "b": (2, 2)}
    counts = layer_counts(shapes, {"a": 0.01, "b": 0.01})
    assert counts["b"] == 1
    assert abs(sum(counts.values()) - round(0.01 * 10004)) <= 1


def test_counts_with_largest_remainder() -> None:
    # Exact shares 2.6, 2.3, 2.1 -> floors 2, 2, 2; total round(7.0) = 7: +1 to the 0.6 layer.
    shapes = {"a": (10,), "b": (10,), "c": (10,)}
    assert layer_counts(shapes, {"a": 0.26, "b": 0.23, "c": 0.21}) == {"a": 3, "b": 2, "c": 2}


def test_dense_layers_are_forced_dense_and_inside_the_budget() -> None:
    shapes = {"first": (32, 8), "middle": (32, 32), "last": (4, 32)}
    result = layer_densities(shapes, 0.3, "uniform", dense_layers=["first"])
    assert result["first"] == 1.0
    kept = sum(result[name] * math.prod(shape) for name, shape in shapes.items())
    assert kept == pytest.approx(0.3 * total(shapes))


def test_dense_layers_that_exceed_the_budget_are_rejected() -> None:
    with pytest.raises(ValueError, match="no budget"):
        layer_densities({"a": (100, 100), "b": (2, 2)}, 0.1, "erk", dense_layers=["a"])


def test_errors_name_the_rule_and_the_value() -> None:
    shapes = {"a": (4, 4)}
    with pytest.raises(
        ValueError, match=r"density must satisfy 0 < density <= 1, but got density=1.5"
    ):
        layer_densities(shapes, 1.5)
    with pytest.raises(ValueError, match="density=0"):
        layer_densities(shapes, 0)
    with pytest.raises(
        ValueError, match=r"unknown layer distribution 'erk\+'; valid: \['er', 'erk', 'uniform'\]"
    ):
        layer_densities(shapes, 0.5, "erk+")
    with pytest.raises(ValueError, match="erk_power >= 0"):
        layer_densities(shapes, 0.5, "erk", erk_power=-1)
    with pytest.raises(ValueError, match="dense_layers"):
        layer_densities(shapes, 0.5, dense_layers=["b"])
    with pytest.raises(ValueError, match="ER needs a tensor with at least 2 dims"):
        layer_densities({"a": (4,)}, 0.5, "er")
    with pytest.raises(ValueError, match="positive ints"):
        layer_densities({"a": (4, 0)}, 0.5)
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        layer_counts({"a": (4, 4), "b": (2, 2)}, {"a": 0.5})
