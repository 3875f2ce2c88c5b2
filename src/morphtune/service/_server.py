"""Building and running the gRPC server: ``make_server``/``build_server`` for tests and
embedding, ``serve`` for the blocking process (gRPC plus the Prometheus endpoint, drained on
SIGTERM/SIGINT).

Interceptors, outermost first: metrics (so refused calls are counted with their code), bearer
auth (when tokens are configured), concurrency cap (when ``max_concurrent`` is set).
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from morphtune.metrics import GrpcServerMetrics, build_registry, start_metrics_http
from morphtune.service._auth import AuthInterceptor, TokenSet
from morphtune.service._health import StoreHealth
from morphtune.service._interceptors import MetricsInterceptor
from morphtune.service._jobs import RayJobsClient
from morphtune.service._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ConcurrencyLimiter,
    ConcurrencyLimitInterceptor,
    message_size_options,
)
from morphtune.service._servicer import SERVICE_NAME, SweepServicer
from morphtune.service._tls import TlsConfig
from morphtune.service.v1 import morphtune_pb2_grpc
from morphtune.store import SweepStore

__all__ = [
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_PORT",
    "BuiltServer",
    "build_server",
    "make_server",
    "serve",
]

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9464
DEFAULT_MAX_CONCURRENT = 64
# Worker threads beyond the concurrency cap: they answer health checks and turn away calls
# over the cap at once (a call waits for a thread before the cap is checked).
SPARE_WORKERS = 4
_LOGGER = logging.getLogger(__name__)

# What ``signal.signal`` accepts and returns (a handler, SIG_DFL/SIG_IGN, or None).
_SignalHandler: TypeAlias = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True)
class BuiltServer:
    """A bound, not yet started server and the parts tests and ``serve`` reach into."""

    server: grpc.Server
    port: int
    health: StoreHealth
    servicer: SweepServicer
    auth: AuthInterceptor | None
    limiter: ConcurrencyLimiter | None

    def drain(self, grace: float | None) -> None:
        """Stop gracefully and wait: health NOT_SERVING first, then new calls are refused
        (UNAVAILABLE) while calls in flight get ``grace`` seconds to finish (None: cancel
        them now). WatchSweep and health Watch streams are ended at once, OK, since they
        never finish by themselves. Calls gRPC had received but not yet handed to a handler
        are cancelled by gRPC (CANCELLED; they never ran, so a retry is safe)."""
        self.health.enter_graceful_shutdown()
        stopped = self.server.stop(grace)
        self.servicer.close()  # WatchSweep streams end; clients resume from their token
        self.health.end_watches()  # after their NOT_SERVING update
        stopped.wait()


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def as_token_set(tokens: TokenSet | Iterable[str] | None) -> TokenSet:
    if tokens is None:
        return TokenSet()
    if isinstance(tokens, TokenSet):
        return tokens
    return TokenSet.from_strings(tokens)


def servicer_for(store: SweepStore, ray_address: str | None) -> SweepServicer:
    # Sweeps submitted through the service write where the service reads (a local or
    # shared-volume store: the runner writes to local paths only).
    root = store.root
    results_root = str(root) if isinstance(root, Path) else None
    jobs = None if ray_address is None else RayJobsClient(ray_address, results_root=results_root)
    return SweepServicer(store, jobs=jobs)


def warn_about_exposure(host: str, auth: bool, tls: bool) -> None:
    if is_loopback(host):
        return
    if not auth:
        _LOGGER.warning(
            "authentication is OFF while listening on %s: anyone who reaches the port reads "
            "the store; configure tokens (--token-file or $MORPHTUNE_TOKENS)",
            host,
        )
    elif not tls:
        _LOGGER.warning(
            "bearer tokens travel in plaintext on %s; serve with --tls-cert/--tls-key", host
        )


def bind(
    server: grpc.Server,
    where: str,
    credentials: grpc.ServerCredentials | None,
) -> int:
    """Bind ``server`` to ``where`` (plaintext without credentials); the port, or OSError."""
    try:
        if credentials is None:
            bound = server.add_insecure_port(where)
        else:
            bound = server.add_secure_port(where, credentials)
    except RuntimeError as error:
        raise OSError(f"cannot bind the gRPC server to {where}: {error}") from error
    if bound == 0:
        raise OSError(f"cannot bind the gRPC server to {where}")
    return bound


def build_server(
    store_root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics_registry: CollectorRegistry | None = None,
    max_workers: int = 8,
    tokens: TokenSet | Iterable[str] | None = None,
    tls: TlsConfig | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_concurrent: int | None = None,
    ray_address: str | None = None,
) -> BuiltServer:
    """Like :func:`make_server`, returning the parts as a :class:`BuiltServer`."""
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    token_set = as_token_set(tokens)
    options = [*message_size_options(max_message_bytes), ("grpc.so_reuseport", 0)]
    credentials = None if tls is None else tls.server_credentials()
    store = SweepStore(store_root)
    servicer = servicer_for(store, ray_address)

    interceptors: list[grpc.ServerInterceptor] = []
    if metrics_registry is not None:
        interceptors.append(MetricsInterceptor(GrpcServerMetrics.register(metrics_registry)))
    auth = AuthInterceptor(token_set) if token_set else None
    if auth is not None:
        interceptors.append(auth)
    limiter = None
    if max_concurrent is not None:
        limiter = ConcurrencyLimiter(max_concurrent)
        interceptors.append(ConcurrencyLimitInterceptor(limiter))
        max_workers = max(max_workers, max_concurrent + SPARE_WORKERS)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="morphtune-grpc"),
        interceptors=interceptors,
        # so_reuseport off: a second server on a busy port fails instead of sharing it.
        options=options,
    )
    morphtune_pb2_grpc.add_SweepServiceServicer_to_server(servicer, server)
    health_servicer = StoreHealth(store, (SERVICE_NAME,))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = bind(server, listen_address(host, port), credentials)
    warn_about_exposure(host, auth is not None, tls is not None)
    return BuiltServer(server, bound, health_servicer, servicer, auth, limiter)


def make_server(
    store_root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics_registry: CollectorRegistry | None = None,
    max_workers: int = 8,
    tokens: TokenSet | Iterable[str] | None = None,
    tls: TlsConfig | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_concurrent: int | None = None,
    ray_address: str | None = None,
) -> tuple[grpc.Server, int]:
    """A bound, **not yet started** server over the store at ``store_root``, and its port.

    It serves ``morphtune.v1.SweepService``, ``grpc.health.v1.Health`` (SERVING for ``""``
    and the service while the store root is readable) and server reflection. ``port=0``
    picks a free port. Options:

    * ``metrics_registry``: register the ``grpc_server_*`` metrics there (one registry per
      server).
    * ``tokens``: a :class:`TokenSet` or token strings (``"<token> [expires=<ISO 8601>]"``);
      calls then need ``authorization: Bearer <token>`` (health exempt). None/empty: off.
    * ``tls``: a :class:`TlsConfig` (mutual TLS when it has a client CA); None: plaintext.
    * ``max_message_bytes``: cap on each received and sent message (RESOURCE_EXHAUSTED).
    * ``max_concurrent``: calls admitted at once; more answer RESOURCE_EXHAUSTED.
    * ``ray_address``: the Ray dashboard address SubmitSweep/CancelSweep use.

    Call ``server.start()``, later ``server.stop(grace)``.
    """
    built = build_server(
        store_root,
        host=host,
        port=port,
        metrics_registry=metrics_registry,
        max_workers=max_workers,
        tokens=tokens,
        tls=tls,
        max_message_bytes=max_message_bytes,
        max_concurrent=max_concurrent,
        ray_address=ray_address,
    )
    return built.server, built.port


def serve(
    store_root: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    *,
    grace: float = 5.0,
    stop: threading.Event | None = None,
    token_file: str | os.PathLike[str] | None = None,
    tls: TlsConfig | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_concurrent: int | None = DEFAULT_MAX_CONCURRENT,
    ray_address: str | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then drain and return.

    Tokens come from ``token_file`` and ``$MORPHTUNE_TOKENS`` (none: auth off); SIGHUP
    re-reads them. Draining (see :meth:`BuiltServer.drain`): health turns NOT_SERVING, new
    calls are refused (UNAVAILABLE), calls in flight get ``grace`` seconds to finish, then
    the metrics endpoint closes. Prometheus metrics (store collector and gRPC server
    metrics) are served at ``http://host:metrics_port/metrics`` unless ``metrics_port`` is
    None. Called from the main thread
    (a serving process), it installs signal handlers (restored on return) and, once
    listening, moves the objects built so far out of the cyclic GC (``gc.freeze``).
    """
    stop = stop or threading.Event()
    tokens = TokenSet.load(token_file)
    registry = build_registry(store_root)
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "metrics_registry": registry,
        "tokens": tokens,
        "tls": tls,
        "max_message_bytes": max_message_bytes,
        "max_concurrent": max_concurrent,
        "ray_address": ray_address,
    }
    replacers: list[Callable[[TokenSet], None]] = []
    previous = _install_signal_handlers(stop, lambda: _reload_tokens(replacers, token_file))
    try:
        with _metrics_endpoint(metrics_port, registry, host) as bound_metrics_port:

            def listening(bound: int) -> None:
                if threading.current_thread() is threading.main_thread():
                    # A serving process: what is built so far lives as long as the process.
                    # Keep it out of the cyclic GC, whose full collections otherwise pause
                    # serving for ~30 ms (the p99 of a busy server).
                    gc.collect()
                    gc.freeze()
                _LOGGER.info(
                    "morphtune service listening on %s (metrics on %s, store %s)",
                    listen_address(host, bound),
                    "off"
                    if bound_metrics_port is None
                    else listen_address(host, bound_metrics_port),
                    os.fspath(store_root),
                )
                _LOGGER.info(
                    "auth %s, tls %s, max message %d bytes, max concurrent %s",
                    f"on ({len(tokens)} tokens)" if tokens else "off",
                    "off" if tls is None else ("mutual" if tls.mutual else "on"),
                    max_message_bytes,
                    "unlimited" if max_concurrent is None else max_concurrent,
                )

            _run_threaded(store_root, settings, stop, grace, replacers.append, listening)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _LOGGER.info("morphtune service stopped")


def _run_threaded(
    store_root: str | os.PathLike[str],
    settings: dict[str, Any],
    stop: threading.Event,
    grace: float,
    on_tokens: Callable[[Callable[[TokenSet], None]], None],
    listening: Callable[[int], None],
) -> None:
    built = build_server(store_root, **settings)
    if built.auth is not None:
        on_tokens(built.auth.replace_tokens)
    built.server.start()
    listening(built.port)
    try:
        stop.wait()
    finally:
        _LOGGER.info("morphtune service draining (grace %.1fs)", grace)
        built.drain(grace)


@contextmanager
def _metrics_endpoint(
    metrics_port: int | None, registry: CollectorRegistry, host: str
) -> Iterator[int | None]:
    if metrics_port is None:
        yield None
        return
    http, bound = start_metrics_http(metrics_port, registry, host=host)
    try:
        yield bound
    finally:
        http.shutdown()
        http.server_close()


def _reload_tokens(
    replacers: list[Callable[[TokenSet], None]], token_file: str | os.PathLike[str] | None
) -> None:
    try:
        tokens = TokenSet.load(token_file)
    except ValueError as error:
        _LOGGER.error("SIGHUP: tokens not reloaded, keeping the current ones: %s", error)
        return
    if not replacers or not tokens:
        _LOGGER.error("SIGHUP: auth cannot be switched on or off while running; restart the server")
        return
    for replace in replacers:
        replace(tokens)
    _LOGGER.info("SIGHUP: %d tokens loaded", len(tokens))


def _install_signal_handlers(
    stop: threading.Event, reload: Callable[[], None]
) -> dict[int, _SignalHandler]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        _LOGGER.info("received signal %d", signum)
        stop.set()

    def request_reload(_signum: int, _frame: FrameType | None) -> None:
        # Not in the handler itself: it may interrupt a thread holding a logging lock.
        threading.Thread(target=reload, name="morphtune-token-reload", daemon=True).start()

    previous: dict[int, _SignalHandler] = {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, request_reload)
    return previous
