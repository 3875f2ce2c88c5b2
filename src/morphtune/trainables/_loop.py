"""The Ray Train loop every worker of a trial runs (DDP over gloo on CPUs, NCCL on GPUs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from morphtune.data import load_dataset
from morphtune.trainables._engine import TrialEngine

__all__ = ["CHECKPOINT_FILE", "train_loop_per_worker"]

CHECKPOINT_FILE = "trial_state.pt"


def _rank_divergence(model: torch.nn.Module) -> float:
    """max - min over ranks of a parameter checksum: 0 when DDP kept the ranks identical
    (also across a growth event, which every rank applies with the same seed)."""
    import torch.distributed as dist

    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    high, low = checksum.clone(), checksum.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float(high - low)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train one trial; report metrics every epoch, rank 0 attaching a checkpoint.

    ``config["trial"]`` is the resolved nested trial configuration. A restarted worker
    group resumes from the latest checkpoint, rebuilding a grown model's shape.
    """
    trial = config["trial"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    dataset = trial["dataset"]
    data = load_dataset(
        dataset["name"],
        seed=dataset["seed"],
        val_fraction=dataset["val_fraction"],
        **dataset["options"],
    )
    engine = TrialEngine(
        trial,
        data,
        rank=rank,
        world_size=world_size,
        wrap=ray.train.torch.prepare_model,
        device=ray.train.torch.get_device(),
    )
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=False)
        engine.load_state_dict(state)
    for metrics in engine.run_epochs():
        if world_size > 1:
            metrics["rank_divergence"] = _rank_divergence(engine.model)
        if rank == 0:
            with tempfile.TemporaryDirectory(prefix="morphtune-ckpt-") as directory:
                torch.save(engine.state_dict(), os.path.join(directory, CHECKPOINT_FILE))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics)
