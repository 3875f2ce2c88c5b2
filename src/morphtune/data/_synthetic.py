"""Gaussian clusters: a fast, seeded, learnable classification problem."""

from __future__ import annotations

import numpy as np

from morphtune.data._registry import register_dataset
from morphtune.data._split import DatasetSplit, stratified_split, to_tensor_dataset

__all__ = ["load_synthetic"]


def _check_int(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field} must be an int >= {minimum}, but got {field}={value!r}")
    return value


@register_dataset("synthetic")
def load_synthetic(
    *,
    seed: int,
    val_fraction: float,
    n_samples: int = 512,
    n_features: int = 16,
    n_classes: int = 4,
    separation: float = 3.0,
) -> DatasetSplit:
    """One unit-variance Gaussian cluster per class around centres ``~ N(0, separation²)``.

    Classes are balanced (``label = i mod n_classes``); everything is drawn from
    ``numpy.random.default_rng(seed)``, so the same seed gives the same data and split.
    """
    n_classes = _check_int("n_classes", n_classes, 2)
    n_samples = _check_int("n_samples", n_samples, 2 * n_classes)
    n_features = _check_int("n_features", n_features, 1)
    if isinstance(separation, bool) or not isinstance(separation, int | float) or separation <= 0:
        raise ValueError(f"separation must be > 0, but got separation={separation!r}")
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, separation, size=(n_classes, n_features))
    labels = rng.permutation(np.arange(n_samples) % n_classes).astype(np.int64)
    inputs = centres[labels] + rng.normal(0.0, 1.0, size=(n_samples, n_features))
    train, val = stratified_split(labels, val_fraction, seed)
    return DatasetSplit(
        train=to_tensor_dataset(inputs[train], labels[train]),
        val=to_tensor_dataset(inputs[val], labels[val]),
        in_features=n_features,
        num_classes=n_classes,
        name="synthetic",
    )
