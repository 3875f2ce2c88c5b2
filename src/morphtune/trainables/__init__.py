"""Trainables: the engines that train one trial, and the Tune trainable running them
(in-process, or as a Ray Train TorchTrainer job).

Imported lazily: a Tune trial actor unpickles its trainable by reference to
``morphtune.trainables._driver``, which runs this package's ``__init__`` first; an eager
import of every engine (torch, Ray Train, scikit-learn) would add seconds to each actor's
start, longer than a fast trial.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["GanEngine", "SupernetEngine", "TrialEngine", "make_trainable", "train_loop_per_worker"]

_HOMES = {
    "GanEngine": "morphtune.trainables._gan_engine",
    "SupernetEngine": "morphtune.trainables._supernet_engine",
    "TrialEngine": "morphtune.trainables._engine",
    "make_trainable": "morphtune.trainables._driver",
    "train_loop_per_worker": "morphtune.trainables._loop",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'morphtune.trainables' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
