"""Datasets behind one interface: ``load_dataset(name, seed=..., **options)``."""

from morphtune.data import _cifar, _digits, _mnist, _synthetic, _text  # noqa: F401  (registration)
from morphtune.data._idx import read_idx
from morphtune.data._registry import DATASETS, load_dataset, register_dataset
from morphtune.data._split import DatasetSplit, stratified_split

__all__ = [
    "DATASETS",
    "DatasetSplit",
    "load_dataset",
    "read_idx",
    "register_dataset",
    "stratified_split",
]
