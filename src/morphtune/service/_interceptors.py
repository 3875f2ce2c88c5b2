"""Server interceptor feeding the ``grpc_server_*`` Prometheus metrics.

Counts every RPC that reaches a registered method, whatever its type, with the final status
code read from the servicer context (``OK`` when none was set and nothing was raised,
``UNKNOWN`` for an unhandled exception, ``CANCELLED`` when a streaming client goes away,
``DEADLINE_EXCEEDED`` when the call's deadline passed before it ended). Calls to unregistered
methods are answered UNIMPLEMENTED by grpc itself and are not counted.

It must be the **outermost** interceptor: calls refused by the auth or concurrency
interceptors inside it are then counted too, as ``UNAUTHENTICATED`` / ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from morphtune.metrics import GrpcServerMetrics
from morphtune.service._handlers import Behavior, WrappedHandlers, rewrap

__all__ = ["MethodMetrics", "MetricsInterceptor", "method_labels"]


def method_labels(method: str, handler: grpc.RpcMethodHandler) -> tuple[str, str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    kind = {
        (False, False): "unary",
        (True, False): "client_stream",
        (False, True): "server_stream",
        (True, True): "bidi_stream",
    }[(handler.request_streaming, handler.response_streaming)]
    return kind, service, name


def _final_code(context: grpc.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if context.time_remaining() <= 0:  # the client was answered DEADLINE_EXCEEDED by grpc
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if not context.is_active():
        # the call ended before the handler did: the client cancelled, or its deadline
        # passed on its own clock a moment before the server's copy of it; either way the
        # client was not answered OK
        return grpc.StatusCode.CANCELLED
    return default


class MetricsInterceptor(grpc.ServerInterceptor):
    """Records started, handled (by code) and handling time of each RPC."""

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self._metrics = metrics
        self._wrapped = WrappedHandlers(self._wrap)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrapped(handler_call_details.method, handler)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        record = MethodMetrics(self._metrics, method_labels(method, handler))
        if getattr(handler.unary_stream, "experimental_non_blocking", False):
            # Health Watch answers through a callback and holds no thread; keep it that way.
            return grpc.unary_stream_rpc_method_handler(
                _non_blocking_stream(handler.unary_stream, record),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return rewrap(
            handler,
            lambda behavior: _single_response(behavior, record),
            lambda behavior: _streaming_response(behavior, record),
        )


class MethodMetrics:
    """One method's metric children, resolved once (``labels()`` takes a lock per lookup)."""

    def __init__(self, metrics: GrpcServerMetrics, labels: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self.started = metrics.started.labels(*labels)
        self._seconds = metrics.handling_seconds.labels(*labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def finish(self, code: grpc.StatusCode, start: float) -> None:
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = self._metrics.handled.labels(*self._labels, code.name)
        handled.inc()
        self._seconds.observe(time.perf_counter() - start)


def _single_response(behavior: Behavior, record: MethodMetrics) -> Behavior:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        record.started.inc()
        start = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            response = behavior(request, context)
            code = _final_code(context, grpc.StatusCode.OK)
            return response
        except Exception:
            code = _final_code(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            record.finish(code, start)

    return wrapped


def _streaming_response(behavior: Behavior, record: MethodMetrics) -> Behavior:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        record.started.inc()
        start = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            yield from behavior(request, context)
            code = _final_code(context, grpc.StatusCode.OK)
        except GeneratorExit:
            code = _final_code(context, grpc.StatusCode.CANCELLED)
            raise
        except Exception:
            code = _final_code(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            record.finish(code, start)

    return wrapped


def _non_blocking_stream(behavior: Callable[..., Any], record: MethodMetrics) -> Behavior:
    def wrapped(
        request: Any,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> Any:
        record.started.inc()
        start = time.perf_counter()
        context.add_callback(
            lambda: record.finish(_final_code(context, grpc.StatusCode.CANCELLED), start)
        )
        return behavior(request, context, send_response_callback=send_response_callback)

    wrapped.experimental_non_blocking = True  # type: ignore[attr-defined]
    wrapped.experimental_thread_pool = getattr(  # type: ignore[attr-defined]
        behavior, "experimental_thread_pool", None
    )
    return wrapped
