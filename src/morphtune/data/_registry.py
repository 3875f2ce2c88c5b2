"""Name -> loader registry behind :func:`load_dataset`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from morphtune.data._split import DatasetSplit, check_val_fraction
from morphtune.registry import Registry

__all__ = ["DATASETS", "load_dataset", "register_dataset"]

#: ``loader(*, seed, val_fraction, **options) -> DatasetSplit``
DatasetLoader = Callable[..., DatasetSplit]

#: The registered dataset loaders; iterates over their names in registration order.
DATASETS: Registry[DatasetLoader] = Registry("dataset", "morphtune.data.register_dataset")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator registering ``loader(*, seed, val_fraction, **options)`` under ``name``.

    The loader's other keyword-only parameters are the dataset's options.
    """
    return DATASETS.register(name)


def _option_names(loader: DatasetLoader) -> list[str]:
    return [
        param.name
        for param in inspect.signature(loader).parameters.values()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
        and param.name not in ("seed", "val_fraction")
    ]


def load_dataset(
    name: str, *, seed: int = 0, val_fraction: float = 0.2, **options: Any
) -> DatasetSplit:
    """Load the registered dataset ``name`` split into train and val.

    ``seed`` fixes the split (and synthetic data); ``val_fraction`` is the share held out
    where the dataset has no official test split. Unknown options raise ``ValueError``.
    """
    loader = DATASETS.get(name)
    val_fraction = check_val_fraction(val_fraction)
    valid = _option_names(loader)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown options {unknown} for dataset {name!r}; valid: {valid}")
    return loader(seed=seed, val_fraction=val_fraction, **options)
