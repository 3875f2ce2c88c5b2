"""Locating dataset files under a user-given root."""

from __future__ import annotations

from pathlib import Path

__all__ = ["find_file", "require_root"]


def require_root(dataset: str, root: str | Path | None) -> Path:
    """``root`` as an existing directory, or a clear error naming it."""
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs the option root=<directory with its files>")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset} root directory not found: {path}")
    return path


def find_file(directories: list[Path], names: list[str]) -> Path:
    """The first of ``names`` found in the first directory holding one of them."""
    for directory in directories:
        for name in names:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    looked = [str(directory / names[0]) for directory in directories]
    raise FileNotFoundError(f"none of {names} found; looked for e.g. {looked}")
