"""The cnn, vit and gpt families: configs, shapes, growth view and analytic FLOPs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from morphtune.flops import config_cost, model_cost
from morphtune.models import (
    CNN,
    GPT,
    MODEL_FAMILIES,
    CNNConfig,
    GPTConfig,
    TaskShape,
    ViT,
    ViTConfig,
    build_model,
    config_from_dict,
    config_from_spec,
    config_to_dict,
)

IMAGES = TaskShape((1, 8, 8), 10)
TOKENS = TaskShape((16,), 256, "lm")


def test_registry_lists_every_family() -> None:
    assert {"mlp", "cnn", "vit", "gpt", "mixture"} <= set(MODEL_FAMILIES)


@pytest.mark.parametrize(
    ("family", "task", "shape"),
    [("cnn", IMAGES, (3, 10)), ("vit", IMAGES, (3, 10)), ("gpt", TOKENS, (3, 16, 256))],
)
def test_from_spec_builds_a_model_of_the_right_shape(
    family: str, task: TaskShape, shape: tuple
) -> None:
    config = config_from_spec(family, task, {"width": 16, "depth": 2})
    model = build_model(family, config)
    inputs = torch.randint(0, 256, (3, 16)) if task.task == "lm" else torch.randn(3, 1, 8, 8)
    assert model(inputs).shape == shape
    assert config_from_dict(family, config_to_dict(config)) == config


@pytest.mark.parametrize(
    ("family", "task", "message"),
    [
        ("gpt", IMAGES, r"model family 'gpt' needs a language-model dataset"),
        ("cnn", TOKENS, r"model family 'cnn' needs images"),
        ("vit", TaskShape((64,), 10), r"model family 'vit' needs images"),
    ],
)
def test_from_spec_refuses_the_wrong_kind_of_data(
    family: str, task: TaskShape, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_spec(family, task, {"width": 16, "depth": 2})


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: CNNConfig(1, 8, 10, (8, 16), (1,)), "widths and blocks"),
        (lambda: CNNConfig(0, 8, 10, (8,), (1,)), "in_channels"),
        (lambda: ViTConfig(8, 3, 1, 10, 16, 1, 2, 32), "divisible by patch_size"),
        (lambda: ViTConfig(8, 2, 1, 10, 18, 1, 4, 32), "dim must be divisible by heads"),
        (lambda: GPTConfig(256, 16, 16, 0, 2, 32), "depth"),
        (lambda: GPTConfig(256, 16, 16, 1, 2, 32, ln_eps=0.0), "ln_eps"),
    ],
)
def test_configs_reject_bad_fields_naming_them(build, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()


def test_resized_keeps_head_size_and_scales_the_mlp() -> None:
    config = ViTConfig(32, 8, 3, 10, dim=96, depth=3, heads=3, mlp_dim=384)
    grown = config.resized(160, 6)
    assert (grown.dim, grown.heads, grown.head_dim, grown.mlp_dim, grown.depth) == (
        160,
        5,
        32,
        640,
        6,
    )
    with pytest.raises(ValueError, match="multiple of head_dim=32"):
        config.resized(100, 3)
    cnn = CNNConfig(1, 8, 10, (8, 16), (1, 2)).resized(12, 4)
    assert (cnn.widths, cnn.blocks) == ((12, 24), (2, 4))


def test_gpt_is_causal() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(256, 16, 16, 2, 2, 32)).eval()
    tokens = torch.randint(0, 256, (1, 16))
    changed = tokens.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 256
    a, b = model(tokens), model(changed)
    assert torch.equal(a[0, :10], b[0, :10])  # the past never sees the future
    assert not torch.equal(a[0, 10:], b[0, 10:])


def counted_flops(model: torch.nn.Module, inputs: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(inputs)
    return counter.get_total_flops()


@settings(max_examples=15, deadline=None)
@given(
    width=st.integers(2, 12),
    stages=st.integers(1, 3),
    blocks=st.integers(1, 2),
    size=st.sampled_from([4, 7, 8]),
)
def test_cnn_flops_match_the_flop_counter(width: int, stages: int, blocks: int, size: int) -> None:
    config = CNNConfig(2, size, 5, tuple(width * 2**s for s in range(stages)), (blocks,) * stages)
    model = CNN(config).eval()  # batch statistics need more than one value per channel
    cost = model_cost(model)
    bias_adds = config.num_classes  # the only biases: the head's
    assert counted_flops(model, torch.randn(1, 2, size, size)) == cost.flops - bias_adds
    assert cost == config_cost("cnn", config)
    assert cost.params == sum(p.numel() for p in model.parameters())


def transformer_extras(dim: int, mlp_dim: int, depth: int, tokens: int) -> int:
    """What FlopCounterMode does not count on CPU: bias adds and the attention products."""
    per_block_bias = tokens * (4 * dim + mlp_dim + dim)
    return depth * (per_block_bias + 4 * tokens * tokens * dim)


@settings(max_examples=15, deadline=None)
@given(heads=st.integers(1, 3), head_dim=st.integers(2, 6), depth=st.integers(1, 3))
def test_transformer_flops_match_the_flop_counter(heads: int, head_dim: int, depth: int) -> None:
    dim = heads * head_dim
    vit = ViTConfig(8, 4, 1, 10, dim, depth, heads, 2 * dim)
    model = ViT(vit)
    extras = transformer_extras(dim, 2 * dim, depth, vit.tokens) + (vit.tokens - 1) * dim + 10
    assert counted_flops(model, torch.randn(1, 1, 8, 8)) == model_cost(model).flops - extras
    gpt = GPTConfig(64, 12, dim, depth, heads, 2 * dim)
    model = GPT(gpt)
    extras = transformer_extras(dim, 2 * dim, depth, 12)
    assert counted_flops(model, torch.randint(0, 64, (1, 12))) == model_cost(model).flops - extras
    assert model_cost(model) == config_cost("gpt", gpt)
