"""One trial's training, in plain PyTorch: build, prune at init, train, grow, evaluate.

The Ray Train loop (``_loop.py``) drives this engine on every worker; keeping the engine
free of Ray means the same code trains a model in a notebook or a test, and the growth
and sparsity logic is exercised without a cluster.

Budget and timing are counted in optimizer steps of one worker: ``epochs`` passes over
that worker's shard. The growth plan (``methods.growth.GrowthPlan``) places each event on
that budget; an event happens before its step. After growth the optimizer is rebuilt for
the new parameters, carrying its state (moments, step counts) for every parameter the
operator copied verbatim, and the model is wrapped for data parallelism again. The
learning rate is a function of the global step and the growth steps (``lr_after``), so it
continues across growth and is the same on every rank and after a resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from morphtune.data import DatasetSplit
from morphtune.flops import config_cost, model_cost
from morphtune.methods.growth import (
    GrowthOptions,
    GrowthPlan,
    ScheduledEvent,
    expand,
    gstack_growth_fraction,
)
from morphtune.methods.sparsity import MaskSet, SparseUpdater, find_masks, masks_in_state_dict
from morphtune.models import (
    TaskShape,
    build_model,
    config_from_dict,
    config_from_spec,
    config_to_dict,
)
from morphtune.trainables._common import ShardedLoaders, make_optimizer
from morphtune.trainables._device import DeviceSettings
from morphtune.trainables._sparse import setup_sparsity

__all__ = ["TrialEngine"]

Wrap = Callable[[nn.Module], nn.Module]


def _identity(module: nn.Module) -> nn.Module:
    return module


class TrialEngine:
    """Trains one trial configuration (the nested dict from ``resolve_trial_config``).

    ``rank``/``world_size`` shard the training set (DistributedSampler); ``wrap`` wraps
    the model for data parallelism (DDP) and is applied again after growth. ``precision``
    (``fp32``/``bf16``) is the autocast dtype of the training and validation forward passes;
    ``pin_memory`` pins the loaders' batches for asynchronous copies to a GPU.
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
        self.data = data
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.compute = DeviceSettings(self.device, precision, pin_memory)
        self._wrap = wrap
        training = self.trial["training"]
        self.epochs: int = training["epochs"]
        loaders = ShardedLoaders.build(data, training, rank, world_size, pin_memory=pin_memory)
        self.batch_size, self.sampler = loaders.batch_size, loaders.sampler
        self.loader, self.val_loader = loaders.train, loaders.val
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.epochs * self.steps_per_epoch
        self.task = TaskShape.of(data)
        self.family: str = self.trial["model"]["family"]
        self.step = 0
        self.epoch = 0
        self.stage = 0  # growth events applied so far
        self.train_flops = 0.0
        self.train_seconds = 0.0
        self.last_train_loss = math.nan
        torch.manual_seed(training["seed"])
        initial = config_from_spec(self.family, self.task, self.trial["model"])
        self.plan = self._gstack_timed(GrowthPlan.from_section(self.trial["growth"]), initial)
        self.events: list[ScheduledEvent] = self.plan.schedule(initial, self.total_steps)
        self.model = self._build_model(initial)
        self.masks: MaskSet | None = None
        self.updater: SparseUpdater | None = None
        self._sparsify()
        self.mask_updates = 0
        self.mask_sync_mismatches = 0  # mask entries a rank computed differently from rank 0
        self._attach()

    # ------------------------------------------------------------------ building

    def _gstack_timed(self, plan: GrowthPlan, initial: Any) -> GrowthPlan:
        """With ``timing: gstack``, the plan's (single) event placed by G_stack's formula
        (tokens = samples, or sequence tokens for a language model)."""
        if self.trial["growth"].get("timing") != "gstack" or not plan.events:
            return plan
        event = plan.events[0]
        target_params = config_cost(self.family, event.target(initial)).params
        per_sample = self.task.input_shape[0] if self.task.task == "lm" else 1
        samples = self.total_steps * self.batch_size * self.world_size
        timing = gstack_growth_fraction(target_params, samples * per_sample)
        return replace(plan, events=(replace(event, at_fraction=timing.fraction),))

    def _build_model(self, config: Any) -> nn.Module:
        return build_model(self.family, config).to(self.device)

    def _sparsify(self) -> None:
        """Masks (and the updater that moves them) from the trial's sparsity section."""
        setup = setup_sparsity(
            self.model,
            self.trial["sparsity"],
            task=self.task,
            train=self.data.train,
            total_steps=self.total_steps,
            seed=self.trial["training"]["seed"],
            device=self.device,
        )
        self.masks, self.updater = setup.masks, setup.updater

    def _sync_masks(self) -> None:
        """Rank 0's masks on every rank after a mask update. Every rank computes the same
        update from the same (DDP-averaged) gradients and seeds, so this only guards
        against nondeterministic kernels; it costs one small broadcast per update."""
        import torch.distributed as dist

        if self.masks is None or self.world_size == 1 or not dist.is_initialized():
            return
        for mask in self.masks.masks.values():
            received = mask.to(torch.uint8)
            dist.broadcast(received, src=0)
            self.mask_sync_mismatches += int((received.bool() != mask).sum())
            mask.copy_(received.bool())

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model.parameters(), self.trial["training"])

    def _attach(self) -> None:
        """(Re)wrap the model for data parallelism and build a fresh optimizer for it."""
        self.net = self._wrap(self.model)
        self.optimizer = self._make_optimizer()
        self._cost = model_cost(self.model)
        self._dense_flops = config_cost(self.family, self.model_config).flops

    @property
    def model_config(self) -> Any:
        """The current (possibly grown) model's configuration."""
        return getattr(self.model, "config")  # noqa: B009  (every family keeps its config)

    @property
    def grown(self) -> bool:
        return self.stage > 0

    @property
    def grow_step(self) -> int | None:
        """The step of the next growth event (``None`` when none is left)."""
        return self.events[self.stage].step if self.stage < len(self.events) else None

    # ------------------------------------------------------------------ training

    def learning_rate(self, step: int) -> float:
        training = self.trial["training"]
        return self.plan.learning_rate(
            step,
            peak=float(training["lr"]),
            total_steps=self.total_steps,
            schedule=training["schedule"],
            grow_steps=[event.step for event in self.events[: self.stage]],
        )

    def grow_now(self) -> None:
        """Apply the next growth event: grow the model, carry optimizer state for the
        parameters the operator copied verbatim, and wrap the model again."""
        if self.stage >= len(self.events):
            raise RuntimeError(f"no growth event left (all {len(self.events)} applied)")
        scheduled = self.events[self.stage]
        seed = self.trial["training"]["seed"] + 7919 * (self.stage + 1)
        self.stage += 1
        self.grow_to(
            scheduled.target, scheduled.event.operator, seed=seed, options=self.plan.options
        )

    def grow_to(
        self,
        target: Any,
        operator: str,
        *,
        seed: int,
        options: GrowthOptions | None = None,
    ) -> dict[str, str]:
        """Grow the model to config ``target`` outside the growth plan (a PBT explore
        step, ``trainables._transition``): as :meth:`grow_now` does for a planned event,
        the optimizer is rebuilt carrying the state of every verbatim-copied parameter,
        the masks are rewrapped and the model is wrapped again; the plan's stage and the
        learning-rate schedule are left as they are. Returns the operator's carried map.
        A sparse updater, if any, still holds the old masks: rebind it."""
        old_params = dict(self.model.named_parameters())
        old_state = self.optimizer.state
        result = expand(self.model, target, operator, seed=seed, options=options)
        self.model = result.model.to(self.device)
        self.masks = MaskSet.from_model(self.model) if find_masks(self.model) else None
        self._attach()
        new_params = dict(self.model.named_parameters())
        for new_name, old_name in result.carried.items():
            state = old_state.get(old_params[old_name])
            if state:
                self.optimizer.state[new_params[new_name]] = {
                    key: value.clone() if torch.is_tensor(value) else value
                    for key, value in state.items()
                }
        return dict(result.carried)

    def recount_cost(self) -> None:
        """Recount the model's cost (nonzero parameters, FLOPs) after its masks changed
        outside a training step (a PBT prune or regrow)."""
        self._cost = model_cost(self.model)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.task.task == "lm":
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return F.cross_entropy(logits, labels)

    def train_epoch(self) -> float:
        """One pass over this worker's shard; returns the mean training loss."""
        started = time.perf_counter()
        self.net.train()
        self.sampler.set_epoch(self.epoch)
        total, batches = 0.0, 0
        for inputs, labels in self.loader:
            while self.grow_step is not None and self.step >= self.grow_step:
                self.grow_now()
            inputs, labels = self.compute.move(inputs), self.compute.move(labels)
            lr = self.learning_rate(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            with self.compute.autocast():
                loss = self._loss(self.net(inputs), labels)
            loss.backward()
            # forward + backward ~ 3x forward FLOPs, for every sample on every worker
            step_flops = 3.0 * self._cost.flops
            skip_step = False
            if self.updater is not None and self.updater.is_update_step(self.step):
                if self.updater.name == "rigl":
                    # RigL's grow score is the dense weight gradient: one dense-cost
                    # backward pass in place of a sparse one (Evci et al. 2020, App. H)
                    step_flops += self._dense_flops - self._cost.flops
                skip_step = self.updater.update(self.step, self.optimizer)
                self._sync_masks()
                self.mask_updates += 1
                self._cost = model_cost(self.model)
            if not skip_step:
                self.optimizer.step()
            if self.masks is not None:
                self.masks.apply()
            self.train_flops += step_flops * inputs.shape[0] * self.world_size
            total += float(loss.detach())
            batches += 1
            self.step += 1
        self.epoch += 1
        self.train_seconds += time.perf_counter() - started
        self.last_train_loss = total / max(batches, 1)
        return self.last_train_loss

    def run_epochs(self) -> Iterator[dict[str, Any]]:
        """Train the remaining epochs, yielding :meth:`metrics` after each one."""
        while self.epoch < self.epochs:
            self.train_epoch()
            yield self.metrics()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Validation loss and accuracy (per token for a language model) on the whole
        validation set."""
        self.net.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for inputs, labels in self.val_loader:
            inputs, labels = self.compute.move(inputs), self.compute.move(labels)
            with self.compute.autocast():
                logits = self.model(inputs)
            logits = logits.float().reshape(-1, logits.shape[-1])
            labels = labels.reshape(-1)
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            count += int(labels.shape[0])
        return loss_sum / max(count, 1), correct / max(count, 1)

    def metrics(self) -> dict[str, Any]:
        """Everything a trial reports after an epoch (see ``spec.REPORTED_METRICS``)."""
        val_loss, val_acc = self.evaluate()
        config = self.model_config
        cost = self._cost
        return {
            "epoch": self.epoch,
            "step": self.step,  # optimizer steps so far (per worker)
            "val_acc": val_acc,
            "val_loss": val_loss,
            "train_loss": self.last_train_loss,
            "params": cost.params,
            "nonzero_params": cost.nonzero_params,
            "flops": cost.flops,
            "train_flops": self.train_flops,
            "density": self.masks.density() if self.masks is not None else 1.0,
            "mask_updates": self.mask_updates,
            "mask_sync_mismatches": self.mask_sync_mismatches,
            "width": config.width,
            "depth": config.depth,
            "growth_stage": self.stage,
            "grown": int(self.grown),
            "lr": self.learning_rate(self.step),
            "wall_s": self.train_seconds,
        }

    # --------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "family": self.family,
            "model_config": config_to_dict(self.model_config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "train_flops": self.train_flops,
            "train_seconds": self.train_seconds,
            "stage": self.stage,
            "mask_updates": self.mask_updates,
            "sparse_updater": self.updater.state_dict() if self.updater is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint, rebuilding the (possibly grown) shape it was saved with."""
        config = config_from_dict(state["family"], state["model_config"])
        self.model = self._build_model(config)
        weights = state["model"]
        if state.get("sparse_updater") is not None:
            # a fresh updater on the rebuilt model; its masks are then overwritten in
            # place by the checkpoint's mask buffers, and its own state restored
            self._sparsify()
            if self.updater is None:
                raise ValueError("checkpoint holds a sparse updater, but the trial has none")
            self.updater.load_state_dict(state["sparse_updater"])
        else:
            has_masks = bool(masks_in_state_dict(weights))
            self.masks = MaskSet.from_state_dict(self.model, weights) if has_masks else None
        self.model.load_state_dict(weights)
        self.mask_updates = int(state.get("mask_updates", 0))
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.train_flops = float(state["train_flops"])
        self.train_seconds = float(state["train_seconds"])
        self.stage = int(state["stage"])
        self._attach()
        self.optimizer.load_state_dict(state["optimizer"])
