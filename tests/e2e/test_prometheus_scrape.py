"""A real Prometheus server (Debian's ``prometheus`` package) scrapes the service's /metrics.

The service (gRPC server and /metrics on free loopback ports, in-process) serves the store
of ``tests/test_metrics.py``; Prometheus scrapes it every second. The test waits for the
target to be up, then asks Prometheus' HTTP API for the search metrics and compares them with
the store, checks a ``histogram_quantile`` over the suggestion-latency histogram, sees a store
change arrive in a later scrape, and counts real RPCs in ``grpc_server_handled_total``.
Skipped when ``prometheus`` is not installed, unless MORPHTUNE_REQUIRE_PROMETHEUS is set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from morphtune.metrics import build_registry, start_metrics_http
from morphtune.service import make_server
from morphtune.store import ResultWriter, SweepStore
from tests.net import free_port
from tests.test_metrics import (
    MO_HYPERVOLUME,
    TIMED_COMPUTE,
    TIMED_SAVED,
    _call_some_rpcs,
    write_store,
)

WAIT_S = 30.0


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> dict[frozenset[tuple[str, str]], float]:
        """Instant vector: labels (without ``__name__``, ``job``, ``instance``) -> value."""
        data = self.api("query", query=expression)
        assert data["resultType"] == "vector", data
        return {
            frozenset(
                (key, value)
                for key, value in sample["metric"].items()
                if key not in ("__name__", "job", "instance")
            ): float(sample["value"][1])
            for sample in data["result"]
        }

    def wait_for(self, what: str, check: Callable[[], Any]) -> Any:
        """``check()``'s first truthy answer; fails with the last one after WAIT_S."""
        deadline, answer = time.monotonic() + WAIT_S, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"prometheus exited ({self.process.returncode}): {self.log.read_text()}"
                )
            try:
                answer = check()
            except OSError as error:  # not listening yet
                answer = error
            else:
                if answer:
                    return answer
            time.sleep(0.2)
        pytest.fail(f"waited {WAIT_S} s for {what}; last answer {answer!r}")


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return write_store(tmp_path / "store")


@pytest.fixture
def service(store_root: Path) -> Iterator[tuple[str, int]]:
    registry = build_registry(store_root)
    server, port = make_server(store_root, metrics_registry=registry)
    server.start()
    http, http_port = start_metrics_http(0, registry)
    yield f"127.0.0.1:{port}", http_port
    http.shutdown()
    http.server_close()
    server.stop(grace=None)


@pytest.fixture
def prometheus(tmp_path: Path, service: tuple[str, int]) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None
    )
    if binary is None:
        if os.environ.get("MORPHTUNE_REQUIRE_PROMETHEUS"):
            pytest.fail("MORPHTUNE_REQUIRE_PROMETHEUS is set but prometheus is not installed")
        pytest.skip("prometheus not installed (set MORPHTUNE_REQUIRE_PROMETHEUS to fail instead)")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: morphtune\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{service[1]}']}}]\n"
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", process, log)
    finally:
        process.terminate()  # SIGTERM: Prometheus shuts down cleanly
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _by(samples: dict[frozenset[tuple[str, str]], float], label: str) -> dict[str, float]:
    return {dict(pairs)[label]: value for pairs, value in samples.items()}


def test_prometheus_scrapes_the_service(
    prometheus: Prometheus, service: tuple[str, int], store_root: Path
) -> None:
    def target_up() -> Any:
        targets = prometheus.api("targets")["activeTargets"]
        return targets and targets[0]["health"] == "up" and targets[0]

    target = prometheus.wait_for("the target to be up", target_up)
    assert target["lastError"] == ""
    assert prometheus.query('up{job="morphtune"}') == {frozenset(): 1.0}

    store = SweepStore(store_root)
    for sweep_id in store.list_sweeps():
        answer = prometheus.query(f'morphtune_trials{{sweep="{sweep_id}"}}')
        assert _by(answer, "state") == store.trial_counts(sweep_id), sweep_id
    best = prometheus.query('morphtune_best_objective{sweep="demo"}')
    assert _by(best, "metric") == {"acc": store.best("demo").value}
    mo_best = _by(prometheus.query('morphtune_best_objective{sweep="mo"}'), "metric")
    assert mo_best == {
        "val_acc": store.best("mo", "val_acc", "max").value,
        "params": store.best("mo", "params", "min").value,
    }
    assert prometheus.query("morphtune_hypervolume")[frozenset({("sweep", "mo")})] == (
        pytest.approx(MO_HYPERVOLUME)
    )
    compute = prometheus.query('morphtune_trial_compute_seconds{sweep="timed"}')
    assert compute == {frozenset({("sweep", "timed")}): TIMED_COMPUTE}
    saved = prometheus.query("morphtune_early_stopping_saved_seconds")
    assert saved[frozenset({("sweep", "timed")})] == TIMED_SAVED
    # buckets 0.005:1, 0.1:3, 1.0:4: the median lies in (0.005, 0.1], 1 of its 2 observations in
    median = prometheus.query(
        'histogram_quantile(0.5, morphtune_suggestion_seconds_bucket{sweep="mo"})'
    )
    assert median == {frozenset({("sweep", "mo")}): pytest.approx(0.005 + 0.095 / 2)}
    assert prometheus.query("morphtune_store_read_errors") == {frozenset(): 0.0}

    # metrics are evaluated at scrape time: a change in the store shows in a later scrape
    ResultWriter(store_root, "timed").write_trial("r5", "completed", config={}, last_iteration=1)
    prometheus.wait_for(
        "the finished trial in a scrape",
        lambda: (
            prometheus.query('morphtune_trials{sweep="timed",state="running"}')
            == {frozenset({("state", "running"), ("sweep", "timed")}): 0.0}
        ),
    )

    # gRPC server metrics, after real calls
    _call_some_rpcs(service[0])
    handled = 'sum by (grpc_code) (grpc_server_handled_total{grpc_method="GetBestConfig"})'
    answer = prometheus.wait_for(
        "the RPCs in a scrape",
        lambda: (
            (codes := _by(prometheus.query(handled), "grpc_code"))
            and sum(codes.values()) == 4
            and codes
        ),
    )
    assert answer == {"OK": 2.0, "NOT_FOUND": 1.0, "INVALID_ARGUMENT": 1.0}
    started = prometheus.query('grpc_server_started_total{grpc_method="GetBestConfig"}')
    assert list(started.values()) == [4.0]
