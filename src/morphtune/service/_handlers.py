"""Helpers for server interceptors that wrap a method handler's behavior.

grpc hands an interceptor the same registered handler object for every call of a method, so
:class:`WrappedHandlers` wraps each (method, handler) pair once and reuses the result: no
closures are built per call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc

__all__ = ["Behavior", "WrappedHandlers", "rewrap"]

Behavior = Callable[[Any, grpc.ServicerContext], Any]

_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def rewrap(
    handler: grpc.RpcMethodHandler,
    wrap_single: Callable[[Behavior], Behavior],
    wrap_stream: Callable[[Behavior], Behavior],
) -> grpc.RpcMethodHandler:
    """``handler`` with its behavior wrapped (by response arity), same (de)serializers."""
    wrap = wrap_stream if handler.response_streaming else wrap_single
    for attribute, factory in _FACTORIES.items():
        behavior = getattr(handler, attribute)
        if behavior is not None:
            return factory(
                wrap(behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class WrappedHandlers:
    """``wrap(method, handler)`` computed once per (method, handler object).

    Holds at most ``max_entries`` pairs (then starts over), so handlers built per call by an
    inner interceptor cannot grow it without bound.
    """

    def __init__(
        self,
        wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler],
        max_entries: int = 1024,
    ) -> None:
        self._wrap = wrap
        self._max_entries = max_entries
        self._cache: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]]
        self._cache = {}
        self._lock = threading.Lock()

    def __call__(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        key = (method, id(handler))
        cached = self._cache.get(key)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        with self._lock:
            if len(self._cache) >= self._max_entries:
                self._cache.clear()
            self._cache[key] = (handler, wrapped)
        return wrapped
