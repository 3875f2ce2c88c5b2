"""scikit-learn's bundled 8x8 digits (offline, real data).

The digits are read straight from the file scikit-learn ships them in
(``sklearn/datasets/data/digits.csv.gz``: 64 pixel columns and the label), found without
importing scikit-learn: ``import sklearn.datasets`` costs about a second, and every trial
process that trains on digits would pay it. Should a scikit-learn release move the file,
its ``load_digits`` is used instead.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from morphtune.data._registry import register_dataset
from morphtune.data._split import DatasetSplit, stratified_split, to_tensor_dataset

__all__ = ["digits_arrays", "load_digits_split"]

_SAMPLES, _PIXELS = 1797, 64


def _bundled_file() -> Path | None:
    spec = importlib.util.find_spec("sklearn")  # locates the package; runs none of it
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


@functools.cache
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (pixels ``N x 64`` in 0..16, labels ``N``), read-only arrays
    read once per process."""
    path = _bundled_file()
    if path is not None:
        with gzip.open(path, "rt", encoding="ascii") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.float64)
        pixels, labels = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - a scikit-learn that keeps the file elsewhere
        from sklearn.datasets import load_digits

        pixels, labels = load_digits(return_X_y=True)
    if pixels.shape != (_SAMPLES, _PIXELS) or labels.shape != (_SAMPLES,):
        raise ValueError(
            f"scikit-learn's digits must be {_SAMPLES} x {_PIXELS} pixels with a label each, "
            f"but {path or 'load_digits()'} holds {pixels.shape} and {labels.shape}"
        )
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


@register_dataset("digits")
def load_digits_split(*, seed: int, val_fraction: float) -> DatasetSplit:
    """1,797 8x8 digit images (``N x 1 x 8 x 8``) scaled to [0, 1], 10 classes, stratified split."""
    pixels, raw_labels = digits_arrays()
    inputs = (pixels.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    labels = raw_labels.astype(np.int64)
    train, val = stratified_split(labels, val_fraction, seed)
    return DatasetSplit(
        train=to_tensor_dataset(inputs[train], labels[train]),
        val=to_tensor_dataset(inputs[val], labels[val]),
        in_features=64,
        num_classes=10,
        name="digits",
    )
