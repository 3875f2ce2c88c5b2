"""Net2Net widening/deepening (METHODS §4.1): lossless, symmetric, mask-aware (MLP);
lossless with BatchNorm, replica statistics and symmetry on the CNN family."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from morphtune.methods.growth import expand, net2net_deepen, net2net_widen
from morphtune.methods.growth._net2net import net2net_deepen_cnn, net2net_widen_cnn
from morphtune.methods.sparsity import MaskSet, find_masks, prune_at_init
from morphtune.models import CNN, MLP, BasicBlock, CNNConfig, MLPConfig


@st.composite
def widen_cases(draw: st.DrawFn) -> tuple[MLPConfig, tuple[int, ...], int]:
    depth = draw(st.integers(1, 3))
    hidden = tuple(draw(st.lists(st.integers(1, 9), min_size=depth, max_size=depth)))
    extra = draw(st.lists(st.integers(0, 11), min_size=depth, max_size=depth))
    config = MLPConfig(
        in_features=draw(st.integers(1, 6)),
        out_features=draw(st.integers(1, 4)),
        hidden=hidden,
        bias=draw(st.booleans()),
    )
    return config, tuple(w + e for w, e in zip(hidden, extra, strict=True)), draw(st.integers(0, 9))


def build(config: MLPConfig, dtype: torch.dtype, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(config).to(dtype).eval()


@settings(max_examples=60, deadline=None)
@given(case=widen_cases())
def test_widening_preserves_the_function_fp64(case: tuple[MLPConfig, tuple[int, ...], int]) -> None:
    config, new_hidden, seed = case
    model = build(config, torch.float64, seed)
    wide = net2net_widen(model, new_hidden, seed=seed)
    assert wide.config == MLPConfig(
        config.in_features, config.out_features, new_hidden, config.bias
    )
    x = torch.randn(16, config.in_features, dtype=torch.float64)
    assert (wide(x) - model(x)).abs().max() <= 1e-12


@settings(max_examples=30, deadline=None)
@given(case=widen_cases())
def test_widening_preserves_the_function_fp32(case: tuple[MLPConfig, tuple[int, ...], int]) -> None:
    config, new_hidden, seed = case
    model = build(config, torch.float32, seed)
    wide = net2net_widen(model, new_hidden, seed=seed)
    x = torch.randn(16, config.in_features)
    assert (wide(x) - model(x)).abs().max() <= 1e-5


def test_new_units_copy_an_existing_unit_and_outgoing_weights_split() -> None:
    model = build(MLPConfig(3, 2, (4,)), torch.float64)
    wide = net2net_widen(model, (7,), seed=1)
    old_in, new_in = model.layers[0], wide.layers[0]
    # The first n units are unchanged; every new unit is a copy of one of them.
    assert torch.equal(new_in.weight[:4], old_in.weight)
    sources = []
    for j in range(4, 7):
        match = [i for i in range(4) if torch.equal(new_in.weight[j], old_in.weight[i])]
        assert len(match) == 1
        assert torch.equal(new_in.bias[j], old_in.bias[match[0]])
        sources.append(match[0])
    # Outgoing columns of the replicas of unit i sum back to the original column i.
    groups = {i: [i] + [4 + k for k, s in enumerate(sources) if s == i] for i in range(4)}
    for i, members in groups.items():
        summed = wide.layers[1].weight[:, members].sum(dim=1)
        torch.testing.assert_close(summed, model.layers[1].weight[:, i], rtol=0, atol=1e-15)


def replica_groups(weight: torch.Tensor, bias: torch.Tensor | None) -> list[list[int]]:
    rows = weight if bias is None else torch.cat([weight, bias[:, None]], dim=1)
    groups: list[list[int]] = []
    for j in range(rows.shape[0]):
        for group in groups:
            if torch.equal(rows[group[0]], rows[j]):
                group.append(j)
                break
        else:
            groups.append([j])
    return [group for group in groups if len(group) > 1]


def test_replicas_stay_bitwise_identical_through_sgd() -> None:
    model = build(MLPConfig(5, 3, (4, 6)), torch.float64).train()
    wide = net2net_widen(model, (9, 11), seed=3)
    groups = [replica_groups(layer.weight, layer.bias) for layer in wide.layers[:2]]
    assert all(groups)  # the replicas exist before training
    optimizer = torch.optim.SGD(wide.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        x = torch.randn(32, 5, dtype=torch.float64, generator=generator)
        y = torch.randint(0, 3, (32,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(wide(x), y).backward()
        optimizer.step()
    for index, layer_groups in enumerate(groups):
        fan_in, fan_out = wide.layers[index], wide.layers[index + 1]
        for group in layer_groups:
            for j in group[1:]:
                assert torch.equal(fan_in.weight[j], fan_in.weight[group[0]])
                assert torch.equal(fan_in.bias[j], fan_in.bias[group[0]])
                assert torch.equal(fan_out.weight[:, j], fan_out.weight[:, group[0]])
    assert not torch.equal(wide.layers[0].weight[:4], model.layers[0].weight)  # it trained


def test_noise_breaks_symmetry_and_keeps_the_function_approximately() -> None:
    model = build(MLPConfig(5, 3, (4,)), torch.float64)
    wide = net2net_widen(model, (8,), seed=0, noise=1e-2)
    assert not replica_groups(wide.layers[0].weight, wide.layers[0].bias)
    x = torch.randn(16, 5, dtype=torch.float64)
    diff = (wide(x) - model(x)).abs().max()
    assert 0 < diff < 0.1


def test_widening_a_sparse_model_preserves_function_and_masks() -> None:
    model = build(MLPConfig(6, 3, (5, 7)), torch.float64)
    prune_at_init(model, "random", 0.4, seed=2)
    with torch.no_grad():  # an un-applied pruned entry must not leak into the copy
        model.layers[0].weight[~model.layers[0].weight_keep_mask] = 3.0
    x = torch.randn(16, 6, dtype=torch.float64)
    expected = model(x)
    wide = net2net_widen(model, (9, 10), seed=5)
    assert (wide(x) - expected).abs().max() <= 1e-12
    masks = find_masks(wide)
    assert set(masks) == {"layers.0.weight", "layers.1.weight", "layers.2.weight"}
    for index, layer in enumerate(wide.layers):
        mask = masks[f"layers.{index}.weight"]
        assert mask.shape == layer.weight.shape
        assert torch.all(layer.weight[~mask] == 0)  # already applied
    # Rows of the grown fan-in mask are copies; the first n rows/columns are unchanged.
    assert torch.equal(masks["layers.0.weight"][:5], model.layers[0].weight_keep_mask)
    assert torch.equal(masks["layers.1.weight"][:7, :5], model.layers[1].weight_keep_mask)
    # The grown masks are live: they gate training like the source's.
    mask_set = MaskSet.from_model(wide)
    optimizer = torch.optim.SGD(wide.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    nn.functional.mse_loss(wide(x), torch.zeros_like(expected)).backward()
    optimizer.step()
    mask_set.apply()
    for name, param in mask_set.parameters().items():
        assert torch.all(param[~mask_set.masks[name]] == 0)


def test_source_is_untouched_and_dtype_device_mode_kept() -> None:
    model = build(MLPConfig(3, 2, (4, 4)), torch.float64).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wide = net2net_widen(model, (6, 5))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert wide is not model and wide.training
    assert {p.dtype for p in wide.parameters()} == {torch.float64}
    assert {p.device for p in wide.parameters()} == {model.layers[0].weight.device}


def test_widening_is_deterministic_in_the_seed() -> None:
    model = build(MLPConfig(3, 2, (16,)), torch.float64)
    a, b = net2net_widen(model, (64,), seed=1), net2net_widen(model, (64,), seed=1)
    c = net2net_widen(model, (64,), seed=2)
    assert torch.equal(a.layers[0].weight, b.layers[0].weight)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_widening_errors_name_the_layer_and_values() -> None:
    model = build(MLPConfig(3, 2, (4, 6)), torch.float64)
    with pytest.raises(
        ValueError,
        match=r"hidden layer 1 can only grow: new_hidden\[1\] must be an int >= 6, but got 5",
    ):
        net2net_widen(model, (4, 5))
    with pytest.raises(ValueError, match=r"one width per hidden layer \(2\), but got 1"):
        net2net_widen(model, (8,))
    with pytest.raises(ValueError, match=r"noise must be finite and >= 0, but got noise=-1.0"):
        net2net_widen(model, (4, 6), noise=-1.0)
    with pytest.raises(ValueError, match="Net2Net grows a morphtune MLP"):
        net2net_widen(nn.Linear(3, 2), (4,))  # type: ignore[arg-type]


@pytest.mark.parametrize("at", [0, 1, 2])
def test_deepening_inserts_an_identity_layer(at: int) -> None:
    model = build(MLPConfig(4, 3, (5, 6, 7)), torch.float64)
    deep = net2net_deepen(model, at)
    assert deep.config.hidden == (
        *model.config.hidden[: at + 1],
        model.config.hidden[at],
        *model.config.hidden[at + 1 :],
    )
    inserted = deep.layers[at + 1]
    assert torch.equal(inserted.weight, torch.eye(model.config.hidden[at], dtype=torch.float64))
    x = torch.randn(16, 4, dtype=torch.float64)
    assert (deep(x) - model(x)).abs().max() <= 1e-12


def test_deepening_carries_masks_under_new_names() -> None:
    model = build(MLPConfig(4, 3, (5, 6)), torch.float64)
    prune_at_init(model, "magnitude", 0.5)
    deep = net2net_deepen(model, 0)
    masks = find_masks(deep)
    assert set(masks) == {"layers.0.weight", "layers.2.weight", "layers.3.weight"}
    assert torch.equal(masks["layers.2.weight"], model.layers[1].weight_keep_mask)
    x = torch.randn(8, 4, dtype=torch.float64)
    assert (deep(x) - model(x)).abs().max() <= 1e-12
    with pytest.raises(ValueError, match="0 <= at < 2, but got at=2"):
        net2net_deepen(model, 2)


# --------------------------------------------------------------------------- CNN


@torch.no_grad()
def build_cnn(config: CNNConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> CNN:
    """A CNN with random BatchNorm parameters and running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = CNN(config).to(dtype)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.normal_()
            module.bias.normal_()
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)
    return model.eval()


def cnn_images(config: CNNConfig, batch: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = (batch, config.in_channels, config.image_size, config.image_size)
    return torch.randn(size, generator=generator, dtype=torch.float64)


@st.composite
def cnn_cases(draw: st.DrawFn) -> tuple[CNNConfig, CNNConfig, int]:
    stages = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 5), min_size=stages, max_size=stages))
    blocks = draw(st.lists(st.integers(1, 2), min_size=stages, max_size=stages))
    config = CNNConfig(
        draw(st.integers(1, 3)), draw(st.integers(3, 8)), draw(st.integers(1, 4)), widths, blocks
    )
    extra_w = draw(st.lists(st.integers(0, 7), min_size=stages, max_size=stages))
    extra_b = draw(st.lists(st.integers(0, 2), min_size=stages, max_size=stages))
    target = CNNConfig(
        config.in_channels,
        config.image_size,
        config.num_classes,
        tuple(w + e for w, e in zip(widths, extra_w, strict=True)),
        tuple(b + e for b, e in zip(blocks, extra_b, strict=True)),
    )
    return config, target, draw(st.integers(0, 99))


@settings(max_examples=40, deadline=None)
@given(case=cnn_cases())
def test_cnn_growth_preserves_the_function_fp64(case: tuple[CNNConfig, CNNConfig, int]) -> None:
    config, target, seed = case
    model = build_cnn(config, seed)
    x = cnn_images(config, seed=seed)
    with torch.no_grad():
        expected = model(x)
        grown = expand(model, target, "net2net", seed=seed).model
        assert grown.config == target
        assert (grown(x) - expected).abs().max() <= 1e-10  # eval mode: running statistics
        # Train mode too: a replica channel has its source channel's batch statistics.
        assert (grown.train()(x) - model.train()(x)).abs().max() <= 1e-10


def test_cnn_growth_preserves_the_function_fp32() -> None:
    config = CNNConfig(3, 8, 5, (4, 6, 5), (1, 2, 1))
    model = build_cnn(config, dtype=torch.float32)
    x = cnn_images(config).float()
    grown = expand(model, CNNConfig(3, 8, 5, (7, 9, 10), (2, 3, 2)), "net2net", seed=3).model
    with torch.no_grad():
        assert (grown(x) - model(x)).abs().max() <= 1e-5


def bn_of(model: CNN) -> list[tuple[str, nn.Conv2d, nn.BatchNorm2d]]:
    """Every conv and the BatchNorm after it."""
    pairs = [("stem", model.stem, model.stem_bn)]
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            assert isinstance(block, BasicBlock)
            pairs += [
                (f"stages.{s}.{b}.conv1", block.conv1, block.bn1),
                (f"stages.{s}.{b}.conv2", block.conv2, block.bn2),
            ]
            if block.proj is not None and block.proj_bn is not None:
                pairs.append((f"stages.{s}.{b}.proj", block.proj, block.proj_bn))
    return pairs


def test_every_cnn_replica_gets_batchnorm_parameters_and_statistics() -> None:
    # The reference copies statistics to the last replica only (METHODS §4.1 pitfall).
    config = CNNConfig(2, 6, 3, (3, 2), (2, 1))
    model = build_cnn(config)
    wide = net2net_widen_cnn(model, (13, 11), seed=4)
    stats = ("weight", "bias", "running_mean", "running_var")
    for (name, conv, bn), (_, wide_conv, wide_bn) in zip(bn_of(model), bn_of(wide), strict=True):
        n = conv.out_channels
        assert torch.equal(wide_bn.num_batches_tracked, bn.num_batches_tracked)
        sources = []
        for j in range(wide_conv.out_channels):
            # The replica's fan-in equals exactly one original channel's in the wide conv.
            match = [i for i in range(n) if torch.equal(wide_conv.weight[j], wide_conv.weight[i])]
            assert len(match) == 1 and (j >= n or match == [j]), (name, j)
            sources.append(match[0])
            for stat in stats:
                got, want = getattr(wide_bn, stat)[j], getattr(bn, stat)[match[0]]
                assert torch.equal(got, want), (name, j, stat)
        assert len(sources) > len(set(sources))  # replicas exist (e.g. 13 from 3)
        assert max(sources.count(i) for i in set(sources)) >= 3  # several per channel


def cnn_replica_groups(weight: torch.Tensor) -> list[list[int]]:
    groups: list[list[int]] = []
    for j in range(weight.shape[0]):
        for group in groups:
            if torch.equal(weight[group[0]], weight[j]):
                group.append(j)
                break
        else:
            groups.append([j])
    return [group for group in groups if len(group) > 1]


def test_cnn_replicas_stay_bitwise_identical_through_sgd() -> None:
    config = CNNConfig(3, 6, 4, (3, 4), (1, 2))
    model = build_cnn(config)
    wide = net2net_widen_cnn(model, (7, 9), seed=2).train()
    pairs = bn_of(wide)
    groups = {name: cnn_replica_groups(conv.weight) for name, conv, _ in pairs}
    assert all(groups.values())
    optimizer = torch.optim.SGD(wide.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(8, 3, 6, 6, dtype=torch.float64, generator=generator)
        y = torch.randint(0, 4, (8,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(wide(x), y).backward()
        optimizer.step()
    for name, conv, bn in pairs:
        for group in groups[name]:
            for j in group[1:]:
                assert torch.equal(conv.weight[j], conv.weight[group[0]]), (name, j)
                for stat in ("weight", "bias", "running_mean", "running_var"):
                    tensor = getattr(bn, stat)
                    assert torch.equal(tensor[j], tensor[group[0]]), (name, j, stat)
    # The head's fan-out columns of stream replicas stay equal too.
    last = groups["stages.1.0.conv2"]
    for group in last:
        for j in group[1:]:
            assert torch.equal(wide.head.weight[:, j], wide.head.weight[:, group[0]])
    assert not torch.equal(wide.stem.weight[:3], model.stem.weight)  # it trained


def test_cnn_noise_breaks_symmetry_and_keeps_the_function_approximately() -> None:
    config = CNNConfig(3, 6, 4, (3, 4), (1, 1))
    model = build_cnn(config)
    wide = net2net_widen_cnn(model, (6, 8), seed=0, noise=1e-2)
    for _, conv, _ in bn_of(wide):
        assert not cnn_replica_groups(conv.weight)
    x = cnn_images(config)
    with torch.no_grad():
        diff = (wide(x) - model(x)).abs().max()
    assert 0 < diff < 0.5


def test_cnn_deepening_appends_identity_blocks() -> None:
    config = CNNConfig(3, 8, 4, (4, 6), (1, 2))
    model = build_cnn(config)
    deep = net2net_deepen_cnn(model, (3, 2))
    assert deep.config.blocks == (3, 2)
    for new in list(deep.stages[0])[1:]:
        assert isinstance(new, BasicBlock) and new.proj is None
        assert torch.all(new.bn2.weight == 0) and torch.all(new.bn2.bias == 0)
        centre = torch.zeros(3, 3, dtype=torch.float64)
        centre[1, 1] = 1
        for conv in (new.conv1, new.conv2):
            expected = torch.eye(4, dtype=torch.float64)[:, :, None, None] * centre
            assert torch.equal(conv.weight, expected)
        eps = new.bn1.eps
        assert torch.allclose(new.bn1.weight, torch.full((4,), (1 + eps) ** 0.5).double())
        assert torch.all(new.bn1.running_mean == 0) and torch.all(new.bn1.running_var == 1)
    x = cnn_images(config)
    with torch.no_grad():
        assert (deep(x) - model(x)).abs().max() <= 1e-12
        assert (deep.train()(x) - model.train()(x)).abs().max() <= 1e-12


def test_cnn_growth_keeps_source_mode_dtype_and_carries_unchanged_parameters() -> None:
    config = CNNConfig(3, 8, 4, (4, 6), (1, 2))
    model = build_cnn(config).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deeper = expand(model, CNNConfig(3, 8, 4, (4, 6), (2, 4)), "net2net", seed=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert deeper.model.training and all(m.training for m in deeper.model.modules())
    assert {p.dtype for p in deeper.model.parameters()} == {torch.float64}
    # Depth only: every source parameter is a verbatim copy under its own name.
    assert deeper.carried == {name: name for name, _ in model.named_parameters()}
    wider = expand(model, CNNConfig(3, 8, 4, (5, 6), (1, 2)), "net2net", seed=1)
    # Stage 0 widened: its stream and the block inputs of stage 1's first block change.
    assert "stem.weight" not in wider.carried and "stages.0.0.conv1.weight" not in wider.carried
    assert wider.carried["head.weight"] == "head.weight"  # stage 1 kept its width
    assert wider.carried["stages.1.1.conv2.weight"] == "stages.1.1.conv2.weight"
    assert "stages.1.0.conv1.weight" not in wider.carried  # reads the widened stream


def test_cnn_growth_is_deterministic_in_the_seed() -> None:
    model = build_cnn(CNNConfig(3, 8, 4, (4, 6), (1, 1)))
    a, b = net2net_widen_cnn(model, (12, 12), seed=1), net2net_widen_cnn(model, (12, 12), seed=1)
    c = net2net_widen_cnn(model, (12, 12), seed=2)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not torch.equal(a.stem.weight, c.stem.weight)


def test_cnn_growth_errors_name_the_field_and_values() -> None:
    model = build_cnn(CNNConfig(3, 8, 4, (4, 6), (1, 2)))
    with pytest.raises(
        ValueError, match=r"stage 1 can only grow: new_config.widths\[1\] must be >= 6, but got 5"
    ):
        net2net_widen_cnn(model, (8, 5))
    with pytest.raises(ValueError, match=r"new_config.blocks\[1\] must be >= 2, but got 1"):
        expand(model, CNNConfig(3, 8, 4, (4, 6), (3, 1)), "net2net")
    with pytest.raises(ValueError, match="number of cnn stages"):
        expand(model, CNNConfig(3, 8, 4, (4, 6, 8), (1, 2, 1)), "net2net")
    with pytest.raises(ValueError, match=r"new_widths=.* is not a valid cnn width"):
        net2net_widen_cnn(model, (8,))
    with pytest.raises(ValueError, match=r"noise must be finite and >= 0, but got noise=-1.0"):
        net2net_widen_cnn(model, (4, 6), noise=-1.0)
    with pytest.raises(ValueError, match="Net2Net grows a morphtune CNN"):
        net2net_deepen_cnn(build(MLPConfig(3, 2, (4,)), torch.float64), (2,))  # type: ignore[arg-type]


def test_masked_cnn_is_refused() -> None:
    model = build_cnn(CNNConfig(3, 8, 4, (4, 6), (1, 1)))
    prune_at_init(model, "random", 0.5, seed=0)
    with pytest.raises(ValueError, match="'net2net' does not grow the sparsity masks of a 'cnn'"):
        expand(model, CNNConfig(3, 8, 4, (8, 12), (1, 1)), "net2net")
