"""Server interceptor feeding the ``grpc_server_*`` Prometheus metrics.

Counts every RPC that reaches a registered method, whatever its type, with the final status
code read from the servicer context (``OK`` when none was set and nothing was raised,
``UNKNOWN`` for an unhandled exception, ``CANCELLED`` when a streaming client goes away). Calls
to unregistered methods are answered UNIMPLEMENTED by grpc itself and are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from morphtune.metrics import GrpcServerMetrics

__all__ = ["MetricsInterceptor"]

_Behavior = Callable[[Any, grpc.ServicerContext], Any]


def _labels(method: str, handler: grpc.RpcMethodHandler) -> tuple[str, str, str]:
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
    return code if isinstance(code, grpc.StatusCode) else default


class MetricsInterceptor(grpc.ServerInterceptor):
    """Records started, handled (by code) and handling time of each RPC."""

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        labels = _labels(handler_call_details.method, handler)
        if handler.response_streaming:
            wrap = self._wrap_streaming_response
        else:
            wrap = self._wrap_single_response
        factories = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for attribute, factory in factories.items():
            behavior = getattr(handler, attribute)
            if behavior is not None:
                return factory(
                    wrap(behavior, labels),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _finish(self, labels: tuple[str, str, str], code: grpc.StatusCode, start: float) -> None:
        self._metrics.handled.labels(*labels, code.name).inc()
        self._metrics.handling_seconds.labels(*labels).observe(time.perf_counter() - start)

    def _wrap_single_response(self, behavior: _Behavior, labels: tuple[str, str, str]) -> _Behavior:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            self._metrics.started.labels(*labels).inc()
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
                self._finish(labels, code, start)

        return wrapped

    def _wrap_streaming_response(
        self, behavior: _Behavior, labels: tuple[str, str, str]
    ) -> _Behavior:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self._metrics.started.labels(*labels).inc()
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                yield from behavior(request, context)
                code = _final_code(context, grpc.StatusCode.OK)
            except GeneratorExit:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = _final_code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                self._finish(labels, code, start)

        return wrapped
