"""The real server as a subprocess (``python -m morphtune.service``), its log drained by a
thread so the pipe never fills."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_LISTENING = re.compile(r"listening on [^ ]*:(\d+) ")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{text!r} not logged; log:\n{self.log()}")
            time.sleep(0.05)


def drain_log(
    process: subprocess.Popen[str],
    lines: list[str],
    found: threading.Event,
    listening: re.Pattern[str] = _LISTENING,
) -> None:
    """Collect a server's log (so the pipe never fills) and set ``found`` at its
    ``listening`` line, or when it exits first (the caller then fails with the log)."""
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        if listening.search(line):
            found.set()
    found.set()


@contextmanager
def server_process(
    store: Path, *args: str, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start the server on a free port with ``args``; kill it on exit if still running."""
    command = [sys.executable, "-m", "morphtune.service", "--store", str(store), "--port", "0"]
    process = subprocess.Popen(
        [*command, "--metrics-port", "-1", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []
    found = threading.Event()
    drain = threading.Thread(target=drain_log, args=(process, lines, found), daemon=True)
    drain.start()
    try:
        found.wait(timeout=60)
        match = next((m for m in map(_LISTENING.search, lines) if m), None)
        if match is None:
            raise AssertionError(f"server did not start:\n{''.join(lines)}")
        yield ServerProcess(process, int(match.group(1)), lines)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        drain.join(timeout=10)
