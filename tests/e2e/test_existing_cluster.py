"""``morphtune run --address``: a sweep submitted to an already running Ray cluster.

The cluster is a real head node started with ``ray start --head --block`` on loopback
(its own ports, so it lives beside the session's Ray); the sweep runs from a separate
``morphtune`` process, as a user on a workstation would run it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from morphtune.store import SweepStore
from tests.net import free_port

pytestmark = pytest.mark.ray

SPEC = """
name: remote
dataset: {name: synthetic}
model: {width: 16, depth: 1}
training: {epochs: 2, lr: 0.02}
search:
  num_samples: 2
  max_concurrent: 2
  sampler: {name: random, seed: 0}
  scheduler: {name: fifo}
  space:
    model.width: {type: categorical, choices: [8, 16]}
"""


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture
def head_node(tmp_path: Path) -> Iterator[str]:
    ray_cli = Path(sys.executable).parent / "ray"
    port = free_port()
    ports = {
        "--port": port,
        "--dashboard-port": free_port(),
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
    }
    args = [str(ray_cli), "start", "--head", "--block", "--num-cpus=2", "--disable-usage-stats"]
    args += ["--node-ip-address=127.0.0.1", "--include-dashboard=true"]
    args += [f"{flag}={value}" for flag, value in ports.items()]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        wait_for_port(port, timeout=90)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            # A graceful `ray start --block` shutdown takes ~30 s; nothing here needs it (the
            # sweep has ended), so its process group is killed after a short grace.
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        log.close()
        # `ray start` recorded this cluster as the machine's current one; it is gone now
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def test_run_on_an_existing_cluster(head_node: str, tmp_path: Path) -> None:
    spec = tmp_path / "remote.yaml"
    spec.write_text(SPEC)
    results = tmp_path / "results"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    command = [sys.executable, "-m", "morphtune.cli", "run", str(spec)]
    command += ["--address", head_node, "--results", str(results)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout[run.stdout.index("{") :])
    assert summary["sweep_id"] == "remote"
    assert summary["trials"]["completed"] == 2
    assert summary["best"]["metric"] == "val_acc"
    store = SweepStore(results)
    assert store.trial_counts("remote")["completed"] == 2
    assert store.results("remote").num_rows == 4  # 2 trials x 2 epochs
