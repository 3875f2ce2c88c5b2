"""grow() over the operator registry, and growth targets."""

from __future__ import annotations

import pytest
import torch

from morphtune.methods.growth import GROWTH_OPERATORS, grow, growth_target
from morphtune.models import MLP, MLPConfig

# Operators that promise function preservation (METHODS §4).
LOSSLESS = {"net2net"}


def build(config: MLPConfig) -> MLP:
    torch.manual_seed(0)
    return MLP(config).double().eval()


@pytest.mark.parametrize("operator", GROWTH_OPERATORS)
@pytest.mark.parametrize("factor", [1.0, 1.5, 2.0])
def test_every_operator_reaches_the_target_config(operator: str, factor: float) -> None:
    model = build(MLPConfig(6, 3, (5, 7)))
    target = growth_target(model.config, factor)
    grown = grow(model, target, operator, seed=1)
    assert grown.config == target
    if operator in LOSSLESS:
        x = torch.randn(16, 6, dtype=torch.float64)
        assert (grown(x) - model(x)).abs().max() <= 1e-12


@pytest.mark.parametrize("hidden", [(5, 7, 7), (9, 8, 8, 12), (5, 7, 10)])
def test_net2net_grows_depth_losslessly(hidden: tuple[int, ...]) -> None:
    model = build(MLPConfig(6, 3, (5, 7)))
    grown = grow(model, MLPConfig(6, 3, hidden), "net2net", seed=2)
    assert grown.config.hidden == hidden
    x = torch.randn(16, 6, dtype=torch.float64)
    assert (grown(x) - model(x)).abs().max() <= 1e-12


def test_unknown_operator_lists_valid_names() -> None:
    model = build(MLPConfig(6, 3, (5,)))
    with pytest.raises(ValueError, match=r"unknown growth operator 'lemon'; valid: \['net2net'\]"):
        grow(model, MLPConfig(6, 3, (8,)), "lemon")


@pytest.mark.parametrize(
    ("new_config", "message"),
    [
        (
            MLPConfig(7, 3, (8,)),
            "growth keeps in_features: new_config.in_features must equal the model's 6, but got 7",
        ),
        (MLPConfig(6, 4, (8,)), "growth keeps out_features"),
        (MLPConfig(6, 3, (8,), bias=False), "growth keeps bias"),
        (MLPConfig(6, 3, (4,)), r"hidden layer 0 can only grow"),
        (MLPConfig(6, 3, (8, 4)), r"new_config.hidden\[1\] must be >= 8, but got 4"),
    ],
)
def test_grow_rejects_incompatible_targets(new_config: MLPConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grow(build(MLPConfig(6, 3, (5,))), new_config)


def test_net2net_cannot_remove_layers() -> None:
    with pytest.raises(ValueError, match="cannot remove layers"):
        grow(build(MLPConfig(6, 3, (5, 5))), MLPConfig(6, 3, (8,)))


def test_growth_target_multiplies_and_rounds_widths() -> None:
    config = MLPConfig(6, 3, (5, 7, 1))
    assert growth_target(config, 1.5).hidden == (8, 11, 2)  # 7.5, 10.5, 1.5 round half up
    assert growth_target(config, 2).hidden == (10, 14, 2)
    assert growth_target(config, 1.0) == config
    assert growth_target(config, 1.01).hidden == (5, 7, 1)  # never below the source
    assert growth_target(config, 2).in_features == 6


@pytest.mark.parametrize("factor", [0.5, 0.999, float("inf"), float("nan"), True])
def test_growth_target_rejects_bad_factors(factor: float) -> None:
    with pytest.raises(ValueError, match="factor must be a finite number >= 1"):
        growth_target(MLPConfig(6, 3, (5,)), factor)
