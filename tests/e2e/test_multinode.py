"""``morphtune submit`` to a real two-node Ray cluster with token auth, on loopback.

A head (1 CPU, dashboard and Jobs API) and a worker node (1 CPU) are started with ``ray
start`` in their own sessions, temp dir and ports, with ``RAY_AUTH_MODE=token`` and a fresh
``RAY_AUTH_TOKEN`` (how Ray 2.60 turns token auth on for ``ray start``; the KubeRay manifests
set the same two variables from a Secret). The sweep's two 1-CPU trials run at once, so one
must land on each node. The cluster is stopped by killing what its ``ray start`` sessions
started (and every descendant, job drivers included, which Ray puts in sessions of their
own); never ``ray stop``, which would stop every Ray on the machine.

Run it under the machine's Ray lock: ``flock -o /tmp/morphtune-ray.lock pytest ...``.
"""

from __future__ import annotations

import contextlib
import io
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from morphtune.cli import main
from morphtune.service import SweepClient
from morphtune.store import SweepStore
from tests.net import free_ports

pytestmark = pytest.mark.ray

SWEEP = "multinode"
SPEC = f"""
name: {SWEEP}
dataset: {{name: digits, val_fraction: 0.2, seed: 0}}
model: {{family: mlp, width: 16, depth: 1}}
training: {{epochs: 2, batch_size: 64, lr: 0.01}}
search:
  objective: {{metric: val_acc, mode: max}}
  num_samples: 2
  max_concurrent: 2
  sampler: {{name: random, seed: 0}}
  scheduler: {{name: fifo}}
  space:
    model.width: {{type: categorical, choices: [16, 32]}}
resources: {{num_workers: 1, cpus_per_worker: 1}}
"""
BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- processes


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every live process (zombies are done)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid, _, sid = stat[stat.rindex(")") + 2 :].split()[:4]  # after "pid (comm) "
        if state != "Z":
            table[int(entry)] = (int(ppid), int(sid))
    return table


def _started_by(sessions: set[int]) -> set[int]:
    """Every process in these sessions and all their descendants (job drivers and their
    watchers start sessions of their own)."""
    table = _processes()
    found = {pid for pid, (_, sid) in table.items() if sid in sessions}
    while True:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def _stop(sessions: set[int]) -> None:
    known: set[int] = set()
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 10.0)):
        known |= _started_by(sessions)
        for pid in sorted(known):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            known = (known & set(_processes())) | _started_by(sessions)
            if not known:
                return
            time.sleep(0.2)


# ------------------------------------------------------------------------------ cluster


@dataclass(frozen=True)
class Cluster:
    dashboard: str
    token: str
    token_file: Path
    node_ids: dict[str, str]  # "head" / "worker" -> Ray node id (hex)


def _request(url: str, token: str | None, timeout: float = 10.0) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        return json.loads(r.read())


def _until(call: Callable[[], Any], done: Callable[[Any], bool], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = call()
            if done(value):
                return value
        except OSError:  # not listening yet
            value = None
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {seconds:.0f} s (last answer: {value!r})")
        time.sleep(0.5)


def _ray_start(args: list[str], env: dict[str, str], sessions: set[int]) -> None:
    starter = subprocess.Popen(
        [str(BIN / "ray"), "start", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sessions.add(starter.pid)
    output, _ = starter.communicate(timeout=120)
    if starter.returncode != 0:
        pytest.fail(
            f"ray start {args[0]} failed ({starter.returncode}):\n{output.decode()[-3000:]}"
        )


def _node_ports(workers: int) -> list[str]:
    node, objects, agent, agent_grpc, runtime_env, metrics, *ports = free_ports(6 + workers)
    return [
        f"--node-manager-port={node}",
        f"--object-manager-port={objects}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--worker-port-list={','.join(map(str, ports))}",
    ]


def _alive_nodes(cluster_url: str, token: str) -> list[dict[str, Any]]:
    answer = _request(f"{cluster_url}/api/v0/nodes?limit=100", token)
    return [n for n in answer["data"]["result"]["result"] if n["state"] == "ALIVE"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    temp = Path(tempfile.mkdtemp(prefix="mtmn", dir="/tmp"))  # short: Ray's socket paths
    token = secrets.token_hex(32)
    token_file = temp / "ray-token"
    token_file.write_text(token + "\n")
    env = dict(os.environ, RAY_TMPDIR=str(temp), RAY_USAGE_STATS_ENABLED="0")
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)  # token auth, as on Kubernetes
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job runs `morphtune`
    gcs, dash, client = free_ports(3)
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    common += ["--object-store-memory=100000000", f"--temp-dir={temp}"]
    sessions: set[int] = set()
    url = f"http://127.0.0.1:{dash}"
    try:
        head = [
            "--head",
            f"--port={gcs}",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
        ]
        head += ["--dashboard-host=127.0.0.1", "--include-dashboard=true"]
        _ray_start([*head, *common, *_node_ports(10)], env, sessions)
        _until(lambda: _request(f"{url}/api/version", token), bool, 60, "the dashboard answer")
        _ray_start([f"--address=127.0.0.1:{gcs}", *common, *_node_ports(10)], env, sessions)
        nodes = _until(
            lambda: _alive_nodes(url, token), lambda n: len(n) == 2, 60, "two nodes alive"
        )
        ids = {("head" if n["is_head_node"] else "worker"): n["node_id"] for n in nodes}
        assert set(ids) == {"head", "worker"}, nodes
        yield Cluster(url, token, token_file, ids)
    finally:
        _stop(sessions)
        shutil.rmtree(temp, ignore_errors=True)


# ---------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class Submitted:
    code: int
    out: str
    err: str
    job_id: str
    results: Path
    seconds: float


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def submitted(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Submitted:
    root = tmp_path_factory.mktemp("multinode")
    spec = root / "sweep.yaml"
    spec.write_text(SPEC)
    results = root / "results"
    start = time.monotonic()
    code, out, err = _cli(
        "submit", str(spec), "--address", cluster.dashboard, "--token-file",
        str(cluster.token_file), "--results", str(results), "--json", "--follow",
        "--interval", "0.5",
    )  # fmt: skip
    first = out.splitlines()[0] if out else "{}"
    job_id = json.loads(first).get("job_id", "")
    return Submitted(code, out, err, job_id, results, time.monotonic() - start)


def test_submit_follows_the_sweep_to_success(cluster: Cluster, submitted: Submitted) -> None:
    assert submitted.code == 0, submitted.err[-3000:] + submitted.out[-3000:]
    head = json.loads(submitted.out.splitlines()[0])
    assert head["sweep_id"] == SWEEP and head["job_id"].startswith(f"morphtune-{SWEEP}-")
    # the driver's own output streamed through: `morphtune run` prints its JSON summary
    assert f'"sweep_id": "{SWEEP}"' in submitted.out
    # polled repeatedly, each piece of the log printed once
    assert submitted.out.count(f"Running entrypoint for job {submitted.job_id}") == 1
    assert f"job {submitted.job_id} SUCCEEDED" in submitted.err
    assert cluster.token not in submitted.out + submitted.err
    store = SweepStore(submitted.results)
    assert store.trial_counts(SWEEP)["completed"] == 2
    assert store.results(SWEEP).num_rows == 4  # 2 trials x 2 epochs


def _trial_actor_nodes(cluster: Cluster) -> list[str]:
    """The node of every Tune trial actor the cluster ran (Ray's State API)."""
    query = "filter_keys=class_name&filter_predicates=%3D&filter_values=ImplicitFunc&limit=100"
    answer = _request(f"{cluster.dashboard}/api/v0/actors?{query}", cluster.token)
    return [actor["node_id"] for actor in answer["data"]["result"]["result"]]


def test_trials_ran_on_both_nodes(cluster: Cluster, submitted: Submitted) -> None:
    assert submitted.code == 0, submitted.err[-2000:]
    actor_nodes = _trial_actor_nodes(cluster)
    assert len(actor_nodes) == 2
    assert set(actor_nodes) == {cluster.node_ids["head"], cluster.node_ids["worker"]}


def test_rows_record_the_node_of_each_trial(cluster: Cluster, submitted: Submitted) -> None:
    table = SweepStore(submitted.results).results(SWEEP)
    assert "node_id" in table.column_names, table.column_names
    by_trial = {}
    for trial, node in zip(
        table.column("trial_id").to_pylist(), table.column("node_id").to_pylist(), strict=True
    ):
        by_trial.setdefault(trial, set()).add(node)
    assert all(len(nodes) == 1 for nodes in by_trial.values()), by_trial
    recorded = {next(iter(nodes)) for nodes in by_trial.values()}
    assert recorded == {cluster.node_ids["head"], cluster.node_ids["worker"]}


def test_results_service_answers_about_the_sweep(submitted: Submitted, tmp_path: Path) -> None:
    assert submitted.code == 0, submitted.err[-2000:]
    (port,) = free_ports(1)
    log = (tmp_path / "service.log").open("w")
    command = [sys.executable, "-m", "morphtune.service", "--store", str(submitted.results)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--metrics-port", "-1"]
    service = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        with SweepClient(f"127.0.0.1:{port}", timeout=10) as client:

            def best() -> dict[str, Any] | None:
                try:
                    return dict(client.best(SWEEP))
                except grpc.RpcError as error:
                    if error.code() == grpc.StatusCode.UNAVAILABLE and service.poll() is None:
                        return None
                    raise

            answer = _until(best, lambda b: b is not None, 60, "the service to answer")
    finally:
        service.terminate()
        service.wait(timeout=30)
        log.close()
    store = SweepStore(submitted.results)
    expected = store.best(SWEEP)
    assert answer["sweep_id"] == SWEEP and answer["metric"] == "val_acc"
    assert answer["trial_id"] == expected.trial_id
    assert answer["value"] == pytest.approx(expected.metrics["val_acc"])


def test_status_and_logs_of_the_finished_job(cluster: Cluster, submitted: Submitted) -> None:
    where = ["--address", cluster.dashboard, "--token-file", str(cluster.token_file)]
    code, out, err = _cli("status", submitted.job_id, *where, "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["status"] == "SUCCEEDED" and status["sweep_id"] == SWEEP
    assert (
        " run --spec-env MORPHTUNE_SPEC_YAML --sweep-id multinode --results "
        in (status["entrypoint"])
    )
    code, out, _ = _cli("logs", submitted.job_id, *where)
    assert code == 0 and f'"sweep_id": "{SWEEP}"' in out
    code, _, err = _cli("status", "raysubmit_nosuchjob", *where)
    assert code == 2 and "has no job 'raysubmit_nosuchjob'" in err


def test_cancel_stops_a_running_job(cluster: Cluster, tmp_path: Path) -> None:
    spec = tmp_path / "sleeper.yaml"
    spec.write_text(SPEC)
    sleeper = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(120)'"
    where = ["--address", cluster.dashboard, "--token-file", str(cluster.token_file)]
    code, out, err = _cli("submit", str(spec), *where, "--command", sleeper, "--results", "/x")
    assert code == 0, err
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    job_id = lines["job_id"]
    assert lines["sweep_id"] == SWEEP and lines["status"] in {"PENDING", "RUNNING"}
    assert f"follow it with: morphtune logs {job_id} --address {cluster.dashboard}" in err

    def state() -> str:
        code, out, err = _cli("status", job_id, *where, "--json")
        assert code == 0, err
        return str(json.loads(out)["status"])

    assert _until(state, lambda s: s != "PENDING", 30, "the job to start") == "RUNNING"
    code, out, err = _cli("cancel", job_id, *where)
    assert code == 0 and f"job {job_id}: stop requested" in out, err
    code, _, err = _cli("logs", job_id, *where, "--follow", "--interval", "0.3")
    assert code == 1 and f"job {job_id} STOPPED" in err
    code, out, _ = _cli("cancel", job_id, *where)
    assert code == 0 and "had already ended (STOPPED)" in out


def test_the_jobs_api_wants_the_token(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = f"{cluster.dashboard}/api/jobs/"
    assert isinstance(_request(jobs, cluster.token), list)
    with pytest.raises(urllib.error.HTTPError) as missing:
        _request(jobs, None)
    assert missing.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        _request(jobs, "wrong-" + cluster.token)
    assert wrong.value.code == 403
    # and what the CLI says about each
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    code, _, err = _cli("status", "raysubmit_any", "--address", cluster.dashboard)
    assert code == 2 and "requires a token and none was given (HTTP 401)" in err
    monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong-" + cluster.token)
    code, _, err = _cli("status", "raysubmit_any", "--address", cluster.dashboard)
    assert code == 2 and "refused the token from $RAY_AUTH_TOKEN (HTTP 403)" in err
    assert cluster.token not in err
