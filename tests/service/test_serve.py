"""``serve()`` as a real process: it answers, exposes /metrics, and stops on a signal."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from morphtune.service import SweepClient, serve
from tests.store.sweeps import SWEEP

_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+) \(metrics on 127\.0\.0\.1:(\d+)")


def _wait_for_ports(process: subprocess.Popen[str]) -> tuple[int, int]:
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        match = _LISTENING.search(line)
        if match:
            return int(match.group(1)), int(match.group(2))
    raise AssertionError(f"server exited before listening: {''.join(lines)}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_process_stops_cleanly_on_signal(store_root: Path, signum: int) -> None:
    command = [sys.executable, "-m", "morphtune.service", "--store", str(store_root)]
    process = subprocess.Popen(
        [*command, "--port", "0", "--metrics-port", "0"], stderr=subprocess.PIPE, text=True
    )
    try:
        port, metrics_port = _wait_for_ports(process)
        with SweepClient(f"127.0.0.1:{port}") as client:
            assert client.health() == "SERVING"
            assert client.best(SWEEP)["trial_id"] == "t0"
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert 'morphtune_trials{state="completed",sweep="demo"} 2.0' in body
        process.send_signal(signum)
        _, rest = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "morphtune service stopped" in rest


def test_serve_in_thread_stops_on_event(store_root: Path) -> None:
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, args=(store_root, "127.0.0.1", 0, None), kwargs={"stop": stop, "grace": 0}
    )
    thread.start()
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
