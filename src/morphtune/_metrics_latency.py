"""The suggestion-latency histogram a sweep manifest carries, checked for export.

The runner writes ``manifest["search"]["suggestion_seconds"]`` as
``{"count": n, "sum": s, "buckets": {"0.005": c, ..., "+Inf": n}}`` (cumulative counts, upper
bounds as strings); :func:`parse_latency` turns it into a :class:`Latency` whose buckets are
sorted, cumulative and end with ``+Inf`` equal to ``count``, or raises ``ValueError`` naming
the field, the value and the rule it breaks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LATENCY_FIELD", "Latency", "parse_latency"]

LATENCY_FIELD = "search.suggestion_seconds"


@dataclass(frozen=True)
class Latency:
    """Cumulative bucket counts by upper bound (ascending, the last ``inf``), count and sum."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    total: float


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{field} must be finite and >= 0, got {value!r}")
    return number


def _bound(key: object) -> float:
    field = f"{LATENCY_FIELD}.buckets"
    if not isinstance(key, str):
        raise ValueError(f"{field} keys must be strings (bucket upper bounds), got {key!r}")
    try:
        bound = float(key)  # "+Inf" and "inf" parse as infinity
    except ValueError:
        raise ValueError(
            f"{field} key {key!r} must be a number or '+Inf' (a bucket upper bound)"
        ) from None
    if math.isnan(bound):
        raise ValueError(f"{field} key {key!r} must be a number or '+Inf', not NaN")
    return bound


def parse_latency(summary: object) -> Latency:
    """Check and normalise one manifest latency summary (see the module docstring)."""
    if not isinstance(summary, Mapping):
        raise ValueError(f"{LATENCY_FIELD} must be a mapping, got {type(summary).__name__}")
    missing = [key for key in ("count", "sum", "buckets") if key not in summary]
    if missing:
        raise ValueError(f"{LATENCY_FIELD} is missing keys {missing}")
    count = _number(summary["count"], f"{LATENCY_FIELD}.count")
    total = _number(summary["sum"], f"{LATENCY_FIELD}.sum")
    raw = summary["buckets"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{LATENCY_FIELD}.buckets must be a mapping, got {type(raw).__name__}")
    buckets: dict[float, float] = {}
    for key, value in raw.items():
        bound = _bound(key)
        if bound in buckets:
            raise ValueError(f"{LATENCY_FIELD}.buckets has the bound {key!r} twice")
        buckets[bound] = _number(value, f"{LATENCY_FIELD}.buckets[{key!r}]")
    buckets.setdefault(math.inf, count)
    ordered = sorted(buckets.items())
    for (low, below), (high, above) in itertools.pairwise(ordered):
        if above < below:
            raise ValueError(
                f"{LATENCY_FIELD}.buckets must be cumulative (non-decreasing with the bound), "
                f"got {below:g} at {low:g} but {above:g} at {high:g}"
            )
    if buckets[math.inf] != count:
        raise ValueError(
            f"{LATENCY_FIELD}.buckets['+Inf'] must equal count={count:g}, got {buckets[math.inf]:g}"
        )
    return Latency(buckets=tuple(ordered), count=count, total=total)
