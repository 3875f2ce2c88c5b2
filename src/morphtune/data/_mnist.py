"""MNIST from its original IDX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from morphtune.data._files import find_file, require_root
from morphtune.data._idx import read_idx
from morphtune.data._registry import register_dataset
from morphtune.data._split import DatasetSplit, to_tensor_dataset

__all__ = ["load_mnist"]


def _read_pair(directories: list[Path], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    images = read_idx(find_file(directories, [images_name, images_name + ".gz"]))
    labels = read_idx(find_file(directories, [labels_name, labels_name + ".gz"]))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"MNIST {prefix} files disagree: images {images.shape}, labels {labels.shape} "
            "(expected N x H x W images and N labels)"
        )
    return images, labels


@register_dataset("mnist")
def load_mnist(*, seed: int, val_fraction: float, root: str | Path | None = None) -> DatasetSplit:
    """MNIST: ``train-*`` files as train, ``t10k-*`` as val; pixels scaled to [0, 1].

    ``root`` holds ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` directly or in
    ``MNIST/raw/`` (torchvision's layout). Inputs are ``N x 1 x 28 x 28``. The official
    test split is used, so ``seed`` and ``val_fraction`` do not change it.
    """
    base = require_root("mnist", root)
    directories = [base, base / "MNIST" / "raw"]
    train_images, train_labels = _read_pair(directories, "train")
    val_images, val_labels = _read_pair(directories, "t10k")

    def scale(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / np.float32(255.0))[:, None]

    height, width = train_images.shape[1:]
    return DatasetSplit(
        train=to_tensor_dataset(scale(train_images), train_labels.astype(np.int64)),
        val=to_tensor_dataset(scale(val_images), val_labels.astype(np.int64)),
        in_features=height * width,
        num_classes=10,
        name="mnist",
    )
