"""The Ray Train loop every worker of a trial runs (DDP over ``resources.backend``: gloo on
CPUs, NCCL on GPUs by default)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from morphtune._keys import ERROR_KEY
from morphtune.data import load_dataset
from morphtune.trainables._device import NODE_ID_KEY, current_node_id
from morphtune.trainables._engine import TrialEngine
from morphtune.trainables._gan_engine import GanEngine
from morphtune.trainables._supernet_engine import SupernetEngine

__all__ = ["CHECKPOINT_FILE", "DETERMINISTIC_ERRORS", "make_engine", "train_loop_per_worker"]

CHECKPOINT_FILE = "trial_state.pt"

#: Errors a retry of the same configuration would meet again (bad values, shapes, a
#: diverged objective). A distributed trial ends on them at once; anything else (a peer
#: worker gone: the collective raises a backend error) is left to Ray Train's retries.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    ZeroDivisionError,
    NotImplementedError,
)

Engine = TrialEngine | GanEngine | SupernetEngine


def make_engine(trial: dict[str, Any], data: Any, **placement: Any) -> Engine:
    """The engine a trial runs: GAN, supernet, or the plain (growth/sparsity) engine."""
    if trial["model"]["family"] == "gan":
        return GanEngine(trial, data, **placement)
    if trial.get("supernet", {}).get("enabled"):
        return SupernetEngine(trial, data, **placement)
    return TrialEngine(trial, data, **placement)


def _rank_divergence(model: torch.nn.Module) -> float:
    """max - min over ranks of a checksum of the parameters and the pruning masks (each
    mask entry weighted by its index, so moved entries show): 0 when DDP kept the ranks
    identical (also across a growth event or a mask update, which every rank applies
    with the same seed and gradients)."""
    import torch.distributed as dist

    from morphtune.methods.sparsity import find_masks

    sums = [p.detach().double().sum() for p in model.parameters()]
    for mask in find_masks(model).values():
        positions = torch.arange(1, mask.numel() + 1, dtype=torch.float64, device=mask.device)
        sums.append((mask.reshape(-1).double() * positions).sum())
    checksum = torch.stack(sums).sum()
    high, low = checksum.clone(), checksum.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return float(high - low)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train one trial; report metrics every epoch, rank 0 attaching a checkpoint.

    ``config["trial"]`` is the resolved nested trial configuration; ``config["precision"]``
    and ``config["pin_memory"]`` are ``resources.precision`` and the resolved
    ``resources.pin_memory``. Every report names this worker's Ray node (``node_id``; Tune
    keeps rank 0's). A restarted worker group resumes from the latest checkpoint, rebuilding
    a grown model's shape.
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
    engine = make_engine(
        trial,
        data,
        rank=rank,
        world_size=world_size,
        wrap=ray.train.torch.prepare_model,
        device=ray.train.torch.get_device(),
        precision=config.get("precision", "fp32"),
        pin_memory=bool(config.get("pin_memory", False)),
    )
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=False)
        engine.load_state_dict(state)
    objectives: list[str] = list(config.get("objectives", []))
    try:
        _train(engine, rank, world_size, objectives, current_node_id())
    except DETERMINISTIC_ERRORS as exc:
        # every rank runs the same config, so every rank meets it: end once, no retry
        failed: dict[str, Any] = dict.fromkeys(objectives, float("nan"))
        failed[ERROR_KEY] = f"{type(exc).__name__}: {exc}"[:4000]
        ray.train.report(failed)


def _train(engine: Engine, rank: int, world_size: int, objectives: list[str], node_id: str) -> None:
    for metrics in engine.run_epochs():
        metrics[NODE_ID_KEY] = node_id
        if world_size > 1:
            metrics["rank_divergence"] = _rank_divergence(engine.model)
        for name in objectives:
            value = metrics.get(name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"objective {name} is {value!r}: training diverged")
        if rank == 0:
            with tempfile.TemporaryDirectory(prefix="morphtune-ckpt-") as directory:
                torch.save(engine.state_dict(), os.path.join(directory, CHECKPOINT_FILE))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics)
