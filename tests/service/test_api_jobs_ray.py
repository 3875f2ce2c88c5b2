"""SubmitSweep/CancelSweep against a REAL Ray head (dashboard and Jobs API) on loopback.

The head runs in its own session with its own temp dir and ports, and is stopped by killing
that session's processes (``ray stop`` would stop every Ray on the machine). Run with
``flock -o /tmp/morphtune-ray.lock`` around pytest, as every Ray test here.

The submitted jobs use a tiny stand-in for the ``morphtune`` command (``python -c``) that
prints its arguments and the spec it received, so the test sees exactly what the cluster
would run, in seconds; ``morphtune run --spec-env`` itself is tested in tests/test_cli_service.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from morphtune.service import SweepClient
from morphtune.service._jobs import SPEC_ENV, JobNotFound, RayJobsClient
from morphtune.service._servicer import SweepServicer
from morphtune.service.v1 import morphtune_pb2_grpc
from morphtune.store import SweepStore
from tests.net import free_ports

SPEC = "name: tiny\ndescription: submitted through the service\n"
ECHO = f"{shlex.quote(sys.executable)} -c " + shlex.quote(
    f"import os, sys; print('ARGS', sys.argv[1:]); print('SPEC', repr(os.environ['{SPEC_ENV}']))"
)
SLEEPER = f"{shlex.quote(sys.executable)} -c " + shlex.quote("import time; time.sleep(120)")
# This head's own token (Ray token auth, as a production cluster runs it).
RAY_TOKEN = secrets.token_hex(32)


def _session_pids(session: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == session:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _kill_session(session: int) -> None:
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        for pid in _session_pids(session):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while _session_pids(session) and time.monotonic() < deadline:
            time.sleep(0.2)


def _get(url: str, token: str | None = RAY_TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def dashboard() -> Iterator[str]:
    temp = tempfile.mkdtemp(prefix="mtr", dir="/tmp")  # short: Ray's socket paths live here
    (gcs, dash, node, objects, client, agent, agent_grpc, runtime_env, metrics, *workers) = (
        free_ports(19)
    )
    env = dict(
        os.environ,
        RAY_TMPDIR=temp,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=RAY_TOKEN,
    )
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        f"--port={gcs}",
        f"--dashboard-port={dash}",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--num-cpus=1",
        f"--temp-dir={temp}",
        f"--node-manager-port={node}",
        f"--object-manager-port={objects}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--worker-port-list={','.join(map(str, workers))}",
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
    ]
    starter = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    session = starter.pid
    url = f"http://127.0.0.1:{dash}"
    try:
        output, _ = starter.communicate(timeout=120)
        if starter.returncode != 0:
            pytest.fail(f"ray start failed ({starter.returncode}):\n{output.decode()[-3000:]}")
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{url}/api/version")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the Ray dashboard at {url} did not answer within 60 s")
                time.sleep(0.5)
        yield url
    finally:
        _kill_session(session)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def served(dashboard: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = SweepStore(tmp_path_factory.mktemp("ray-store"))
    jobs = RayJobsClient(
        dashboard, token=RAY_TOKEN, command=ECHO, results_root="s3://bucket/results"
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    morphtune_pb2_grpc.add_SweepServiceServicer_to_server(SweepServicer(store, jobs=jobs), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def _until(call: Callable[[], Any], done: Callable[[Any], bool], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    value = call()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = call()
    return value


def test_submit_runs_the_spec_on_the_cluster(served: str, dashboard: str) -> None:
    with SweepClient(served, timeout=60) as client:
        submitted = client.submit(SPEC, sweep_id="ray-submitted")
    assert submitted["sweep_id"] == "ray-submitted"
    assert submitted["status"] in {"PENDING", "RUNNING", "SUCCEEDED"}
    job_url = f"{dashboard}/api/jobs/{submitted['job_id']}"
    job = _until(lambda: _get(job_url), lambda j: j["status"] in {"SUCCEEDED", "FAILED"}, 45)
    assert job["status"] == "SUCCEEDED", job.get("message")
    assert job["metadata"]["morphtune.sweep_id"] == "ray-submitted"
    assert " run --spec-env MORPHTUNE_SPEC_YAML --sweep-id ray-submitted" in job["entrypoint"]
    assert job["entrypoint"].endswith("--results s3://bucket/results")
    logs = _get(f"{job_url}/logs")["logs"]
    assert "ARGS ['run', '--spec-env', 'MORPHTUNE_SPEC_YAML', '--sweep-id', 'ray-submitted'" in logs
    assert repr(SPEC) in logs  # the whole spec text reached the job's environment


def test_cancel_stops_a_running_job(dashboard: str, tmp_path: Path) -> None:
    sleeper = RayJobsClient(dashboard, token=RAY_TOKEN, command=SLEEPER)
    job = sleeper.submit("name: sleeper\n", "sleeper")
    running = _until(lambda: sleeper.info(job.job_id), lambda j: j.status == "RUNNING", 30)
    assert running.status == "RUNNING", running.message
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = SweepServicer(SweepStore(tmp_path), jobs=RayJobsClient(dashboard, token=RAY_TOKEN))
    morphtune_pb2_grpc.add_SweepServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with SweepClient(f"127.0.0.1:{port}", timeout=30) as client:
            cancelled = client.cancel(job.job_id)
            assert cancelled["job_id"] == job.job_id and cancelled["stopped"] is True
            final = _until(lambda: sleeper.info(job.job_id), lambda j: j.status == "STOPPED", 30)
            assert final.status == "STOPPED"
            again = client.cancel(job.job_id)
            assert again["stopped"] is False and again["status"] == "STOPPED"
            with pytest.raises(grpc.RpcError) as info:
                client.cancel("raysubmit_doesnotexist")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "raysubmit_doesnotexist" in info.value.details()
    finally:
        server.stop(grace=None)
    with pytest.raises(JobNotFound):
        sleeper.info("morphtune-nope-000")


def test_a_wrong_token_is_refused(dashboard: str, tmp_path: Path) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(f"{dashboard}/api/version", token=None)
    assert info.value.code == 401  # the head really enforces its token
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    jobs = RayJobsClient(dashboard, token="wrong-" + RAY_TOKEN)
    morphtune_pb2_grpc.add_SweepServiceServicer_to_server(
        SweepServicer(SweepStore(tmp_path), jobs=jobs), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with SweepClient(f"127.0.0.1:{port}", timeout=60) as client:
            with pytest.raises(grpc.RpcError) as error:
                client.cancel("raysubmit_any")
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "answered HTTP 403" in error.value.details()  # a token, but the wrong one
            assert RAY_TOKEN not in error.value.details()
    finally:
        server.stop(grace=None)
