"""``grpc.health.v1.Health`` with a real status: SERVING only while the store root is readable.

The store is probed when the server is built and again on a ``Check`` at most once per
``recheck_seconds``; a change is pushed to ``Watch`` streams too. After
:meth:`~grpc_health.v1.health.HealthServicer.enter_graceful_shutdown` (server draining)
every service stays ``NOT_SERVING``, and :meth:`StoreHealth.end_watches` ends the open
``Watch`` streams (OK, after the NOT_SERVING update) so they do not hold the server's drain
until the grace period runs out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grpc_health.v1 import health, health_pb2

from morphtune.store import StoreError, SweepStore

__all__ = ["StoreHealth", "store_unreadable"]

_LOGGER = logging.getLogger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def store_unreadable(store: SweepStore) -> str | None:
    """None when the store root can be listed, else why not."""
    root = store.root
    if isinstance(root, Path) and not (root.is_dir() and os.access(root, os.R_OK | os.X_OK)):
        return f"store root {os.fspath(root)!r} is not a readable directory"
    try:
        store.list_sweeps()
    except (OSError, StoreError) as error:
        return f"store root {os.fspath(root)!r} cannot be listed: {error}"
    return None


class _Stream:
    """A Watch stream's send callback that forwards nothing after the end (``None``)."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._ended = False

    def __call__(self, response: Any) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = response is None
            self._send(response)


class StoreHealth(health.HealthServicer):
    """Health servicer whose services are SERVING exactly while ``store`` is readable."""

    def __init__(
        self, store: SweepStore, services: Sequence[str], recheck_seconds: float = 1.0
    ) -> None:
        super().__init__()
        self._store = store
        self._services = ("", *services)
        self._recheck_seconds = recheck_seconds
        self._probe_lock = threading.Lock()
        self._probed_at = -float("inf")
        self._problem: str | None = "not probed yet"
        self._streams: set[_Stream] = set()
        self._streams_lock = threading.Lock()
        self.refresh(force=True)

    @property
    def problem(self) -> str | None:
        """Why the store was unreadable at the last probe (None: it was readable)."""
        return self._problem

    def refresh(self, force: bool = False) -> None:
        """Probe the store (unless probed within ``recheck_seconds``) and set the status."""
        if not force and time.monotonic() - self._probed_at < self._recheck_seconds:
            return
        with self._probe_lock:
            if not force and time.monotonic() - self._probed_at < self._recheck_seconds:
                return
            problem = store_unreadable(self._store)
            self._probed_at = time.monotonic()
            if problem != self._problem:
                if problem is None:
                    _LOGGER.info("store readable: serving")
                else:
                    _LOGGER.warning("not serving: %s", problem)
            self._problem = problem
            status = _SERVING if problem is None else _NOT_SERVING
            for service in self._services:
                self.set(service, status)

    def Check(self, request: Any, context: Any) -> Any:
        self.refresh()
        return super().Check(request, context)

    def Watch(
        self,
        request: Any,
        context: Any,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> Any:
        if send_response_callback is None:  # a server without non-blocking streams
            return super().Watch(request, context)
        stream = _Stream(send_response_callback)
        with self._streams_lock:
            self._streams.add(stream)
        context.add_callback(lambda: self._forget(stream))
        return super().Watch(request, context, send_response_callback=stream)

    def _forget(self, stream: _Stream) -> None:
        with self._streams_lock:
            self._streams.discard(stream)

    def end_watches(self) -> None:
        """End every open Watch stream with OK (call after ``enter_graceful_shutdown``)."""
        with self._streams_lock:
            streams, self._streams = self._streams, set()
        for stream in streams:
            stream(None)
