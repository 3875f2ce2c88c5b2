"""Byte-level text for next-token prediction (vocabulary 256), from files or the stdlib."""

from __future__ import annotations

import math
import os
import sysconfig
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from morphtune.data._registry import register_dataset
from morphtune.data._split import DatasetSplit

__all__ = ["load_text"]

VOCAB_SIZE = 256
MAX_CONTEXT = 4096
DEFAULT_SUFFIXES = (".py",)
# Directories left out of the default (standard library) corpus, at any depth.
_STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib"})


def _check_context(context: object) -> int:
    if isinstance(context, bool) or not isinstance(context, int) or not 2 <= context <= MAX_CONTEXT:
        raise ValueError(
            f"context must be an int with 2 <= context <= {MAX_CONTEXT}, "
            f"but got context={context!r}"
        )
    return context


def _check_max_bytes(max_bytes: object, context: int) -> int:
    minimum = 2 * (context + 1)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < minimum:
        raise ValueError(
            f"max_bytes must be an int >= 2 * (context + 1) = {minimum} (two windows of "
            f"context={context} tokens plus one target), but got max_bytes={max_bytes!r}"
        )
    return max_bytes


def _check_suffixes(suffixes: object) -> tuple[str, ...]:
    if suffixes is None:
        return DEFAULT_SUFFIXES
    if (
        not isinstance(suffixes, list | tuple)
        or not suffixes
        or not all(
            isinstance(suffix, str) and suffix.startswith(".") and len(suffix) > 1
            for suffix in suffixes
        )
    ):
        raise ValueError(
            "suffixes must be a non-empty list of strings starting with '.', e.g. "
            f"['.py', '.txt'], but got suffixes={suffixes!r}"
        )
    return tuple(suffixes)


def _check_paths(paths: object) -> list[Path] | None:
    if paths is None:
        return None
    items = [paths] if isinstance(paths, str | os.PathLike) else paths
    if (
        not isinstance(items, list | tuple)
        or not items
        or not all(isinstance(item, str | os.PathLike) and str(item) for item in items)
    ):
        raise ValueError(
            "paths must be a file or directory path or a non-empty list of them (non-empty "
            f"strings), but got paths={paths!r}"
        )
    return [Path(item).expanduser() for item in items]


def _walk(root: Path, suffixes: tuple[str, ...], skip: frozenset[str]) -> list[Path]:
    """Files under ``root`` whose name ends in one of ``suffixes``, sorted by relative path.

    Directories named in ``skip`` are not entered; symbolic links to directories are not
    followed.
    """
    found: list[tuple[str, Path]] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if name not in skip]
        for name in filenames:
            path = Path(directory, name)
            if name.endswith(suffixes) and path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return [path for _, path in sorted(found, key=lambda item: item[0])]


def _corpus_files(paths: list[Path] | None, suffixes: tuple[str, ...]) -> list[Path]:
    if paths is None:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        if not stdlib.is_dir():
            raise FileNotFoundError(
                f"text: the default corpus, the standard library source directory {stdlib}, "
                "is missing; pass paths=<files or directories>"
            )
        return _walk(stdlib, suffixes, _STDLIB_SKIP)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_walk(path, suffixes, frozenset()))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"text: path not found (no such file or directory): {path}")
    return files


def _read_corpus(files: list[Path], max_bytes: int) -> bytes:
    """The files' bytes concatenated in order, cut at ``max_bytes``."""
    chunks: list[bytes] = []
    remaining = max_bytes
    for path in files:
        if remaining <= 0:
            break
        with path.open("rb") as handle:
            chunk = handle.read(remaining)
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _window_split(n_windows: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and val window indices, about ``val_fraction`` (at least one) in val."""
    order = np.random.default_rng(seed).permutation(n_windows)
    n_val = min(max(math.floor(val_fraction * n_windows + 0.5), 1), n_windows - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _lm_dataset(windows: np.ndarray) -> TensorDataset:
    data = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.int64))
    return TensorDataset(data[:, :-1].contiguous(), data[:, 1:].contiguous())


@register_dataset("text")
def load_text(
    *,
    seed: int,
    val_fraction: float,
    paths: str | Path | list[str | Path] | None = None,
    suffixes: list[str] | None = None,
    context: int = 64,
    max_bytes: int = 1_000_000,
) -> DatasetSplit:
    """Bytes of text files for next-token prediction (``task="lm"``, vocabulary 256).

    The corpus is one byte stream, read in order until ``max_bytes`` bytes are collected
    (the last file read is cut short):

    - ``paths``: a file or directory, or a list of them, read in the order given. An
      explicitly named file is always read; a directory is walked recursively (symbolic
      links to directories are not followed) and its files whose names end in one of
      ``suffixes`` are read, sorted by their path relative to the directory. A missing
      path raises ``FileNotFoundError`` naming it.
    - ``paths=None`` (default): the Python standard library's source directory
      (``sysconfig.get_paths()["stdlib"]``), present on every machine, walked the same way
      but skipping ``site-packages``, ``dist-packages``, ``test``, ``tests`` and ``idlelib``
      directories. The corpus depends on the Python version, not on the machine.
    - ``suffixes``: the file-name endings kept when walking a directory, default
      ``[".py"]``; each starts with ``"."`` (``".tar.gz"`` works).
    - ``context``: tokens per sample, ``2 <= context <= 4096``; default 64.
    - ``max_bytes``: at most this many bytes are read, ``>= 2 * (context + 1)``; default
      1,000,000. Each byte becomes 16 bytes of tensors (int64 tokens and targets).

    The stream is cut into non-overlapping windows of ``context + 1`` bytes (a trailing
    partial window is dropped); each window gives ``tokens = window[:-1]`` and
    ``targets = window[1:]``, int64 tensors of length ``context`` with values 0..255.
    Windows go to val at random with ``numpy.random.default_rng(seed)``: about
    ``val_fraction`` of them and at least one in each part, each part in stream order.
    ``in_features`` is ``context`` and ``num_classes`` is 256. A corpus with no files or
    shorter than two windows raises ``ValueError``.
    """
    context = _check_context(context)
    max_bytes = _check_max_bytes(max_bytes, context)
    suffixes_ = _check_suffixes(suffixes)
    paths_ = _check_paths(paths)

    files = _corpus_files(paths_, suffixes_)
    where = "the standard library" if paths_ is None else f"paths={paths!r}"
    if not files:
        raise ValueError(
            f"text: found no files with suffixes={list(suffixes_)} under {where}; "
            "the corpus is empty"
        )
    stream = _read_corpus(files, max_bytes)
    window = context + 1
    n_windows = len(stream) // window
    if n_windows < 2:
        raise ValueError(
            f"text: the corpus under {where} has {len(stream)} bytes in {len(files)} file(s), "
            f"too short for two windows of context + 1 = {window} bytes (needs >= "
            f"{2 * window}); add text or lower context"
        )
    windows = np.frombuffer(stream, dtype=np.uint8, count=n_windows * window)
    windows = windows.reshape(n_windows, window)
    train, val = _window_split(n_windows, val_fraction, seed)
    return DatasetSplit(
        train=_lm_dataset(windows[train]),
        val=_lm_dataset(windows[val]),
        in_features=context,
        num_classes=VOCAB_SIZE,
        name="text",
        task="lm",
    )
