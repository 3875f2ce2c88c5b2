"""The ``mixture`` family: config, structure, forward, member independence, cost, registry."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from morphtune.flops import config_cost, model_cost
from morphtune.models import (
    MODEL_FAMILIES,
    MixtureConfig,
    MixtureMLP,
    TaskShape,
    build_model,
    config_from_dict,
    config_from_spec,
    config_to_dict,
)


def build(config: MixtureConfig, seed: int = 0) -> MixtureMLP:
    torch.manual_seed(seed)
    return MixtureMLP(config).double()


def member_weight(model: MixtureMLP, index: int, member: int) -> torch.Tensor:
    """Member ``member``'s weight of layer ``index``: ``sum_k alpha[m, k] T[m, k]``."""
    templates = getattr(model, f"templates_{index}")[member]
    alpha = getattr(model, f"coefficients_{index}")[member]
    return sum((alpha[k] * templates[k] for k in range(len(alpha))), torch.zeros_like(templates[0]))


def member_logits(model: MixtureMLP, member: int, x: torch.Tensor) -> torch.Tensor:
    """One member as a plain MLP, without the shared classifier bias."""
    h = x.reshape(x.shape[0], -1)
    depth = model.config.depth
    for index in range(depth):
        bias = getattr(model, f"bias_{index}")[member]
        h = torch.relu(h @ member_weight(model, index, member).T + bias)
    return h @ member_weight(model, depth, member).T


# ---------------------------------------------------------------------- config


def test_config_sizes_before_and_after_growth() -> None:
    config = MixtureConfig(in_features=6, out_features=3, member_width=8, depth=3)
    assert (config.width, config.depth, config.templates, config.grown) == (8, 3, 2, False)
    grown = config.resized(16, 3)
    assert grown == MixtureConfig(6, 3, 8, 3, templates=2, grown=True)
    assert (grown.width, grown.depth) == (16, 3)
    assert config.resized(8, 3) is config
    assert grown.resized(16, 3) is grown
    assert MixtureConfig.family == "mixture"
    assert MixtureConfig.TASK_FIELDS == ("in_features", "out_features")
    assert hash(config) == hash(MixtureConfig(6, 3, 8, 3))
    with pytest.raises(FrozenInstanceError):
        config.depth = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("source", "width", "depth", "message"),
    [
        (MixtureConfig(6, 3, 8, 3), 24, 3, r"2\*member_width=16 \(or 8 to keep it\), but got "),
        (MixtureConfig(6, 3, 8, 3), 12, 3, "width must be 2\\*member_width=16"),
        (MixtureConfig(6, 3, 8, 3), 16, 4, "depth must be 3, but got depth=4"),
        (MixtureConfig(6, 3, 8, 3, grown=True), 32, 3, "grown 'mixture' model cannot be resized"),
        (MixtureConfig(6, 3, 8, 3), 0, 3, "width must be a positive int"),
        (MixtureConfig(6, 3, 8, 3), 16, 0, "depth must be a positive int"),
    ],
)
def test_resized_accepts_only_the_doubling(
    source: MixtureConfig, width: int, depth: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        source.resized(width, depth)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"in_features": 0}, "in_features"),
        ({"out_features": -1}, "out_features"),
        ({"member_width": 2.5}, "member_width"),
        ({"depth": 0}, "depth"),
        ({"templates": 0}, "templates"),
        ({"templates": True}, "templates"),
        ({"grown": 1}, "grown"),
    ],
)
def test_config_rejects_invalid_fields_naming_them(kwargs: dict, field: str) -> None:
    values = {"in_features": 6, "out_features": 3, "member_width": 4, "depth": 2, **kwargs}
    with pytest.raises(ValueError, match=rf"{field} must be .*{field}="):
        MixtureConfig(**values)


def test_from_spec_flattens_inputs_and_reads_templates() -> None:
    task = TaskShape((1, 4, 5), 7)
    config = MixtureConfig.from_spec(task, {"width": 6, "depth": 2})
    assert config == MixtureConfig(20, 7, 6, 2, templates=2)
    assert (
        config_from_spec("mixture", task, {"width": 6, "depth": 2, "templates": 4}).templates == 4
    )
    with pytest.raises(ValueError, match="'mixture' classifies, but the task is 'lm'"):
        MixtureConfig.from_spec(TaskShape((8,), 7, "lm"), {"width": 6, "depth": 2})


def test_config_dict_round_trip_and_registry() -> None:
    assert "mixture" in MODEL_FAMILIES
    family = MODEL_FAMILIES.get("mixture")
    assert (family.config_type, family.model_type) == (MixtureConfig, MixtureMLP)
    config = MixtureConfig(6, 3, 4, 2, templates=3, grown=True)
    assert config_from_dict("mixture", config_to_dict(config)) == config
    model = build_model("mixture", config_to_dict(config))
    assert isinstance(model, MixtureMLP) and model.config == config
    with pytest.raises(ValueError, match="built from a MixtureConfig"):
        build_model("mixture", object())
    with pytest.raises(ValueError, match="config must be a MixtureConfig"):
        MixtureMLP(object())  # type: ignore[arg-type]


# ---------------------------------------------------------------------- structure


@pytest.mark.parametrize("grown", [False, True])
def test_parameters_live_on_the_root_with_documented_shapes(grown: bool) -> None:
    config = MixtureConfig(5, 3, 4, 3, templates=2, grown=grown)
    model = build(config)
    assert list(model.children()) == []
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    hidden_coefficients = (2, 2, 4) if grown else (2, 2)
    assert shapes == {
        "templates_0": (2, 2, 4, 5),
        "coefficients_0": (2, 2),
        "bias_0": (2, 4),
        "templates_1": (2, 2, 4, 4),
        "coefficients_1": hidden_coefficients,
        "bias_1": (2, 4),
        "templates_2": (2, 2, 4, 4),
        "coefficients_2": hidden_coefficients,
        "bias_2": (2, 4),
        "templates_3": (2, 2, 3, 4),
        "coefficients_3": (2, 2),
        "bias_3": (3,),
    }
    assert [model.layer_shape(i) for i in range(4)] == [(8, 5), (8, 8), (8, 8), (3, 8)]
    with pytest.raises(ValueError, match=r"0 <= index <= 3, but got 4"):
        model.layer_weight(4)


@settings(max_examples=10, deadline=None)
@given(
    in_features=st.integers(1, 5),
    out_features=st.integers(1, 4),
    member_width=st.integers(1, 5),
    depth=st.integers(1, 3),
    templates=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_forward_is_the_sum_of_two_member_mlps_plus_one_bias(
    in_features: int, out_features: int, member_width: int, depth: int, templates: int, seed: int
) -> None:
    config = MixtureConfig(in_features, out_features, member_width, depth, templates)
    model = build(config, seed)
    x = torch.randn(7, in_features, dtype=torch.float64)
    classifier_bias = getattr(model, f"bias_{depth}")
    expected = member_logits(model, 0, x) + member_logits(model, 1, x) + classifier_bias
    assert (model(x) - expected).abs().max() <= 1e-12


@pytest.mark.parametrize("grown", [False, True])
def test_forward_equals_dense_chain_over_layer_weights(grown: bool) -> None:
    config = MixtureConfig(5, 3, 4, 3, templates=2, grown=grown)
    model = build(config, 1)
    x = torch.randn(6, 5, dtype=torch.float64)
    h = x
    for index in range(config.depth + 1):
        bias = getattr(model, f"bias_{index}").reshape(-1)
        h = h @ model.layer_weight(index).T + bias
        if index < config.depth:
            h = torch.relu(h)
    assert (model(x) - h).abs().max() <= 1e-12
    hidden = model.layer_weight(1)
    if grown:  # block (r, c) mixes the whole bank of 4 templates
        bank = model.layer_templates(1).reshape(4, 4, 4)
        alpha = model.layer_coefficients(1)[0, 1]
        block = sum((alpha[j] * bank[j] for j in range(4)), torch.zeros_like(bank[0]))
        assert (hidden[:4, 4:] - block).abs().max() <= 1e-12
    else:  # block diagonal, each member its own mixture
        assert (hidden[:4, :4] - member_weight(model, 1, 0)).abs().max() <= 1e-12
        assert (hidden[4:, 4:] - member_weight(model, 1, 1)).abs().max() <= 1e-12
        assert not hidden[:4, 4:].any() and not hidden[4:, :4].any()


def test_images_are_flattened() -> None:
    model = build(MixtureConfig(12, 2, 3, 2))
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    assert torch.equal(model(x), model(x.reshape(4, 12)))


# ---------------------------------------------------------------------- independence


def _member_one_perturbed(model: MixtureMLP) -> MixtureMLP:
    """A copy whose member-1 templates, coefficients and biases are redrawn."""
    other = build(model.config)
    other.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for index in range(model.config.depth + 1):
            for name in ("templates", "coefficients", "bias"):
                if name == "bias" and index == model.config.depth:
                    continue  # the shared classifier bias belongs to neither member
                param = getattr(other, f"{name}_{index}")
                draw = torch.randn(param[1].shape, generator=generator, dtype=param.dtype)
                param[1] = draw
    return other


def _member_zero_grads(model: MixtureMLP, x: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    (model(x) * v).sum().backward()
    grads = []
    for index in range(model.config.depth + 1):
        grad = getattr(model, f"templates_{index}").grad
        assert grad is not None
        grads.append(grad[0].clone())
    return grads


def test_members_are_independent_before_growth() -> None:
    model = build(MixtureConfig(5, 3, 6, 3))
    other = _member_one_perturbed(model)
    x = torch.randn(32, 5, dtype=torch.float64)
    v = torch.randn(32, 3, dtype=torch.float64)
    # Member 0's hidden units and logits do not see member 1.
    assert torch.equal(member_logits(model, 0, x), member_logits(other, 0, x))
    assert not torch.allclose(member_logits(model, 1, x), member_logits(other, 1, x))
    # Gradients of member 0's templates (through a linear read-out of the logits) do not
    # depend on member 1's weights or hidden units.
    for mine, theirs in zip(
        _member_zero_grads(model, x, v), _member_zero_grads(other, x, v), strict=True
    ):
        assert (mine - theirs).abs().max() <= 1e-12
        assert mine.abs().max() > 0
    # Member 1's templates get no gradient from a read-out of member 0's logits.
    model.zero_grad()
    (member_logits(model, 0, x) * v).sum().backward()
    for index in range(4):
        grad = getattr(model, f"templates_{index}").grad
        assert grad is not None and not grad[1].any()


def test_members_are_coupled_after_growth() -> None:
    model = build(MixtureConfig(5, 3, 4, 3, grown=True))
    other = _member_one_perturbed(model)
    x = torch.randn(8, 5, dtype=torch.float64)
    v = torch.randn(8, 3, dtype=torch.float64)
    mine, theirs = _member_zero_grads(model, x, v), _member_zero_grads(other, x, v)
    assert (mine[1] - theirs[1]).abs().max() > 1e-6


# ---------------------------------------------------------------------- cost, training


@pytest.mark.parametrize("grown", [False, True])
def test_model_cost_counts_the_blocks_actually_applied(grown: bool) -> None:
    config = MixtureConfig(5, 3, 4, 3, templates=2, grown=grown)
    model = build(config)
    w = 4
    hidden_blocks = 4 if grown else 2
    flops = (
        2 * 2 * w * 5
        + 2 * w  # input layer: two members read the input, plus biases
        + 2 * (2 * hidden_blocks * w * w + 2 * w)  # two hidden-to-hidden layers
        + 2 * 2 * 3 * w
        + 3  # classifier over both members, one shared bias
    )
    cost = model_cost(model)
    assert cost.flops == flops == model.extra_flops()
    assert model.flop_uses() == {}
    assert cost.params == cost.nonzero_params == sum(p.numel() for p in model.parameters())
    assert config_cost("mixture", config) == cost


def test_grown_from_scratch_costs_like_a_dense_mlp_of_twice_the_width() -> None:
    config = MixtureConfig(5, 3, 4, 3, grown=True)
    dense = 2 * 8 * 5 + 8 + 2 * (2 * 8 * 8 + 8) + 2 * 3 * 8 + 3
    assert model_cost(build(config)).flops == dense


@pytest.mark.parametrize("grown", [False, True])
def test_a_few_adam_steps_reduce_the_loss(grown: bool) -> None:
    config = MixtureConfig(4, 3, 6, 2, grown=grown)
    model = build(config, 3)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_built_on_meta_device_without_touching_global_rng() -> None:
    state = torch.get_rng_state()
    with torch.device("meta"):
        model = MixtureMLP(MixtureConfig(5, 3, 4, 2))
    assert torch.equal(state, torch.get_rng_state())
    assert all(p.is_meta for p in model.parameters())
