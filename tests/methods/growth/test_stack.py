"""G_stack (Du et al., NeurIPS 2024; METHODS §4.4): depth stacking and its timing formula."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from morphtune.methods.growth import (
    GrowthOptions,
    check_growth,
    expand,
    gstack_growth_fraction,
    gstack_growth_tokens,
    gstack_layer_map,
)
from morphtune.methods.growth._stack import GStack
from morphtune.models import CNN, GPT, MLP, CNNConfig, GPTConfig, MLPConfig, ViT, ViTConfig

BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def vit_config(dim: int, depth: int, heads: int, mlp_dim: int) -> ViTConfig:
    return ViTConfig(8, 4, 3, 5, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim)


def gpt_config(dim: int, depth: int, heads: int, mlp_dim: int) -> GPTConfig:
    return GPTConfig(11, 6, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim)


CONFIGS: dict[str, Callable[..., Any]] = {"vit": vit_config, "gpt": gpt_config}
MODELS: dict[str, type[nn.Module]] = {"vit": ViT, "gpt": GPT}


def build(family: str, config: Any, dtype: torch.dtype, seed: int) -> Any:
    """A model whose every tensor is distinct random data (so layers are distinguishable)."""
    torch.manual_seed(seed)
    model = MODELS[family](config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64) * 0.5)
    return model.to(dtype)


def sample_input(family: str, config: Any, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(123)
    if family == "vit":
        return torch.randn(3, 3, 8, 8, generator=generator, dtype=torch.float64).to(dtype)
    return torch.randint(0, config.vocab_size, (3, config.context), generator=generator)


def forward_with_blocks(model: nn.Module, order: list[int], x: torch.Tensor) -> torch.Tensor:
    """The source model's embeddings, then its blocks in ``order``, then its norm and head."""
    blocks: Any = model.blocks
    if isinstance(model, ViT):
        h = model.patch_embed(model.patches(x))
        h = torch.cat([model.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + model.pos_embed
        for index in order:
            h = blocks[index](h)
        return model.head(model.norm(h[:, 0]))
    assert isinstance(model, GPT)
    h = model.tok_embed(x) + model.pos_embed[:, : x.shape[1]]
    for index in order:
        h = blocks[index](h)
    return model.head(model.norm(h))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


@settings(max_examples=30, deadline=None)
@given(
    family=st.sampled_from(["vit", "gpt"]),
    heads=st.integers(1, 3),
    head_dim=st.sampled_from([2, 4]),
    mlp_dim=st.integers(1, 12),
    depth=st.integers(1, 3),
    factor=st.sampled_from([2, 3, 4]),
    pattern=st.sampled_from(["repeat", "interleave"]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_grown_layers_are_bitwise_copies_in_the_pattern(
    family: str,
    heads: int,
    head_dim: int,
    mlp_dim: int,
    depth: int,
    factor: int,
    pattern: Any,
    dtype: torch.dtype,
    training: bool,
    seed: int,
) -> None:
    config = CONFIGS[family](heads * head_dim, depth, heads, mlp_dim)
    model = build(family, config, dtype, seed)
    model.train(training)
    before = snapshot(model)
    target = config.resized(config.width, factor * depth)

    result = expand(model, target, "stack", seed=seed, options=GrowthOptions(pattern=pattern))
    grown: Any = result.model

    # Depth g*L, everything else (width, heads, mlp_dim, task) unchanged.
    assert grown.config == target
    assert len(grown.blocks) == factor * depth
    assert (grown.config.dim, grown.config.heads, grown.config.mlp_dim) == (
        config.dim,
        config.heads,
        config.mlp_dim,
    )
    assert grown.training == training

    # The source layers differ, so the equalities below pin down the mapping.
    for a in range(depth):
        for b in range(a + 1, depth):
            assert not torch.equal(model.blocks[a].fc1.weight, model.blocks[b].fc1.weight)

    source = dict(model.named_parameters())
    expected_carried: dict[str, str] = {}
    for name, param in grown.named_parameters():
        match = BLOCK.match(name)
        if match is None:
            source_name = name  # embeddings, class token, final norm, head
        else:
            i = int(match.group(1))
            layer = i % depth if pattern == "repeat" else i // factor
            source_name = f"blocks.{layer}.{match.group(2)}"
        expected_carried[name] = source_name
        reference = source[source_name]
        assert param.dtype == reference.dtype == dtype
        assert param.shape == reference.shape
        assert torch.equal(param, reference), name
        assert param.requires_grad
    # Every grown parameter is a verbatim copy, and carried says of which.
    assert result.carried == expected_carried
    assert set(result.carried) == {name for name, _ in grown.named_parameters()}

    # Fresh storage: repeated layers are not tied, and the source is untouched.
    pointers = [p.data_ptr() for p in grown.parameters()]
    assert len(set(pointers)) == len(pointers)
    assert not set(pointers) & {p.data_ptr() for p in model.parameters()}
    with torch.no_grad():
        for param in grown.parameters():
            param.add_(1.0)
    after = snapshot(model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("family", ["vit", "gpt"])
@pytest.mark.parametrize("pattern", ["repeat", "interleave"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grown_model_runs_the_source_blocks_in_the_pattern(
    family: str, pattern: Any, dtype: torch.dtype
) -> None:
    depth, factor = 3, 2
    config = CONFIGS[family](8, depth, 2, 12)
    model = build(family, config, dtype, seed=5).eval()
    grown = expand(
        model,
        config.resized(8, factor * depth),
        "stack",
        options=GrowthOptions(pattern=pattern),
    ).model
    order = [0, 1, 2, 0, 1, 2] if pattern == "repeat" else [0, 0, 1, 1, 2, 2]
    x = sample_input(family, config, dtype)
    with torch.no_grad():
        delta = (grown(x) - forward_with_blocks(model, order, x)).abs().max().item()
        # Not function-preserving: the source's output differs from the grown one.
        assert not torch.allclose(grown(x), model(x))
    assert delta <= (1e-10 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("family", ["vit", "gpt"])
def test_six_to_twenty_four_layers(family: str) -> None:
    config = CONFIGS[family](4, 6, 1, 4)
    model = build(family, config, torch.float64, seed=0)
    target = config.resized(4, 24)
    repeat = expand(model, target, "stack").carried  # repeat is the default
    assert [int(repeat[f"blocks.{i}.fc1.weight"].split(".")[1]) for i in range(24)] == (
        list(range(6)) * 4
    )
    assert repeat["blocks.7.fc1.weight"] == "blocks.1.fc1.weight"
    assert repeat["blocks.23.attn.proj.bias"] == "blocks.5.attn.proj.bias"
    assert repeat["norm.weight"] == "norm.weight"
    assert repeat["head.weight"] == "head.weight"
    inter = expand(model, target, "stack", options=GrowthOptions(pattern="interleave")).carried
    assert [int(inter[f"blocks.{i}.ln1.bias"].split(".")[1]) for i in range(24)] == [
        i // 4 for i in range(24)
    ]
    assert inter["blocks.9.fc1.weight"] == "blocks.2.fc1.weight"


def test_layer_map() -> None:
    assert gstack_layer_map(6, 4) == list(range(6)) * 4
    assert gstack_layer_map(3, 2, "interleave") == [0, 0, 1, 1, 2, 2]
    assert gstack_layer_map(3, 1, "interleave") == [0, 1, 2]
    with pytest.raises(ValueError, match="factor must be an int >= 1, but got factor=0"):
        gstack_layer_map(3, 0)
    with pytest.raises(ValueError, match="source_depth must be an int >= 1"):
        gstack_layer_map(True, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pattern must be one of"):
        gstack_layer_map(3, 2, "shuffle")


@pytest.mark.parametrize("family", ["vit", "gpt"])
def test_factor_one_is_a_copy_and_growth_is_deterministic(family: str) -> None:
    config = CONFIGS[family](6, 2, 3, 5)
    model = build(family, config, torch.float32, seed=3)
    same = expand(model, config, "stack", seed=0).model
    assert same is not model
    for (name, a), (other, b) in zip(
        same.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert name == other
        assert torch.equal(a, b)
        assert a.data_ptr() != b.data_ptr()
    target = config.resized(6, 6)
    first = expand(model, target, "stack", seed=0).model.state_dict()
    second = expand(model, target, "stack", seed=99).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (
            vit_config(8, 2, 2, 16),
            vit_config(8, 3, 2, 16),
            r"integer factor g = target depth / source depth .* new_config.depth must be a "
            r"multiple of the model's depth 2, but got 3 \(g = 1.5\)",
        ),
        (
            gpt_config(8, 3, 2, 16),
            gpt_config(8, 5, 2, 16),
            r"must be a multiple of the model's depth 3, but got 5",
        ),
        (
            vit_config(8, 2, 2, 16),
            vit_config(8, 2, 2, 16).resized(12, 4),
            r"grows depth only: the target's width must equal the model's width 8, but got 12",
        ),
        (
            gpt_config(8, 2, 2, 16),
            gpt_config(8, 4, 4, 16),
            r"heads keep their size: new_config.dim / heads must equal 4, but got 8 / 4 = 2",
        ),
        (
            gpt_config(8, 2, 2, 16),
            gpt_config(8, 4, 2, 20),
            r"new_config.mlp_dim must equal the model's 16, but got 20",
        ),
    ],
)
def test_bad_targets_are_refused(source: Any, target: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_growth(source, target, "stack")
    family = type(source).family
    model = MODELS[family](source)
    with pytest.raises(ValueError, match=message):
        expand(model, target, "stack")
    with pytest.raises(ValueError, match=message):  # direct calls check too
        GStack().expand(model, target, seed=0, options=GrowthOptions())


def test_shrinking_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of the model's depth 4, but got 2"):
        GStack().check_target(vit_config(8, 4, 2, 16), vit_config(8, 2, 2, 16), GrowthOptions())


@pytest.mark.parametrize(
    "model",
    [
        CNN(CNNConfig(3, 8, 5, (4, 8), (1, 2))),
        MLP(MLPConfig(4, 3, (5, 5))),
    ],
)
def test_unsupported_families_are_refused(model: nn.Module) -> None:
    config: Any = model.config
    target = config.resized(config.width, 2 * config.depth)
    family = type(config).family
    pattern = rf"growth operator 'stack' cannot grow model family '{family}'; it grows"
    with pytest.raises(ValueError, match=pattern):
        expand(model, target, "stack")
    with pytest.raises(ValueError, match=pattern):  # the operator's own entry points too
        GStack().check(config, target, GrowthOptions())
    with pytest.raises(ValueError, match=pattern):
        GStack().expand(model, target, seed=0, options=GrowthOptions())


# --- the timing formula -------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "tokens", "billions"),
    [
        (8e9, 15e12, 6.58),  # Llama3-8B at 15T
        (7e9, 2e12, 11.11),  # Llama2-7B at 2T
        (13e9, 2e12, 15.84),  # Llama2-13B at 2T
        (70e9, 2e12, 42.48),  # Llama2-70B at 2T
    ],
)
def test_formula_reproduces_the_published_table(
    params: float, tokens: float, billions: float
) -> None:
    d = gstack_growth_tokens(params, 6 * params * tokens)
    assert round(d / 1e9, 2) == billions
    timing = gstack_growth_fraction(params, tokens)
    assert timing.tokens == pytest.approx(d, rel=1e-12)
    assert timing.raw_fraction == pytest.approx(d / tokens, rel=1e-12)
    assert timing.fraction == timing.raw_fraction
    assert not timing.clamped


def test_formula_is_the_published_expression() -> None:
    n, c = 3.7e8, 4.1e20
    expected = 10 ** (0.88 * math.log10(n) + 163.27 / math.log10(c) - 5.74)
    assert gstack_growth_tokens(n, c) == pytest.approx(expected, rel=1e-12)
    assert gstack_growth_tokens(1e300, 20.0) == math.inf  # 10**383 overflows a float
    timing = gstack_growth_fraction(1e300, 1e3, flops_per_token=1.0)
    assert (timing.tokens, timing.raw_fraction) == (math.inf, math.inf)
    assert (timing.fraction, timing.clamped) == (0.5, True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 1e20), "target_params must be a positive finite number, but got target_params=0.0"),
        ((-5.0, 1e20), "target_params must be a positive finite number"),
        ((math.nan, 1e20), "target_params must be a positive finite number"),
        ((math.inf, 1e20), "target_params must be a positive finite number"),
        ((True, 1e20), "target_params must be a positive finite number"),
        (("1e9", 1e20), "target_params must be a positive finite number"),
        ((1e9, 0.0), "compute_flops must be a positive finite number"),
        ((1e9, math.inf), "compute_flops must be a positive finite number"),
        ((1e9, 10.0), r"compute_flops must be > 10 \(log10 C > 1\), but got compute_flops=10.0"),
        ((1e9, 3.0), r"compute_flops must be > 10"),
    ],
)
def test_formula_rejects_bad_inputs(args: tuple[Any, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gstack_growth_tokens(*args)


def test_fraction_of_a_tiny_budget_is_clamped() -> None:
    # A tiny model: the formula asks for far more tokens than the whole budget.
    timing = gstack_growth_fraction(1e5, 1e7)
    assert timing.tokens > 1e10
    assert timing.raw_fraction > 1e3
    assert timing.fraction == 0.5
    assert timing.clamped
    assert gstack_growth_fraction(1e5, 1e7, max_fraction=0.3).fraction == 0.3
    # The lower bound: Llama3-8B's fraction (about 4.4e-4) lifted to 1e-2.
    low = gstack_growth_fraction(8e9, 15e12, min_fraction=1e-2)
    assert low.fraction == 1e-2
    assert low.clamped
    assert low.raw_fraction == pytest.approx(6.58e9 / 15e12, rel=1e-3)


def test_fraction_uses_flops_per_token_when_given() -> None:
    n, d = 2e6, 4e9
    timing = gstack_growth_fraction(n, d, flops_per_token=1.5e7)
    assert timing.tokens == pytest.approx(gstack_growth_tokens(n, 1.5e7 * d), rel=1e-12)
    assert timing.raw_fraction == pytest.approx(timing.tokens / d, rel=1e-12)
    default = gstack_growth_fraction(n, d)
    assert default.tokens == pytest.approx(gstack_growth_tokens(n, 6 * n * d), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"total_tokens": 0}, "total_tokens must be a positive finite number"),
        ({"total_tokens": math.nan}, "total_tokens must be a positive finite number"),
        ({"flops_per_token": -1.0}, "flops_per_token must be a positive finite number"),
        ({"flops_per_token": 1.0, "total_tokens": 5.0}, r"compute_flops must be > 10"),
        ({"flops_per_token": 1e300, "total_tokens": 1e300}, "must be finite"),
        ({"max_fraction": 1.0}, r"max_fraction must lie in \(0, 1\), but got max_fraction=1.0"),
        ({"min_fraction": 0.0}, r"min_fraction must lie in \(0, 1\)"),
        ({"min_fraction": 0.6}, "min_fraction must be <= max_fraction"),
    ],
)
def test_fraction_rejects_bad_inputs(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"target_params": 1e6, "total_tokens": 1e9, **kwargs}
    with pytest.raises(ValueError, match=message):
        gstack_growth_fraction(**arguments)
