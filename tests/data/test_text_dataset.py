"""The byte-level ``text`` dataset on small files written by the tests, and the stdlib."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from morphtune.data import DATASETS, DatasetSplit, load_dataset


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def part_windows(split: DatasetSplit, part: str) -> list[bytes]:
    """Each sample of ``part`` as its ``context + 1`` bytes, checking the shift by one."""
    tokens, targets = getattr(split, part).tensors
    assert tokens.dtype == torch.int64 and targets.dtype == torch.int64
    assert tokens.shape == targets.shape and tokens.shape[1] == split.in_features
    assert torch.equal(targets[:, :-1], tokens[:, 1:])
    full = torch.cat([tokens, targets[:, -1:]], dim=1)
    return [bytes(row) for row in full.tolist()]


def stream_windows(stream: bytes, context: int) -> list[bytes]:
    size = context + 1
    return [stream[start : start + size] for start in range(0, len(stream) - size + 1, size)]


def window_indices(split: DatasetSplit, stream: bytes, context: int) -> tuple[list[int], list[int]]:
    """Window indices of train and val; ``stream``'s windows must be distinct."""
    expected = stream_windows(stream, context)
    index = {window: i for i, window in enumerate(expected)}
    assert len(index) == len(expected), "test stream must have distinct windows"
    return (
        [index[window] for window in part_windows(split, "train")],
        [index[window] for window in part_windows(split, "val")],
    )


def assert_corpus(split: DatasetSplit, stream: bytes, context: int) -> None:
    """The split's windows are exactly the non-overlapping windows of ``stream``."""
    got = part_windows(split, "train") + part_windows(split, "val")
    assert Counter(got) == Counter(stream_windows(stream, context))


def test_targets_are_tokens_shifted_and_windows_rebuild_the_file(tmp_path: Path) -> None:
    data = random_bytes(1000)
    (tmp_path / "corpus.bin").write_bytes(data)
    context = 16
    split = load_dataset(
        "text", seed=3, val_fraction=0.25, paths=tmp_path / "corpus.bin", context=context
    )
    assert (split.task, split.name, split.num_classes, split.in_features) == ("lm", "text", 256, 16)
    assert split.input_shape == (16,)
    train, val = window_indices(split, data, context)
    n_windows = len(data) // (context + 1)
    # train and val partition the windows; each part keeps stream order
    assert sorted(train + val) == list(range(n_windows))
    assert train == sorted(train) and val == sorted(val)
    assert abs(len(val) - 0.25 * n_windows) <= 0.5
    # the windows, put back in order, are the file's prefix: no overlap, no gap
    by_index = dict(
        zip(train + val, part_windows(split, "train") + part_windows(split, "val"), strict=True)
    )
    rebuilt = b"".join(by_index[i] for i in range(n_windows))
    assert rebuilt == data[: n_windows * (context + 1)]


def test_default_options_read_a_named_file_whatever_its_suffix(tmp_path: Path) -> None:
    data = random_bytes(65 * 4 + 7)
    path = tmp_path / "notes.md"
    path.write_bytes(data)
    split = load_dataset("text", paths=str(path))
    assert split.in_features == 64
    assert len(split.train) + len(split.val) == 4
    assert_corpus(split, data, 64)


@pytest.mark.parametrize(
    ("n_windows", "val_fraction", "n_val"),
    [(2, 0.5, 1), (2, 0.01, 1), (2, 0.99, 1), (10, 0.01, 1), (10, 0.99, 9), (10, 0.3, 3)],
)
def test_each_part_gets_about_val_fraction_and_at_least_one_window(
    tmp_path: Path, n_windows: int, val_fraction: float, n_val: int
) -> None:
    context = 4
    data = random_bytes(n_windows * (context + 1) + 3)
    (tmp_path / "a.txt").write_bytes(data)
    split = load_dataset(
        "text", val_fraction=val_fraction, paths=[str(tmp_path / "a.txt")], context=context
    )
    assert (len(split.train), len(split.val)) == (n_windows - n_val, n_val)


def test_split_is_deterministic_in_seed_and_differs_across_seeds(tmp_path: Path) -> None:
    data = random_bytes(50 * 9)
    (tmp_path / "a.py").write_bytes(data)

    def indices(seed: int) -> tuple[list[int], list[int]]:
        split = load_dataset("text", seed=seed, paths=str(tmp_path), context=8)
        return window_indices(split, data, 8)

    assert indices(0) == indices(0)
    assert indices(1) == indices(1)
    assert indices(0)[1] != indices(1)[1]
    again = load_dataset("text", seed=0, paths=str(tmp_path), context=8)
    first = load_dataset("text", seed=0, paths=str(tmp_path), context=8)
    for a, b in zip(
        first.train.tensors + first.val.tensors,
        again.train.tensors + again.val.tensors,
        strict=True,
    ):
        assert torch.equal(a, b)


def write_tree(root: Path) -> dict[str, bytes]:
    # Distinct lengths so that reading the files in another order changes the windows.
    files = {
        "z.py": b"z" * 11,
        "b.txt": b"b" * 7,
        "sub/c.py": b"c" * 9,
        "sub/deeper/e.py": b"e" * 13,
        "sub/d.md": b"d" * 8,
        "a.py": b"a" * 10,
        "sub.py": b"s" * 6,
        "tail.pyc": b"x" * 5,
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_directories_are_walked_sorted_by_relative_path_keeping_suffixes(tmp_path: Path) -> None:
    files = write_tree(tmp_path)
    split = load_dataset("text", paths=str(tmp_path), context=2)
    # ".py" only, ordered by the relative path string ("sub.py" < "sub/c.py")
    order = ["a.py", "sub.py", "sub/c.py", "sub/deeper/e.py", "z.py"]
    assert_corpus(split, b"".join(files[name] for name in order), 2)

    split = load_dataset("text", paths=[str(tmp_path)], suffixes=[".md", ".txt"], context=2)
    assert_corpus(split, files["b.txt"] + files["sub/d.md"], 2)


def test_paths_are_read_in_the_order_given(tmp_path: Path) -> None:
    files = write_tree(tmp_path)
    paths = [tmp_path / "z.py", tmp_path / "sub", tmp_path / "b.txt"]
    split = load_dataset("text", paths=paths, context=2)
    expected = files["z.py"] + files["sub/c.py"] + files["sub/deeper/e.py"] + files["b.txt"]
    assert_corpus(split, expected, 2)


def test_max_bytes_truncates_the_stream(tmp_path: Path) -> None:
    first, second = random_bytes(60, seed=1), random_bytes(60, seed=2)
    (tmp_path / "1.py").write_bytes(first)
    (tmp_path / "2.py").write_bytes(second)
    (tmp_path / "3.py").write_bytes(random_bytes(60, seed=3))
    split = load_dataset("text", paths=str(tmp_path), context=9, max_bytes=100)
    assert len(split.train) + len(split.val) == 10
    train, val = window_indices(split, (first + second)[:100], 9)
    assert sorted(train + val) == list(range(10))

    split = load_dataset("text", paths=str(tmp_path), context=9, max_bytes=45)
    assert_corpus(split, first[:40], 9)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"context": 1}, "context=1"),
        ({"context": 4097}, "context=4097"),
        ({"context": 8.0}, "context=8.0"),
        ({"context": True}, "context=True"),
        ({"context": "8"}, "context='8'"),
        ({"context": 8, "max_bytes": 17}, "max_bytes=17"),
        ({"max_bytes": 0}, "max_bytes=0"),
        ({"max_bytes": 1e6}, "max_bytes=1000000.0"),
        ({"max_bytes": True}, "max_bytes=True"),
        ({"suffixes": ".py"}, "suffixes='.py'"),
        ({"suffixes": ["py"]}, "suffixes=['py']"),
        ({"suffixes": []}, "suffixes=[]"),
        ({"suffixes": ["."]}, "suffixes=['.']"),
        ({"suffixes": [".py", 3]}, "suffixes=['.py', 3]"),
        ({"paths": 3}, "paths=3"),
        ({"paths": []}, "paths=[]"),
        ({"paths": [""]}, "paths=['']"),
        ({"paths": ""}, "paths=''"),
        ({"paths": ["a.py", None]}, "paths=['a.py', None]"),
        ({"paths": {"a.py": 1}}, "paths={'a.py': 1}"),
    ],
)
def test_bad_options_name_the_option_and_the_value(options: dict[str, Any], field: str) -> None:
    name = field.split("=")[0]
    with pytest.raises(ValueError, match=rf"^{name} must .*but got {re.escape(field)}$"):
        load_dataset("text", **options)


def test_missing_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(b"x" * 100)
    missing = tmp_path / "nowhere" / "b.py"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_dataset("text", paths=[str(tmp_path / "a.py"), str(missing)])


def test_empty_and_too_short_corpora_are_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match=r"found no files with suffixes=\['\.py'\].*empty"):
        load_dataset("text", paths=str(tmp_path))
    (tmp_path / "empty.py").write_bytes(b"")
    with pytest.raises(ValueError, match=r"has 0 bytes in 1 file\(s\), too short"):
        load_dataset("text", paths=str(tmp_path))
    (tmp_path / "short.py").write_bytes(b"y" * 17)
    with pytest.raises(ValueError, match=r"has 17 bytes .*\(needs >= 18\)"):
        load_dataset("text", paths=str(tmp_path), context=8)
    (tmp_path / "short.py").write_bytes(b"y" * 18)
    assert len(load_dataset("text", paths=str(tmp_path), context=8).val) == 1


def test_unknown_options_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown options \['block_size'\] for dataset 'text'"):
        load_dataset("text", block_size=8)


def test_registry_lists_text() -> None:
    assert "text" in DATASETS


def test_default_corpus_is_the_standard_library() -> None:
    split = load_dataset("text", seed=0, max_bytes=20_000)
    assert (split.task, split.name, split.num_classes, split.in_features) == ("lm", "text", 256, 64)
    assert len(split.train) + len(split.val) == 20_000 // 65
    assert abs(len(split.val) - 0.2 * (20_000 // 65)) <= 0.5
    for tensor in split.train.tensors + split.val.tensors:
        assert tensor.dtype == torch.int64 and tensor.shape[1] == 64
        assert int(tensor.min()) >= 0 and int(tensor.max()) <= 255
    text = b"".join(part_windows(split, "train")).decode("utf-8", errors="replace")
    assert "import" in text or "def " in text
    again = load_dataset("text", seed=0, max_bytes=20_000)
    assert torch.equal(split.train.tensors[0], again.train.tensors[0])
