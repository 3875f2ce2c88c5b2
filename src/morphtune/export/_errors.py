"""The export's error for bad input (a ``ValueError``: the CLI exits 2 on it)."""

from __future__ import annotations

__all__ = ["ExportError"]


class ExportError(ValueError):
    """Bad input to an export: an unknown trial or iteration, no usable checkpoint, a
    subnet the supernet does not hold, an output that cannot be written."""
