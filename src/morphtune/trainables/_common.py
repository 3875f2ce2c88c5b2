"""What every trial engine builds the same way: sharded loaders and the optimizer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from morphtune.data import DatasetSplit

__all__ = ["ShardedLoaders", "make_optimizer"]


def make_optimizer(
    params: Iterable[nn.Parameter], training: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """The ``training`` section's optimizer (``sgd`` with momentum, ``adamw``, ``adam``)."""
    if training["optimizer"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=training["lr"],
            momentum=training["momentum"],
            weight_decay=training["weight_decay"],
        )
    if training["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=training["lr"], weight_decay=training["weight_decay"])
    return torch.optim.Adam(params, lr=training["lr"], weight_decay=training["weight_decay"])


@dataclass
class ShardedLoaders:
    """This worker's shard of the training set (a seeded ``DistributedSampler``: every
    epoch a new order, the same on a resume), and the whole validation set."""

    sampler: DistributedSampler[Any]
    train: DataLoader[Any]
    val: DataLoader[Any]
    batch_size: int  # per worker

    @classmethod
    def build(
        cls,
        data: DatasetSplit,
        training: Mapping[str, Any],
        rank: int,
        world_size: int,
        *,
        pin_memory: bool = False,
    ) -> ShardedLoaders:
        """``pin_memory``: batches come out in page-locked host memory, so a GPU trial
        copies them asynchronously (``resources.pin_memory``)."""
        batch_size = max(1, training["batch_size"] // world_size)
        sampler: DistributedSampler[Any] = DistributedSampler(
            data.train, num_replicas=world_size, rank=rank, shuffle=True, seed=training["seed"]
        )
        train = DataLoader(
            data.train, batch_size=batch_size, sampler=sampler, pin_memory=pin_memory
        )
        val = DataLoader(data.val, batch_size=1024, shuffle=False, pin_memory=pin_memory)
        return cls(sampler, train, val, batch_size)
