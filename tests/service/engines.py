"""Both server engines behind one handle, so the security and limits tests run on each: the
thread-pool server (``build_server``) and the asyncio one (``build_aio_server``, on an event
loop in a background thread)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from morphtune.service import (
    ENGINES,
    AioBuiltServer,
    BuiltServer,
    ConcurrencyLimiter,
    build_aio_server,
    build_server,
)

__all__ = ["ENGINES", "RunningServer", "running_server"]


@dataclass
class RunningServer:
    engine: str
    built: BuiltServer | AioBuiltServer
    loop: asyncio.AbstractEventLoop | None

    @property
    def port(self) -> int:
        return self.built.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.built.port}"

    @property
    def limiter(self) -> ConcurrencyLimiter | None:
        return self.built.limiter

    @property
    def health_problem(self) -> str | None:
        return self.built.health.problem

    def _run(self, coroutine: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def drain(self, grace: float | None) -> None:
        if isinstance(self.built, AioBuiltServer):
            self._run(self.built.drain(grace))
        else:
            self.built.drain(grace)

    def health_shutdown(self) -> None:
        """NOT_SERVING, then end health Watch streams (what drain does first)."""
        if isinstance(self.built, AioBuiltServer):
            self._run(self.built.health.enter_graceful_shutdown())
            self._run(self.built.health.end_watches())
        else:
            self.built.health.enter_graceful_shutdown()
            self.built.health.end_watches()


@contextmanager
def running_server(engine: str, store_root: Path, **options: Any) -> Iterator[RunningServer]:
    """A started server of ``engine`` on a free loopback port; stopped on exit."""
    if engine == "thread":
        built = build_server(store_root, **options)
        built.server.start()
        try:
            yield RunningServer(engine, built, None)
        finally:
            built.server.stop(grace=None).wait()
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="aio-server", daemon=True)
    thread.start()

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

    try:
        aio_built: AioBuiltServer = run(build_aio_server(store_root, **options))
        run(aio_built.server.start())
        try:
            yield RunningServer(engine, aio_built, loop)
        finally:
            run(aio_built.server.stop(None))
            aio_built.executor.shutdown(wait=False, cancel_futures=True)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
