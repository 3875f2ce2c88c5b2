"""A started thread-pool server (``build_server``) behind a small handle for the security and
limits tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from morphtune.service import BuiltServer, ConcurrencyLimiter, build_server

__all__ = ["RunningServer", "running_server"]


@dataclass
class RunningServer:
    built: BuiltServer

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

    def drain(self, grace: float | None) -> None:
        self.built.drain(grace)

    def health_shutdown(self) -> None:
        """NOT_SERVING, then end health Watch streams (what drain does first)."""
        self.built.health.enter_graceful_shutdown()
        self.built.health.end_watches()


@contextmanager
def running_server(store_root: Path, **options: Any) -> Iterator[RunningServer]:
    """A started server on a free loopback port; stopped on exit."""
    built = build_server(store_root, **options)
    built.server.start()
    try:
        yield RunningServer(built)
    finally:
        built.server.stop(grace=None).wait()
