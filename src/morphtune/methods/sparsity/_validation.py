"""Shared argument checks with messages that state the rule and the value."""

from __future__ import annotations

import math

__all__ = ["check_density"]


def check_density(value: object, field: str = "density") -> float:
    """Return ``value`` as a float after checking ``0 < value <= 1``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{field} must be a number in (0, 1], but got {field}={value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{field} must satisfy 0 < {field} <= 1, but got {field}={value!r}")
    return float(value)
