"""One trial's training, in plain PyTorch: build, prune at init, train, grow, evaluate.

The Ray Train loop (``_loop.py``) drives this engine on every worker; keeping the engine
free of Ray means the same code trains a model in a notebook or a test, and the growth
and sparsity logic is exercised without a cluster.

Budget and timing are counted in optimizer steps of one worker: ``epochs`` passes over
that worker's shard. Growth happens before the first step at or after
``ceil(at_fraction * total_steps)``; the learning-rate schedule runs on the global step
and so continues unchanged across the growth event (the optimizer is rebuilt for the new
parameters; its state starts fresh).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from morphtune.data import DatasetSplit
from morphtune.flops import model_cost
from morphtune.methods.growth import grow, growth_target
from morphtune.methods.sparsity import MaskSet, find_masks, masks_in_state_dict, prune_at_init
from morphtune.models import MLPConfig, build_model, mlp_config_from

__all__ = ["TrialEngine"]

Wrap = Callable[[nn.Module], nn.Module]


def _identity(module: nn.Module) -> nn.Module:
    return module


class TrialEngine:
    """Trains one trial configuration (the nested dict from ``resolve_trial_config``).

    ``rank``/``world_size`` shard the training set (DistributedSampler); ``wrap`` wraps
    the model for data parallelism (DDP) and is applied again after growth.
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
    ) -> None:
        self.trial = {section: dict(values) for section, values in trial.items()}
        self.data = data
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self._wrap = wrap
        training = self.trial["training"]
        self.epochs: int = training["epochs"]
        self.batch_size = max(1, training["batch_size"] // world_size)
        self.sampler: DistributedSampler[Any] = DistributedSampler(
            data.train, num_replicas=world_size, rank=rank, shuffle=True, seed=training["seed"]
        )
        self.loader = DataLoader(data.train, batch_size=self.batch_size, sampler=self.sampler)
        self.val_loader = DataLoader(data.val, batch_size=1024, shuffle=False)
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.epochs * self.steps_per_epoch
        growth = self.trial["growth"]
        self.grow_step: int | None = None
        if growth["operator"] != "none":
            self.grow_step = max(1, math.ceil(growth["at_fraction"] * self.total_steps))
        self.step = 0
        self.epoch = 0
        self.train_flops = 0.0
        self.train_seconds = 0.0
        self.last_train_loss = math.nan
        self.grown = False
        torch.manual_seed(training["seed"])
        self.model = self._build_model()
        self.masks = self._prune()
        self._attach()

    # ------------------------------------------------------------------ building

    def _build_model(self, config: MLPConfig | None = None) -> nn.Module:
        model_spec = self.trial["model"]
        if config is None:
            config = mlp_config_from(
                self.data.in_features,
                self.data.num_classes,
                width=model_spec["width"],
                depth=model_spec["depth"],
            )
        return build_model(model_spec["family"], config).to(self.device)

    def _prune(self) -> MaskSet | None:
        sparsity = self.trial["sparsity"]
        if sparsity["method"] == "none":
            return None
        masks = prune_at_init(
            self.model,
            sparsity["method"],
            sparsity["density"],
            sparsity["distribution"],
            seed=self.trial["training"]["seed"],
        )
        masks.apply()
        return masks

    def _attach(self) -> None:
        """(Re)wrap the model for data parallelism and build a fresh optimizer for it."""
        self.net = self._wrap(self.model)
        training = self.trial["training"]
        params = self.model.parameters()
        if training["optimizer"] == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params,
                lr=training["lr"],
                momentum=training["momentum"],
                weight_decay=training["weight_decay"],
            )
        elif training["optimizer"] == "adamw":
            self.optimizer = torch.optim.AdamW(
                params, lr=training["lr"], weight_decay=training["weight_decay"]
            )
        else:
            self.optimizer = torch.optim.Adam(
                params, lr=training["lr"], weight_decay=training["weight_decay"]
            )
        self._cost = model_cost(self.model)

    @property
    def model_config(self) -> MLPConfig:
        """The current (possibly grown) model's configuration."""
        config = getattr(self.model, "config", None)
        if not isinstance(config, MLPConfig):
            raise TypeError(f"model family without an MLPConfig: {type(self.model).__name__}")
        return config

    # ------------------------------------------------------------------ training

    def learning_rate(self, step: int) -> float:
        training = self.trial["training"]
        if training["schedule"] == "cosine" and self.total_steps > 0:
            return training["lr"] * 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))
        return float(training["lr"])

    def grow_now(self) -> None:
        """Apply the configured growth operator to the current model (function-preserving
        for net2net) and rebuild the optimizer and the data-parallel wrapper."""
        growth = self.trial["growth"]
        target = growth_target(self.model_config, growth["factor"])
        seed = self.trial["training"]["seed"] + 7919
        self.model = grow(
            self.model, target, growth["operator"], seed=seed, noise=growth["noise"]
        ).to(self.device)
        self.masks = MaskSet.from_model(self.model) if find_masks(self.model) else None
        self.grown = True
        self._attach()

    def train_epoch(self) -> float:
        """One pass over this worker's shard; returns the mean training loss."""
        started = time.perf_counter()
        self.net.train()
        self.sampler.set_epoch(self.epoch)
        total, batches = 0.0, 0
        for inputs, labels in self.loader:
            if self.grow_step is not None and not self.grown and self.step >= self.grow_step:
                self.grow_now()
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            lr = self.learning_rate(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.net(inputs), labels)
            loss.backward()
            self.optimizer.step()
            if self.masks is not None:
                self.masks.apply()
            # forward + backward ~ 3x forward FLOPs, for every sample on every worker
            self.train_flops += 3.0 * self._cost.flops * inputs.shape[0] * self.world_size
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
        """Validation loss and accuracy on the whole validation set."""
        self.net.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for inputs, labels in self.val_loader:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            logits = self.model(inputs)
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
            "val_acc": val_acc,
            "val_loss": val_loss,
            "train_loss": self.last_train_loss,
            "params": cost.params,
            "nonzero_params": cost.nonzero_params,
            "flops": cost.flops,
            "train_flops": self.train_flops,
            "density": self.masks.density() if self.masks is not None else 1.0,
            "width": max(config.hidden),
            "depth": len(config.hidden),
            "grown": int(self.grown),
            "lr": self.learning_rate(self.step),
            "wall_s": self.train_seconds,
        }

    # --------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "model_config": asdict(self.model_config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "train_flops": self.train_flops,
            "train_seconds": self.train_seconds,
            "grown": self.grown,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a checkpoint, rebuilding the (possibly grown) shape it was saved with."""
        saved = state["model_config"]
        config = MLPConfig(**{**saved, "hidden": tuple(saved["hidden"])})
        self.model = self._build_model(config)
        weights = state["model"]
        has_masks = bool(masks_in_state_dict(weights))
        self.masks = MaskSet.from_state_dict(self.model, weights) if has_masks else None
        self.model.load_state_dict(weights)
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.train_flops = float(state["train_flops"])
        self.train_seconds = float(state["train_seconds"])
        self.grown = bool(state["grown"])
        self._attach()
        self.optimizer.load_state_dict(state["optimizer"])
