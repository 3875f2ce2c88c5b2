"""The sparse-GAN trial engine without Ray: SDST, DDST, checkpoints, ranks, metrics."""

from __future__ import annotations

import copy
import io
import math
import os
from pathlib import Path
from typing import Any

import pytest
import scipy.linalg
import torch
import torch.multiprocessing as mp

from morphtune.data import load_dataset
from morphtune.flops import config_cost, model_cost
from morphtune.methods.sparsity import find_masks
from morphtune.methods.sparsity._gan import density_count
from morphtune.trainables._gan_engine import (
    GanEngine,
    frechet_distance,
    frechet_distance_from_moments,
)
from tests.net import free_port

MIXTURE = load_dataset("gaussian_mixture", seed=0)


def gan_trial(sparsity: dict[str, Any] | None = None, **training: Any) -> dict[str, Any]:
    """A trial as ``resolve_trial_config`` gives it (unused model keys included)."""
    return {
        "dataset": {"name": "gaussian_mixture", "seed": 0, "val_fraction": 0.2, "options": {}},
        "model": {"family": "gan", "width": 32, "depth": 2, "head_dim": 16, "stages": 2},
        "training": {
            "epochs": 3,
            "batch_size": 64,
            "lr": 1e-3,
            "seed": 0,
            "optimizer": "adam",
            "momentum": 0.9,
            "weight_decay": 0.0,
            "schedule": "constant",
            **training,
        },
        "growth": {"operator": "none"},
        "sparsity": {
            "method": "gan_double",
            "density": 0.3,
            "d_density": 0.5,
            "distribution": "erk",
            "update_interval": 10,
            "drop_fraction": 0.3,
            "d_interval": 15,
            "br_window": 5,
            "balance_lower": 0.05,
            "balance_upper": 0.15,
            **(sparsity or {}),
        },
    }


def masks_of(engine: GanEngine) -> dict[str, torch.Tensor]:
    return {name: mask.clone() for name, mask in find_masks(engine.model).items()}


def g_nnz(engine: GanEngine) -> int:
    assert engine.g_masks is not None
    return sum(engine.g_masks.layer_nnz().values())


def d_total(engine: GanEngine) -> int:
    assert engine.d_masks is not None
    return sum(mask.numel() for mask in engine.d_masks.masks.values())


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_diagonal_gaussians_is_closed_form() -> None:
    mean_a, mean_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var_a, var_b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    expected = 1.0 + 4.0 + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum().item()  # 5 + 1 + 1 + 0
    value = frechet_distance_from_moments(mean_a, torch.diag(var_a), mean_b, torch.diag(var_b))
    assert value == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_scipy_sqrtm_for_non_commuting_covariances(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    b = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    cov_a, cov_b = a @ a.T + 0.1 * torch.eye(5), b @ b.T
    mean_a = torch.randn(5, generator=generator, dtype=torch.float64)
    mean_b = torch.randn(5, generator=generator, dtype=torch.float64)
    cross = scipy.linalg.sqrtm((cov_a @ cov_b).numpy()).real.trace()
    expected = float((mean_a - mean_b).square().sum() + torch.trace(cov_a + cov_b) - 2 * cross)
    assert frechet_distance_from_moments(mean_a, cov_a, mean_b, cov_b) == pytest.approx(
        expected, rel=1e-9
    )
    assert frechet_distance_from_moments(mean_b, cov_b, mean_a, cov_a) == pytest.approx(
        expected, rel=1e-9
    )


def test_frechet_distance_of_samples_uses_their_moments() -> None:
    points = MIXTURE.val.tensors[0].double()
    assert frechet_distance(points, points) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(points, points + 1.0) == pytest.approx(2.0, abs=1e-9)
    one_dim = points[:, :1]
    assert frechet_distance(one_dim, one_dim + 3.0) == pytest.approx(9.0, abs=1e-9)
    with pytest.raises(ValueError, match="frechet_distance needs >= 2 samples"):
        frechet_distance(points[:1], points)


# ------------------------------------------------------------------ training


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_short_sparse_training_improves_the_frechet_distance(seed: int) -> None:
    trial = gan_trial(
        {"method": "gan_single", "density": 0.5, "d_density": 1.0, "update_interval": 50},
        epochs=40,
        batch_size=256,
        lr=2e-3,
        schedule="cosine",
        seed=seed,
    )
    trial["model"].update(width=128, depth=2)
    engine = GanEngine(trial, MIXTURE)
    before = engine.evaluate()["fd"]
    for _ in range(engine.epochs):
        engine.train_epoch()
    after = engine.evaluate()["fd"]
    assert engine.total_steps == 280
    assert engine.mask_updates == 5  # steps 50, 100, ..., 250
    assert after < 0.5 * before


def test_engine_queues_the_balance_ratio_of_its_own_discriminator_outputs() -> None:
    engine = GanEngine(gan_trial(), MIXTURE)
    real = next(iter(engine.loader))[0]
    generator_before = copy.deepcopy(engine.model.generator)
    noise = torch.Generator()
    noise.set_state(engine.noise.get_state())
    engine.train_step(real)
    # replay the step's noise: z1 for the D step, z2 for the G step and the ratio
    latent = engine.config.latent_dim
    torch.randn(real.shape[0], latent, generator=noise)
    z = torch.randn(real.shape[0], latent, generator=noise)
    discriminator = engine.model.discriminator
    with torch.no_grad():
        before = float(discriminator(generator_before(z)).mean())
        after = float(discriminator(engine.model.generator(z)).mean())
        real_score = float(discriminator(real).mean())
    assert engine.queue.ratios == (
        pytest.approx((after - before) / (real_score - before), rel=1e-5),
    )


def test_metrics_are_the_gan_signals_with_exact_costs() -> None:
    engine = GanEngine(gan_trial(), MIXTURE)
    metrics = next(engine.run_epochs())
    expected = {
        "epoch", "step", "fd", "modes", "high_quality", "balance_ratio", "br_skipped", "density",
        "d_density", "mask_updates", "d_updates", "params", "nonzero_params", "flops",
        "train_flops", "train_loss", "d_loss", "lr", "wall_s",
    }  # fmt: skip
    assert set(metrics) == expected
    assert metrics["step"] == engine.step > 0  # the optimizer steps of the first epoch
    cost = model_cost(engine.model)
    assert (metrics["params"], metrics["nonzero_params"], metrics["flops"]) == (
        cost.params,
        cost.nonzero_params,
        cost.flops,
    )
    assert metrics["params"] == config_cost("gan", engine.config).params
    assert metrics["flops"] < config_cost("gan", engine.config).flops
    assert metrics["epoch"] == 1
    assert 0 <= metrics["modes"] <= 8
    assert 0.0 <= metrics["high_quality"] <= 1.0
    assert math.isfinite(metrics["fd"]) and math.isfinite(metrics["balance_ratio"])
    assert metrics["density"] == pytest.approx(0.3, abs=1e-3)


def test_dense_baseline_has_no_masks_and_counts_its_training_flops() -> None:
    engine = GanEngine(gan_trial({"method": "none"}, epochs=2), MIXTURE)
    assert engine.g_masks is None and engine.d_masks is None
    assert find_masks(engine.model) == {}
    for _ in range(engine.epochs):
        engine.train_epoch()
    metrics = engine.metrics()
    assert metrics["density"] == metrics["d_density"] == 1.0
    g_flops = model_cost(engine.model.generator).flops
    d_flops = model_cost(engine.model.discriminator).flops
    samples = engine.epochs * len(MIXTURE.train)
    assert metrics["train_flops"] == samples * (5 * g_flops + 10 * d_flops)


def test_generator_nnz_is_constant_across_its_updates_and_sdst_keeps_d_static() -> None:
    engine = GanEngine(gan_trial({"method": "gan_single"}), MIXTURE)
    start = masks_of(engine)
    counts = {g_nnz(engine)}
    for _ in range(engine.epochs):
        for inputs, _labels in engine.loader:
            engine.train_step(inputs)
            counts.add(g_nnz(engine))
    assert counts == {g_nnz(engine)}
    assert engine.mask_updates == len(range(10, engine.total_steps, 10))
    end = masks_of(engine)
    g_names = [n for n in start if n.startswith("generator.")]
    d_names = [n for n in start if n.startswith("discriminator.")]
    assert any(not torch.equal(start[n], end[n]) for n in g_names)
    assert all(torch.equal(start[n], end[n]) for n in d_names)
    assert engine.d_updates == 0


@pytest.mark.parametrize(
    ("ratios", "action", "change"),
    [
        ([0.2] * 5, "raise", +0.05),  # BR >= ub
        ([0.15] * 5, "raise", +0.05),
        ([0.0, 0.1, 0.05, 0.0, 0.0], "lower", -0.05),  # mean 0.03 <= lb
        ([0.1] * 5, "hold", 0.0),
        ([0.2] * 4, "hold", 0.0),  # queue not yet full
    ],
)
def test_d_density_follows_a_scripted_balance_ratio(
    ratios: list[float], action: str, change: float
) -> None:
    engine = GanEngine(gan_trial(), MIXTURE)
    for ratio in ratios:  # D(x_real) = 1, D(G_before(z)) = 0: the ratio is D(G_after(z))
        engine.queue.push(ratio, 0.0, 1.0)
    before = engine.d_density
    assert engine.control_discriminator() == action
    assert engine.d_density - before == pytest.approx(change, abs=1e-12)
    if action != "hold":
        assert engine.d_masks is not None
        nnz = sum(engine.d_masks.layer_nnz().values())
        assert nnz == density_count(engine.d_density, d_total(engine)) == engine.d_target_nnz()
        assert engine.metrics()["d_density"] == pytest.approx(nnz / d_total(engine))


def test_strict_ddst_regrows_d_at_the_cap_with_constant_count() -> None:
    engine = GanEngine(gan_trial({"d_cap": 0.5, "d_strict": True, "d_interval": 1000}), MIXTURE)
    engine.train_epoch()  # some weights and gradients to rank by
    for _ in range(5):
        engine.queue.push(0.9, 0.0, 1.0)
    before_masks, before_nnz = masks_of(engine), sum(engine.d_masks.layer_nnz().values())
    assert engine.control_discriminator() == "regrow"
    assert engine.d_density == 0.5
    assert sum(engine.d_masks.layer_nnz().values()) == before_nnz
    after = masks_of(engine)
    assert any(not torch.equal(before_masks[n], after[n]) for n in after if "discriminator" in n)


# ------------------------------------------------------------------ determinism


def test_engines_with_the_same_seed_build_and_train_identical_masks() -> None:
    first, second = GanEngine(gan_trial(), MIXTURE), GanEngine(gan_trial(), MIXTURE)
    other = GanEngine(gan_trial(seed=1), MIXTURE)
    for engine in (first, second):
        for _ in range(engine.epochs):
            engine.train_epoch()
    assert first.mask_updates > 0 and first.d_updates > 0
    masks_a, masks_b = masks_of(first), masks_of(second)
    assert masks_a.keys() == masks_b.keys()
    assert all(torch.equal(masks_a[n], masks_b[n]) for n in masks_a)
    for (name, a), b in zip(
        first.model.state_dict().items(), second.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    initial_other = masks_of(other)
    assert any(not torch.equal(initial_other[n], masks_a[n]) for n in masks_a)


def test_checkpoint_into_a_fresh_engine_continues_identically() -> None:
    trial = gan_trial(epochs=4)
    original = GanEngine(trial, MIXTURE)
    for _ in range(2):
        original.train_epoch()
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = GanEngine(trial, MIXTURE)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    left = list(original.run_epochs())
    right = list(restored.run_epochs())
    assert [m["epoch"] for m in right] == [3, 4]
    for a, b in zip(left, right, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_s"} == {
            k: v for k, v in b.items() if k != "wall_s"
        }
    for (name, a), b in zip(
        original.model.state_dict().items(), restored.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert original.d_updates == restored.d_updates > 0


def test_engine_refuses_other_families_and_foreign_checkpoints() -> None:
    trial = gan_trial()
    trial["model"]["family"] = "mlp"
    with pytest.raises(
        ValueError, match="GanEngine trains model family 'gan', but got family='mlp'"
    ):
        GanEngine(trial, MIXTURE)
    engine = GanEngine(gan_trial(), MIXTURE)
    with pytest.raises(ValueError, match="checkpoint is not a GAN trial's"):
        engine.load_state_dict({"family": "mlp"})


def test_digit_images_train_without_mixture_metrics() -> None:
    digits = load_dataset("digits", seed=0)
    trial = gan_trial({"method": "gan_single"}, epochs=1)
    engine = GanEngine(trial, digits)
    metrics = next(engine.run_epochs())
    assert engine.config.output == "sigmoid"
    assert "modes" not in metrics and "val_acc" not in metrics
    assert math.isfinite(metrics["fd"])


# ------------------------------------------------------------------ data parallel


def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        data = load_dataset("gaussian_mixture", seed=0)
        engine = GanEngine(
            gan_trial(epochs=2),
            data,
            rank=rank,
            world_size=world_size,
            wrap=DistributedDataParallel,
        )
        for _ in range(engine.epochs):
            engine.train_epoch()
        torch.save(
            {
                "model": engine.model.state_dict(),
                "queue": engine.queue.ratios,
                "d_density": engine.d_density,
                "updates": (engine.mask_updates, engine.d_updates),
            },
            os.path.join(out, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_keep_identical_masks_weights_and_balance_ratio(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    zero, one = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert zero["updates"] == one["updates"]
    assert zero["updates"][0] > 0 and zero["updates"][1] > 0
    assert zero["d_density"] == one["d_density"]
    assert zero["queue"] == one["queue"]
    for name, tensor in zero["model"].items():
        assert torch.equal(tensor, one["model"][name]), name
