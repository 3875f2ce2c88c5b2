"""A cumulative latency histogram small enough to travel in the sweep manifest.

The searcher times each ``suggest`` (sampling, constraint checks, proxy scoring, repeats
answered from the study) into one of these; the runner writes :meth:`as_manifest` under
``manifest["search"]["suggestion_seconds"]``, which the service exports as the
``morphtune_suggestion_seconds`` histogram.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

__all__ = ["LATENCY_BUCKETS", "LatencyHistogram"]

#: Upper bounds in seconds (Prometheus' default buckets, plus 30 s and 60 s for slow samplers
#: such as GP on a long history).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip


class LatencyHistogram:
    """Counts of observed durations per bucket, with their count and sum."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"buckets must be strictly increasing and non-empty, got {buckets}")
        self.buckets = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            return
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def as_manifest(self) -> dict[str, Any]:
        """``{"count", "sum", "buckets": {le: cumulative count, ..., "+Inf": count}}``."""
        cumulative: dict[str, int] = {}
        running = 0
        for bound, hits in zip(self.buckets, self.counts, strict=False):
            running += hits
            cumulative[repr(bound)] = running
        cumulative["+Inf"] = self.count
        return {"count": self.count, "sum": self.total, "buckets": cumulative}
