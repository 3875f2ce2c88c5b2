"""Conformance of every registered growth operator (METHODS §4) on every model family.

Parametrized over ``GROWTH_OPERATORS`` x ``MODEL_FAMILIES``, so a new operator or family
is checked as soon as it registers. Each operator is held to what it declares:
``families`` (others refused with a clear error), ``lossless`` (function kept in fp64 eval
mode, property-tested over random shapes), ``max_depth_factor``; and every operator must
reach the target config, leave the source untouched, keep dtype/device/mode, be
deterministic in ``seed`` and list only verbatim copies in ``carried``.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from morphtune.methods.growth import (
    GROWTH_OPERATORS,
    GrowthOptions,
    check_growth,
    expand,
    grow,
    growth_target,
)
from morphtune.methods.growth._registry import ADJUSTABLE_FIELDS
from morphtune.methods.sparsity import prune_at_init
from morphtune.models import (
    MLP,
    MODEL_FAMILIES,
    CNNConfig,
    GPTConfig,
    MLPConfig,
    TaskShape,
    ViTConfig,
    build_model,
)

OPERATORS = list(GROWTH_OPERATORS)
FAMILIES = list(MODEL_FAMILIES)
PAIRS = [(op, family) for op in OPERATORS for family in FAMILIES]
SUPPORTED = [(op, f) for op, f in PAIRS if f in GROWTH_OPERATORS.get(op).families]
UNSUPPORTED = [(op, f) for op, f in PAIRS if f not in GROWTH_OPERATORS.get(op).families]
LOSSLESS = [(op, f) for op, f in SUPPORTED if f in GROWTH_OPERATORS.get(op).lossless]

#: (width factor, depth factor) targets tried on every supported pair.
STANDARD_FACTORS = [(1.5, 1.0), (2.0, 1.0), (1.0, 2.0), (2.0, 2.0)]


# ---------------------------------------------------------------------- examples

#: Tiny hand-made configs; families not listed go through ``from_spec``.
EXAMPLES: dict[str, Any] = {
    "mlp": MLPConfig(5, 3, (4, 6)),
    "cnn": CNNConfig(3, 8, 4, widths=(4, 6), blocks=(1, 2)),
    "vit": ViTConfig(8, 4, 3, 5, dim=8, depth=2, heads=2, mlp_dim=16),
    "gpt": GPTConfig(11, 6, dim=8, depth=2, heads=2, mlp_dim=16),
}
#: Tasks tried, in order, to build an example of any other family from its spec.
SPEC_TASKS = [TaskShape((3, 8, 8), 4), TaskShape((6,), 11, "lm")]


def example_config(family: str) -> Any:
    """A tiny config of ``family``; ``pytest.skip`` (naming why) if none can be built."""
    if family in EXAMPLES:
        return EXAMPLES[family]
    config_type = MODEL_FAMILIES.get(family).config_type
    errors = []
    for task in SPEC_TASKS:
        try:
            return config_type.from_spec(task, {"width": 4, "depth": 2})
        except (ValueError, KeyError, TypeError) as error:
            errors.append(f"{task.task} {task.input_shape}: {error}")
    pytest.skip(f"no example config for model family {family!r}: {'; '.join(errors)}")


def sample_input(config: Any, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A float64 batch (int64 tokens for language models) that a model of ``config`` takes."""
    if hasattr(config, "vocab_size") and hasattr(config, "context"):
        return torch.randint(0, config.vocab_size, (batch, config.context), generator=generator)
    if hasattr(config, "image_size") and hasattr(config, "in_channels"):
        size = config.image_size
        shape: tuple[int, ...] = (batch, config.in_channels, size, size)
    elif hasattr(config, "in_features"):
        shape = (batch, config.in_features)
    else:
        pytest.skip(f"no example input for {type(config).__name__}")
    return torch.randn(shape, generator=generator, dtype=torch.float64)


@torch.no_grad()
def build(family: str, config: Any, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    """``family`` model on ``config``, every float tensor randomised (norm scales and
    shifts, BatchNorm statistics, class tokens), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(family, config).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        draw = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        if name.endswith("running_var"):
            tensor.copy_(0.5 + draw.abs())
        elif name.endswith("running_mean"):
            tensor.copy_(0.5 * draw)
        else:
            tensor.add_(0.2 * draw.to(tensor.dtype))
    return model.eval()


def depth_allowed(operator: str, depth_factor: float) -> bool:
    limit = GROWTH_OPERATORS.get(operator).max_depth_factor
    return limit is None or depth_factor <= limit


def accepted_targets(operator: str, config: Any) -> list[Any]:
    """The standard targets of ``config`` the family can express and ``operator`` accepts."""
    targets = []
    for factor, depth_factor in STANDARD_FACTORS:
        if not depth_allowed(operator, depth_factor):
            continue
        try:
            target = growth_target(config, factor, depth_factor)
            check_growth(config, target, operator)
        except ValueError:
            continue
        if target not in targets and target != config:
            targets.append(target)
    return targets


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


def assert_config_matches(grown: Any, target: Any) -> None:
    assert type(grown) is type(target)
    for f in fields(target):
        if f.name not in ADJUSTABLE_FIELDS:
            assert getattr(grown, f.name) == getattr(target, f.name), f.name
    assert (grown.width, grown.depth) == (target.width, target.depth)


# ---------------------------------------------------------------------- conformance


@pytest.mark.parametrize(("operator", "family"), SUPPORTED)
def test_operator_accepts_a_standard_target(operator: str, family: str) -> None:
    config = example_config(family)
    assert accepted_targets(operator, config), (
        f"{operator} declares family {family} but accepts none of the targets "
        f"{STANDARD_FACTORS} (width, depth factors) of {config}"
    )


@pytest.mark.parametrize(("operator", "family"), SUPPORTED)
def test_operator_conformance(operator: str, family: str) -> None:
    config = example_config(family)
    for target in accepted_targets(operator, config):
        for dtype, training in ((torch.float64, False), (torch.float32, True)):
            model = build(family, config, seed=1, dtype=dtype).train(training)
            before = state(model)
            result = expand(model, target, operator, seed=5)
            grown = result.model
            # Target reached; a new model; the source untouched.
            assert_config_matches(grown.config, target)
            assert grown is not model
            assert_same_state(before, state(model))
            assert model.training == training
            source_ptrs = {t.data_ptr() for t in model.state_dict().values() if t.numel()}
            assert not any(t.data_ptr() in source_ptrs for t in grown.state_dict().values())
            # dtype, device and train/eval mode kept (on every submodule).
            for tensor in grown.state_dict().values():
                if tensor.is_floating_point():
                    assert tensor.dtype == dtype
                assert tensor.device == next(model.parameters()).device
            assert {m.training for m in grown.modules()} == {training}
            # carried: verbatim copies of existing parameters.
            new_params = dict(grown.named_parameters())
            old_params = dict(model.named_parameters())
            for new_name, old_name in result.carried.items():
                assert new_name in new_params, new_name
                assert old_name in old_params, old_name
                assert new_params[new_name].shape == old_params[old_name].shape
                assert torch.equal(new_params[new_name], old_params[old_name]), new_name
            # Deterministic in the seed; the forward pass works.
            again = expand(model, target, operator, seed=5)
            assert_same_state(state(grown), state(again.model))
            assert again.carried == result.carried
            x = sample_input(config, 3, torch.Generator().manual_seed(0))
            x = x.to(dtype) if x.is_floating_point() else x
            with torch.no_grad():
                out, expected = grown(x), model(x)
            assert out.shape == expected.shape
            if not training and family in GROWTH_OPERATORS.get(operator).lossless:
                assert (out - expected).abs().max() <= 1e-10, target


@pytest.mark.parametrize(("operator", "family"), SUPPORTED)
def test_expand_rejects_shrinking_and_task_changes(operator: str, family: str) -> None:
    config = example_config(family)
    targets = accepted_targets(operator, config)
    if not targets:
        pytest.skip(f"{operator} accepts no standard target of {family}")
    big = targets[-1]
    with pytest.raises(ValueError, match="growth cannot shrink a model"):
        check_growth(big, config, operator)
    with pytest.raises(ValueError, match="growth cannot shrink a model"):
        expand(build(family, big), config, operator)
    changed_any = False
    for name in type(config).TASK_FIELDS:
        value = getattr(big, name)
        candidates = [not value] if isinstance(value, bool) else [value * 2, value + 1]
        for candidate in candidates:
            try:
                changed = replace(big, **{name: candidate})
            except (ValueError, TypeError):
                continue
            with pytest.raises(ValueError, match=f"growth keeps {name}"):
                check_growth(config, changed, operator)
            changed_any = True
            break
    assert changed_any


@pytest.mark.parametrize(("operator", "family"), UNSUPPORTED)
def test_unsupported_family_is_refused_clearly(operator: str, family: str) -> None:
    config = example_config(family)
    try:
        target = growth_target(config, 2.0)
    except ValueError:
        target = config
    message = re.escape(f"growth operator {operator!r} cannot grow model family {family!r}")
    with pytest.raises(ValueError, match=message):
        check_growth(config, target, operator)
    with pytest.raises(ValueError, match=message):
        expand(build(family, config), target, operator)


def test_unknown_operator_lists_valid_names() -> None:
    model = build("mlp", MLPConfig(6, 3, (5,)))
    message = re.escape(f"unknown growth operator 'nope'; valid: {sorted(GROWTH_OPERATORS)}")
    with pytest.raises(ValueError, match=message):
        grow(model, MLPConfig(6, 3, (8,)), "nope")
    with pytest.raises(ValueError, match=message):
        check_growth(model.config, MLPConfig(6, 3, (8,)), "nope")


@pytest.mark.parametrize("operator", OPERATORS)
def test_masked_models_are_refused_unless_handled(operator: str) -> None:
    op = GROWTH_OPERATORS.get(operator)
    for family in ("mlp", "cnn"):
        if family not in op.families:
            continue
        config = EXAMPLES[family]
        targets = accepted_targets(operator, config)
        if not targets:
            continue
        model = build(family, config)
        prune_at_init(model, "random", 0.5, seed=0)
        if family in op.mask_families:
            expand(model, targets[0], operator)
        else:
            with pytest.raises(ValueError, match="masks"):
                expand(model, targets[0], operator)


# ---------------------------------------------------------------------- lossless


@st.composite
def random_config(draw: st.DrawFn, family: str) -> Any:
    """Random small shapes of a family (widths not dividing their targets included)."""
    if family == "mlp":
        depth = draw(st.integers(1, 3))
        return MLPConfig(
            draw(st.integers(1, 5)),
            draw(st.integers(1, 4)),
            tuple(draw(st.lists(st.integers(1, 7), min_size=depth, max_size=depth))),
            draw(st.booleans()),
        )
    if family == "cnn":
        stages = draw(st.integers(1, 3))
        return CNNConfig(
            draw(st.integers(1, 3)),
            draw(st.integers(3, 8)),
            draw(st.integers(1, 4)),
            tuple(draw(st.lists(st.integers(1, 6), min_size=stages, max_size=stages))),
            tuple(draw(st.lists(st.integers(1, 2), min_size=stages, max_size=stages))),
        )
    if family in ("vit", "gpt"):
        head_dim, heads = draw(st.sampled_from([2, 4])), draw(st.integers(1, 3))
        shape = {
            "dim": head_dim * heads,
            "depth": draw(st.integers(1, 3)),
            "heads": heads,
            "mlp_dim": draw(st.integers(1, 12)),
        }
        if family == "gpt":
            return GPTConfig(draw(st.integers(2, 12)), draw(st.integers(1, 6)), **shape)
        patch = draw(st.sampled_from([2, 4]))
        return ViTConfig(
            patch * draw(st.integers(1, 2)),
            patch,
            draw(st.integers(1, 3)),
            draw(st.integers(1, 4)),
            **shape,
        )
    return example_config(family)


@pytest.mark.parametrize(("operator", "family"), LOSSLESS)
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(data=st.data())
def test_lossless_operators_keep_the_function(
    operator: str, family: str, data: st.DataObject
) -> None:
    config = data.draw(random_config(family), label="config")
    factor = data.draw(st.sampled_from([1.0, 1.3, 1.5, 1.7, 2.0]), label="factor")
    depth_factor = data.draw(st.sampled_from([1.0, 1.5, 2.0]), label="depth_factor")
    assume(depth_allowed(operator, depth_factor))
    try:
        target = growth_target(config, factor, depth_factor)
        check_growth(config, target, operator)
    except ValueError:
        assume(False)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    model = build(family, config, seed=seed % 97)
    x = sample_input(config, 4, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(x)
        grown = expand(model, target, operator, seed=seed, options=GrowthOptions()).model
        assert not grown.training
        assert (grown(x) - expected).abs().max() <= 1e-10


# ---------------------------------------------------------------------- mlp specifics


def build_mlp(config: MLPConfig) -> MLP:
    torch.manual_seed(0)
    return MLP(config).double().eval()


@pytest.mark.parametrize("hidden", [(5, 7, 7), (9, 8, 8, 12), (5, 7, 10)])
def test_net2net_grows_depth_losslessly(hidden: tuple[int, ...]) -> None:
    model = build_mlp(MLPConfig(6, 3, (5, 7)))
    grown = grow(model, MLPConfig(6, 3, hidden), "net2net", seed=2)
    assert grown.config.hidden == hidden
    x = torch.randn(16, 6, dtype=torch.float64)
    assert (grown(x) - model(x)).abs().max() <= 1e-12


@pytest.mark.parametrize(
    ("new_config", "message"),
    [
        (
            MLPConfig(7, 3, (8,)),
            "growth keeps in_features: new_config.in_features must equal the model's 6, but got 7",
        ),
        (MLPConfig(6, 4, (8,)), "growth keeps out_features"),
        (MLPConfig(6, 3, (8,), bias=False), "growth keeps bias"),
        (
            MLPConfig(6, 3, (4,)),
            re.escape(
                "growth cannot shrink a model: the target's width and depth must be >= the "
                "model's (5, 1), but got (4, 1)"
            ),
        ),
        (MLPConfig(6, 3, (8, 4)), r"new_config.hidden\[1\] must be >= 8, but got 4"),
    ],
)
def test_grow_rejects_incompatible_targets(new_config: MLPConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grow(build_mlp(MLPConfig(6, 3, (5,))), new_config)


def test_net2net_checks_every_hidden_layer() -> None:
    # The registry compares width = max(hidden) only; net2net checks each layer.
    with pytest.raises(ValueError, match=r"hidden layer 1 can only grow"):
        grow(build_mlp(MLPConfig(6, 3, (5, 7))), MLPConfig(6, 3, (9, 6)))


def test_growth_cannot_remove_layers() -> None:
    with pytest.raises(ValueError, match="growth cannot shrink a model"):
        grow(build_mlp(MLPConfig(6, 3, (5, 5))), MLPConfig(6, 3, (8,)))


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
