"""Server limits: message size, and a cap on calls in flight that answers RESOURCE_EXHAUSTED.

* Message size: :func:`message_size_options` sets gRPC's receive *and* send limits; gRPC itself
  answers ``RESOURCE_EXHAUSTED`` for a request (or a response) over the limit.
* Concurrency: :class:`ConcurrencyLimitInterceptor` admits at most ``limit`` calls into the
  servicer at once; a call beyond that is answered ``RESOURCE_EXHAUSTED`` at once rather than
  queued. The check runs when the call reaches a worker thread, so the server's thread pool
  is sized larger than the cap (see ``_server``): calls over the cap then never wait behind
  admitted ones. Health checks are exempt, so a busy server still answers its probes.
* Deadlines: gRPC cancels a call whose deadline passes (``context.is_active()`` turns false,
  ``context.time_remaining()`` reaches 0) and stops pulling from a response stream; servicer
  loops that wait check ``context.is_active()``. A slot is released when the handler returns
  or its response stream is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from morphtune.service._handlers import Behavior, WrappedHandlers, rewrap

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "LIMIT_EXEMPT_PREFIXES",
    "ConcurrencyLimitInterceptor",
    "ConcurrencyLimiter",
    "busy_message",
    "message_size_options",
]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
LIMIT_EXEMPT_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)


def message_size_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel options capping received and sent messages at ``max_message_bytes``."""
    if isinstance(max_message_bytes, bool) or not isinstance(max_message_bytes, int):
        raise TypeError(f"max_message_bytes must be an int, got {max_message_bytes!r}")
    if max_message_bytes < 1024:
        raise ValueError(f"max_message_bytes must be >= 1024, got {max_message_bytes}")
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def busy_message(limit: int) -> str:
    """What a call over the concurrency cap is told."""
    return f"server busy: {limit} calls in flight (--max-concurrent {limit}); retry with backoff"


class ConcurrencyLimiter:
    """A non-blocking counting semaphore that reports how many slots are taken."""

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"max_concurrent must be an int, got {limit!r}")
        if limit < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {limit}")
        self._limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> bool:
        with self._lock:
            if self._in_flight >= self._limit:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self._in_flight <= 0:
                raise RuntimeError("ConcurrencyLimiter released more often than acquired")
            self._in_flight -= 1


class ConcurrencyLimitInterceptor(grpc.ServerInterceptor):
    """Admits at most ``limiter.limit`` calls at once; the rest get RESOURCE_EXHAUSTED."""

    def __init__(
        self,
        limiter: ConcurrencyLimiter,
        exempt_prefixes: Sequence[str] = LIMIT_EXEMPT_PREFIXES,
    ) -> None:
        self._limiter = limiter
        self._exempt = tuple(exempt_prefixes)
        self._busy = busy_message(limiter.limit)
        self._wrapped = WrappedHandlers(
            lambda _method, handler: rewrap(handler, self._guard_single, self._guard_stream)
        )

    @property
    def limiter(self) -> ConcurrencyLimiter:
        return self._limiter

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._exempt):
            return handler
        return self._wrapped(handler_call_details.method, handler)

    def _guard_single(self, behavior: Behavior) -> Behavior:
        limiter, busy = self._limiter, self._busy

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if not limiter.try_acquire():
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, busy)
            try:
                return behavior(request, context)
            finally:
                limiter.release()

        return guarded

    def _guard_stream(self, behavior: Behavior) -> Behavior:
        limiter, busy = self._limiter, self._busy

        def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if not limiter.try_acquire():
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, busy)
            try:
                yield from behavior(request, context)
            finally:  # also on GeneratorExit: grpc closes the stream on cancel or deadline
                limiter.release()

        return guarded
