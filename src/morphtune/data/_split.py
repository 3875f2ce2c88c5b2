"""The dataset interface and a seeded stratified split."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["DatasetSplit", "check_val_fraction", "stratified_split", "to_tensor_dataset"]


@dataclass
class DatasetSplit:
    """Train and validation tensors of one dataset.

    ``task`` says what the labels are:

    - ``"classify"``: each ``TensorDataset`` holds ``(inputs float32, labels int64)``;
      ``in_features`` is the number of input values per sample (images keep their
      ``C x H x W`` shape; models flatten as they need).
    - ``"lm"`` (next-token prediction): ``(tokens int64 [context], targets int64
      [context])`` where the targets are the tokens shifted by one; ``in_features`` is the
      context length and ``num_classes`` the vocabulary size.
    """

    train: TensorDataset
    val: TensorDataset
    in_features: int
    num_classes: int
    name: str
    task: str = "classify"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return tuple(self.train.tensors[0].shape[1:])


def check_val_fraction(val_fraction: object) -> float:
    """Return ``val_fraction`` after checking ``0 < val_fraction < 1``."""
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, int | float)
        or not 0.0 < val_fraction < 1.0
    ):
        raise ValueError(
            f"val_fraction must satisfy 0 < val_fraction < 1, but got val_fraction={val_fraction!r}"
        )
    return float(val_fraction)


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and val indices holding about ``val_fraction`` of every class in val.

    Deterministic in ``seed``; each class with at least two samples puts at least one
    in each part. Indices come back sorted.
    """
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val = math.floor(val_fraction * len(members) + 0.5)
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train, val = np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))
    if len(train) == 0 or len(val) == 0:
        raise ValueError(
            f"cannot split {len(labels)} samples at val_fraction={val_fraction}: "
            "one part would be empty"
        )
    return train, val


def to_tensor_dataset(inputs: np.ndarray, labels: np.ndarray) -> TensorDataset:
    """``(float32 inputs, int64 labels)`` as a ``TensorDataset``."""
    return TensorDataset(
        torch.as_tensor(np.ascontiguousarray(inputs), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(labels), dtype=torch.int64),
    )
