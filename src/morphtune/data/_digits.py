"""scikit-learn's bundled 8x8 digits (offline, real data)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from morphtune.data._registry import register_dataset
from morphtune.data._split import DatasetSplit, stratified_split, to_tensor_dataset

__all__ = ["load_digits_split"]


@register_dataset("digits")
def load_digits_split(*, seed: int, val_fraction: float) -> DatasetSplit:
    """1,797 8x8 digit images (``N x 1 x 8 x 8``) scaled to [0, 1], 10 classes, stratified split."""
    inputs, labels = load_digits(return_X_y=True)
    inputs = (np.asarray(inputs, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    labels = np.asarray(labels, dtype=np.int64)
    train, val = stratified_split(labels, val_fraction, seed)
    return DatasetSplit(
        train=to_tensor_dataset(inputs[train], labels[train]),
        val=to_tensor_dataset(inputs[val], labels[val]),
        in_features=64,
        num_classes=10,
        name="digits",
    )
