"""The asyncio engine's call pipeline: the sync servicer, auth, limits and metrics on ``grpc.aio``.

``serve --engine aio`` runs this engine: on one event loop a call whose answer is already
cached (the common case: GetBestConfig, GetSweep, ListTrials, GetParetoFront while the sweep
is unchanged) is answered inline, without a thread hop; any other call runs the synchronous
servicer method on a thread pool, so reading Parquet never blocks the loop. WatchSweep
streams pull each row on the pool too.

Per call, in order: metrics (``grpc_server_*``, every call counted with its final code),
bearer auth (the request bytes of a refused call are never parsed), the concurrency cap
(calls over it answer RESOURCE_EXHAUSTED at once; nothing queues), then the servicer.
Health and reflection run natively async; health is exempt from auth and the cap.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from morphtune.metrics import GrpcServerMetrics
from morphtune.service._auth import AUTH_EXEMPT_PREFIXES, TokenSet, bearer_failure
from morphtune.service._interceptors import MethodMetrics, method_labels
from morphtune.service._limits import LIMIT_EXEMPT_PREFIXES, ConcurrencyLimiter, busy_message
from morphtune.service._servicer import SweepServicer

__all__ = ["Pipeline", "registered_handlers", "wrap_handlers"]

_LOGGER = logging.getLogger(__name__)
_END = object()


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details


class _SyncContext:
    """What a synchronous servicer method sees of an asyncio call (from any thread).

    The call counts as active until the asyncio side ends it (:meth:`end`: the call returned,
    failed, was cancelled or passed its deadline); callbacks run then. (``grpc.aio``'s own
    ``done()`` and done-callbacks only turn once the handler has returned, too late for a
    servicer loop that waits on them.)
    """

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._active = True
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)

    def is_active(self) -> bool:
        return self._active

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if not self._active:
                return False
            self._callbacks.append(callback)
            return True

    def end(self) -> None:
        with self._lock:
            self._active = False
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one failing callback must not skip the others
                _LOGGER.exception("call-end callback failed")

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()


_CACHE_KEYS = {
    "GetBestConfig": "best",
    "GetSweep": "sweep",
    "ListTrials": "trials",
    "GetParetoFront": "pareto",
}


def _peek_cache(servicer: SweepServicer, method: str, request: Any) -> Any:
    """The servicer's cached answer to ``request`` when giving it needs no store access (the
    sweep was checked within the servicer's check interval), else None. A miss is always
    safe: the call then runs the servicer method on the pool. A servicer method
    ``cached_answer(method, request)`` replaces this when present."""
    kind = _CACHE_KEYS.get(method)
    cache = getattr(servicer, "_cache", None)
    if kind is None or cache is None:
        return None
    entry = cache.get(request.sweep_id)
    if entry is None:
        return None
    payload = b"" if kind == "sweep" else request.SerializeToString(deterministic=True)
    answer = entry.answers.get((kind, payload))
    return answer if hasattr(answer, "SerializeToString") else None


@dataclass
class Pipeline:
    """What every wrapped call goes through; one per server."""

    servicer: SweepServicer
    executor: futures.ThreadPoolExecutor
    tokens: TokenSet
    limiter: ConcurrencyLimiter | None
    metrics: GrpcServerMetrics | None

    def record(self, method: str, handler: grpc.RpcMethodHandler) -> MethodMetrics | None:
        if self.metrics is None:
            return None
        return MethodMetrics(self.metrics, method_labels(method, handler))

    def refusal(self, method: str, context: grpc.aio.ServicerContext) -> tuple[Any, str] | None:
        if self.tokens and not method.startswith(AUTH_EXEMPT_PREFIXES):
            reason = bearer_failure(self.tokens, context.invocation_metadata())
            if reason is not None:
                _LOGGER.info("unauthenticated call to %s refused: %s", method, reason)
                context.set_trailing_metadata((("www-authenticate", 'Bearer realm="morphtune"'),))
                return grpc.StatusCode.UNAUTHENTICATED, reason
        return None

    def admit(self, method: str) -> bool:
        """Take a concurrency slot (True), or False when the cap is reached."""
        if self.limiter is None or method.startswith(LIMIT_EXEMPT_PREFIXES):
            return True
        return self.limiter.try_acquire()

    def leave(self, method: str) -> None:
        if self.limiter is not None and not method.startswith(LIMIT_EXEMPT_PREFIXES):
            self.limiter.release()

    def busy(self) -> str:
        return busy_message(self.limiter.limit if self.limiter is not None else 0)

    def enter(self, method: str, context: grpc.aio.ServicerContext) -> tuple[Any, str] | None:
        """Auth, then a concurrency slot: None when admitted (call :meth:`leave` after), else
        the status to abort with (no slot taken)."""
        refused = self.refusal(method, context)
        if refused is not None:
            return refused
        if not self.admit(method):
            return grpc.StatusCode.RESOURCE_EXHAUSTED, self.busy()
        return None


def _final_code(context: grpc.aio.ServicerContext, tracked: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()  # set by context.abort / set_code
    if isinstance(code, grpc.StatusCode):
        return code
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return tracked


def _parse(parse: Callable[[bytes], Any], raw: bytes, name: str) -> Any:
    try:
        return parse(raw)
    except Exception:  # a malformed body is the caller's error, not the server's
        raise _Aborted(
            grpc.StatusCode.INVALID_ARGUMENT, f"request body is not a valid {name} request"
        ) from None


def _cached_lookup(servicer: SweepServicer) -> Callable[[str, Any], Any]:
    hook = getattr(servicer, "cached_answer", None)
    if hook is not None:
        return hook  # type: ignore[no-any-return]
    return lambda method, request: _peek_cache(servicer, method, request)


def _bridged_unary(
    pipeline: Pipeline, method: str, handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    """A sync servicer method, answered inline from the cache (see
    :func:`_peek_cache`) or run on the pool."""
    behavior = handler.unary_unary
    parse = handler.request_deserializer
    name = method.rpartition("/")[2]
    record = pipeline.record(method, handler)
    cached = _cached_lookup(pipeline.servicer)

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        if record is not None:
            record.started.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            refused = pipeline.enter(method, context)
            if refused is not None:
                await context.abort(*refused)
            try:
                request = _parse(parse, raw, name)
                response = cached(name, request)
                if response is None:
                    shim = _SyncContext(context)
                    try:
                        response = await asyncio.get_running_loop().run_in_executor(
                            pipeline.executor, behavior, request, shim
                        )
                    finally:
                        shim.end()
                code = grpc.StatusCode.OK
                return response
            except _Aborted as aborted:
                await context.abort(aborted.code, aborted.details)
            finally:
                pipeline.leave(method)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if record is not None:
                record.finish(_final_code(context, code), start)

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=None, response_serializer=handler.response_serializer
    )


def _next_or_end(rows: Iterator[Any]) -> Any:
    return next(rows, _END)


def _close_when_idle(rows: Iterator[Any]) -> None:
    close = getattr(rows, "close", None)
    if close is None:
        return
    for _ in range(600):  # the generator may still be running on another pool thread
        try:
            close()
            return
        except ValueError:  # "generator already executing": it wakes when the call ends
            time.sleep(0.05)
    _LOGGER.warning("a response stream did not stop within 30 s of its call's end")


def _bridged_stream(
    pipeline: Pipeline, method: str, handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    """A sync server-streaming method; each item is pulled on the pool."""
    behavior = handler.unary_stream
    parse = handler.request_deserializer
    name = method.rpartition("/")[2]
    record = pipeline.record(method, handler)

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        start = time.perf_counter()
        if record is not None:
            record.started.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            refused = pipeline.enter(method, context)
            if refused is not None:
                await context.abort(*refused)
            try:
                request = _parse(parse, raw, name)
                loop = asyncio.get_running_loop()
                shim = _SyncContext(context)
                rows = behavior(request, shim)
                try:
                    while True:
                        row = await loop.run_in_executor(pipeline.executor, _next_or_end, rows)
                        if row is _END:
                            break
                        yield row
                finally:
                    # A cancelled pull still finishes on its thread: the servicer sees the
                    # call end and returns; the generator is closed after it.
                    shim.end()
                    loop.run_in_executor(pipeline.executor, _close_when_idle, rows)
                code = grpc.StatusCode.OK
            except _Aborted as aborted:
                await context.abort(aborted.code, aborted.details)
            finally:
                pipeline.leave(method)
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if record is not None:
                record.finish(_final_code(context, code), start)

    return grpc.unary_stream_rpc_method_handler(
        call, request_deserializer=None, response_serializer=handler.response_serializer
    )


def _native(
    pipeline: Pipeline, method: str, handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    """An async handler (health, reflection) with metrics, auth unless exempt, no cap."""
    record = pipeline.record(method, handler)
    arity = "stream" if handler.request_streaming else "unary"
    inner = getattr(handler, f"{arity}_{'stream' if handler.response_streaming else 'unary'}")

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        start = time.perf_counter()
        if record is not None:
            record.started.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            refused = pipeline.refusal(method, context)
            if refused is not None:
                await context.abort(*refused)
            async for response in inner(request, context):
                yield response
            code = grpc.StatusCode.OK
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if record is not None:
                record.finish(_final_code(context, code), start)

    async def single(request: Any, context: grpc.aio.ServicerContext) -> Any:
        start = time.perf_counter()
        if record is not None:
            record.started.inc()
        code = grpc.StatusCode.UNKNOWN
        try:
            refused = pipeline.refusal(method, context)
            if refused is not None:
                await context.abort(*refused)
            response = await inner(request, context)
            code = grpc.StatusCode.OK
            return response
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if record is not None:
                record.finish(_final_code(context, code), start)

    factory = {
        ("unary", False): grpc.unary_unary_rpc_method_handler,
        ("unary", True): grpc.unary_stream_rpc_method_handler,
        ("stream", False): grpc.stream_unary_rpc_method_handler,
        ("stream", True): grpc.stream_stream_rpc_method_handler,
    }[(arity, handler.response_streaming)]
    return factory(
        streaming if handler.response_streaming else single,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def registered_handlers(
    register: Callable[[Any, Any], None], servicer: Any
) -> dict[str, grpc.RpcMethodHandler]:
    """What a generated ``add_*Servicer_to_server(servicer, server)`` registers, by full
    method name."""
    captured: dict[str, grpc.RpcMethodHandler] = {}

    class Capture:
        def add_registered_method_handlers(
            self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
        ) -> None:
            captured.update({f"/{service}/{name}": h for name, h in handlers.items()})

        def add_generic_rpc_handlers(self, _handlers: Any) -> None:
            pass  # the same handlers, also registered by name

    register(servicer, Capture())
    return captured


def wrap_handlers(
    pipeline: Pipeline, handlers: dict[str, grpc.RpcMethodHandler], *, bridged: bool
) -> dict[str, grpc.RpcMethodHandler]:
    """Each handler behind the pipeline; ``bridged``: sync servicer methods."""
    wrapped = {}
    for method, handler in handlers.items():
        if not bridged:
            wrapped[method] = _native(pipeline, method, handler)
        elif handler.response_streaming:
            wrapped[method] = _bridged_stream(pipeline, method, handler)
        else:
            wrapped[method] = _bridged_unary(pipeline, method, handler)
    return wrapped
