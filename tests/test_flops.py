"""Analytic cost counting against hand counts, built models and FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from morphtune.flops import Cost, mlp_cost, model_cost
from morphtune.methods.sparsity import prune_at_init
from morphtune.models import MLP, MLPConfig

configs = st.builds(
    MLPConfig,
    in_features=st.integers(1, 20),
    out_features=st.integers(1, 10),
    hidden=st.lists(st.integers(1, 20), min_size=1, max_size=4).map(tuple),
    bias=st.booleans(),
)


def test_hand_counted_small_mlp() -> None:
    # 4 -> 3 -> 2 with biases: weights 12 + 6, biases 3 + 2.
    assert mlp_cost(MLPConfig(4, 2, (3,))) == Cost(params=23, nonzero_params=23, flops=2 * 18 + 5)
    assert mlp_cost(MLPConfig(4, 2, (3,), bias=False)) == Cost(18, 18, 36)


def test_hand_counted_sparse_mlp() -> None:
    # Half of each weight matrix kept: 6 + 3 weights, biases dense.
    cost = mlp_cost(MLPConfig(4, 2, (3,)), 0.5)
    assert cost == Cost(params=23, nonzero_params=9 + 5, flops=2 * 9 + 5)
    per_layer = mlp_cost(MLPConfig(4, 2, (3,)), {"layers.0.weight": 0.25})
    assert per_layer == Cost(params=23, nonzero_params=3 + 6 + 5, flops=2 * 9 + 5)


@settings(max_examples=50, deadline=None)
@given(config=configs)
def test_model_cost_of_a_built_mlp_equals_the_analytic_cost(config: MLPConfig) -> None:
    model = MLP(config)
    cost = model_cost(model)
    assert cost == mlp_cost(config)
    assert cost.params == sum(p.numel() for p in model.parameters())


@settings(max_examples=30, deadline=None)
@given(config=configs, batch=st.integers(1, 4))
def test_flops_match_flop_counter_mode_minus_bias_adds(config: MLPConfig, batch: int) -> None:
    model = MLP(config)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, config.in_features))
    bias_adds = sum(config.hidden) + config.out_features if config.bias else 0
    assert counter.get_total_flops() == batch * (mlp_cost(config).flops - bias_adds)


@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
@pytest.mark.parametrize("density", [0.01, 0.1, 0.5])
def test_model_cost_sees_masks_and_matches_the_prediction(
    distribution: str, density: float
) -> None:
    config = MLPConfig(30, 10, (64, 48))
    model = MLP(config)
    masks = prune_at_init(model, "random", density, distribution)
    cost = model_cost(model)
    assert cost == mlp_cost(config, density, distribution=distribution)
    assert cost.params == mlp_cost(config).params
    biases = 64 + 48 + 10
    assert cost.nonzero_params == sum(masks.layer_nnz().values()) + biases
    assert cost.flops == 2 * sum(masks.layer_nnz().values()) + biases


def test_mlp_cost_rejects_bad_inputs() -> None:
    config = MLPConfig(4, 2, (3,))
    with pytest.raises(ValueError, match=r"unknown parameters \['layers.5.weight'\]"):
        mlp_cost(config, {"layers.5.weight": 0.5})
    with pytest.raises(
        ValueError, match=r"density must satisfy 0 < density <= 1, but got density=1\.5"
    ):
        mlp_cost(config, 1.5)
    with pytest.raises(ValueError, match="MLPConfig"):
        mlp_cost({"in_features": 4})  # type: ignore[arg-type]


def test_model_cost_refuses_layers_it_cannot_count() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    with pytest.raises(ValueError, match=r"nn\.Linear only.*'1' is a LayerNorm"):
        model_cost(model)
