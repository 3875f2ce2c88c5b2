"""Tabulated search tasks for P6: every configuration of a small grid, really trained.

A *table* is a discrete configuration space (the product of a few categorical knobs of a
growth, sparsity or subnet search on scikit-learn's digits) in which every configuration
was trained once with :class:`morphtune.trainables.TrialEngine` for the same number of
epochs, keeping its learning curve (validation accuracy and loss after every epoch), its
cost (parameters, non-zero parameters, forward FLOPs of the final model) and the training
seed. Search strategies can then be replayed on the table in milliseconds, as tabular
NAS benchmarks do (NAS-Bench-101, Ying et al., ICML 2019; NAS-Bench-201, Dong & Yang,
ICLR 2020; HPOBench, Eggensperger et al., NeurIPS 2021 Datasets track).

Every configuration is built the way a sweep builds a trial: the task's base spec plus
the grid's values through :func:`morphtune.spec.parse_spec` (which checks every reachable
combination with the methods' own rules) and :func:`morphtune.spec.resolve_trial_config`.
Configuration ``i`` of a grid trains with ``training.seed = i``, so the tables carry the
seed-to-seed noise that real sweeps have; the dataset split is the same for all.

    .venv/bin/python benchmarks/make_tables.py [--tasks growth-mlp,dst-cnn] [--processes 2]

writes ``benchmarks/tables/<task>.json.gz`` (about 10 minutes for all tasks on two cores).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import multiprocessing
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TABLE_DIR = Path(__file__).resolve().parent / "tables"
TABLE_FORMAT = 1
EPOCHS = 10
DATASET_NAME, DATASET_SEED, VAL_FRACTION = "digits", 0, 0.2
DATASET = {"name": DATASET_NAME, "val_fraction": VAL_FRACTION, "seed": DATASET_SEED}

Scalar = bool | int | float | str


@dataclass(frozen=True)
class TaskDef:
    """One tabulated task: a base trial (spec sections) and a grid over dotted keys."""

    name: str
    kind: str  # growth | sparsity | subnet
    description: str
    base: Mapping[str, Any]
    grid: Mapping[str, Sequence[Scalar]]

    def size(self) -> int:
        size = 1
        for values in self.grid.values():
            size *= len(values)
        return size

    def points(self) -> list[dict[str, Scalar]]:
        """Every grid configuration, in ``itertools.product`` order of the grid's keys."""
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in self._product()]

    def _product(self) -> itertools.product[tuple[Scalar, ...]]:
        return itertools.product(*self.grid.values())

    def spec_text(self) -> str:
        """A sweep spec whose search space is the grid (categorical knobs)."""
        document: dict[str, Any] = {"name": f"p6-{self.name}", "dataset": dict(DATASET)}
        document.update({section: dict(values) for section, values in self.base.items()})
        document["training"] = {"epochs": EPOCHS, **document.get("training", {})}
        document["search"] = {
            "space": {
                key: {"type": "categorical", "choices": list(values)}
                for key, values in self.grid.items()
            }
        }
        return yaml.safe_dump(document, sort_keys=False)


_ADAM = {"batch_size": 64, "optimizer": "adam", "lr": 0.003, "schedule": "cosine"}
_SGD = {
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "schedule": "cosine",
}
_ADAMW = {
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 0.003,
    "weight_decay": 0.01,
    "schedule": "cosine",
}
_MLP = {"family": "mlp", "width": 128, "depth": 2}
_CNN = {"family": "cnn", "width": 8, "depth": 1, "stages": 2}

#: The tasks, chosen before any table was generated and kept as they are (no cherry-picking):
#: three growth spaces (one per family that grows on digits), four sparsity spaces
#: (pruning at init, dynamic sparse training on an MLP and a CNN, gradual magnitude
#: pruning) and three subnet spaces (architecture choices trained standalone, as the
#: subnets of an elastic supernet would be, crossed with optimiser knobs).
TASKS: tuple[TaskDef, ...] = (
    TaskDef(
        "growth-mlp",
        "growth",
        "MLP 16 wide, 2 hidden layers, widened mid-training",
        {"model": {"family": "mlp", "width": 16, "depth": 2}, "training": _ADAM},
        {
            "growth.operator": ["net2net", "lemon", "random", "zero"],
            "growth.at_fraction": [0.2, 0.4, 0.6],
            "growth.factor": [2.0, 4.0],
            "training.lr": [0.001, 0.003, 0.01],
        },
    ),
    TaskDef(
        "growth-cnn",
        "growth",
        "ResNet-style CNN 4 channels, 2 stages, widened mid-training",
        {"model": {"family": "cnn", "width": 4, "depth": 1, "stages": 2}, "training": _SGD},
        {
            "growth.operator": ["net2net", "lemon", "random", "zero"],
            "growth.at_fraction": [0.25, 0.5, 0.75],
            "growth.factor": [1.5, 2.0],
            "training.lr": [0.02, 0.05, 0.1],
        },
    ),
    TaskDef(
        "growth-vit",
        "growth",
        "ViT dim 16, 1 block, deepened to 2 blocks mid-training",
        {
            "model": {"family": "vit", "width": 16, "depth": 1, "head_dim": 8, "patch_size": 2},
            "training": _ADAMW,
            "growth": {"factor": 1.0, "depth_factor": 2.0},
        },
        {
            "growth.operator": ["lemon", "stack", "random", "zero"],
            "growth.at_fraction": [0.25, 0.5, 0.75],
            "growth.lr_after": ["continue", "lemon"],
            "training.lr": [0.001, 0.003, 0.01],
        },
    ),
    TaskDef(
        "pai-mlp",
        "sparsity",
        "MLP 128 wide, pruned at initialisation",
        {"model": _MLP, "training": _ADAM},
        {
            "sparsity.method": ["random", "magnitude", "snip", "grasp", "synflow"],
            "sparsity.density": [0.02, 0.05, 0.1, 0.2],
            "sparsity.distribution": ["uniform", "erk"],
            "training.lr": [0.001, 0.003, 0.01],
        },
    ),
    TaskDef(
        "dst-mlp",
        "sparsity",
        "MLP 128 wide, dynamic sparse training",
        {"model": _MLP, "training": _ADAM},
        {
            "sparsity.method": ["set", "rigl"],
            "sparsity.density": [0.05, 0.1, 0.2],
            "sparsity.drop_fraction": [0.1, 0.3, 0.5],
            "sparsity.update_interval": [5, 20, 50],
            "sparsity.distribution": ["uniform", "erk"],
        },
    ),
    TaskDef(
        "gmp-mlp",
        "sparsity",
        "MLP 128 wide, gradual magnitude pruning",
        {"model": _MLP, "training": _ADAM, "sparsity": {"method": "gmp"}},
        {
            "sparsity.density": [0.02, 0.05, 0.1, 0.2],
            "sparsity.start_fraction": [0.0, 0.25],
            "sparsity.end_fraction": [0.5, 0.75],
            "sparsity.update_interval": [5, 20],
            "training.lr": [0.001, 0.003, 0.01],
        },
    ),
    TaskDef(
        "dst-cnn",
        "sparsity",
        "ResNet-style CNN 8 channels, 2 stages, dynamic sparse training",
        {"model": _CNN, "training": _SGD},
        {
            "sparsity.method": ["set", "rigl"],
            "sparsity.density": [0.05, 0.1, 0.2, 0.4],
            "sparsity.drop_fraction": [0.1, 0.3, 0.5],
            "sparsity.distribution": ["uniform", "erk"],
            "sparsity.update_interval": [10, 40],
        },
    ),
    TaskDef(
        "subnet-mlp",
        "subnet",
        "MLP subnets (width x depth) x learning rate x batch size",
        {"model": {"family": "mlp"}, "training": _ADAM},
        {
            "model.width": [32, 64, 128, 256],
            "model.depth": [1, 2, 3],
            "training.lr": [0.0003, 0.001, 0.003, 0.01],
            "training.batch_size": [32, 64, 128],
        },
    ),
    TaskDef(
        "subnet-cnn",
        "subnet",
        "CNN subnets (channels x blocks x stages) x learning rate x batch size",
        {"model": {"family": "cnn"}, "training": _SGD},
        {
            "model.width": [4, 8, 16],
            "model.depth": [1, 2],
            "model.stages": [1, 2],
            "training.lr": [0.01, 0.03, 0.1],
            "training.batch_size": [32, 64],
        },
    ),
    TaskDef(
        "subnet-vit",
        "subnet",
        "ViT subnets (dim x blocks x MLP ratio x patch) x learning rate",
        {"model": {"family": "vit", "head_dim": 16}, "training": _ADAMW},
        {
            "model.width": [16, 32, 48],
            "model.depth": [1, 2, 3],
            "model.mlp_ratio": [2.0, 4.0],
            "model.patch_size": [2, 4],
            "training.lr": [0.001, 0.003],
        },
    ),
)

TASKS_BY_NAME: dict[str, TaskDef] = {task.name: task for task in TASKS}


# ---------------------------------------------------------------------------- training

_DATA: Any = None
_SPECS: dict[str, Any] = {}  # parsed once per worker process


def _init_worker() -> None:
    import optuna
    import torch

    torch.set_num_threads(1)  # two single-threaded trainings on two cores
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def train_config(task_name: str, index: int) -> dict[str, Any]:
    """Train grid configuration ``index`` of ``task_name`` once; its table row."""
    global _DATA  # one dataset load per worker process
    from morphtune.data import load_dataset
    from morphtune.spec import parse_spec, resolve_trial_config
    from morphtune.trainables import TrialEngine

    task = TASKS_BY_NAME[task_name]
    values = task.points()[index]
    if task_name not in _SPECS:
        _SPECS[task_name] = parse_spec(task.spec_text())
    trial = resolve_trial_config(_SPECS[task_name], {**values, "training.seed": index})
    if _DATA is None:
        _DATA = load_dataset(DATASET_NAME, seed=DATASET_SEED, val_fraction=VAL_FRACTION)
    started = time.perf_counter()
    curve_acc: list[float] = []
    curve_loss: list[float] = []
    last: dict[str, Any] = {}
    for metrics in TrialEngine(trial, _DATA).run_epochs():
        curve_acc.append(round(float(metrics["val_acc"]), 6))
        curve_loss.append(round(float(metrics["val_loss"]), 6))
        last = metrics
    return {
        "index": index,
        "values": values,
        "seed": index,
        "val_acc": curve_acc,
        "val_loss": curve_loss,
        "params": int(last["params"]),
        "nonzero_params": int(last["nonzero_params"]),
        "flops": float(last["flops"]),
        "train_flops": float(last["train_flops"]),
        "wall_s": round(time.perf_counter() - started, 3),
    }


def _train_unit(unit: tuple[str, int]) -> tuple[str, dict[str, Any]]:
    return unit[0], train_config(*unit)


def table_document(task: TaskDef, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    import torch

    return {
        "format": TABLE_FORMAT,
        "task": task.name,
        "kind": task.kind,
        "description": task.description,
        "epochs": EPOCHS,
        "metric": "val_acc",
        "mode": "max",
        "spec": task.spec_text(),
        "grid": {key: list(values) for key, values in task.grid.items()},
        "configs": sorted(rows, key=lambda row: int(row["index"])),
        "generated": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads_per_training": 1,
            "wall_s": round(sum(float(row["wall_s"]) for row in rows), 1),
        },
    }


def write_table(document: Mapping[str, Any], directory: Path = TABLE_DIR) -> Path:
    """Gzipped JSON, byte-for-byte reproducible for the same content (mtime 0)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{document['task']}.json.gz"
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return path


def generate(
    names: Sequence[str], *, processes: int = 2, directory: Path = TABLE_DIR
) -> list[Path]:
    """Train every configuration of the named tasks (``processes`` at a time) and write
    one table per task."""
    tasks = [TASKS_BY_NAME[name] for name in names]
    for task in tasks:  # every grid point must pass the spec's own checks first
        from morphtune.spec import parse_spec

        parse_spec(task.spec_text())
    units = [(task.name, index) for task in tasks for index in range(task.size())]
    rows: dict[str, list[dict[str, Any]]] = {task.name: [] for task in tasks}
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_init_worker) as pool:
        for done, (name, row) in enumerate(pool.imap_unordered(_train_unit, units), 1):
            rows[name].append(row)
            if done % 50 == 0 or done == len(units):
                elapsed = time.perf_counter() - started
                print(f"  {done}/{len(units)} configurations trained, {elapsed:.0f} s", flush=True)
    paths = [write_table(table_document(task, rows[task.name]), directory) for task in tasks]
    for path in paths:
        print(f"  wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks",
        default=",".join(TASKS_BY_NAME),
        help="comma-separated task names (default: all)",
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=TABLE_DIR)
    args = parser.parse_args(argv)
    names = [name for name in args.tasks.split(",") if name]
    unknown = sorted(set(names) - set(TASKS_BY_NAME))
    if unknown:
        parser.error(f"--tasks: unknown task(s) {unknown}; valid: {sorted(TASKS_BY_NAME)}")
    if args.processes < 1:
        parser.error(f"--processes must be >= 1, but got {args.processes}")
    total = sum(TASKS_BY_NAME[name].size() for name in names)
    print(f"training {total} configurations of {len(names)} task(s), {EPOCHS} epochs each")
    generate(names, processes=args.processes, directory=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
