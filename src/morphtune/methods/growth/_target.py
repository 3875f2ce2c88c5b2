"""Target configs for a growth step."""

from __future__ import annotations

import math
from dataclasses import replace

from morphtune.models import MLPConfig

__all__ = ["growth_target"]


def growth_target(config: MLPConfig, factor: float) -> MLPConfig:
    """``config`` with every hidden width multiplied by ``factor`` (rounded half up).

    ``factor >= 1`` must hold; a width never shrinks, so small factors may leave it as is.
    """
    if (
        isinstance(factor, bool)
        or not isinstance(factor, int | float)
        or not math.isfinite(factor)
        or factor < 1
    ):
        raise ValueError(f"factor must be a finite number >= 1, but got factor={factor!r}")
    hidden = tuple(max(width, math.floor(width * factor + 0.5)) for width in config.hidden)
    return replace(config, hidden=hidden)
