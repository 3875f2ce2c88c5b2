"""Errors raised by the results store.

Every error names what it is about (the sweep, the file, the metric) so a caller can print it
as is; the gRPC servicer maps each class onto one status code. Invalid arguments (a bad
``sweep_id``, ``mode``, ``scope`` or metric name) are plain :class:`ValueError`.
"""

from __future__ import annotations

import os

__all__ = ["CorruptFileError", "NoResults", "PartVanished", "StoreError", "SweepNotFound"]


class StoreError(Exception):
    """Base class of the store's domain errors."""


class SweepNotFound(StoreError, LookupError):
    """No sweep with this id exists under the store root."""

    def __init__(self, sweep_id: str, root: str | os.PathLike[str]) -> None:
        self.sweep_id = sweep_id
        self.root = os.fspath(root)
        super().__init__(f"sweep {sweep_id!r} not found under store root {self.root!r}")


class NoResults(StoreError, LookupError):
    """A query found no row with a finite value for the requested metric."""

    def __init__(self, sweep_id: str, metric: str, reason: str) -> None:
        self.sweep_id = sweep_id
        self.metric = metric
        super().__init__(f"sweep {sweep_id!r} has no finite result for metric {metric!r}: {reason}")


class CorruptFileError(StoreError):
    """A store file with a final (non-temporary) name could not be read.

    Parts and manifests are written atomically (temp file, fsync, rename), so a final-named file
    that does not parse is real corruption rather than an interrupted write. It is reported, not
    skipped, unless the reader was opened with ``on_corrupt="warn"``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"corrupt store file {self.path!r}: {reason}")


class PartVanished(StoreError):
    """A listed part was gone when read: compacted away since the listing (readers list
    again and retry; it reaches a caller only if that keeps happening)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        super().__init__(f"store part {self.path!r} vanished while being read (compacted?)")
