"""digits and synthetic datasets, splits, and the dataset registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from morphtune.data import DATASETS, DatasetSplit, load_dataset, stratified_split
from morphtune.models import MLP, MLPConfig


def inputs_and_labels(split: DatasetSplit, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, labels = getattr(split, part).tensors
    return inputs, labels


def sorted_rows(x: torch.Tensor) -> np.ndarray:
    array = x.numpy()
    return array[np.lexsort(array.T[::-1])]


def test_registry_lists_the_datasets_and_rejects_unknown_names() -> None:
    assert {"digits", "synthetic", "mnist", "cifar10"} <= set(DATASETS)
    with pytest.raises(
        ValueError,
        match=r"unknown dataset 'imagenet'; valid: \['cifar10', 'digits', 'gaussian_mixture'",
    ):
        load_dataset("imagenet")


def test_unknown_options_are_rejected_not_dropped() -> None:
    with pytest.raises(
        ValueError, match=r"unknown options \['n_clusters'\] for dataset 'synthetic'"
    ):
        load_dataset("synthetic", n_clusters=3)


@pytest.mark.parametrize("val_fraction", [0, 1, 1.5, -0.1, True])
def test_val_fraction_must_lie_strictly_between_zero_and_one(val_fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction must satisfy 0 < val_fraction < 1, but got"):
        load_dataset("digits", val_fraction=val_fraction)


def test_digits_shapes_types_and_range() -> None:
    split = load_dataset("digits")
    train_x, train_y = inputs_and_labels(split, "train")
    val_x, val_y = inputs_and_labels(split, "val")
    assert len(train_x) + len(val_x) == 1797
    assert (split.in_features, split.num_classes, split.name) == (64, 10, "digits")
    assert split.input_shape == (1, 8, 8)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert float(train_x.min()) >= 0.0 and float(train_x.max()) == 1.0
    assert set(train_y.tolist()) == set(range(10)) == set(val_y.tolist())
    assert len(val_x) == pytest.approx(0.2 * 1797, abs=10)


def test_digits_split_partitions_the_data() -> None:
    from sklearn.datasets import load_digits

    full = torch.as_tensor(load_digits().data / 16.0, dtype=torch.float32)
    split = load_dataset("digits", seed=3)
    both = torch.cat([split.train.tensors[0], split.val.tensors[0]]).reshape(-1, 64)
    assert np.array_equal(sorted_rows(both), sorted_rows(full))


def test_digits_are_scikit_learns_digits_read_without_importing_it() -> None:
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from morphtune.data._digits import digits_arrays

    pixels, labels = digits_arrays()
    expected = load_digits()
    assert np.array_equal(pixels, expected.data) and np.array_equal(labels, expected.target)
    assert not pixels.flags.writeable  # the cached arrays cannot be changed by a caller
    code = (
        "import sys; from morphtune.data import load_dataset; split = load_dataset('digits'); "
        "print(len(split.train) + len(split.val), 'sklearn' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["1797", "False"]


def test_digits_split_is_deterministic_in_the_seed() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert torch.equal(a.train.tensors[1], b.train.tensors[1])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])


def test_stratified_split_keeps_class_shares() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 41])
    train, val = stratified_split(labels, 0.25, seed=0)
    assert len(np.intersect1d(train, val)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.bincount(labels[val]).tolist() == [3, 5, 10]  # round(2.5)=3 half up, 5, 10.25


def test_stratified_split_puts_every_class_in_both_parts() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    train, val = stratified_split(labels, 0.01, seed=0)
    assert set(labels[val]) == {0, 1} and set(labels[train]) == {0, 1}


def test_synthetic_is_deterministic_and_configurable() -> None:
    a = load_dataset("synthetic", seed=5, n_samples=100, n_features=3, n_classes=5)
    b = load_dataset("synthetic", seed=5, n_samples=100, n_features=3, n_classes=5)
    c = load_dataset("synthetic", seed=6, n_samples=100, n_features=3, n_classes=5)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    assert (a.in_features, a.num_classes, len(a.train) + len(a.val)) == (3, 5, 100)
    assert torch.bincount(torch.cat([a.train.tensors[1], a.val.tensors[1]])).tolist() == [20] * 5


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"n_classes": 1}, "n_classes"),
        ({"n_samples": 3}, "n_samples"),
        ({"n_features": 0}, "n_features"),
        ({"separation": 0}, "separation"),
    ],
)
def test_synthetic_option_validation(options: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        load_dataset("synthetic", **options)


def test_synthetic_is_learnable_by_a_small_mlp() -> None:
    split = load_dataset("synthetic", seed=0)
    torch.manual_seed(0)
    model = MLP(MLPConfig(split.in_features, split.num_classes, (32,)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = split.train.tensors
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    val_x, val_y = split.val.tensors
    accuracy = (model(val_x).argmax(dim=1) == val_y).float().mean().item()
    assert accuracy > 0.9
