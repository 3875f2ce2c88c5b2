"""Prometheus metrics over real HTTP: the store collector, checked against hand-computed
figures, ``promtool check metrics``, and the gRPC server interceptor fed by real calls.

Sweeps in the store (besides ``demo`` from ``tests/store/sweeps.py``):

``timed`` (objective val_loss, min; spec training.epochs=10, scheduler max_t=8)::

    trial  state      iterations  wall time per row              last   s/it  budget  saved
    c0     completed  1..8        time_total_s = 1.5 i           12.0   1.5   8       -
    s1     stopped    1, 2        time_total_s 2, 4              4.0    2.0   8       6 x 2 = 12
    s2     stopped    1..4        wall_s 1..4 (no time_total_s)  4.0    1.0   6 (own) 2 x 1 = 2
    f3     failed     1..3        time_total_s 3, 6, 9           9.0    -     -       (failed)
    s4     stopped    1..3        time_total_s 5, 10, - (none)   10.0   5.0   8       5 x 5 = 25
    r5     running    1           time_total_s 7                 7.0    -     -       (running)

    compute = 12 + 4 + 4 + 9 + 10 + 7 = 46; saved = 12 + 2 + 25 = 39

``mo`` (objectives val_acc max, params min), last reports::

    a (0.9, 100) completed    b (0.8, 50) completed    c (0.7, 200) stopped (dominated)
    d (0.95, 10) failed       e (NaN, 30) running

    reference (worst of a, b, c, e-less): val_acc 0.7, params 200
    hypervolume = 0.2 x 100 + 0.1 x 50 = 25; best val_acc 0.9 (d failed), best params 30 (e)
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from morphtune._metrics_figures import (
    Objective,
    TrialFacts,
    compute_seconds,
    hypervolume_figure,
    saved_seconds,
)
from morphtune._metrics_latency import parse_latency
from morphtune._metrics_sweep import last_rows, row_order
from morphtune.metrics import build_registry, start_metrics_http
from morphtune.searchers._latency import LatencyHistogram
from morphtune.service import SweepClient, make_server
from morphtune.store import ResultWriter, SweepStore
from tests.store.sweeps import COUNTS, SWEEP, row, write_demo_sweep

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

LATENCY = {"count": 4, "sum": 0.33, "buckets": {"0.005": 1, "0.1": 3, "1.0": 4, "+Inf": 4}}
TIMED_COMPUTE, TIMED_SAVED = 46.0, 39.0
MO_HYPERVOLUME = 25.0


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


# ------------------------------------------------------------------ store builders


def _timed_rows() -> list[dict[str, Any]]:
    rows = [row("c0", i, {"val_loss": 1.0 / i, "time_total_s": 1.5 * i}) for i in range(1, 9)]
    rows += [row("s1", i, {"val_loss": 2.0, "time_total_s": 2.0 * i}) for i in (1, 2)]
    own_budget = {"training": {"epochs": 6}}
    rows += [row("s2", i, {"val_loss": 3.0, "wall_s": float(i)}, own_budget) for i in range(1, 5)]
    rows += [row("f3", i, {"val_loss": 0.01, "time_total_s": 3.0 * i}) for i in (1, 2, 3)]
    rows += [row("s4", i, {"val_loss": 4.0, "time_total_s": 5.0 * i}) for i in (1, 2)]
    rows += [row("s4", 3, {"val_loss": 4.0})]
    rows += [row("r5", 1, {"val_loss": 5.0, "time_total_s": 7.0})]
    return rows


def write_timed_sweep(root: Path, sweep_id: str = "timed") -> None:
    writer = ResultWriter(root, sweep_id)
    writer.write_manifest(
        {
            "objective": {"metric": "val_loss", "mode": "min"},
            "objectives": [{"metric": "val_loss", "mode": "min"}],
            "spec": {"training": {"epochs": 10}, "search": {"scheduler": {"max_t": 8}}},
        }
    )
    writer.write_results(_timed_rows())
    for trial_id, state, last in (
        ("c0", "completed", 8),
        ("s1", "stopped", 2),
        ("s2", "stopped", 4),
        ("f3", "failed", 3),
        ("s4", "stopped", 3),
    ):
        writer.write_trial(trial_id, state, config={}, last_iteration=last)


MO_LAST = {
    "a": (0.9, 100.0, "completed"),
    "b": (0.8, 50.0, "completed"),
    "c": (0.7, 200.0, "stopped"),
    "d": (0.95, 10.0, "failed"),
    "e": (math.nan, 30.0, None),
}


def write_mo_sweep(root: Path, sweep_id: str = "mo") -> None:
    writer = ResultWriter(root, sweep_id)
    goals = [{"metric": "val_acc", "mode": "max"}, {"metric": "params", "mode": "min"}]
    writer.write_manifest(
        {
            "objective": goals[0],
            "objectives": goals,
            "spec": {"training": {"epochs": 2}, "search": {"scheduler": {"max_t": None}}},
            "search": {"suggestion_seconds": LATENCY},
        }
    )
    # a first, worse report per trial: only the last one counts
    writer.write_results(
        [row(trial_id, 1, {"val_acc": 0.1, "params": 999.0}) for trial_id in MO_LAST]
    )
    writer.write_results(
        [
            row(trial_id, 2, {"val_acc": acc, "params": params})
            for trial_id, (acc, params, _) in MO_LAST.items()
        ]
    )
    for trial_id, (_, _, state) in MO_LAST.items():
        if state is not None:
            writer.write_trial(trial_id, state, config={}, last_iteration=2)


def write_store(root: Path) -> Path:
    write_demo_sweep(root)
    write_timed_sweep(root)
    write_mo_sweep(root)
    young = ResultWriter(root, "young")  # objective not reported yet: no best sample
    young.write_manifest({"objective": {"metric": "val", "mode": "min"}})
    young.write_results([row("a", 1, {"loss": 1.0})])
    return root


# ------------------------------------------------------------------ fixtures, helpers


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return write_store(tmp_path)


@pytest.fixture
def service(store_root: Path) -> Iterator[tuple[str, str]]:
    registry = build_registry(store_root)
    server, port = make_server(store_root, metrics_registry=registry)
    server.start()
    http, http_port = start_metrics_http(0, registry)
    yield f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}/metrics"
    http.shutdown()
    http.server_close()
    server.stop(grace=None)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    return parse(fetch(url))


def promtool() -> str | None:
    """promtool's path; None (skip) when absent, a failure when MORPHTUNE_REQUIRE_PROMETHEUS."""
    path = shutil.which("promtool")
    if path is None and os.environ.get("MORPHTUNE_REQUIRE_PROMETHEUS"):
        pytest.fail("MORPHTUNE_REQUIRE_PROMETHEUS is set but promtool is not on PATH")
    return path


def _grpc_labels(method: str, **extra: str) -> frozenset[tuple[str, str]]:
    return labels(
        grpc_type="unary", grpc_service="morphtune.v1.SweepService", grpc_method=method, **extra
    )


def _call_some_rpcs(target: str) -> None:
    with SweepClient(target) as client:
        client.best(SWEEP)
        client.best(SWEEP)
        with pytest.raises(grpc.RpcError):
            client.best("missing")
        with pytest.raises(grpc.RpcError):
            client.best(SWEEP, "acc", "up")
        assert client.health() == "SERVING"


# ------------------------------------------------------------------ over HTTP


def test_trials_and_best_objective(service: tuple[str, str], store_root: Path) -> None:
    samples = scrape(service[1])
    for state, count in COUNTS.items():
        assert samples[("morphtune_trials", labels(sweep=SWEEP, state=state))] == count
    assert samples[("morphtune_trials", labels(sweep="young", state="running"))] == 1
    timed = {"completed": 1, "stopped": 3, "failed": 1, "running": 1}
    for state, count in timed.items():
        assert samples[("morphtune_trials", labels(sweep="timed", state=state))] == count
    best = SweepStore(store_root).best(SWEEP)
    assert samples[("morphtune_best_objective", labels(sweep=SWEEP, metric="acc"))] == best.value
    # timed: f3 (0.01) failed, so the best val_loss is c0's last, 1/8
    assert samples[("morphtune_best_objective", labels(sweep="timed", metric="val_loss"))] == 0.125
    assert not any(
        name == "morphtune_best_objective" and ("sweep", "young") in pairs
        for name, pairs in samples
    )
    assert samples[("morphtune_store_read_errors", frozenset())] == 0
    assert not any("trial" in dict(pairs) or "trial_id" in dict(pairs) for _, pairs in samples)


def test_multi_objective_sweep(service: tuple[str, str]) -> None:
    samples = scrape(service[1])
    best = {
        metric: samples[("morphtune_best_objective", labels(sweep="mo", metric=metric))]
        for metric in ("val_acc", "params")
    }
    assert best == {"val_acc": 0.9, "params": 30.0}
    assert samples[("morphtune_hypervolume", labels(sweep="mo"))] == pytest.approx(MO_HYPERVOLUME)
    reference = {
        metric: samples[("morphtune_hypervolume_reference", labels(sweep="mo", metric=metric))]
        for metric in ("val_acc", "params")
    }
    assert reference == {"val_acc": 0.7, "params": 200.0}
    # single-objective sweeps have no hypervolume
    assert {dict(pairs)["sweep"] for name, pairs in samples if name == "morphtune_hypervolume"} == {
        "mo"
    }


def test_suggestion_latency_histogram(service: tuple[str, str]) -> None:
    samples = scrape(service[1])
    buckets = {
        le: samples[("morphtune_suggestion_seconds_bucket", labels(sweep="mo", le=le))]
        for le in ("0.005", "0.1", "1.0", "+Inf")
    }
    assert buckets == {"0.005": 1, "0.1": 3, "1.0": 4, "+Inf": 4}
    assert samples[("morphtune_suggestion_seconds_count", labels(sweep="mo"))] == 4
    assert samples[("morphtune_suggestion_seconds_sum", labels(sweep="mo"))] == 0.33
    # absent (not zero) for sweeps whose manifest has no search summary yet
    assert ("morphtune_suggestion_seconds_count", labels(sweep="timed")) not in samples


def test_compute_and_early_stopping_seconds(service: tuple[str, str]) -> None:
    samples = scrape(service[1])
    assert samples[("morphtune_trial_compute_seconds", labels(sweep="timed"))] == TIMED_COMPUTE
    saved = ("morphtune_early_stopping_saved_seconds", labels(sweep="timed"))
    assert samples[saved] == TIMED_SAVED
    # demo reports no wall time: 0 compute; its manifest has no training budget: no saved series
    assert samples[("morphtune_trial_compute_seconds", labels(sweep=SWEEP))] == 0
    assert ("morphtune_early_stopping_saved_seconds", labels(sweep=SWEEP)) not in samples
    # mo: a stopped trial at its last epoch (2 of 2) saved nothing
    assert samples[("morphtune_early_stopping_saved_seconds", labels(sweep="mo"))] == 0


def test_promtool_accepts_metrics(service: tuple[str, str]) -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not installed (set MORPHTUNE_REQUIRE_PROMETHEUS to fail instead)")
    target, url = service
    _call_some_rpcs(target)
    text = fetch(url)
    for family in (
        "morphtune_trials",
        "morphtune_best_objective",
        "morphtune_hypervolume",
        "morphtune_hypervolume_reference",
        "morphtune_suggestion_seconds",
        "morphtune_trial_compute_seconds",
        "morphtune_early_stopping_saved_seconds",
        "morphtune_store_read_errors",
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
    ):
        assert f"\n# TYPE {family} " in text, family
    checked = subprocess.run(
        [tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_promtool_rejects_a_broken_exposition() -> None:
    """The check above can fail: promtool flags a counter without the _total suffix."""
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not installed (set MORPHTUNE_REQUIRE_PROMETHEUS to fail instead)")
    bad = "# HELP morphtune_oops Bad.\n# TYPE morphtune_oops counter\nmorphtune_oops 1\n"
    checked = subprocess.run(
        [tool, "check", "metrics"], input=bad, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode != 0
    assert "_total" in checked.stdout + checked.stderr


def test_grpc_server_metrics(service: tuple[str, str]) -> None:
    target, url = service
    _call_some_rpcs(target)
    samples = scrape(url)
    assert samples[("grpc_server_started_total", _grpc_labels("GetBestConfig"))] == 4
    for code, count in (("OK", 2), ("NOT_FOUND", 1), ("INVALID_ARGUMENT", 1)):
        handled = ("grpc_server_handled_total", _grpc_labels("GetBestConfig", grpc_code=code))
        assert samples[handled] == count
    assert samples[("grpc_server_handling_seconds_count", _grpc_labels("GetBestConfig"))] == 4
    health_ok = labels(
        grpc_type="unary", grpc_service="grpc.health.v1.Health", grpc_method="Check", grpc_code="OK"
    )
    assert samples[("grpc_server_handled_total", health_ok)] == 1


def test_corrupt_sweep_counts_as_read_error(service: tuple[str, str], store_root: Path) -> None:
    bad = store_root / "young" / "trials" / "part-99999999999999999999-000000-000000000000.parquet"
    bad.write_bytes(b"garbage")
    samples = scrape(service[1])
    assert samples[("morphtune_store_read_errors", frozenset())] == 1
    assert ("morphtune_trials", labels(sweep=SWEEP, state="failed")) in samples
    assert not any(("sweep", "young") in pairs for _, pairs in samples)


def test_malformed_manifest_entry_keeps_the_rest(
    service: tuple[str, str], store_root: Path
) -> None:
    writer = ResultWriter(store_root, "mo")
    broken = {**LATENCY, "buckets": {"0.005": 3, "0.1": 1, "+Inf": 4}}  # not cumulative
    writer.update_manifest(search={"suggestion_seconds": broken})
    samples = scrape(service[1])
    assert samples[("morphtune_store_read_errors", frozenset())] == 1
    assert ("morphtune_suggestion_seconds_count", labels(sweep="mo")) not in samples
    assert samples[("morphtune_hypervolume", labels(sweep="mo"))] == pytest.approx(MO_HYPERVOLUME)


def test_metrics_http_serves_on_free_port(store_root: Path) -> None:
    http, port = start_metrics_http(0, build_registry(SweepStore(store_root)))
    try:
        assert port > 0
        assert ("morphtune_store_read_errors", frozenset()) in scrape(
            f"http://127.0.0.1:{port}/metrics"
        )
    finally:
        http.shutdown()
        http.server_close()


# ------------------------------------------------------------------ caching


class CountingStore(SweepStore):
    """A real store that counts the reads the collector makes."""

    reads = 0

    def results(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return super().results(*args, **kwargs)

    def trial_states(self, sweep_id: str) -> dict[str, str]:
        self.reads += 1
        return super().trial_states(sweep_id)


def _value(store: SweepStore, name: str, **pairs: str) -> float:
    return parse(generate_latest(build_registry(store)).decode())[(name, labels(**pairs))]


def test_unchanged_sweep_is_not_read_again(tmp_path: Path) -> None:
    write_timed_sweep(tmp_path)
    store = CountingStore(tmp_path)
    registry = build_registry(store)
    first = parse(generate_latest(registry).decode())
    reads = store.reads
    assert reads > 0
    assert parse(generate_latest(registry).decode()) == first
    assert store.reads == reads  # served from the cache: no Parquet read
    # a new result invalidates the sweep's entry
    ResultWriter(tmp_path, "timed").write_results([row("r5", 2, {"time_total_s": 9.0})])
    after = parse(generate_latest(registry).decode())
    assert store.reads > reads
    compute = ("morphtune_trial_compute_seconds", labels(sweep="timed"))
    assert after[compute] == TIMED_COMPUTE - 7.0 + 9.0
    # so does a manifest update
    reads = store.reads
    ResultWriter(tmp_path, "timed").update_manifest(search={"suggestion_seconds": LATENCY})
    assert ("morphtune_suggestion_seconds_count", labels(sweep="timed")) in parse(
        generate_latest(registry).decode()
    )
    assert store.reads > reads


def test_removed_sweep_disappears(tmp_path: Path) -> None:
    write_timed_sweep(tmp_path)
    write_timed_sweep(tmp_path, "gone")
    registry = build_registry(tmp_path)
    assert ("morphtune_trial_compute_seconds", labels(sweep="gone")) in parse(
        generate_latest(registry).decode()
    )
    shutil.rmtree(tmp_path / "gone")
    samples = parse(generate_latest(registry).decode())
    assert not any(("sweep", "gone") in pairs for _, pairs in samples)
    assert samples[("morphtune_store_read_errors", frozenset())] == 0


# ------------------------------------------------------------------ arithmetic


def _facts(trial_id: str, state: str, last: int, seconds: float, at: int, **kw: Any) -> TrialFacts:
    return TrialFacts(trial_id, state, last, seconds, at, kw.get("epochs"), kw.get("objectives"))


def test_saved_seconds_by_hand() -> None:
    trials = [
        _facts("a", "stopped", 2, 6.0, 2),  # 3 s/it, 8 left of 10 -> 24
        _facts("b", "stopped", 3, 3.0, 3, epochs=4.0),  # own budget 4: 1 left at 1 s/it -> 1
        _facts("c", "stopped", 12, 12.0, 12),  # past the budget: 0, never negative
        _facts("d", "completed", 2, 100.0, 2),  # not stopped
        _facts("e", "failed", 1, 100.0, 1),  # not stopped
    ]
    assert saved_seconds(trials, epochs=10, max_t=None) == 25.0
    # max_t caps the budget: a -> (5 - 2) x 3 = 9, b -> min(4, 5) - 3 = 1
    assert saved_seconds(trials, epochs=10, max_t=5) == 10.0
    assert compute_seconds(trials) == 6.0 + 3.0 + 12.0 + 100.0 + 100.0


def test_hypervolume_figure_skips_failed_and_non_finite() -> None:
    goals = [Objective("val_acc", "max"), Objective("params", "min")]
    trials = [
        _facts(trial_id, state or "running", 2, 1.0, 2, objectives=(acc, params))
        for trial_id, (acc, params, state) in MO_LAST.items()
    ]
    volume, reference = hypervolume_figure(trials, goals)
    assert volume == pytest.approx(MO_HYPERVOLUME)
    assert reference == {"val_acc": 0.7, "params": 200.0}
    assert hypervolume_figure([t for t in trials if t.state == "failed"], goals) == (None, {})


# ------------------------------------------------------------------ property tests

_trial = st.tuples(
    st.sampled_from(["running", "completed", "stopped", "failed"]),
    st.lists(  # per iteration 1..n: wall time reported (or not)
        st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False)), min_size=1, max_size=6
    ),
    st.one_of(st.none(), st.integers(1, 8)),  # the trial's own training.epochs
)


@settings(max_examples=25, deadline=None)
@given(st.lists(_trial, min_size=1, max_size=6), st.integers(1, 8), st.none() | st.integers(1, 8))
def test_store_figures_match_a_direct_computation(
    tmp_path_factory: pytest.TempPathFactory,
    trials: list[tuple[str, list[float | None], int | None]],
    epochs: int,
    max_t: int | None,
) -> None:
    root = tmp_path_factory.mktemp("prop")
    writer = ResultWriter(root, "p")
    scheduler = {"max_t": max_t}
    writer.write_manifest(
        {"spec": {"training": {"epochs": epochs}, "search": {"scheduler": scheduler}}}
    )
    rows, compute, saved = [], 0.0, 0.0
    for index, (state, times, own) in enumerate(trials):
        trial_id = f"t{index}"
        config = {} if own is None else {"training": {"epochs": own}}
        for iteration, seconds in enumerate(times, start=1):
            metrics = {} if seconds is None else {"time_total_s": seconds}
            rows.append(row(trial_id, iteration, {"x": 1.0, **metrics}, config))
        timed = [(i, s) for i, s in enumerate(times, start=1) if s is not None]
        if timed:
            at, seconds = timed[-1]
            compute += seconds
            budget = min(own or epochs, max_t or own or epochs)
            if state == "stopped":
                saved += max(0, budget - len(times)) * seconds / at
        writer.write_trial(trial_id, state, config=config, last_iteration=len(times))
    writer.write_results(rows)
    store = SweepStore(root)
    assert _value(store, "morphtune_trial_compute_seconds", sweep="p") == pytest.approx(compute)
    assert _value(store, "morphtune_early_stopping_saved_seconds", sweep="p") == pytest.approx(
        saved
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20), st.booleans()), max_size=40))
def test_last_rows_picks_the_highest_masked_iteration(
    rows: list[tuple[int, int, bool]],
) -> None:
    codes = np.array([code for code, _, _ in rows], dtype=np.int64)
    iterations = np.array([it for _, it, _ in rows], dtype=np.int64)
    mask = np.array([keep for _, _, keep in rows], dtype=bool)
    last = last_rows(codes, row_order(codes, iterations), mask, 6)
    for code in range(6):
        candidates = [i for i, (c, _, keep) in enumerate(rows) if c == code and keep]
        if not candidates:
            assert last[code] == -1
        else:
            assert iterations[last[code]] == max(iterations[i] for i in candidates)
            assert codes[last[code]] == code and mask[last[code]]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 120, allow_nan=False), max_size=50))
def test_runner_latency_summary_round_trips(observations: list[float]) -> None:
    histogram = LatencyHistogram()
    for seconds in observations:
        histogram.observe(seconds)
    latency = parse_latency(histogram.as_manifest())
    assert latency.count == len(observations)
    assert latency.buckets[-1] == (math.inf, len(observations))
    counts = [count for _, count in latency.buckets]
    assert counts == sorted(counts)
    for bound, count in latency.buckets:
        assert count == sum(1 for seconds in observations if seconds <= bound)


@pytest.mark.parametrize(
    ("summary", "named"),
    [
        ([], "must be a mapping"),
        ({"count": 1, "sum": 0.1}, "missing keys ['buckets']"),
        ({"count": -1, "sum": 0.1, "buckets": {}}, "count must be finite and >= 0"),
        ({"count": 1, "sum": "x", "buckets": {}}, "sum must be a number"),
        ({"count": 1, "sum": 0.1, "buckets": {"fast": 1}}, "key 'fast' must be a number"),
        ({"count": 2, "sum": 0.1, "buckets": {"0.1": 2, "+Inf": 1}}, "must be cumulative"),
        ({"count": 2, "sum": 0.1, "buckets": {"0.1": 1, "+Inf": 1}}, "must equal count=2"),
    ],
)
def test_malformed_latency_is_named(summary: object, named: str) -> None:
    with pytest.raises(ValueError, match=r"search\.suggestion_seconds") as raised:
        parse_latency(summary)
    assert named in str(raised.value)


_objective_value = st.one_of(
    st.none(),  # not reported in this row
    st.just(math.nan),
    st.sampled_from([0.0, 1.0, 2.0, 3.0]),  # few values: ties and dominated points
    st.floats(-10, 10, allow_nan=False),
)
_mo_trial = st.tuples(
    st.sampled_from(["running", "completed", "stopped", "failed"]),
    st.lists(st.tuples(_objective_value, _objective_value), min_size=1, max_size=3),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_mo_trial, min_size=1, max_size=7))
def test_hypervolume_matches_the_api_pareto_front(
    tmp_path_factory: pytest.TempPathFactory,
    trials: list[tuple[str, list[tuple[float | None, float | None]]]],
) -> None:
    """The metric equals GetParetoFront's default answer (same candidates, same reference)."""
    from morphtune.store._query import SweepFrame, pareto_front

    root = tmp_path_factory.mktemp("mo")
    writer = ResultWriter(root, "p")
    goals = [{"metric": "x", "mode": "max"}, {"metric": "y", "mode": "min"}]
    writer.write_manifest({"objective": goals[0], "objectives": goals})
    rows = []
    for index, (state, reports) in enumerate(trials):
        for iteration, (x, y) in enumerate(reports, start=1):
            values = {"other": 1.0, "x": x, "y": y}
            metrics = {key: value for key, value in values.items() if value is not None}
            rows.append(row(f"t{index}", iteration, metrics))
        writer.write_trial(f"t{index}", state, config={}, last_iteration=len(reports))
    writer.write_results(rows)
    store = SweepStore(root)
    samples = parse(generate_latest(build_registry(store)).decode())
    volume = samples.get(("morphtune_hypervolume", labels(sweep="p")))
    try:
        front = pareto_front(SweepFrame(store, "p"), [("x", "max"), ("y", "min")])
    except LookupError:  # NoResults: no candidate
        assert volume is None
        return
    except ValueError:  # InvalidArgument: an objective never reported
        assert volume is None
        return
    assert volume == pytest.approx(front.hypervolume, rel=1e-12, abs=1e-12)
    reference = [
        samples[("morphtune_hypervolume_reference", labels(sweep="p", metric=metric))]
        for metric in ("x", "y")
    ]
    assert reference == list(front.reference)


def test_docs_and_docstring_list_every_metric(tmp_path: Path) -> None:
    import morphtune.metrics

    registry = build_registry(tmp_path)
    server, _ = make_server(tmp_path, metrics_registry=registry)  # adds the grpc_server_*
    server.stop(grace=None)
    names = {family.name for family in registry.collect()}
    names |= {"grpc_server_started", "grpc_server_handled"}  # counters: "_total" in the text
    docs = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    for name in names:
        exposed = (
            name + "_total" if name in ("grpc_server_started", "grpc_server_handled") else name
        )
        assert f"`{exposed}`" in docs, exposed
        assert f"``{exposed}``" in (morphtune.metrics.__doc__ or ""), exposed
    assert {name for name in names if name.startswith("morphtune_")} == set(morphtune.metrics.HELP)
