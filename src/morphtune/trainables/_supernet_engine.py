"""One supernet trial's training, in plain PyTorch: sandwich (or nested) steps on shared
weights, evaluated at the largest and the smallest subnet.

The engine has :class:`~morphtune.trainables.TrialEngine`'s interface, so the Ray Train
loop, checkpoints and resume are shared. Several subnets run forward and backward in one
step and the smaller ones leave parameters unused, which DDP's reducer does not allow;
so the supernet is not wrapped: after the step's gradients are accumulated they are
averaged across ranks with one all-reduce per parameter, then the optimizer steps. Every
rank draws the same subnets (a generator seeded by the trial), so ranks stay identical.

With ``precision`` ``bf16`` the whole sandwich step runs under autocast: it back-propagates
each subnet's loss as soon as it is computed, inside ``sandwich_step``. A backward pass
under autocast computes what one outside it would (each backward op runs in the dtype its
forward op was autocast to; parameters and gradients stay float32); the test suite checks
that on the CPU. BatchNorm recalibration and validation run under autocast as well, so
the recalibrated statistics are those of the activations the subnet trains on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from morphtune.data import DatasetSplit
from morphtune.flops import config_cost
from morphtune.lr import base_learning_rate
from morphtune.methods.supernet import Supernet, build_supernet, recalibrate_bn, sandwich_step
from morphtune.models import TaskShape
from morphtune.spec import supernet_section
from morphtune.trainables._common import ShardedLoaders, make_optimizer
from morphtune.trainables._device import DeviceSettings

__all__ = ["SupernetEngine"]

Wrap = Callable[[nn.Module], nn.Module]


def _identity(module: nn.Module) -> nn.Module:
    return module


class SupernetEngine:
    """Trains a weight-sharing supernet for one trial (``supernet.enabled``)."""

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
        del wrap  # gradients are averaged by hand (see the module docstring)
        self.trial = {section: dict(values) for section, values in trial.items()}
        self.data = data
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.compute = DeviceSettings(self.device, precision, pin_memory)
        training = self.trial["training"]
        self.settings = self.trial["supernet"]
        self.epochs: int = training["epochs"]
        loaders = ShardedLoaders.build(data, training, rank, world_size, pin_memory=pin_memory)
        self.batch_size, self.sampler = loaders.batch_size, loaders.sampler
        self.loader, self.val_loader = loaders.train, loaders.val
        self.calibration_loader = DataLoader(
            data.train,
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(training["seed"]),
            pin_memory=pin_memory,
        )
        self.steps_per_epoch = len(self.loader)
        self.total_steps = self.epochs * self.steps_per_epoch
        self.task = TaskShape.of(data)
        self.family: str = self.trial["model"]["family"]
        self.step = 0
        self.epoch = 0
        self.train_flops = 0.0
        self.train_seconds = 0.0
        self.last_train_loss = math.nan
        torch.manual_seed(training["seed"])
        self.model: Supernet = build_supernet(
            self.family, self.task, supernet_section(self.trial)
        ).to(self.device)
        self.generator = torch.Generator().manual_seed(training["seed"] + 1)
        self.optimizer = self._make_optimizer()
        self._flops_cache: dict[tuple[tuple[str, Any], ...], float] = {}

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model.parameters(), self.trial["training"])

    def learning_rate(self, step: int) -> float:
        training = self.trial["training"]
        return base_learning_rate(
            step,
            peak=float(training["lr"]),
            total_steps=self.total_steps,
            schedule=training["schedule"],
        )

    def subnet_flops(self, subnet: Mapping[str, Any]) -> float:
        """Analytic forward FLOPs per sample of one subnet (cached)."""
        key = tuple(sorted(subnet.items()))
        if key not in self._flops_cache:
            config = self.model.subnet_config(subnet)
            self._flops_cache[key] = float(config_cost(self.family, config).flops)
        return self._flops_cache[key]

    def _average_gradients(self) -> None:
        import torch.distributed as dist

        if self.world_size == 1 or not dist.is_initialized():
            return
        for param in self.model.parameters():
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad)
            param.grad.div_(self.world_size)

    def train_epoch(self) -> float:
        """One pass over this worker's shard; returns the mean loss of the largest subnet."""
        started = time.perf_counter()
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        total, batches = 0.0, 0
        for inputs, labels in self.loader:
            inputs, labels = self.compute.move(inputs), self.compute.move(labels)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            with self.compute.autocast():
                result = sandwich_step(
                    self.model,
                    inputs,
                    labels,
                    optimizer=None,
                    n_random=self.settings["n_random"],
                    kd_weight=self.settings["kd_weight"],
                    temperature=self.settings["temperature"],
                    sampling=self.settings["sampling"],
                    generator=self.generator,
                )
            self._average_gradients()
            self.optimizer.step()
            flops = sum(self.subnet_flops(subnet) for subnet in result.subnets)
            self.train_flops += 3.0 * flops * inputs.shape[0] * self.world_size
            total += float(result.losses[0])
            batches += 1
            self.step += 1
        self.model.set_active(self.model.space.largest())
        self.epoch += 1
        self.train_seconds += time.perf_counter() - started
        self.last_train_loss = total / max(batches, 1)
        return self.last_train_loss

    def run_epochs(self) -> Iterator[dict[str, Any]]:
        while self.epoch < self.epochs:
            self.train_epoch()
            yield self.metrics()

    def _calibration_batches(self) -> list[torch.Tensor]:
        batches = []
        for inputs, _ in self.calibration_loader:
            batches.append(self.compute.move(inputs))
            if len(batches) >= self.settings["recalibration_batches"]:
                break
        return batches

    @torch.no_grad()
    def evaluate_subnet(self, subnet: Mapping[str, Any]) -> tuple[float, float]:
        """Validation loss and accuracy of ``subnet`` on the shared weights, after
        recalibrating BatchNorm statistics for it."""
        self.model.set_active(subnet)
        with self.compute.autocast():
            recalibrate_bn(self.model, self._calibration_batches())
        self.model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for inputs, labels in self.val_loader:
            inputs, labels = self.compute.move(inputs), self.compute.move(labels)
            with self.compute.autocast():
                logits = self.model(inputs).float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            count += int(labels.shape[0])
        self.model.set_active(self.model.space.largest())
        return loss_sum / max(count, 1), correct / max(count, 1)

    def metrics(self) -> dict[str, Any]:
        space = self.model.space
        val_loss, val_acc = self.evaluate_subnet(space.largest())
        _, val_acc_smallest = self.evaluate_subnet(space.smallest())
        largest = config_cost(self.family, self.model.subnet_config(space.largest()))
        return {
            "epoch": self.epoch,
            "step": self.step,  # optimizer steps so far (per worker)
            "val_acc": val_acc,
            "val_acc_smallest": val_acc_smallest,
            "val_loss": val_loss,
            "train_loss": self.last_train_loss,
            "params": largest.params,
            "nonzero_params": largest.nonzero_params,
            "flops": largest.flops,
            "train_flops": self.train_flops,
            "density": 1.0,
            "width": self.trial["model"]["width"],
            "depth": self.trial["model"]["depth"],
            "subnets": space.size(),
            "lr": self.learning_rate(self.step),
            "wall_s": self.train_seconds,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "family": self.family,
            "supernet": supernet_section(self.trial),
            "space": self.model.space.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "train_flops": self.train_flops,
            "train_seconds": self.train_seconds,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.train_flops = float(state["train_flops"])
        self.train_seconds = float(state["train_seconds"])
        self.generator.set_state(state["generator"])
