"""MixtureGrowth (METHODS §4.3): 2x2 block growth of a two-member template-mixture MLP."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from morphtune.methods.growth import (
    GROWTH_OPERATORS,
    GrowthOptions,
    check_growth,
    expand,
    growth_target,
)
from morphtune.methods.growth._mixturegrowth import DEFAULT_ORTHOGONAL_SCALE
from morphtune.models import MLP, MixtureConfig, MixtureMLP, MLPConfig

COEFFICIENTS = ("orthogonal", "copy", "zero", "random")


def build(config: MixtureConfig, seed: int = 0) -> MixtureMLP:
    torch.manual_seed(seed)
    return MixtureMLP(config).double().eval()


def grow(
    model: MixtureMLP, seed: int = 0, coefficients: str = "orthogonal", noise: float = 0.0
) -> MixtureMLP:
    options = GrowthOptions(noise=noise, coefficients=coefficients)  # type: ignore[arg-type]
    target = model.config.resized(2 * model.config.member_width, model.config.depth)
    grown = expand(model, target, "mixturegrowth", seed=seed, options=options).model
    assert isinstance(grown, MixtureMLP)
    return grown


def member_weight(model: MixtureMLP, index: int, member: int) -> torch.Tensor:
    """``sum_k alpha[m, k] T[m, k]`` of an ungrown model, summed term by term."""
    templates = getattr(model, f"templates_{index}")[member]
    alpha = getattr(model, f"coefficients_{index}")[member]
    return sum((alpha[k] * templates[k] for k in range(len(alpha))), torch.zeros_like(templates[0]))


def member_logits(model: MixtureMLP, member: int, x: torch.Tensor) -> torch.Tensor:
    """One member of an ungrown model as a plain MLP, without the classifier bias."""
    h = x
    depth = model.config.depth
    for index in range(depth):
        bias = getattr(model, f"bias_{index}")[member]
        h = torch.relu(h @ member_weight(model, index, member).T + bias)
    return h @ member_weight(model, depth, member).T


def old_vectors(model: MixtureMLP, index: int) -> torch.Tensor:
    """The members' coefficient vectors in the grown bank's 2K space: [a0, 0], [0, a1]."""
    alpha = getattr(model, f"coefficients_{index}").detach()
    zeros = torch.zeros_like(alpha[0])
    return torch.stack([torch.cat([alpha[0], zeros]), torch.cat([zeros, alpha[1]])])


def test_registered_for_the_mixture_family_only() -> None:
    op = GROWTH_OPERATORS.get("mixturegrowth")
    assert op.families == ("mixture",)
    assert op.lossless == ()
    with pytest.raises(ValueError, match="cannot grow model family 'mlp'"):
        expand(MLP(MLPConfig(4, 3, (5,))), MLPConfig(4, 3, (10,)), "mixturegrowth")


def test_growth_target_doubles_into_the_grown_config() -> None:
    config = MixtureConfig(6, 3, 8, 3)
    target = growth_target(config, 2.0)
    assert target == MixtureConfig(6, 3, 8, 3, grown=True)
    check_growth(config, target, "mixturegrowth")


@settings(max_examples=12, deadline=None)
@given(
    member_width=st.integers(1, 5),
    depth=st.integers(1, 4),
    templates=st.integers(2, 4),
    coefficients=st.sampled_from(COEFFICIENTS),
    noise=st.sampled_from([0.0, 1e-3, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_diagonal_blocks_keep_each_members_mixture_and_the_rest_is_copied(
    member_width: int, depth: int, templates: int, coefficients: str, noise: float, seed: int
) -> None:
    model = build(MixtureConfig(4, 3, member_width, depth, templates), seed)
    target = model.config.resized(2 * member_width, depth)
    options = GrowthOptions(noise=noise, coefficients=coefficients)  # type: ignore[arg-type]
    result = expand(model, target, "mixturegrowth", seed=seed, options=options)
    grown = result.model
    assert isinstance(grown, MixtureMLP)
    w = member_width
    for index in range(1, depth):
        hidden = grown.layer_weight(index)
        assert (hidden[:w, :w] - member_weight(model, index, 0)).abs().max() <= 1e-12
        assert (hidden[w:, w:] - member_weight(model, index, 1)).abs().max() <= 1e-12
        coefficients_i = getattr(grown, f"coefficients_{index}")
        assert torch.equal(coefficients_i[0, 0], old_vectors(model, index)[0])
        assert torch.equal(coefficients_i[1, 1], old_vectors(model, index)[1])
    # Input layer and classifier, templates and biases: verbatim and listed as carried.
    source = dict(model.named_parameters())
    hidden_coefficients = {f"coefficients_{i}" for i in range(1, depth)}
    assert set(result.carried) == set(source) - hidden_coefficients
    for name, param in grown.named_parameters():
        if name in result.carried:
            assert result.carried[name] == name
            assert torch.equal(param, source[name])
    assert torch.equal(grown.layer_weight(0), model.layer_weight(0))
    assert torch.equal(grown.layer_weight(depth), model.layer_weight(depth))


@settings(max_examples=12, deadline=None)
@given(
    member_width=st.integers(1, 5),
    templates=st.integers(2, 4),
    noise=st.sampled_from([0.0, 1e-3, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_orthogonal_coefficients_are_orthogonal_to_the_old_ones(
    member_width: int, templates: int, noise: float, seed: int
) -> None:
    model = build(MixtureConfig(4, 3, member_width, 3, templates), seed)
    grown = grow(model, seed, "orthogonal", noise)
    for index in (1, 2):
        old = old_vectors(model, index)
        new = getattr(grown, f"coefficients_{index}").detach()
        off = torch.stack([new[0, 1], new[1, 0]])
        cosines = (off / off.norm(dim=1, keepdim=True)) @ (old / old.norm(dim=1, keepdim=True)).T
        assert cosines.abs().max() < 1e-6
        mutual = (off[0] @ off[1]) / (off[0].norm() * off[1].norm())
        assert abs(float(mutual)) < 1e-6
        # Scale: noise (or the documented default) times the rms of the old norms.
        ref = float(old.norm(dim=1).square().mean().sqrt())
        scale = noise if noise > 0 else DEFAULT_ORTHOGONAL_SCALE
        assert torch.allclose(off.norm(dim=1), torch.full((2,), scale * ref, dtype=off.dtype))


def test_orthogonal_needs_two_templates_and_the_other_inits_do_not() -> None:
    config = MixtureConfig(4, 3, 5, 3, templates=1)
    target = config.resized(10, 3)
    with pytest.raises(ValueError, match=r"coefficients='orthogonal' needs templates >= 2"):
        check_growth(config, target, "mixturegrowth")
    for coefficients in ("copy", "zero", "random"):
        grown = grow(build(config), coefficients=coefficients)
        assert grown.config == target
    # Without hidden-to-hidden layers there is nothing to mix: orthogonal is fine.
    shallow = MixtureConfig(4, 3, 5, 1, templates=1)
    check_growth(shallow, shallow.resized(10, 1), "mixturegrowth")


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_zero_coefficients_give_the_sum_of_the_members_logits_plus_one_bias(depth: int) -> None:
    model = build(MixtureConfig(5, 3, 4, depth, templates=2), 1)
    grown = grow(model, coefficients="zero")
    x = torch.randn(16, 5, dtype=torch.float64)
    bias = getattr(model, f"bias_{depth}")
    logits_1, logits_2 = member_logits(model, 0, x), member_logits(model, 1, x)
    assert (grown(x) - (logits_1 + logits_2 + bias)).abs().max() <= 1e-10
    assert (grown(x) - model(x)).abs().max() <= 1e-10
    # The bias is counted once: dropping it leaves exactly the members' sum.
    assert (grown(x) - bias - (logits_1 + logits_2)).abs().max() <= 1e-10
    assert (grown(x) - 2 * bias - (logits_1 + logits_2)).abs().max() > 1e-3


def test_other_inits_change_the_function_only_slightly_or_not_at_all() -> None:
    model = build(MixtureConfig(5, 3, 6, 3), 2)
    x = torch.randn(16, 5, dtype=torch.float64)
    small = (grow(model, coefficients="orthogonal")(x) - model(x)).abs().max()
    large = (grow(model, coefficients="random")(x) - model(x)).abs().max()
    assert 0 < small < large


def test_copy_coefficients_copy_the_receiving_members_mixture() -> None:
    model = build(MixtureConfig(5, 3, 4, 3, templates=3), 3)
    exact = grow(model, coefficients="copy")
    noisy = grow(model, coefficients="copy", noise=0.1)
    for index in (1, 2):
        old = old_vectors(model, index)
        coefficients = getattr(exact, f"coefficients_{index}")
        assert torch.equal(coefficients[0, 1], old[0])
        assert torch.equal(coefficients[1, 0], old[1])
        perturbed = getattr(noisy, f"coefficients_{index}").detach()
        for r, c in ((0, 1), (1, 0)):
            delta = (perturbed[r, c] - old[r]).norm()
            assert torch.isclose(delta, 0.1 * old[r].norm())


def test_random_coefficients_have_the_old_rms_norm() -> None:
    model = build(MixtureConfig(5, 3, 4, 3, templates=2), 4)
    grown = grow(model, coefficients="random")
    for index in (1, 2):
        ref = old_vectors(model, index).norm(dim=1).square().mean().sqrt()
        coefficients = getattr(grown, f"coefficients_{index}").detach()
        for r, c in ((0, 1), (1, 0)):
            assert torch.isclose(coefficients[r, c].norm(), ref)


def test_deterministic_in_seed_and_source_untouched() -> None:
    model = build(MixtureConfig(5, 3, 4, 3, templates=2), 5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = model.config
    rng = torch.get_rng_state()
    first, again, other = grow(model, seed=7), grow(model, seed=7), grow(model, seed=8)
    assert torch.equal(rng, torch.get_rng_state())
    assert model.config == config and not model.config.grown
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name])
    state, state_again = first.state_dict(), again.state_dict()
    assert all(torch.equal(state[name], state_again[name]) for name in state)
    assert not torch.equal(first.layer_coefficients(1), other.layer_coefficients(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [False, True])
def test_keeps_dtype_device_and_mode(dtype: torch.dtype, training: bool) -> None:
    torch.manual_seed(0)
    model = MixtureMLP(MixtureConfig(5, 3, 4, 2)).to(dtype).train(training)
    grown = grow(model)
    assert grown.training is training
    assert {p.dtype for p in grown.parameters()} == {dtype}
    assert {p.device for p in grown.parameters()} == {model.layer_templates(0).device}
    assert all(p.requires_grad for p in grown.parameters())
    assert grown is not model


def test_the_grown_model_trains_and_its_new_blocks_learn() -> None:
    model = build(MixtureConfig(4, 3, 6, 3), 6)
    grown = grow(model, noise=0.1).train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    start = grown.layer_coefficients(1).detach().clone()
    optimizer = torch.optim.Adam(grown.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(grown(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    moved = (grown.layer_coefficients(1).detach() - start).abs()
    assert moved[0, 1].max() > 0 and moved[1, 0].max() > 0


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (
            MixtureConfig(6, 3, 8, 3),
            MixtureConfig(6, 3, 12, 3, grown=True),
            r"grows a 'mixture' model by exactly 2x in width: target width must be "
            r"2\*member_width=16, but got 24",
        ),
        (
            MixtureConfig(6, 3, 8, 3),
            MixtureConfig(6, 3, 16, 3),
            r"target must be the grown config \(grown=True, member_width=8\)",
        ),
        (
            MixtureConfig(6, 3, 8, 3),
            MixtureConfig(6, 3, 8, 4, grown=True),
            "mixturegrowth keeps depth: target depth must be 3, but got 4",
        ),
        (
            MixtureConfig(6, 3, 8, 3),
            MixtureConfig(6, 3, 8, 3, templates=4, grown=True),
            "mixturegrowth keeps templates: target templates must be 2, but got 4",
        ),
        (
            MixtureConfig(6, 3, 8, 3, grown=True),
            MixtureConfig(6, 3, 8, 3, grown=True),
            "grows a 'mixture' model once: the model must have grown=False",
        ),
        (
            MixtureConfig(6, 3, 8, 3),
            MixtureConfig(6, 3, 8, 3),
            "target width must be 2\\*member_width=16, but got 8",
        ),
        (
            MixtureConfig(6, 3, 8, 3),
            MixtureConfig(6, 4, 8, 3, grown=True),
            "growth keeps out_features",
        ),
    ],
)
def test_rejects_other_targets_with_clear_errors(
    source: MixtureConfig, target: MixtureConfig, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        check_growth(source, target, "mixturegrowth")
    with pytest.raises(ValueError, match=message):
        expand(build(source), target, "mixturegrowth")
