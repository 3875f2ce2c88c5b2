"""Target configs for a growth step."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from morphtune.models import MLPConfig

__all__ = ["growth_target"]


def _check_factor(name: str, factor: object) -> float:
    if (
        isinstance(factor, bool)
        or not isinstance(factor, int | float)
        or not math.isfinite(factor)
        or factor < 1
    ):
        raise ValueError(f"{name} must be a finite number >= 1, but got {name}={factor!r}")
    return float(factor)


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def growth_target(config: Any, factor: float, depth_factor: float = 1.0) -> Any:
    """``config`` grown ``factor`` times wider and ``depth_factor`` times deeper.

    Widths and depths round half up and never shrink. An MLP scales every hidden width;
    a transformer's width rounds to a multiple of its head size (heads keep their size);
    other families go through their config's ``resized``. ``factor >= 1`` and
    ``depth_factor >= 1`` must hold.
    """
    factor = _check_factor("factor", factor)
    depth_factor = _check_factor("depth_factor", depth_factor)
    depth = max(config.depth, _round_half_up(config.depth * depth_factor))
    if isinstance(config, MLPConfig):
        hidden = [max(width, _round_half_up(width * factor)) for width in config.hidden]
        hidden = (hidden + [hidden[-1]] * depth)[:depth]
        return replace(config, hidden=tuple(hidden))
    width = max(config.width, _round_half_up(config.width * factor))
    head_dim = getattr(config, "head_dim", None)
    if isinstance(head_dim, int):
        width = max(config.width, head_dim * _round_half_up(width / head_dim))
    return config.resized(width, depth)
