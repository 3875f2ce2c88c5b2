"""CIFAR-10 from its python pickle batches."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from morphtune.data._files import find_file, require_root
from morphtune.data._registry import register_dataset
from morphtune.data._split import DatasetSplit, to_tensor_dataset

__all__ = ["load_cifar10"]

# A CIFAR batch is a dict of bytes, lists and numpy arrays; nothing else may be built.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Python 3 writes bytes at protocol <= 2 as _codecs.encode(str, "latin1").
    ("_codecs", "encode"),
}
_TRAIN_BATCHES = [f"data_batch_{index}" for index in range(1, 6)]


class _BatchUnpickler(pickle.Unpickler):
    """Refuses every global but the numpy array machinery (pickles can run code)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only "
                "dicts, lists, bytes and numpy arrays"
            )
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        batch = _BatchUnpickler(handle, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch: expected a dict with b'data', b'labels'")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(
            f"{path}: data {data.shape} and labels {labels.shape} do not form a CIFAR-10 "
            "batch (expected N x 3072 uint8 data and N labels)"
        )
    return data, labels


def _read_batches(directories: list[Path], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(find_file(directories, [name])) for name in names]
    data = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    return (data.astype(np.float32) / np.float32(255.0)).reshape(-1, 3, 32, 32), labels


@register_dataset("cifar10")
def load_cifar10(*, seed: int, val_fraction: float, root: str | Path | None = None) -> DatasetSplit:
    """CIFAR-10: ``data_batch_1..5`` as train, ``test_batch`` as val; scaled to [0, 1].

    ``root`` holds the batches directly or in ``cifar-10-batches-py/``. Inputs are
    ``N x 3 x 32 x 32`` (the batches store channel-major rows). The official test split
    is used, so ``seed`` and ``val_fraction`` do not change it.
    """
    base = require_root("cifar10", root)
    directories = [base, base / "cifar-10-batches-py"]
    train_inputs, train_labels = _read_batches(directories, _TRAIN_BATCHES)
    val_inputs, val_labels = _read_batches(directories, ["test_batch"])
    return DatasetSplit(
        train=to_tensor_dataset(train_inputs, train_labels),
        val=to_tensor_dataset(val_inputs, val_labels),
        in_features=3 * 32 * 32,
        num_classes=10,
        name="cifar10",
    )
