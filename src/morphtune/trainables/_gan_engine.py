"""One sparse-GAN trial in plain PyTorch: SDST / DDST / dense GAN training and evaluation.

Balanced sparse GAN training (Wang, Wu, Hovakimyan, Sun, NeurIPS 2023; METHODS §3.3) on
the ``gan`` model family. The engine has :class:`~morphtune.trainables.TrialEngine`'s
interface, so the Ray Train loop drives either one.

One training step on a batch of real samples ``x`` (``B`` per worker):

1. **D step**: fakes ``G(z1)`` (no gradient), one discriminator pass over
   ``[x; G(z1)]`` (one pass, so a DDP-wrapped D sees one forward per backward), the
   standard GAN loss ``softplus(-D(x)) + softplus(D(G(z1)))``, Adam step, re-mask.
2. **G step**: non-saturating loss ``softplus(-D(G(z2)))`` through the unwrapped
   discriminator with its parameters frozen (so D's gradients are neither computed nor
   all-reduced), Adam step, re-mask. ``D(G_before(z2))`` is this pass's batch mean.
3. **Balance ratio** (no gradient): ``D(G_after(z2))`` and ``D(x)``, the same
   discriminator as step 2; the three batch means are averaged over the ranks when
   ``torch.distributed`` is initialised, so every rank queues the same ratio.
4. **G DST** at update steps: global magnitude drop and global dense-gradient growth
   (the gradients of step 2, DDP-averaged), new weights and their Adam moments zeroed.
5. **D control** (``gan_double``) every ``d_interval`` steps once the BR queue is full:
   raise / lower D's density by ``d_step`` (random growth / magnitude pruning, from a
   seeded generator every rank shares), or hold.

Both networks use Adam with ``betas = (0.5, 0.999)`` (the DCGAN setting; Wang et al.'s
SNGAN scripts use ``(0, 0.9)`` with hinge loss on CIFAR-10) at ``training.lr`` (cosine-
decayed over the run when ``training.schedule`` is ``cosine``) and
``training.weight_decay``; ``training.optimizer`` and ``momentum`` are not used.

Noise is drawn from a CPU generator seeded by ``(seed, rank)`` and carried in
checkpoints, so a restored engine continues exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from morphtune.data import DatasetSplit
from morphtune.data._mixture import MixtureSplit, mode_coverage
from morphtune.flops import model_cost
from morphtune.lr import base_learning_rate
from morphtune.methods.sparsity._gan import (
    BalanceQueue,
    GanSparsityConfig,
    apply_mask_update,
    change_density,
    density_count,
    discriminator_density_step,
    global_drop_and_grow,
)
from morphtune.methods.sparsity._masks import MaskSet
from morphtune.methods.sparsity._params import prunable_parameters
from morphtune.methods.sparsity._schedules import is_dst_update_step
from morphtune.methods.sparsity._updater import random_masks
from morphtune.models import TaskShape, config_from_spec, config_to_dict
from morphtune.models._gan import GAN, GANConfig
from morphtune.trainables._common import ShardedLoaders
from morphtune.trainables._device import DeviceSettings

__all__ = ["ADAM_BETAS", "EVAL_SAMPLES", "GanEngine", "frechet_distance"]

Wrap = Callable[[nn.Module], nn.Module]

#: Adam's betas for both networks (see the module docstring).
ADAM_BETAS = (0.5, 0.999)
#: Generated samples scored against the validation set at each evaluation.
EVAL_SAMPLES = 2048

# Offsets of the engine's seeded generators from ``training.seed``.
_MASK_SEED, _NOISE_SEED, _EVAL_SEED = 1, 2, 3
_RANK_STRIDE = 1_000_003


def _identity(module: nn.Module) -> nn.Module:
    return module


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigh;
    round-off negative eigenvalues clipped to 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance_from_moments(
    mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor
) -> float:
    """Fréchet (2-Wasserstein) distance between ``N(mean_a, cov_a)`` and ``N(mean_b,
    cov_b)``: ``|m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)`` (Heusel et
    al., NeurIPS 2017, in data space). The cross term uses the symmetric form, whose
    trace equals ``tr((C_a C_b)^1/2)``, so it is real without discarding an imaginary
    part; computed in float64."""
    mean_a, mean_b = mean_a.double(), mean_b.double()
    cov_a, cov_b = cov_a.double(), cov_b.double()
    root_a = _sqrt_psd(cov_a)
    cross = _sqrt_psd(root_a @ cov_b @ root_a)
    value = (mean_a - mean_b).square().sum() + torch.trace(cov_a + cov_b - 2 * cross)
    return float(value)


def frechet_distance(samples_a: torch.Tensor, samples_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sample sets (rows are samples,
    flattened; unbiased covariances); needs at least two samples in each."""
    a = samples_a.detach().reshape(samples_a.shape[0], -1).to("cpu", torch.float64)
    b = samples_b.detach().reshape(samples_b.shape[0], -1).to("cpu", torch.float64)
    if a.shape[0] < 2 or b.shape[0] < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            "frechet_distance needs >= 2 samples of the same size in each set, but got "
            f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    dim = a.shape[1]  # torch.cov of one variable is 0-d: reshape to (1, 1)
    cov_a, cov_b = torch.cov(a.T).reshape(dim, dim), torch.cov(b.T).reshape(dim, dim)
    return frechet_distance_from_moments(a.mean(dim=0), cov_a, b.mean(dim=0), cov_b)


def _dense_flops(module: nn.Module) -> int:
    """Forward FLOPs per sample of ``module``'s linear layers with every weight kept."""
    return sum(
        2 * layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0)
        for layer in module.modules()
        if isinstance(layer, nn.Linear)
    )


def _all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks when ``torch.distributed`` is initialised, else ``values``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    reduced = values.clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


class GanEngine:
    """Trains one sparse-GAN trial (the nested dict from ``resolve_trial_config``, with
    ``model.family == "gan"``); same interface as :class:`TrialEngine`.

    ``rank``/``world_size`` shard the training set; ``wrap`` wraps the generator and the
    discriminator separately for data parallelism (DDP). Masks are identical on every
    rank: initial masks and D's random growth come from a generator seeded by
    ``training.seed`` alone, G's growth from DDP-averaged gradients, and D's density
    decisions from the all-reduced balance ratio. ``precision`` ``bf16`` runs the D, G and
    balance-ratio forward passes under autocast (the balance ratio's means in float32); the
    samples scored by the Fréchet distance are generated in float32, so ``fd`` measures
    the generator, not bfloat16's rounding. ``pin_memory`` pins the loader's batches.
    """

    def __init__(
        self,
        trial: Mapping[str, Any],
        data: DatasetSplit,
        *,
        rank: int = 0,
        world_size: int = 1,
        wrap: Wrap = _identity,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        pin_memory: bool = False,
    ) -> None:
        self.trial = {section: dict(values) for section, values in trial.items()}
        family = self.trial["model"].get("family", "gan")
        if family != "gan":
            raise ValueError(f"GanEngine trains model family 'gan', but got family={family!r}")
        self.data = data
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.compute = DeviceSettings(self.device, precision, pin_memory)
        self._wrap = wrap
        training = self.trial["training"]
        self.seed: int = int(training["seed"])
        self.epochs: int = training["epochs"]
        loaders = ShardedLoaders.build(data, training, rank, world_size, pin_memory=pin_memory)
        self.batch_size, self.sampler, self.loader = (
            loaders.batch_size,
            loaders.sampler,
            loaders.train,
        )
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.epochs * self.steps_per_epoch
        self.settings = GanSparsityConfig.from_section(self.trial.get("sparsity", {}))
        self.step = 0
        self.epoch = 0
        self.train_flops = 0.0
        self.train_seconds = 0.0
        self.last_g_loss = math.nan
        self.last_d_loss = math.nan
        self.mask_updates = 0  # generator DST updates
        self.d_updates = 0  # discriminator density changes (and strict regrow steps)
        torch.manual_seed(self.seed)
        self.config: GANConfig = config_from_spec("gan", TaskShape.of(data), self.trial["model"])
        self.model = GAN(self.config).to(self.device)
        self.mask_generator = torch.Generator().manual_seed(self.seed + _MASK_SEED)
        self.noise = torch.Generator().manual_seed(self.seed + _NOISE_SEED + _RANK_STRIDE * rank)
        self.g_masks = self._initial_masks(self.model.generator, self.settings.density)
        self.d_masks = self._initial_masks(self.model.discriminator, self.settings.d_density)
        self.d_density = self.settings.d_density if self.settings.sparse else 1.0
        self.queue = BalanceQueue(self.settings.br_window)
        self.g_net = self._wrap(self.model.generator)
        self.d_net = self._wrap(self.model.discriminator)
        self.g_optimizer = self._make_optimizer(self.model.generator)
        self.d_optimizer = self._make_optimizer(self.model.discriminator)
        self._g_dense_flops = _dense_flops(self.model.generator)
        self._update_costs()

    # ------------------------------------------------------------------ building

    def _initial_masks(self, net: nn.Module, density: float) -> MaskSet | None:
        """Random masks at ``density`` (the sparsity section's distribution), applied."""
        if not self.settings.sparse:
            return None
        params = prunable_parameters(net)
        masks = random_masks(
            params,
            density,
            self.settings.distribution,
            erk_power=self.settings.erk_power,
            generator=self.mask_generator,
        )
        mask_set = MaskSet(net, masks)
        mask_set.apply()
        return mask_set

    def _make_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        training = self.trial["training"]
        return torch.optim.Adam(
            net.parameters(),
            lr=training["lr"],
            betas=ADAM_BETAS,
            weight_decay=training.get("weight_decay", 0.0),
        )

    def _update_costs(self) -> None:
        self._cost = model_cost(self.model)
        self._g_flops = model_cost(self.model.generator).flops
        self._d_flops = model_cost(self.model.discriminator).flops

    # ------------------------------------------------------------------ training

    def learning_rate(self, step: int) -> float:
        """``training.lr``, cosine-decayed to 0 over the run for ``schedule: cosine``."""
        training = self.trial["training"]
        return base_learning_rate(
            step,
            peak=float(training["lr"]),
            total_steps=self.total_steps,
            schedule=training.get("schedule", "constant"),
        )

    def _latent(self, count: int) -> torch.Tensor:
        z = torch.randn(count, self.config.latent_dim, generator=self.noise)
        return z.to(self.device)

    def train_step(self, real: torch.Tensor) -> tuple[float, float]:
        """One D step, one G step, the balance ratio and any mask update due after it;
        returns ``(g_loss, d_loss)``."""
        real = self.compute.move(real)
        batch = real.shape[0]
        lr = self.learning_rate(self.step)
        for optimizer in (self.g_optimizer, self.d_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = lr
        generator, discriminator = self.model.generator, self.model.discriminator

        # Discriminator step: real and fake in one pass.
        with torch.no_grad(), self.compute.autocast():
            fake = generator(self._latent(batch))
        self.d_optimizer.zero_grad(set_to_none=True)
        with self.compute.autocast():
            logits = self.d_net(torch.cat([real, fake.to(real.dtype)]))
            d_loss = F.softplus(-logits[:batch]).mean() + F.softplus(logits[batch:]).mean()
        d_loss.backward()
        self.d_optimizer.step()
        if self.d_masks is not None:
            self.d_masks.apply()

        # Generator step through the frozen, unwrapped discriminator.
        z = self._latent(batch)
        self.g_optimizer.zero_grad(set_to_none=True)
        discriminator.requires_grad_(False)
        try:
            with self.compute.autocast():
                fake_logits = discriminator(self.g_net(z))
                g_loss = F.softplus(-fake_logits).mean()
            g_loss.backward()
        finally:
            discriminator.requires_grad_(True)
        self.g_optimizer.step()
        if self.g_masks is not None:
            self.g_masks.apply()

        # Balance ratio: D(G_after(z)), D(G_before(z)), D(x) under the same D.
        with torch.no_grad(), self.compute.autocast():
            after = discriminator(generator(z)).float().mean()
            real_mean = discriminator(real).float().mean()
        means = torch.stack([after, fake_logits.detach().float().mean(), real_mean]).double()
        fake_after, fake_before, real_score = _all_reduce_mean(means).tolist()
        self.queue.push(fake_after, fake_before, real_score)

        # forward FLOPs per sample: D step G + 3 x D on 2B; G step 3 x G + 2 x D (input
        # gradient only); BR G + D on 2B. So 5 G + 10 D per sample, on every worker.
        step_flops = 5.0 * self._g_flops + 10.0 * self._d_flops
        self.train_flops += step_flops * batch * self.world_size
        self.step += 1
        if self._generator_update_due():
            # the grow score needs the dense weight gradient: a dense-cost backward pass
            self.train_flops += (self._g_dense_flops - self._g_flops) * batch * self.world_size
            self.update_generator()
        if self.settings.method == "gan_double" and self.step % self.settings.d_interval == 0:
            self.control_discriminator()
        return float(g_loss.detach()), float(d_loss.detach())

    def _generator_update_due(self) -> bool:
        return self.g_masks is not None and is_dst_update_step(
            self.step,
            interval=self.settings.update_interval,
            end_step=self.settings.end_step(self.total_steps),
        )

    def update_generator(self) -> None:
        """G's DST step: global magnitude drop, global growth by the dense gradients of
        the last G step (their ``.grad``), at the annealed drop fraction."""
        if self.g_masks is None:
            raise RuntimeError("the generator has no masks (sparsity.method 'none')")
        params = self.g_masks.parameters()
        gradients = {}
        for name, param in params.items():
            if param.grad is None:
                raise RuntimeError(f"generator parameter {name!r} has no gradient to grow by")
            gradients[name] = param.grad
        fraction = self.settings.drop_fraction_at(self.step, self.total_steps)
        update = global_drop_and_grow(self.g_masks.masks, params, fraction, gradients=gradients)
        apply_mask_update(self.g_masks, update, self.g_optimizer)
        self.mask_updates += 1
        self._update_costs()

    def control_discriminator(self) -> str:
        """DDST's density control on D from the queued balance ratio; returns the action
        (``hold`` while the queue is not yet full)."""
        if self.d_masks is None:
            raise RuntimeError("the discriminator has no masks (sparsity.method 'none')")
        if not self.queue.full:
            return "hold"
        settings = self.settings
        decision = discriminator_density_step(
            self.d_density,
            self.queue.ratio(),
            lower=settings.balance_lower,
            upper=settings.balance_upper,
            step=settings.d_step,
            cap=settings.d_cap,
            strict=settings.d_strict,
        )
        params = self.d_masks.parameters()
        if decision.action in ("raise", "lower"):
            update = change_density(
                self.d_masks.masks, params, decision.density, self.mask_generator
            )
        elif decision.action == "regrow":
            fraction = settings.drop_fraction_at(self.step, self.total_steps)
            update = global_drop_and_grow(
                self.d_masks.masks, params, fraction, generator=self.mask_generator
            )
        else:
            return decision.action
        apply_mask_update(self.d_masks, update, self.d_optimizer)
        self.d_density = decision.density
        self.d_updates += 1
        self._update_costs()
        return decision.action

    def train_epoch(self) -> float:
        """One pass over this worker's shard; returns the mean generator loss."""
        started = time.perf_counter()
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        g_total, d_total, batches = 0.0, 0.0, 0
        for inputs, _ in self.loader:
            g_loss, d_loss = self.train_step(inputs)
            g_total += g_loss
            d_total += d_loss
            batches += 1
        self.epoch += 1
        self.train_seconds += time.perf_counter() - started
        self.last_g_loss = g_total / max(batches, 1)
        self.last_d_loss = d_total / max(batches, 1)
        return self.last_g_loss

    def run_epochs(self) -> Iterator[dict[str, Any]]:
        """Train the remaining epochs, yielding :meth:`metrics` after each one."""
        while self.epoch < self.epochs:
            self.train_epoch()
            yield self.metrics()

    # ---------------------------------------------------------------- evaluation

    @torch.no_grad()
    def generate(self, count: int = EVAL_SAMPLES) -> torch.Tensor:
        """``count`` samples from fixed, seeded noise (the same at every evaluation)."""
        self.model.eval()
        noise = torch.Generator().manual_seed(self.seed + _EVAL_SEED)
        samples = self.model.sample(count, noise)
        self.model.train()
        return samples

    def evaluate(self) -> dict[str, float]:
        """``fd`` between :data:`EVAL_SAMPLES` generated samples and the validation set
        (data space); for a Gaussian mixture also ``modes`` covered and the
        ``high_quality`` fraction (:func:`~morphtune.data._mixture.mode_coverage`)."""
        samples = self.generate()
        real = self.data.val.tensors[0]
        scores: dict[str, float] = {"fd": frechet_distance(samples, real)}
        if isinstance(self.data, MixtureSplit):
            coverage = mode_coverage(
                samples.reshape(samples.shape[0], -1), self.data.centres, self.data.std
            )
            scores["modes"] = coverage.modes
            scores["high_quality"] = coverage.high_quality
        return scores

    def metrics(self) -> dict[str, Any]:
        """Everything a GAN trial reports after an epoch."""
        cost = self._cost
        return {
            "epoch": self.epoch,
            "step": self.step,  # optimizer steps so far (per worker)
            **self.evaluate(),
            "balance_ratio": self.queue.ratio(),
            "br_skipped": self.queue.skipped,
            "density": self.g_masks.density() if self.g_masks is not None else 1.0,
            "d_density": self.d_masks.density() if self.d_masks is not None else 1.0,
            "mask_updates": self.mask_updates,
            "d_updates": self.d_updates,
            "params": cost.params,
            "nonzero_params": cost.nonzero_params,
            "flops": cost.flops,
            "train_flops": self.train_flops,
            "train_loss": self.last_g_loss,
            "d_loss": self.last_d_loss,
            "lr": self.learning_rate(self.step),
            "wall_s": self.train_seconds,
        }

    def d_target_nnz(self) -> int:
        """D's kept count at its nominal density (what a density change produces)."""
        total = sum(mask.numel() for mask in prunable_parameters(self.model.discriminator).values())
        return density_count(self.d_density, total)

    # --------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "family": "gan",
            "model_config": config_to_dict(self.config),
            "model": self.model.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "train_flops": self.train_flops,
            "train_seconds": self.train_seconds,
            "last_g_loss": self.last_g_loss,
            "last_d_loss": self.last_d_loss,
            "mask_updates": self.mask_updates,
            "d_updates": self.d_updates,
            "d_density": self.d_density,
            "queue": self.queue.state_dict(),
            "noise": self.noise.get_state(),
            "mask_generator": self.mask_generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint of an engine built from the same trial (weights, masks,
        optimizer moments, counters, BR queue and random generators)."""
        if state.get("family") != "gan":
            raise ValueError(f"checkpoint is not a GAN trial's (family={state.get('family')!r})")
        self.model.load_state_dict(state["model"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.train_flops = float(state["train_flops"])
        self.train_seconds = float(state["train_seconds"])
        self.last_g_loss = float(state["last_g_loss"])
        self.last_d_loss = float(state["last_d_loss"])
        self.mask_updates = int(state["mask_updates"])
        self.d_updates = int(state["d_updates"])
        self.d_density = float(state["d_density"])
        self.queue.load_state_dict(state["queue"])
        self.noise.set_state(state["noise"])
        self.mask_generator.set_state(state["mask_generator"])
        self._update_costs()
