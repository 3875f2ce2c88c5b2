"""Prometheus metrics over real HTTP: store collector and gRPC server interceptor."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from morphtune.metrics import build_registry, start_metrics_http
from morphtune.service import SweepClient, make_server
from morphtune.store import ResultWriter, SweepStore
from tests.store.sweeps import COUNTS, SWEEP, row, write_demo_sweep

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    write_demo_sweep(tmp_path)
    young = ResultWriter(tmp_path, "young")  # objective not reported yet: no best sample
    young.write_manifest({"objective": {"metric": "val", "mode": "min"}})
    young.write_results([row("a", 1, {"loss": 1.0})])
    return tmp_path


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


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _grpc_labels(method: str, **extra: str) -> frozenset[tuple[str, str]]:
    labels = {
        "grpc_type": "unary",
        "grpc_service": "morphtune.v1.SweepService",
        "grpc_method": method,
        **extra,
    }
    return frozenset(labels.items())


def test_store_metrics(service: tuple[str, str], store_root: Path) -> None:
    samples = _scrape(service[1])
    for state, count in COUNTS.items():
        assert (
            samples[("morphtune_trials", frozenset({"sweep": SWEEP, "state": state}.items()))]
            == count
        )
    young = frozenset({"sweep": "young", "state": "running"}.items())
    assert samples[("morphtune_trials", young)] == 1
    best = SweepStore(store_root).best(SWEEP)
    assert (
        samples[("morphtune_best_objective", frozenset({"sweep": SWEEP, "metric": "acc"}.items()))]
        == best.value
    )
    assert not any(
        name == "morphtune_best_objective" and ("sweep", "young") in labels
        for name, labels in samples
    )
    assert samples[("morphtune_store_read_errors", frozenset())] == 0
    assert not any("trial" in dict(labels) for _, labels in samples)  # never per trial


def test_grpc_server_metrics(service: tuple[str, str]) -> None:
    target, url = service
    with SweepClient(target) as client:
        client.best(SWEEP)
        client.best(SWEEP)
        with pytest.raises(grpc.RpcError):
            client.best("missing")
        with pytest.raises(grpc.RpcError):
            client.best(SWEEP, "acc", "up")
        assert client.health() == "SERVING"
    samples = _scrape(url)
    started = ("grpc_server_started_total", _grpc_labels("GetBestConfig"))
    assert samples[started] == 4
    for code, count in (("OK", 2), ("NOT_FOUND", 1), ("INVALID_ARGUMENT", 1)):
        handled = ("grpc_server_handled_total", _grpc_labels("GetBestConfig", grpc_code=code))
        assert samples[handled] == count
    assert samples[("grpc_server_handling_seconds_count", _grpc_labels("GetBestConfig"))] == 4
    health_ok = {
        "grpc_type": "unary",
        "grpc_service": "grpc.health.v1.Health",
        "grpc_method": "Check",
        "grpc_code": "OK",
    }
    assert samples[("grpc_server_handled_total", frozenset(health_ok.items()))] == 1


def test_corrupt_sweep_counts_as_read_error(service: tuple[str, str], store_root: Path) -> None:
    bad = store_root / "young" / "trials" / "part-99999999999999999999-000000-000000000000.parquet"
    bad.write_bytes(b"garbage")
    samples = _scrape(service[1])
    assert samples[("morphtune_store_read_errors", frozenset())] == 1
    assert ("morphtune_trials", frozenset({"sweep": SWEEP, "state": "failed"}.items())) in samples


def test_metrics_http_serves_on_free_port(store_root: Path) -> None:
    http, port = start_metrics_http(0, build_registry(SweepStore(store_root)))
    try:
        assert port > 0
        assert ("morphtune_store_read_errors", frozenset()) in _scrape(
            f"http://127.0.0.1:{port}/metrics"
        )
    finally:
        http.shutdown()
        http.server_close()
