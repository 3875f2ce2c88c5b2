"""LEMON (Wang et al., ICLR 2024; METHODS §4.2): lossless on every family, fan-in copies
that sum to the source column, LayerNorm's appended positions exactly 0, asymmetric
replicas, both new-block inits and placements, determinism and guards."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from morphtune.methods.growth import GrowthOptions, expand, grow
from morphtune.methods.growth._lemon import lemon_depth_plan
from morphtune.models import (
    CNNConfig,
    GPTConfig,
    MLPConfig,
    ViT,
    ViTConfig,
    build_model,
)

TOL = 1e-10
OPTIONS = [
    GrowthOptions(new_block=new_block, placement=placement)
    for new_block in ("cancel", "zero")
    for placement in ("interleave", "stack")
]


@torch.no_grad()
def build(config: Any, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A seeded model whose norms are not at their trivial init (gamma 1, beta 0, BN
    statistics 0/1), so the tests see them copied and rescaled."""
    torch.manual_seed(seed)
    model = build_model(type(config).family, config).to(dtype).eval()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm | nn.BatchNorm2d):
            module.weight.copy_(1 + 0.5 * torch.randn_like(module.weight))
            module.bias.copy_(0.5 * torch.randn_like(module.bias))
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.copy_(0.5 * torch.randn_like(module.running_mean))
            module.running_var.copy_(0.5 + torch.rand_like(module.running_var))
    if isinstance(model, ViT):
        model.cls_token.copy_(0.5 * torch.randn_like(model.cls_token))
    return model


def inputs(config: Any, batch: int = 3, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if isinstance(config, MLPConfig):
        return torch.randn(batch, config.in_features, generator=generator, dtype=torch.float64)
    if isinstance(config, CNNConfig):
        shape = (batch, config.in_channels, config.image_size, config.image_size)
        return torch.randn(shape, generator=generator, dtype=torch.float64)
    if isinstance(config, ViTConfig):
        shape = (batch, config.in_channels, config.image_size, config.image_size)
        return torch.randn(shape, generator=generator, dtype=torch.float64)
    return torch.randint(0, config.vocab_size, (batch, config.context), generator=generator)


def max_delta(model: nn.Module, grown: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((grown(x) - model(x)).abs().max())


def assert_lossless(model: nn.Module, target: Any, options: GrowthOptions, seed: int) -> Any:
    result = expand(model, target, "lemon", seed=seed, options=options)
    grown = result.model
    for field in ("dim", "depth", "heads", "mlp_dim", "hidden", "widths", "blocks"):
        if hasattr(target, field):
            assert getattr(grown.config, field) == getattr(target, field)
    assert max_delta(model, grown, inputs(model.config)) <= TOL
    return result


# --- lossless, property-based, on every family --------------------------------------


@st.composite
def mlp_cases(draw: st.DrawFn) -> tuple[MLPConfig, MLPConfig, GrowthOptions, int]:
    depth = draw(st.integers(1, 3))
    hidden = tuple(draw(st.lists(st.integers(1, 5), min_size=depth, max_size=depth)))
    config = MLPConfig(
        draw(st.integers(1, 5)), draw(st.integers(1, 3)), hidden, draw(st.booleans())
    )
    options = draw(st.sampled_from(OPTIONS))
    new_depth = draw(st.integers(depth, 2 * depth))
    # Every target layer must be at least as wide as the source layer it holds copies of
    # (an identity layer holds those of the layer before it).
    reps: list[int] = []
    for index, new in lemon_depth_plan(depth, new_depth, options.placement):
        reps.append(reps[-1] if new else index)
    wide = tuple(hidden[rep] + draw(st.integers(0, 6)) for rep in reps)
    return (
        config,
        MLPConfig(config.in_features, config.out_features, wide, config.bias),
        options,
        draw(st.integers(0, 99)),
    )


@settings(max_examples=40, deadline=None)
@given(case=mlp_cases())
def test_mlp_growth_is_lossless(case: tuple[MLPConfig, MLPConfig, GrowthOptions, int]) -> None:
    config, target, options, seed = case
    assert_lossless(build(config, seed), target, options, seed)


@st.composite
def cnn_cases(draw: st.DrawFn) -> tuple[CNNConfig, CNNConfig, GrowthOptions, int]:
    stages = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 4), min_size=stages, max_size=stages))
    blocks = draw(st.lists(st.integers(1, 2), min_size=stages, max_size=stages))
    task = (draw(st.integers(1, 2)), draw(st.integers(3, 6)), draw(st.integers(1, 3)))
    wide = [w + draw(st.integers(0, 5)) for w in widths]
    deep = [draw(st.integers(b, 2 * b)) for b in blocks]
    return (
        CNNConfig(*task, tuple(widths), tuple(blocks)),
        CNNConfig(*task, tuple(wide), tuple(deep)),
        draw(st.sampled_from(OPTIONS)),
        draw(st.integers(0, 99)),
    )


@settings(max_examples=30, deadline=None)
@given(case=cnn_cases())
def test_cnn_growth_is_lossless(case: tuple[CNNConfig, CNNConfig, GrowthOptions, int]) -> None:
    config, target, options, seed = case
    assert_lossless(build(config, seed), target, options, seed)


@st.composite
def block_shapes(draw: st.DrawFn) -> dict[str, int]:
    """Source and target transformer sizes (same head_dim), widths often indivisible."""
    head_dim, heads = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    mlp_dim, depth = draw(st.integers(1, 8)), draw(st.integers(1, 3))
    new_heads = heads + draw(st.integers(0, 4))
    return {
        "dim": head_dim * heads,
        "heads": heads,
        "mlp_dim": mlp_dim,
        "depth": depth,
        "new_dim": head_dim * new_heads,
        "new_heads": new_heads,
        "new_mlp_dim": mlp_dim + draw(st.integers(0, 9)),
        "new_depth": draw(st.integers(depth, 2 * depth)),
    }


def source_and_target(make: Any, shape: dict[str, int]) -> tuple[Any, Any]:
    source = make(shape["dim"], shape["depth"], shape["heads"], shape["mlp_dim"])
    target = make(shape["new_dim"], shape["new_depth"], shape["new_heads"], shape["new_mlp_dim"])
    return source, target


@settings(max_examples=30, deadline=None)
@given(
    shape=block_shapes(),
    task=st.tuples(st.integers(1, 2), st.integers(1, 3)),
    options=st.sampled_from(OPTIONS),
    seed=st.integers(0, 99),
)
def test_vit_growth_is_lossless(
    shape: dict[str, int], task: tuple[int, int], options: GrowthOptions, seed: int
) -> None:
    def make(dim: int, depth: int, heads: int, mlp_dim: int) -> ViTConfig:
        return ViTConfig(4, 2, task[0], task[1], dim, depth, heads, mlp_dim)

    config, target = source_and_target(make, shape)
    result = assert_lossless(build(config, seed), target, options, seed)
    full = (target.dim // config.dim) * config.dim
    assert result.model.config.ln_eps == pytest.approx(config.ln_eps * full / target.dim)


@settings(max_examples=30, deadline=None)
@given(
    shape=block_shapes(),
    task=st.tuples(st.integers(2, 9), st.integers(1, 4)),
    options=st.sampled_from(OPTIONS),
    seed=st.integers(0, 99),
)
def test_gpt_growth_is_lossless(
    shape: dict[str, int], task: tuple[int, int], options: GrowthOptions, seed: int
) -> None:
    def make(dim: int, depth: int, heads: int, mlp_dim: int) -> GPTConfig:
        return GPTConfig(task[0], task[1], dim, depth, heads, mlp_dim)

    config, target = source_and_target(make, shape)
    assert_lossless(build(config, seed), target, options, seed)


# --- METHODS' research check: ViT d=96, L=3, 3 heads, 32x32, patch 8 --------------------

RESEARCH_VIT = ViTConfig(32, 8, 3, 10, dim=96, depth=3, heads=3, mlp_dim=384)


@pytest.fixture(scope="module")
def research_vit() -> ViT:
    model = build(RESEARCH_VIT)
    assert isinstance(model, ViT)
    return model


@pytest.mark.parametrize(
    ("dim", "depth", "options"),
    [
        (192, 3, OPTIONS[0]),
        (192, 5, OPTIONS[0]),
        (128, 5, OPTIONS[3]),  # indivisible: 3 -> 4 heads
        (160, 6, OPTIONS[1]),  # indivisible and 2x depth
    ],
)
def test_research_check_vit(
    research_vit: ViT, dim: int, depth: int, options: GrowthOptions
) -> None:
    target = RESEARCH_VIT.resized(dim, depth)
    result = expand(research_vit, target, "lemon", seed=0, options=options)
    x = inputs(RESEARCH_VIT, batch=4)
    assert max_delta(research_vit, result.model, x) <= TOL  # the paper reports ~5e-15
    config = result.model.config
    assert (config.dim, config.depth, config.heads, config.head_dim) == (dim, depth, dim // 32, 32)
    s = (dim // 96) * 96 / dim
    assert config.ln_eps == pytest.approx(1e-5 * s)
    assert all(
        m.eps == config.ln_eps for m in result.model.modules() if isinstance(m, nn.LayerNorm)
    )


# --- the expansion rules themselves ---------------------------------------------------


def copies_sum(wide: torch.Tensor, source_in: int, copies_in: int) -> torch.Tensor:
    """Sum the wide weight's columns over the copies ``c`` of each source input
    ``c mod source_in`` (the first ``copies_in`` columns; later ones are dropped)."""
    columns = wide[:, :copies_in]
    index = torch.arange(copies_in) % source_in
    return torch.zeros(wide.shape[0], source_in, *wide.shape[2:], dtype=wide.dtype).index_add_(
        1, index, columns
    )


def test_mlp_fan_in_copies_sum_to_the_source_column() -> None:
    model = build(MLPConfig(4, 3, (5, 7)))
    grown = grow(model, MLPConfig(4, 3, (12, 16)), "lemon", seed=3)
    for index, (rows, cols) in enumerate([(16, 12), (3, 16)], start=1):
        source = model.layers[index].weight
        wide = grown.layers[index].weight
        out = torch.arange(rows) % source.shape[0]
        expected = source[out]
        assert (copies_sum(wide, source.shape[1], cols) - expected).abs().max() <= 1e-12
        # ... and the copies differ (asymmetric), unlike Net2Net's equal shares.
        assert (wide[:, 0] - wide[:, source.shape[1]]).abs().min() > 0


def stream_rows(weight: torch.Tensor, wide: int) -> torch.Tensor:
    """Rows of a residual-stream writer: full copies, then the mean row."""
    copies, rest = divmod(wide, weight.shape[0])
    return torch.cat([weight] * copies + [weight.mean(0, keepdim=True).expand(rest, -1)])


def test_transformer_fan_in_copies_sum_to_the_source_column(research_vit: ViT) -> None:
    grown = grow(research_vit, RESEARCH_VIT.resized(224, 3), "lemon", seed=4)
    assert isinstance(grown, ViT)
    d, wide_d, mlp, wide_mlp = 96, 224, 384, 896
    assert grown.config.mlp_dim == wide_mlp
    block, wide_block = research_vit.blocks[1], grown.blocks[1]
    # q/k/v and fc1 read LayerNorm output: two full copies (192) and 32 exact zeros.
    for name in ("attn.q", "attn.k", "attn.v", "fc1"):
        source = block.get_parameter(f"{name}.weight")
        wide = wide_block.get_parameter(f"{name}.weight")
        rows = torch.arange(wide.shape[0]) % source.shape[0]
        assert (copies_sum(wide, d, 2 * d) - source[rows]).abs().max() <= 1e-12
        assert (wide[:, :d] - wide[:, d : 2 * d]).abs().min() > 0  # copies differ
    # proj splits its fan-in over the head copies (head 0 three times, heads 1 and 2
    # twice) and writes the stream: rows copied twice, then the mean row 32 times.
    summed = copies_sum(wide_block.attn.proj.weight, d, wide_d)
    assert (summed - stream_rows(block.attn.proj.weight, wide_d)).abs().max() <= 1e-12
    summed = copies_sum(wide_block.fc2.weight, mlp, wide_mlp)
    assert (summed - stream_rows(block.fc2.weight, wide_d)).abs().max() <= 1e-12
    # the head reads the final LayerNorm
    summed = copies_sum(grown.head.weight, d, 2 * d)
    assert (summed - research_vit.head.weight).abs().max() <= 1e-12


def test_cnn_conv_fan_in_copies_sum_to_the_source_kernel() -> None:
    model = build(CNNConfig(2, 5, 3, (3, 4), (1, 1)))
    grown = grow(model, CNNConfig(2, 5, 3, (7, 9), (1, 1)), "lemon", seed=5)
    for name, rows, source_in, wide_in in [
        ("stages.0.0.conv2", 7, 3, 7),
        ("stages.1.0.conv1", 9, 3, 7),
        ("stages.1.0.proj", 9, 3, 7),
    ]:
        source = model.get_parameter(f"{name}.weight")
        wide = grown.get_parameter(f"{name}.weight")
        expected = source[torch.arange(rows) % source.shape[0]]
        assert (copies_sum(wide, source_in, wide_in) - expected).abs().max() <= 1e-12


@pytest.mark.parametrize("family", ["vit", "gpt"])
def test_layer_norm_appended_positions_output_exactly_zero(family: str) -> None:
    if family == "vit":
        config: Any = ViTConfig(4, 2, 1, 3, dim=6, depth=2, heads=3, mlp_dim=8)
        target: Any = config.resized(10, 4)  # 6 -> 10: one full copy, 4 appended
    else:
        config = GPTConfig(7, 4, dim=6, depth=2, heads=2, mlp_dim=8)
        target = config.resized(15, 3)  # 6 -> 15: two full copies, 3 appended
    model = build(config)
    grown = grow(model, target, "lemon", seed=6)
    full = (target.dim // config.dim) * config.dim
    outputs: list[torch.Tensor] = []
    norms = [m for m in grown.modules() if isinstance(m, nn.LayerNorm)]
    hooks = [n.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for n in norms]
    with torch.no_grad():
        grown(inputs(config))
    for hook in hooks:
        hook.remove()
    assert len(outputs) == len(norms) == 2 * target.depth + 1
    for out in outputs:
        assert torch.equal(out[..., full:], torch.zeros_like(out[..., full:]))
        assert out[..., :full].abs().max() > 0
    # gamma' = circular(gamma) sqrt(s), beta' = circular(beta) on the copies.
    s = full / target.dim
    source_norm, wide_norm = model.norm, grown.norm
    copies = full // config.dim
    assert torch.allclose(wide_norm.weight[:full], source_norm.weight.repeat(copies) * math.sqrt(s))
    assert torch.equal(wide_norm.bias[:full], source_norm.bias.repeat(copies))


def test_stream_writers_average_past_the_last_full_copy() -> None:
    config = ViTConfig(4, 2, 1, 3, dim=4, depth=1, heads=2, mlp_dim=4)
    model = build(config)
    grown = grow(model, config.resized(10, 1), "lemon", seed=0)  # [x, x, mean(x), mean(x)]
    for name in ("cls_token", "pos_embed"):
        source, wide = model.get_parameter(name), grown.get_parameter(name)
        expected = torch.cat([source, source, source.mean(-1, keepdim=True).expand(1, -1, 2)], -1)
        assert torch.allclose(wide, expected, rtol=0, atol=1e-15)


# --- asymmetry: the Net2Net symmetry property fails -------------------------------------


def sgd_step(model: nn.Module, x: torch.Tensor) -> None:
    """One SGD step on a cross-entropy loss (logits flattened to ``(N, classes)``)."""
    model.train()
    out = model(x)
    logits = out.reshape(-1, out.shape[-1])
    labels = torch.arange(logits.shape[0]) % logits.shape[1]
    F.cross_entropy(logits, labels).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()


def test_mlp_replicas_are_symmetric_under_net2net_but_not_lemon() -> None:
    model = build(MLPConfig(4, 3, (5,)))
    x = inputs(model.config, batch=16)
    for operator in ("net2net", "lemon"):
        grown = grow(model, MLPConfig(4, 3, (10,)), operator, seed=7)
        before = grown.layers[0].weight.detach().clone()
        # Replicas: hidden units whose incoming weights are equal before training.
        pairs = [
            (a, b) for a in range(10) for b in range(a + 1, 10) if torch.equal(before[a], before[b])
        ]
        assert pairs if operator == "net2net" else pairs == [(j, j + 5) for j in range(5)]
        sgd_step(grown, x)
        after = grown.layers[0].weight.detach()
        differs = [float((after[a] - after[b]).abs().max()) for a, b in pairs]
        if operator == "net2net":
            assert max(differs) == 0  # symmetric for ever
        else:
            assert min(differs) > 1e-8  # LEMON's fan-out columns differ: symmetry broken


@pytest.mark.parametrize("family", ["cnn", "vit", "gpt"])
def test_replicas_of_the_first_layer_differ_after_one_step(family: str) -> None:
    config: Any
    if family == "cnn":
        config, target = CNNConfig(2, 4, 3, (3,), (1,)), CNNConfig(2, 4, 3, (6,), (2,))
        name, source_width, axis = "stem.weight", 3, 0
    elif family == "vit":
        config = ViTConfig(4, 2, 1, 3, dim=4, depth=1, heads=2, mlp_dim=4)
        target, name, source_width, axis = config.resized(8, 2), "patch_embed.weight", 4, 0
    else:
        config = GPTConfig(5, 3, dim=4, depth=1, heads=2, mlp_dim=4)
        target, name, source_width, axis = config.resized(8, 2), "tok_embed.weight", 4, 1
    grown = grow(build(config), target, "lemon", seed=8)
    weight = grown.get_parameter(name)
    first, second = (
        weight.narrow(axis, 0, source_width),
        weight.narrow(axis, source_width, source_width),
    )
    assert torch.equal(first, second)  # the first layer's rows are plain copies ...
    sgd_step(grown, inputs(config, batch=8))
    weight = grown.get_parameter(name).detach()
    first, second = (
        weight.narrow(axis, 0, source_width),
        weight.narrow(axis, source_width, source_width),
    )
    assert float((first - second).abs().max()) > 1e-8  # ... that diverge under SGD


# --- CNN: new blocks are exact in train mode too -----------------------------------------


@pytest.mark.parametrize("options", OPTIONS)
def test_cnn_new_blocks_output_zero_in_train_mode(options: GrowthOptions) -> None:
    config = CNNConfig(2, 6, 3, (3, 4), (1, 2))
    target = CNNConfig(2, 6, 3, (5, 8), (2, 4))
    model = build(config)
    grown = expand(model, target, "lemon", seed=9, options=options).model
    x = inputs(config, batch=4)
    assert max_delta(model, grown, x) <= TOL  # eval mode
    branch_outputs: list[torch.Tensor] = []
    hooks = []
    for stage, stage_blocks in enumerate(grown.stages):
        plan = lemon_depth_plan(config.blocks[stage], target.blocks[stage], options.placement)
        for block, (_, new) in zip(stage_blocks, plan, strict=True):
            if new:
                assert block.proj is None
                hooks.append(
                    block.bn2.register_forward_hook(lambda _m, _i, out: branch_outputs.append(out))
                )
    assert len(hooks) == 3
    # Train mode: BatchNorm uses batch statistics, which are copies for copied channels,
    # and the new blocks' zeroed bn2 outputs exactly 0 whatever the batch.
    source = copy.deepcopy(model).train()
    grown.train()
    with torch.no_grad():
        assert float((grown(x) - source(x)).abs().max()) <= TOL
    assert len(branch_outputs) == 3
    for out in branch_outputs:
        assert torch.equal(out, torch.zeros_like(out))


# --- depth: placements and new-block inits -------------------------------------------


def test_depth_plan() -> None:
    assert lemon_depth_plan(3, 3, "interleave") == [(0, False), (1, False), (2, False)]
    assert lemon_depth_plan(3, 5, "interleave") == [
        (0, False),
        (1, False),
        (1, True),
        (2, False),
        (2, True),
    ]
    assert lemon_depth_plan(3, 5, "stack") == [
        (0, False),
        (1, False),
        (2, False),
        (1, True),
        (2, True),
    ]
    with pytest.raises(ValueError, match="at most 2x"):
        lemon_depth_plan(2, 5, "stack")


@pytest.mark.parametrize("options", OPTIONS)
def test_new_blocks_have_zero_residual_branches(options: GrowthOptions) -> None:
    config = GPTConfig(7, 4, dim=4, depth=2, heads=2, mlp_dim=6)
    target = config.resized(8, 4)  # 2x wide (every input has two copies), 2x deep
    model = build(config)
    grown = expand(model, target, "lemon", seed=10, options=options).model
    new_positions = [1, 3] if options.placement == "interleave" else [2, 3]
    for position, block in enumerate(grown.blocks):
        for linear, source_in in ((block.attn.proj, 4), (block.fc2, 6)):
            summed = copies_sum(linear.weight, source_in, linear.weight.shape[1])
            if position in new_positions:
                assert summed.abs().max() <= 1e-12  # the branch writes 0
                assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
                if options.new_block == "zero":
                    assert torch.equal(linear.weight, torch.zeros_like(linear.weight))
                else:  # cancel: non-zero copies that cancel
                    assert linear.weight.abs().min() > 0
            else:
                assert summed.abs().max() > 0.01
    assert max_delta(model, grown, inputs(config)) <= TOL


def test_depth_only_growth_carries_the_copied_blocks() -> None:
    config = ViTConfig(4, 2, 1, 3, dim=4, depth=2, heads=2, mlp_dim=6)
    model = build(config)
    result = expand(
        model, config.resized(4, 3), "lemon", seed=0, options=GrowthOptions(new_block="zero")
    )
    grown = result.model
    assert max_delta(model, grown, inputs(config)) == 0
    block_params = [name for name, _ in model.blocks[0].named_parameters()]
    # Plan for 2 -> 3 (interleave): source 0 one-to-one, source 1 copied to 1, new block 2.
    for name in ("patch_embed.weight", "cls_token", "pos_embed", "norm.weight", "head.weight"):
        assert result.carried[name] == name
    for new, old in ((0, 0), (1, 1)):
        for param in block_params:
            assert result.carried[f"blocks.{new}.{param}"] == f"blocks.{old}.{param}"
    # The new block's copies of ln1, q, k, v, ln2 and fc1 are verbatim too; its zero
    # output layers are not.
    assert result.carried["blocks.2.attn.q.weight"] == "blocks.1.attn.q.weight"
    assert "blocks.2.attn.proj.weight" not in result.carried
    assert "blocks.2.fc2.bias" not in result.carried
    source_params = dict(model.named_parameters())
    for new, old in result.carried.items():
        assert torch.equal(grown.get_parameter(new), source_params[old])


def test_width_growth_carries_only_unchanged_parameters() -> None:
    config = ViTConfig(4, 2, 1, 3, dim=4, depth=1, heads=2, mlp_dim=6)
    result = expand(build(config), config.resized(6, 1), "lemon", seed=0)
    assert result.carried == {"head.bias": "head.bias"}


# --- contract: determinism, source untouched, dtype and mode ------------------------------


def test_deterministic_in_seed_and_leaves_the_source_and_global_rng_alone() -> None:
    config = ViTConfig(4, 2, 1, 3, dim=4, depth=2, heads=2, mlp_dim=6)
    target = config.resized(6, 3)
    model = build(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    first = grow(model, target, "lemon", seed=11).state_dict()
    again = grow(model, target, "lemon", seed=11).state_dict()
    other = grow(model, target, "lemon", seed=12).state_dict()
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.config == config and not model.training


@pytest.mark.parametrize("training", [True, False])
def test_keeps_dtype_and_mode_and_is_exact_to_fp32_tolerance(training: bool) -> None:
    config = CNNConfig(1, 4, 2, (2,), (1,))
    model = build(config, dtype=torch.float32).train(training)
    grown = grow(model, CNNConfig(1, 4, 2, (3,), (2,)), "lemon", seed=0)
    assert grown.training is training
    assert all(m.training is training for m in grown.modules())
    assert {p.dtype for p in grown.parameters()} == {torch.float32}
    model.eval()
    grown.eval()
    x = inputs(config).float()
    with torch.no_grad():
        assert float((grown(x) - model(x)).abs().max()) <= 1e-5


def test_grows_a_grown_model_again() -> None:
    config = GPTConfig(7, 4, dim=6, depth=1, heads=2, mlp_dim=5)
    model = build(config)
    once = grow(model, config.resized(9, 2), "lemon", seed=1)
    twice = grow(once, once.config.resized(15, 4), "lemon", seed=2)
    assert twice.config.ln_eps == pytest.approx(1e-5 * (6 / 9) * (9 / 15))
    assert max_delta(model, twice, inputs(config)) <= TOL


# --- guards ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "target", "message"),
    [
        (
            ViTConfig(4, 2, 1, 3, dim=4, depth=2, heads=2, mlp_dim=6),
            ViTConfig(4, 2, 1, 3, dim=4, depth=5, heads=2, mlp_dim=6),
            "at most 2x per event: target depth must be <= 4, but got 5",
        ),
        (
            ViTConfig(4, 2, 1, 3, dim=4, depth=2, heads=2, mlp_dim=6),
            ViTConfig(4, 2, 1, 3, dim=8, depth=2, heads=2, mlp_dim=12),
            r"heads keep their size: new_config.dim / heads must equal 2, but got 8 / 2 = 4",
        ),
        (
            GPTConfig(7, 4, dim=4, depth=2, heads=2, mlp_dim=6),
            GPTConfig(7, 4, dim=6, depth=2, heads=3, mlp_dim=5),
            r"mlp_dim can only grow: new_config.mlp_dim must be >= 6, but got 5",
        ),
        (
            CNNConfig(1, 4, 2, (2, 3), (1, 3)),
            CNNConfig(1, 4, 2, (2, 3), (3, 3)),
            r"new_config.blocks\[0\] must be in \[1, 2\], but got 3",
        ),
        (
            CNNConfig(1, 4, 2, (2, 3), (1, 1)),
            CNNConfig(1, 4, 2, (2, 2), (1, 1)),
            r"new_config.widths\[1\] must be >= 3, but got 2",
        ),
        (
            CNNConfig(1, 4, 2, (2,), (1,)),
            CNNConfig(1, 4, 2, (2, 4), (1, 1)),
            "growth keeps the number of cnn stages: new_config.widths must have 1 entries",
        ),
        (
            MLPConfig(3, 2, (9, 3)),
            MLPConfig(3, 2, (9, 3, 3, 3)),
            r"identity layer copying hidden layer 0 at position 1, so "
            r"new_config.hidden\[1\] must be >= 9, but got 3",
        ),
    ],
)
def test_guards(config: Any, target: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grow(build(config), target, "lemon")


def test_stack_placement_accepts_what_interleave_refuses() -> None:
    model = build(MLPConfig(3, 2, (9, 3)))
    options = GrowthOptions(placement="stack")
    assert_lossless(model, MLPConfig(3, 2, (9, 3, 3, 3)), options, seed=0)


def test_refuses_an_unknown_layout() -> None:
    model = build(GPTConfig(7, 4, dim=4, depth=1, heads=2, mlp_dim=6))
    model.blocks[0].attn.q_norm = nn.LayerNorm(2)  # q/k-norm is not supported
    with pytest.raises(ValueError, match=r"unexpected \['blocks.0.attn.q_norm.bias'"):
        grow(model, model.config.resized(8, 1), "lemon")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_keeps_the_device() -> None:
    config = GPTConfig(7, 4, dim=4, depth=1, heads=2, mlp_dim=6)
    model = build(config).cuda()
    grown = grow(model, config.resized(6, 2), "lemon", seed=0)
    assert {p.device.type for p in grown.parameters()} == {"cuda"}
    x = inputs(config).cuda()
    assert max_delta(model, grown, x) <= TOL
