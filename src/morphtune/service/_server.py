"""Building and running the gRPC server: ``make_server`` for tests and embedding, ``serve``
for the blocking process (gRPC plus the Prometheus endpoint, stopped by SIGTERM/SIGINT)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from morphtune.metrics import GrpcServerMetrics, build_registry, start_metrics_http
from morphtune.service._interceptors import MetricsInterceptor
from morphtune.service._servicer import SERVICE_NAME, SweepServicer
from morphtune.service.v1 import morphtune_pb2_grpc
from morphtune.store import SweepStore

__all__ = ["DEFAULT_METRICS_PORT", "DEFAULT_PORT", "make_server", "serve"]

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9464
_LOGGER = logging.getLogger(__name__)

# What ``signal.signal`` accepts and returns (a handler, SIG_DFL/SIG_IGN, or None).
_SignalHandler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True)
class _Built:
    server: grpc.Server
    port: int
    health: health.HealthServicer


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _build(
    store_root: str | os.PathLike[str],
    host: str,
    port: int,
    metrics_registry: CollectorRegistry | None,
    max_workers: int,
) -> _Built:
    interceptors = []
    if metrics_registry is not None:
        interceptors.append(MetricsInterceptor(GrpcServerMetrics.register(metrics_registry)))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="morphtune-grpc"),
        interceptors=interceptors,
        # Without this a second server on a busy port silently shares it with the first.
        options=[("grpc.so_reuseport", 0)],
    )
    morphtune_pb2_grpc.add_SweepServiceServicer_to_server(
        SweepServicer(SweepStore(store_root)), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = _address(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot bind the gRPC server to {address}: {error}") from error
    if bound == 0:
        raise OSError(f"cannot bind the gRPC server to {address}")
    return _Built(server, bound, health_servicer)


def make_server(
    store_root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics_registry: CollectorRegistry | None = None,
    max_workers: int = 8,
) -> tuple[grpc.Server, int]:
    """A bound, **not yet started** server over the store at ``store_root``, and its port.

    It serves ``morphtune.v1.SweepService``, ``grpc.health.v1.Health`` (SERVING for ``""`` and
    the service) and server reflection, plaintext. ``port=0`` picks a free port. With a
    ``metrics_registry``, the ``grpc_server_*`` metrics are registered there (so one registry
    serves one server). Call ``server.start()``, later ``server.stop(grace)``.
    """
    built = _build(store_root, host, port, metrics_registry, max_workers)
    return built.server, built.port


def serve(
    store_root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    *,
    grace: float = 5.0,
    stop: threading.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then drain for ``grace`` seconds.

    Also serves Prometheus metrics (store collector and gRPC server metrics) at
    ``http://host:metrics_port/metrics`` unless ``metrics_port`` is None. Signal handlers are
    installed only when called from the main thread; they are restored on return.
    """
    stop = stop or threading.Event()
    registry = build_registry(store_root)
    built = _build(store_root, host, port, registry, max_workers=8)
    metrics_http = None
    if metrics_port is not None:
        metrics_http, metrics_port = start_metrics_http(metrics_port, registry, host=host)
    previous = _install_signal_handlers(stop)
    built.server.start()
    _LOGGER.info(
        "morphtune service listening on %s (metrics on %s, store %s)",
        _address(host, built.port),
        "off" if metrics_http is None else _address(host, metrics_port or 0),
        os.fspath(store_root),
    )
    try:
        stop.wait()
    finally:
        _LOGGER.info("morphtune service stopping (grace %.1fs)", grace)
        built.health.enter_graceful_shutdown()
        built.server.stop(grace).wait()
        if metrics_http is not None:
            metrics_http.shutdown()
            metrics_http.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _LOGGER.info("morphtune service stopped")


def _install_signal_handlers(stop: threading.Event) -> dict[int, _SignalHandler]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        _LOGGER.info("received signal %d", signum)
        stop.set()

    return {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)
    }
