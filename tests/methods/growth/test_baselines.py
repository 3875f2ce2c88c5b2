"""Growth baselines ``random`` and ``zero`` (G_random / G_zero, METHODS §4.4)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from morphtune.methods.growth import GROWTH_OPERATORS, check_growth, expand, growth_target
from morphtune.methods.sparsity import prune_at_init
from morphtune.models import CNNConfig, GPTConfig, MLPConfig, ViTConfig, build_model

CONFIGS: dict[str, Any] = {
    "mlp": MLPConfig(5, 3, (4, 6)),
    "cnn": CNNConfig(3, 8, 4, widths=(4, 6), blocks=(1, 2)),
    "vit": ViTConfig(8, 4, 3, 5, dim=8, depth=2, heads=2, mlp_dim=16),
    "gpt": GPTConfig(11, 6, dim=8, depth=2, heads=2, mlp_dim=16),
}
BASELINES = ("random", "zero")


@torch.no_grad()
def build(family: str, config: Any, seed: int = 0) -> nn.Module:
    """Random weights, norm parameters and BatchNorm statistics; fp64, eval mode."""
    torch.manual_seed(seed)
    model = build_model(family, config).double()
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            draw = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            tensor.copy_(0.5 + draw.abs() if name.endswith("running_var") else draw)
    return model.eval()


def inputs(config: Any, batch: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if isinstance(config, GPTConfig):
        return torch.randint(0, config.vocab_size, (batch, config.context), generator=generator)
    if isinstance(config, MLPConfig):
        return torch.randn(batch, config.in_features, generator=generator, dtype=torch.float64)
    size = (batch, config.in_channels, config.image_size, config.image_size)
    return torch.randn(size, generator=generator, dtype=torch.float64)


def source_name(config: Any, target: Any, name: str) -> str | None:
    """The source tensor copied into target tensor ``name`` (None for a new one)."""
    parts = name.split(".")
    if isinstance(config, MLPConfig):
        index = int(parts[1])
        if index == target.depth:
            return f"layers.{config.depth}.{parts[2]}"
        return name if index < config.depth else None
    if parts[0] == "blocks" and int(parts[1]) >= config.depth:
        return None
    if parts[0] == "stages" and int(parts[2]) >= config.blocks[int(parts[1])]:
        return None
    return name


def lead(tensor: torch.Tensor, shape: torch.Size) -> tuple[slice, ...]:
    return tuple(slice(0, size) for size in shape)


def outside(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The entries of ``tensor`` outside its leading ``shape`` slice."""
    keep = torch.ones_like(tensor, dtype=torch.bool)
    keep[lead(tensor, shape)] = False
    return tensor[keep]


def is_neutral_norm(name: str) -> float | None:
    """What ``zero`` puts in new entries of norm tensors (None: not a norm tensor)."""
    norm = any(key in name for key in ("bn", "ln", "norm"))
    if name.endswith("running_var") or (norm and name.endswith("weight")):
        return 1.0
    if norm or name.endswith(("running_mean", "num_batches_tracked")):
        return 0.0
    return None


@pytest.mark.parametrize("operator", BASELINES)
@pytest.mark.parametrize("family", list(CONFIGS))
@pytest.mark.parametrize(("factor", "depth_factor"), [(1.5, 1.0), (1.0, 2.0), (2.0, 2.0)])
def test_source_sits_in_the_leading_slices(
    operator: str, family: str, factor: float, depth_factor: float
) -> None:
    config = CONFIGS[family]
    target = growth_target(config, factor, depth_factor)
    model = build(family, config)
    rng = torch.get_rng_state()
    result = expand(model, target, operator, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # a local generator only
    grown = result.model
    assert grown.config == target
    source = model.state_dict()
    params = dict(model.named_parameters())
    new_state = grown.state_dict()
    copied = set()
    for name, tensor in new_state.items():
        old_name = source_name(config, target, name)
        if old_name is None:
            if operator == "zero":  # a new layer/block: zero weights, neutral norms
                fill = is_neutral_norm(name)
                assert torch.all(tensor == (fill if fill is not None else 0)), name
            continue
        old = source[old_name]
        copied.add(old_name)
        assert torch.equal(tensor[lead(tensor, old.shape)], old), name
        if operator == "zero":
            fill = is_neutral_norm(name)
            assert torch.all(outside(tensor, old.shape) == (fill or 0.0)), name
        if old.shape == tensor.shape and old_name in params:
            assert result.carried[name] == old_name
        else:
            assert name not in result.carried
    assert copied == set(source)  # every source tensor went somewhere


@pytest.mark.parametrize("family", list(CONFIGS))
def test_random_is_seeded_and_uses_the_default_scale(family: str) -> None:
    config = CONFIGS[family]
    target = growth_target(config, 2.0, 2.0)
    model = build(family, config)
    a = expand(model, target, "random", seed=1).model.state_dict()
    b = expand(model, target, "random", seed=1).model.state_dict()
    c = expand(model, target, "random", seed=2).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    for name, tensor in a.items():
        old_name = source_name(config, target, name)
        if name.endswith("weight") and tensor.dim() == 2 and "embed" not in name:
            new = (
                tensor if old_name is None else outside(tensor, model.state_dict()[old_name].shape)
            )
            if new.numel():
                bound = tensor.shape[1] ** -0.5  # nn.Linear's default init
                assert new.abs().max() <= bound and new.abs().max() > 0, name


@settings(max_examples=25, deadline=None)
@given(
    stages=st.integers(1, 3),
    data=st.data(),
    factor=st.sampled_from([1.0, 1.3, 1.5, 2.0]),
    depth_factor=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
)
def test_zero_is_lossless_on_cnn_in_eval_and_train_mode(
    stages: int, data: st.DataObject, factor: float, depth_factor: float
) -> None:
    widths = data.draw(st.lists(st.integers(1, 5), min_size=stages, max_size=stages))
    blocks = data.draw(st.lists(st.integers(1, 2), min_size=stages, max_size=stages))
    config = CNNConfig(2, 6, 3, tuple(widths), tuple(blocks))
    model = build("cnn", config)
    x = inputs(config)
    grown = expand(model, growth_target(config, factor, depth_factor), "zero", seed=0).model
    with torch.no_grad():
        assert (grown(x) - model(x)).abs().max() <= 1e-10
        assert (grown.train()(x) - model.train()(x)).abs().max() <= 1e-10


@pytest.mark.parametrize(
    ("family", "factor", "depth_factor", "kept"),
    [
        ("mlp", 1.5, 1.0, True),  # new units: zero fan-in and fan-out
        ("mlp", 2.0, 1.0, True),
        ("mlp", 1.0, 2.0, False),  # a zero hidden layer cuts the signal
        ("vit", 1.0, 2.0, True),  # a zero block is the identity (Pre-LN residual)
        ("gpt", 1.0, 2.0, True),
        ("vit", 2.0, 1.0, False),  # zero stream entries change LayerNorm statistics
        ("gpt", 1.5, 1.0, False),
    ],
)
def test_zero_keeps_the_function_exactly_where_it_should(
    family: str, factor: float, depth_factor: float, kept: bool
) -> None:
    # Why ``zero.lossless == ("cnn",)``: on mlp, vit and gpt only some targets keep it.
    config = CONFIGS[family]
    model = build(family, config)
    x = inputs(config)
    grown = expand(model, growth_target(config, factor, depth_factor), "zero").model
    with torch.no_grad():
        diff = (grown(x) - model(x)).abs().max()
    assert (diff <= 1e-10) == kept, diff


@pytest.mark.parametrize("family", list(CONFIGS))
def test_random_changes_the_function(family: str) -> None:
    config = CONFIGS[family]
    model = build(family, config)
    x = inputs(config)
    for factor, depth_factor in ((1.5, 1.0), (1.0, 2.0)):
        grown = expand(model, growth_target(config, factor, depth_factor), "random").model
        with torch.no_grad():
            assert (grown(x) - model(x)).abs().max() > 1e-6


def test_declared_families_and_lossless() -> None:
    for name in BASELINES:
        op = GROWTH_OPERATORS.get(name)
        assert op.families == ("mlp", "cnn", "vit", "gpt")
        assert op.mask_families == () and op.max_depth_factor is None
    assert GROWTH_OPERATORS.get("random").lossless == ()
    assert GROWTH_OPERATORS.get("zero").lossless == ("cnn",)


@pytest.mark.parametrize("operator", BASELINES)
def test_mode_dtype_and_source_kept(operator: str) -> None:
    model = build("cnn", CONFIGS["cnn"]).float().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grown = expand(model, growth_target(model.config, 2.0, 2.0), operator).model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in grown.modules())
    assert {p.dtype for p in grown.parameters()} == {torch.float32}


@pytest.mark.parametrize(
    ("family", "target", "message"),
    [
        ("mlp", MLPConfig(5, 3, (3, 8)), r"new_config.hidden\[0\] must be >= 4, but got 3"),
        ("mlp", MLPConfig(5, 3, (4, 8, 5)), r"new_config.hidden\[-1\] must be >= 6, but got 5"),
        ("cnn", CNNConfig(3, 8, 4, (8, 5), (1, 2)), r"widths\[1\] must be >= 6, but got 5"),
        ("cnn", CNNConfig(3, 8, 4, (8,), (2,)), "number of cnn stages"),
        (
            "vit",
            ViTConfig(8, 4, 3, 5, dim=12, depth=2, heads=2, mlp_dim=24),
            r"heads keep their size: new_config.dim / heads must equal 4, but got 12 / 2 = 6",
        ),
        (
            "gpt",
            GPTConfig(11, 6, dim=16, depth=2, heads=4, mlp_dim=8),
            "mlp_dim can only grow: new_config.mlp_dim must be >= 16, but got 8",
        ),
    ],
)
@pytest.mark.parametrize("operator", BASELINES)
def test_targets_that_do_not_fit_are_refused(
    operator: str, family: str, target: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_growth(CONFIGS[family], target, operator)
    with pytest.raises(ValueError, match=message):
        expand(build(family, CONFIGS[family]), target, operator)


@pytest.mark.parametrize("operator", BASELINES)
def test_masked_models_are_refused(operator: str) -> None:
    model = build("mlp", CONFIGS["mlp"])
    prune_at_init(model, "random", 0.5)
    with pytest.raises(ValueError, match="does not grow the sparsity masks of a"):
        expand(model, growth_target(model.config, 2.0), operator)
