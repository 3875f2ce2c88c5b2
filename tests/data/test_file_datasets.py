"""MNIST (IDX) and CIFAR-10 (pickle) readers on tiny files written by the tests."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from morphtune.data import load_dataset, read_idx


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    big_endian = {0x08: ">u1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian).tobytes()


def write_mnist(root: Path, n_train: int, n_test: int, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 5)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 5)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, n_train=6, n_test=3, gz=gz)
    split = load_dataset("mnist", root=tmp_path)
    train_x, train_y = split.train.tensors
    val_x, val_y = split.val.tensors
    assert train_x.shape == (6, 1, 4, 5) and val_x.shape == (3, 1, 4, 5)
    assert (split.in_features, split.num_classes, split.name) == (20, 10, "mnist")
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    expected = torch.as_tensor(arrays["train-images-idx3-ubyte"] / 255.0, dtype=torch.float32)
    torch.testing.assert_close(train_x[:, 0], expected)
    assert train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert val_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_mnist_accepts_torchvision_layout(tmp_path: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", n_train=2, n_test=2)
    assert len(load_dataset("mnist", root=str(tmp_path)).train) == 2


@pytest.mark.parametrize("type_code", [0x08, 0x0B, 0x0C, 0x0D])
def test_read_idx_parses_big_endian_types(tmp_path: Path, type_code: int) -> None:
    # Values that need every byte of their type, and signs where the type has them.
    values = [[0, 1, 2], [250, 100, 7]] if type_code == 0x08 else [[-300, 1, 30000], [2, 3, 4]]
    array = np.array(values)
    path = tmp_path / "values.idx"
    path.write_bytes(idx_bytes(array, type_code))
    parsed = read_idx(path)
    assert parsed.shape == (2, 3)
    assert parsed.tolist() == array.tolist()


def test_bad_magic_number_is_a_clear_error(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=2, n_test=2)
    path = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[:4] = b"\x1f\x8b\x08\x03"  # e.g. a gzip file saved without the .gz suffix
    path.write_bytes(bytes(data))
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte is not an IDX file: bad magic number 0x1f8b0803"
    ):
        load_dataset("mnist", root=tmp_path)


def test_truncated_idx_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.zeros((3, 2)))[:-1])
    with pytest.raises(
        ValueError, match=r"header shape \(3, 2\) needs 6 data bytes, but the file holds 5"
    ):
        read_idx(path)


def test_mismatched_mnist_files_are_rejected(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=4, n_test=2)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(ValueError, match="MNIST train files disagree"):
        load_dataset("mnist", root=tmp_path)


def test_missing_root_or_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"mnist root directory not found: {missing}"):
        load_dataset("mnist", root=missing)
    with pytest.raises(FileNotFoundError, match=f"cifar10 root directory not found: {missing}"):
        load_dataset("cifar10", root=missing)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(ValueError, match="needs the option root"):
        load_dataset("cifar10")


def write_cifar(root: Path, per_batch: int = 2, n_test: int = 3) -> dict[str, dict]:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        batch = {
            b"batch_label": b"batch",
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
        }
        with (root / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        batches[name] = batch
    return batches


def test_cifar10_reads_pickle_batches(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    split = load_dataset("cifar10", root=tmp_path)
    train_x, train_y = split.train.tensors
    val_x, val_y = split.val.tensors
    assert train_x.shape == (10, 3, 32, 32) and val_x.shape == (3, 3, 32, 32)
    assert (split.in_features, split.num_classes, split.input_shape) == (3072, 10, (3, 32, 32))
    assert train_y.dtype == torch.int64
    # Rows are channel-major: the first 1024 values are the red plane, row by row.
    first = batches["data_batch_1"][b"data"][0]
    torch.testing.assert_close(
        train_x[0, 0, 0, :], torch.tensor(first[:32] / 255.0, dtype=torch.float32)
    )
    torch.testing.assert_close(
        train_x[0, 1, 0, 0], torch.tensor(first[1024] / 255.0, dtype=torch.float32)
    )
    last = batches["data_batch_5"][b"data"][1]
    torch.testing.assert_close(
        train_x[9].reshape(-1), torch.tensor(last / 255.0, dtype=torch.float32)
    )
    assert val_y.tolist() == batches["test_batch"][b"labels"]


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_cifar10_refuses_pickles_that_build_arbitrary_objects(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with (tmp_path / "test_batch").open("wb") as handle:
        pickle.dump({b"data": _Exploit(), b"labels": []}, handle)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar10_rejects_malformed_batches(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    with (tmp_path / "test_batch").open("wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match="N x 3072"):
        load_dataset("cifar10", root=tmp_path)
