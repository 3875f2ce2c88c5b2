"""MLP config validation, structure, forward, and the model registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from morphtune.models import MLP, MODEL_FAMILIES, MLPConfig, build_model, mlp_config_from


def test_config_stores_hidden_as_tuple_and_derived_sizes() -> None:
    config = MLPConfig(in_features=5, out_features=3, hidden=[7, 4])  # type: ignore[arg-type]
    assert config.hidden == (7, 4)
    assert config.depth == 2
    assert config.widths == (5, 7, 4, 3)
    assert hash(config) == hash(MLPConfig(5, 3, (7, 4)))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"in_features": 0, "out_features": 3, "hidden": (4,)}, "in_features"),
        ({"in_features": 2, "out_features": -1, "hidden": (4,)}, "out_features"),
        ({"in_features": 2, "out_features": 3, "hidden": ()}, "hidden"),
        ({"in_features": 2, "out_features": 3, "hidden": (4, 0)}, "hidden[1]"),
        ({"in_features": 2, "out_features": 3, "hidden": (4.5,)}, "hidden[0]"),
        ({"in_features": True, "out_features": 3, "hidden": (4,)}, "in_features"),
        ({"in_features": 2, "out_features": 3, "hidden": (4,), "bias": 1}, "bias"),
        ({"in_features": 2, "out_features": 3, "hidden": "44"}, "hidden"),
    ],
)
def test_config_rejects_invalid_fields_naming_them(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        MLPConfig(**kwargs)


def test_mlp_structure_linear_layers_and_relu_between() -> None:
    config = MLPConfig(6, 2, (5, 4, 3), bias=False)
    model = MLP(config)
    assert model.config is config
    assert isinstance(model.layers, nn.ModuleList)
    assert [(layer.in_features, layer.out_features) for layer in model.layers] == [
        (6, 5),
        (5, 4),
        (4, 3),
        (3, 2),
    ]
    assert all(isinstance(layer, nn.Linear) and layer.bias is None for layer in model.layers)


def test_forward_is_relu_between_layers_not_after_last() -> None:
    torch.manual_seed(0)
    model = MLP(MLPConfig(4, 3, (8, 6))).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    a, b, c = model.layers
    expected = c(torch.relu(b(torch.relu(a(x)))))
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    # The last layer is linear: outputs go negative.
    assert (model(x) < 0).any()


def test_forward_flattens_inputs() -> None:
    model = MLP(MLPConfig(12, 2, (3,)))
    images = torch.randn(5, 1, 3, 4)
    torch.testing.assert_close(model(images), model(images.reshape(5, 12)))


def test_mlp_config_from_width_and_depth() -> None:
    assert mlp_config_from(10, 3, width=16, depth=3) == MLPConfig(10, 3, (16, 16, 16))
    with pytest.raises(ValueError, match="depth"):
        mlp_config_from(10, 3, width=16, depth=0)


def test_registry_builds_mlp_from_config_or_mapping() -> None:
    assert "mlp" in MODEL_FAMILIES
    config = MLPConfig(3, 2, (4,))
    assert isinstance(build_model("mlp", config), MLP)
    built = build_model("mlp", {"in_features": 3, "out_features": 2, "hidden": [4]})
    assert built.config == config


def test_registry_unknown_family_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model family 'rnn'; valid: \[.*'mlp'.*\]"):
        build_model("rnn", MLPConfig(3, 2, (4,)))
    with pytest.raises(ValueError, match=r"'cnn' is built from a CNNConfig, but got MLPConfig"):
        build_model("cnn", MLPConfig(3, 2, (4,)))


def test_registry_mapping_with_unknown_or_missing_keys() -> None:
    with pytest.raises(ValueError, match="unknown mlp config keys \\['width'\\]"):
        build_model("mlp", {"in_features": 3, "out_features": 2, "hidden": [4], "width": 3})
    with pytest.raises(ValueError, match="missing required keys \\['hidden'\\]"):
        build_model("mlp", {"in_features": 3, "out_features": 2})


def test_mlp_rejects_non_config() -> None:
    with pytest.raises(ValueError, match="MLPConfig"):
        MLP({"in_features": 3})  # type: ignore[arg-type]
