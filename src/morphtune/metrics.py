"""Prometheus metrics shared by the runner and the service.

Search metrics are prefixed ``morphtune_`` and evaluated from the results store at scrape time
by :class:`SweepCollector`, which caches each sweep's figures on the store's
``fingerprint(sweep_id)`` (so a scrape of an unchanged store lists files and reads no Parquet);
gRPC server metrics use the usual names (``grpc_server_started_total``,
``grpc_server_handled_total``, ``grpc_server_handling_seconds``) and are fed by the service's
interceptor. Labels stay low-cardinality: per sweep, never per trial. Full definitions, with
how each figure is computed and example PromQL: ``docs/metrics.md``.

==========================================  =========  ======================================
metric                                      type       labels
==========================================  =========  ======================================
``morphtune_trials``                        gauge      ``sweep``, ``state`` (every state,
                                                       zeros too)
``morphtune_best_objective``                gauge      ``sweep``, ``metric`` (one series per
                                                       objective; best finite value of the
                                                       trials' last reports, failed trials
                                                       skipped; absent until one exists)
``morphtune_hypervolume``                   gauge      ``sweep`` (multi-objective sweeps)
``morphtune_hypervolume_reference``         gauge      ``sweep``, ``metric``: its reference
                                                       point (the worst value observed per
                                                       objective, as GetParetoFront)
``morphtune_suggestion_seconds``            histogram  ``sweep`` (from the manifest's search
                                                       summary; absent until written)
``morphtune_trial_compute_seconds``         gauge      ``sweep``: sum of the trials' last
                                                       reported wall time
``morphtune_early_stopping_saved_seconds``  gauge      ``sweep``: stopped trials' remaining
                                                       budget x their mean s/iteration
``morphtune_store_read_errors``             gauge      none: sweeps not (fully) read this
                                                       scrape
``grpc_server_started_total``               counter    ``grpc_type``, ``grpc_service``,
                                                       ``grpc_method``
``grpc_server_handled_total``               counter    same plus ``grpc_code`` (``OK``,
                                                       ``NOT_FOUND``...)
``grpc_server_handling_seconds``            histogram  ``grpc_type``, ``grpc_service``,
                                                       ``grpc_method``
==========================================  =========  ======================================
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from morphtune._metrics_figures import SweepFigures
from morphtune._metrics_sweep import sweep_figures
from morphtune.store import StoreError, SweepStore

__all__ = [
    "GrpcServerMetrics",
    "SweepCollector",
    "build_registry",
    "start_metrics_http",
]

_LOGGER = logging.getLogger(__name__)
_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")

#: HELP texts; docs/metrics.md says the same at length (keep both in sync).
HELP = {
    "morphtune_trials": "Trials per state in each sweep (every state listed, zeros too).",
    "morphtune_best_objective": (
        "Best finite value of each objective metric of a sweep (one series per objective, "
        "in that objective's direction) over the trials' last reports; failed trials skipped."
    ),
    "morphtune_hypervolume": (
        "Hypervolume of a multi-objective sweep: the volume its non-failed trials dominate "
        "(each trial's last row reporting every objective, finite values) up to "
        "morphtune_hypervolume_reference; equals GetParetoFront's default answer."
    ),
    "morphtune_hypervolume_reference": (
        "Reference point of morphtune_hypervolume, per objective: the worst value among "
        "the points it counts (so it moves when a worse trial arrives)."
    ),
    "morphtune_suggestion_seconds": (
        "Time the sweep's searcher took per suggestion (sampling, constraint checks, proxy "
        "scoring), from the manifest's search summary."
    ),
    "morphtune_trial_compute_seconds": (
        "Sum over a sweep's trials of their last reported wall time (Tune's time_total_s, "
        "else the engine's wall_s); failed trials count too."
    ),
    "morphtune_early_stopping_saved_seconds": (
        "Estimated compute saved by early stopping: over stopped trials, (budget - last "
        "iteration) x the trial's mean seconds per iteration; budget = the trial's "
        "training.epochs capped by the scheduler's max_t."
    ),
    "morphtune_store_read_errors": (
        "Sweeps not fully read during this scrape (an unreadable file, or a malformed "
        "manifest entry: what could be read is still exported)."
    ),
}


def _gauge(name: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, HELP[name], labels=labels)


@dataclass(frozen=True)
class _Families:
    """One scrape's metric families, filled sweep by sweep."""

    trials: GaugeMetricFamily = field(
        default_factory=lambda: _gauge("morphtune_trials", ["sweep", "state"])
    )
    best: GaugeMetricFamily = field(
        default_factory=lambda: _gauge("morphtune_best_objective", ["sweep", "metric"])
    )
    hypervolume: GaugeMetricFamily = field(
        default_factory=lambda: _gauge("morphtune_hypervolume", ["sweep"])
    )
    reference: GaugeMetricFamily = field(
        default_factory=lambda: _gauge("morphtune_hypervolume_reference", ["sweep", "metric"])
    )
    latency: HistogramMetricFamily = field(
        default_factory=lambda: HistogramMetricFamily(
            "morphtune_suggestion_seconds", HELP["morphtune_suggestion_seconds"], labels=["sweep"]
        )
    )
    compute: GaugeMetricFamily = field(
        default_factory=lambda: _gauge("morphtune_trial_compute_seconds", ["sweep"])
    )
    saved: GaugeMetricFamily = field(
        default_factory=lambda: _gauge("morphtune_early_stopping_saved_seconds", ["sweep"])
    )
    read_errors: GaugeMetricFamily = field(
        default_factory=lambda: _gauge("morphtune_store_read_errors", [])
    )

    def all(self) -> list[Metric]:
        return [getattr(self, item.name) for item in fields(self)]

    def add(self, sweep_id: str, figures: SweepFigures) -> None:
        """Add one sweep's samples."""
        for state, count in figures.counts.items():
            self.trials.add_metric([sweep_id, state], count)
        for metric, value in figures.best.items():
            self.best.add_metric([sweep_id, metric], value)
        if figures.hypervolume is not None:
            self.hypervolume.add_metric([sweep_id], figures.hypervolume)
        for metric, value in figures.reference.items():
            self.reference.add_metric([sweep_id, metric], value)
        if figures.latency is not None:
            buckets = [(floatToGoString(le), count) for le, count in figures.latency.buckets]
            self.latency.add_metric([sweep_id], buckets, figures.latency.total)
        self.compute.add_metric([sweep_id], figures.compute_seconds)
        if figures.saved_seconds is not None:
            self.saved.add_metric([sweep_id], figures.saved_seconds)


class SweepCollector(Collector):
    """The ``morphtune_*`` search metrics of every sweep in a store, read per scrape.

    Each sweep's figures are cached on ``store.fingerprint(sweep_id)``, which changes
    whenever the sweep's files change, so an unchanged sweep costs a directory listing per
    scrape. Read failures are never cached; sweeps that disappear are dropped.
    """

    def __init__(self, store: SweepStore) -> None:
        self._store = store
        self._cache: dict[str, tuple[str, SweepFigures]] = {}
        self._lock = threading.Lock()  # scrapes may come from several HTTP threads

    def describe(self) -> list[Metric]:
        return _Families().all()

    def _figures(self, sweep_id: str) -> SweepFigures:
        fingerprint = self._store.fingerprint(sweep_id)
        cached = self._cache.get(sweep_id)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        figures = sweep_figures(self._store, sweep_id)
        for problem in figures.problems:
            _LOGGER.warning("metrics: sweep %r: %s", sweep_id, problem)
        self._cache[sweep_id] = (fingerprint, figures)
        return figures

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        errors = 0
        with self._lock:
            sweeps = self._store.list_sweeps()
            for stale in self._cache.keys() - set(sweeps):
                del self._cache[stale]
            for sweep_id in sweeps:
                try:
                    figures = self._figures(sweep_id)
                except (StoreError, OSError, ValueError) as error:
                    _LOGGER.warning("metrics: cannot read sweep %r: %s", sweep_id, error)
                    self._cache.pop(sweep_id, None)
                    errors += 1
                    continue
                except Exception:  # a bug must not take /metrics down for every sweep
                    _LOGGER.exception("metrics: unexpected error reading sweep %r", sweep_id)
                    self._cache.pop(sweep_id, None)
                    errors += 1
                    continue
                errors += bool(figures.problems)
                families.add(sweep_id, figures)
        families.read_errors.add_metric([], errors)
        yield from families.all()


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
