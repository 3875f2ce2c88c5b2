"""Prometheus metrics shared by the runner and the service.

Search metrics are prefixed ``morphtune_`` and evaluated from the results store at scrape time
by :class:`SweepCollector`; gRPC server metrics use the usual names
(``grpc_server_started_total``, ``grpc_server_handled_total``, ``grpc_server_handling_seconds``)
and are fed by the service's interceptor. Labels stay low-cardinality: per sweep, never per
trial.

=================================  =========  ===============================================
metric                             type       labels
=================================  =========  ===============================================
``morphtune_trials``               gauge      ``sweep``, ``state`` (every state, zeros too)
``morphtune_best_objective``       gauge      ``sweep``, ``metric`` (the manifest objective;
                                              best finite value of each trial's last report,
                                              failed trials skipped; absent until one exists)
``morphtune_store_read_errors``    gauge      none: sweeps that could not be read this scrape
``grpc_server_started_total``      counter    ``grpc_type``, ``grpc_service``, ``grpc_method``
``grpc_server_handled_total``      counter    same plus ``grpc_code`` (``OK``, ``NOT_FOUND``...)
``grpc_server_handling_seconds``   histogram  ``grpc_type``, ``grpc_service``, ``grpc_method``
=================================  =========  ===============================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from morphtune.store import NoResults, StoreError, SweepStore

__all__ = [
    "GrpcServerMetrics",
    "SweepCollector",
    "build_registry",
    "start_metrics_http",
]

_LOGGER = logging.getLogger(__name__)
_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class SweepCollector(Collector):
    """Trials per state and best objective value of every sweep in a store, read per scrape."""

    def __init__(self, store: SweepStore) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "morphtune_trials", "Trials per state in each sweep.", labels=["sweep", "state"]
            ),
            GaugeMetricFamily(
                "morphtune_best_objective",
                "Best finite value of each sweep's objective metric over the trials' last "
                "reports, failed trials skipped.",
                labels=["sweep", "metric"],
            ),
            GaugeMetricFamily(
                "morphtune_store_read_errors",
                "Sweeps whose store files could not be read during this scrape.",
            ),
        )

    def collect(self) -> Iterator[Metric]:
        trials, best, read_errors = self._families()
        errors = 0
        for sweep_id in self._store.list_sweeps():
            try:
                counts = self._store.trial_counts(sweep_id)
                objective = self._store.manifest(sweep_id).get("objective") or {}
                value = self._best_value(sweep_id, objective)
            except (StoreError, OSError) as error:
                _LOGGER.warning("metrics: cannot read sweep %r: %s", sweep_id, error)
                errors += 1
                continue
            for state, count in counts.items():
                trials.add_metric([sweep_id, state], count)
            if value is not None:
                best.add_metric([sweep_id, objective["metric"]], value)
        read_errors.add_metric([], errors)
        yield from (trials, best, read_errors)

    def _best_value(self, sweep_id: str, objective: dict[str, object]) -> float | None:
        if not objective.get("metric"):
            return None
        try:
            return self._store.best(sweep_id).value
        except (NoResults, ValueError):  # nothing finite yet, or the metric not reported yet
            return None


@dataclass(frozen=True)
class GrpcServerMetrics:
    """The gRPC server metrics, registered in one registry."""

    started: Counter
    handled: Counter
    handling_seconds: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> GrpcServerMetrics:
        return cls(
            started=Counter(
                "grpc_server_started_total",
                "RPCs started on the server.",
                _GRPC_LABELS,
                registry=registry,
            ),
            handled=Counter(
                "grpc_server_handled_total",
                "RPCs completed on the server, by status code.",
                (*_GRPC_LABELS, "grpc_code"),
                registry=registry,
            ),
            handling_seconds=Histogram(
                "grpc_server_handling_seconds",
                "Time from the start of an RPC to its completion on the server.",
                _GRPC_LABELS,
                registry=registry,
            ),
        )


def build_registry(store: SweepStore | str | os.PathLike[str]) -> CollectorRegistry:
    """A fresh registry holding a :class:`SweepCollector` over ``store`` (a store or its root)."""
    if not isinstance(store, SweepStore):
        store = SweepStore(store)
    registry = CollectorRegistry()
    registry.register(SweepCollector(store))
    return registry


def start_metrics_http(
    port: int, registry: CollectorRegistry, host: str = "127.0.0.1"
) -> tuple[WSGIServer, int]:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    ``port=0`` binds a free port; returns the server (stop it with ``shutdown()`` then
    ``server_close()``) and the bound port.
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
