"""``grpc.health.v1.Health`` for the asyncio engine, with the same real status as
:class:`~morphtune.service._health.StoreHealth`: SERVING only while the store root is
readable (probed on the thread pool at most once per ``recheck_seconds``), NOT_SERVING for
good once draining, and Watch streams that end when the server drains."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from morphtune.service._health import store_unreadable
from morphtune.store import SweepStore

__all__ = ["AioStoreHealth"]

_LOGGER = logging.getLogger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class AioStoreHealth(health_pb2_grpc.HealthServicer):
    """Async health servicer; create and use it on the server's event loop."""

    def __init__(
        self,
        store: SweepStore,
        services: Sequence[str],
        executor: futures.Executor,
        recheck_seconds: float = 1.0,
    ) -> None:
        self._store = store
        self._executor = executor
        self._recheck_seconds = recheck_seconds
        self._status = dict.fromkeys(("", *services), _NOT_SERVING)
        self._problem: str | None = "not probed yet"
        self._probed_at = -float("inf")
        self._probing: asyncio.Lock | None = None
        self._changed: asyncio.Condition | None = None
        self._draining = False
        self._ended = False
        self._version = 0  # bumped on every change, so a watcher never misses one

    @property
    def problem(self) -> str | None:
        return self._problem

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _publish(self) -> None:
        condition = self._condition()
        async with condition:
            self._version += 1
            condition.notify_all()

    async def refresh(self, force: bool = False) -> None:
        """Probe the store (unless probed within ``recheck_seconds``) and set the status."""
        if self._probing is None:
            self._probing = asyncio.Lock()
        if not force and time.monotonic() - self._probed_at < self._recheck_seconds:
            return
        async with self._probing:
            if not force and time.monotonic() - self._probed_at < self._recheck_seconds:
                return
            loop = asyncio.get_running_loop()
            problem = await loop.run_in_executor(self._executor, store_unreadable, self._store)
            self._probed_at = time.monotonic()
            if problem != self._problem:
                if problem is None:
                    _LOGGER.info("store readable: serving")
                else:
                    _LOGGER.warning("not serving: %s", problem)
            self._problem = problem
            if not self._draining:
                status = _SERVING if problem is None else _NOT_SERVING
                self._status = dict.fromkeys(self._status, status)
                await self._publish()

    async def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every service from now on."""
        self._draining = True
        self._status = dict.fromkeys(self._status, _NOT_SERVING)
        await self._publish()

    async def end_watches(self) -> None:
        """End every open Watch stream with OK (after its NOT_SERVING update)."""
        self._ended = True
        await self._publish()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # type: ignore[override]
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        await self.refresh()
        condition = self._condition()
        last = None
        while True:
            seen = self._version
            status = self._status.get(request.service, _UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if self._ended:
                return
            async with condition:
                await condition.wait_for(lambda: self._version != seen)  # noqa: B023
