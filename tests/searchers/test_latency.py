from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from morphtune.searchers._latency import LatencyHistogram


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_cumulative_buckets_count_every_observation_at_or_below_their_bound(
    values: list[float],
) -> None:
    hist = LatencyHistogram()
    for value in values:
        hist.observe(value)
    out = hist.as_manifest()
    assert out["count"] == len(values)
    assert out["sum"] == pytest.approx(sum(values))
    for bound, cumulative in out["buckets"].items():
        limit = float("inf") if bound == "+Inf" else float(bound)
        assert cumulative == sum(1 for v in values if v <= limit)


def test_non_finite_and_negative_durations_are_ignored() -> None:
    hist = LatencyHistogram()
    for value in (float("nan"), float("inf"), -1.0, 0.02):
        hist.observe(value)
    assert hist.count == 1
    assert hist.as_manifest()["buckets"]["0.025"] == 1


def test_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        LatencyHistogram((0.1, 0.05))
