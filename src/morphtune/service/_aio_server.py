"""The asyncio engine's server: :func:`build_aio_server` (call it on a running event loop)
and :func:`run_aio_server`, which ``serve(engine="aio")`` runs until stopped.

Same options, services and behaviour as :func:`~morphtune.service.build_server`; see
:mod:`morphtune.service._aio` for how a call is handled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from morphtune.metrics import GrpcServerMetrics
from morphtune.service._aio import Pipeline, registered_handlers, wrap_handlers
from morphtune.service._aio_health import AioStoreHealth
from morphtune.service._auth import TokenSet
from morphtune.service._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ConcurrencyLimiter,
    message_size_options,
)
from morphtune.service._server import (
    SPARE_WORKERS,
    as_token_set,
    bind,
    listen_address,
    servicer_for,
    warn_about_exposure,
)
from morphtune.service._servicer import SERVICE_NAME, SweepServicer
from morphtune.service._tls import TlsConfig
from morphtune.service.v1 import morphtune_pb2_grpc
from morphtune.store import SweepStore

__all__ = ["AioBuiltServer", "build_aio_server", "run_aio_server"]

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class AioBuiltServer:
    """A bound, not yet started asyncio server and its parts."""

    server: grpc.aio.Server
    port: int
    health: AioStoreHealth
    servicer: SweepServicer
    pipeline: Pipeline
    executor: futures.ThreadPoolExecutor

    @property
    def limiter(self) -> ConcurrencyLimiter | None:
        return self.pipeline.limiter

    async def drain(self, grace: float | None) -> None:
        """As :meth:`BuiltServer.drain <morphtune.service.BuiltServer.drain>`: NOT_SERVING
        first, new calls refused, calls in flight get ``grace`` seconds, streams end OK."""
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(grace))
        await asyncio.sleep(0)  # let stop() begin refusing before the streams end
        self.servicer.close()
        await self.health.end_watches()
        await stopping
        self.executor.shutdown(wait=False, cancel_futures=True)


def _group(
    handlers: dict[str, grpc.RpcMethodHandler],
) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method, handler in handlers.items():
        service, _, name = method.lstrip("/").rpartition("/")
        services.setdefault(service, {})[name] = handler
    return services


async def build_aio_server(
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
) -> AioBuiltServer:
    """A bound, not yet started ``grpc.aio`` server; options as ``make_server``'s.

    ``max_workers``: threads for servicer calls that are not answered from the cache (raised
    to ``max_concurrent + 4`` under a cap, since every open WatchSweep holds one).
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    tokens = as_token_set(tokens)
    options = [*message_size_options(max_message_bytes), ("grpc.so_reuseport", 0)]
    credentials = None if tls is None else tls.server_credentials()
    limiter = None if max_concurrent is None else ConcurrencyLimiter(max_concurrent)
    if max_concurrent is not None:
        max_workers = max(max_workers, max_concurrent + SPARE_WORKERS)
    store = SweepStore(store_root)
    servicer = servicer_for(store, ray_address)
    executor = futures.ThreadPoolExecutor(max_workers, thread_name_prefix="morphtune-aio")
    metrics = None if metrics_registry is None else GrpcServerMetrics.register(metrics_registry)
    pipeline = Pipeline(servicer, executor, tokens, limiter, metrics)
    health_servicer = AioStoreHealth(store, (SERVICE_NAME,), executor)
    await health_servicer.refresh(force=True)

    handlers = wrap_handlers(
        pipeline,
        registered_handlers(morphtune_pb2_grpc.add_SweepServiceServicer_to_server, servicer),
        bridged=True,
    )
    names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
    for register, native in (
        (health_pb2_grpc.add_HealthServicer_to_server, health_servicer),
        (
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection.aio.ReflectionServicer(names),
        ),
    ):
        handlers.update(
            wrap_handlers(pipeline, registered_handlers(register, native), bridged=False)
        )
    server = grpc.aio.server(options=options)
    for service, methods in _group(handlers).items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
        server.add_registered_method_handlers(service, methods)
    bound = bind(server, listen_address(host, port), credentials)
    warn_about_exposure(host, bool(tokens), tls is not None)
    return AioBuiltServer(server, bound, health_servicer, servicer, pipeline, executor)


def _replace_tokens(pipeline: Pipeline) -> Callable[[TokenSet], None]:
    def replace(tokens: TokenSet) -> None:
        pipeline.tokens = tokens

    return replace


async def run_aio_server(
    store_root: str | os.PathLike[str],
    settings: dict[str, object],
    stop: threading.Event,
    grace: float,
    on_tokens: Callable[[Callable[[TokenSet], None]], None],
    listening: Callable[[int], None],
) -> None:
    """Build, start, serve until ``stop`` is set, then drain."""
    built = await build_aio_server(store_root, **settings)  # type: ignore[arg-type]
    if built.pipeline.tokens:
        on_tokens(_replace_tokens(built.pipeline))
    await built.server.start()
    listening(built.port)
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()

    def wait_for_stop() -> None:
        stop.wait()
        try:
            loop.call_soon_threadsafe(stopped.set)
        except RuntimeError:  # the loop is already closed
            pass

    threading.Thread(target=wait_for_stop, name="morphtune-stop", daemon=True).start()
    try:
        await stopped.wait()
    finally:
        _LOGGER.info("morphtune service draining (grace %.1fs)", grace)
        await built.drain(grace)
