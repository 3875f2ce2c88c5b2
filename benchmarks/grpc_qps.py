"""P4 gRPC QPS: GetBestConfig on a 1M-row store, against a bare asyncio gRPC echo server.

- **morphtune**: the real server (``make_server``: bearer auth on, Prometheus metrics on, the
  concurrency cap ``serve`` uses) over a results store of ``--rows`` result rows, answering
  ``GetBestConfig`` for the sweep's objective (after the first call, from the fingerprint
  cache);
- **peer**: a bare ``grpc.aio`` server whose one generic handler echoes the request bytes.

Each server runs in its own process; the load comes from a third process (grpc.aio, raw
bytes, no response parsing) holding 16, then 64, calls in flight for ``--seconds`` per
window. Both servers get the same request: the serialized GetBestConfigRequest with the
``authorization: Bearer`` header (the echo server ignores it). Windows alternate between
the two servers (``--rounds`` each, order swapped every round) so machine noise hits both
alike. The QPS ratio is the median over rounds of ours / echo in adjacent windows (robust
to the drifting load of a shared machine); the p99 ratio compares each server's p99 over
all of its windows (a tail statistic: a burst of outside load hits one window, not its pair,
while pooling the interleaved windows exposes both servers to the same bursts). The table
also shows the per-round ratios and server CPU microseconds per call. Both servers are
pinned to CPU 0 and the load to CPU 1: a Python server works on one core at a time (the
GIL), so this compares the two on equal resources and keeps the load generator off their
core (``--no-pin`` lets every process float). The load generator's own cyclic GC is off
during a window. The server process freezes its startup heap out of the cyclic GC, as
``serve`` does. The store is built once through ``ResultWriter`` and reused from
``--cache-dir``.

Goal (issue #7): QPS >= 0.85x the echo server's and p99 <= 1.25x, at 16 and at 64 in flight.

    .venv/bin/python benchmarks/grpc_qps.py [--quick] [--no-pin]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import multiprocessing
import os
import shutil
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

SWEEP = "p4"
TOKEN = "p4-benchmark-token-0123456789abcdef"
ECHO_METHOD = "/bench.Echo/Echo"
BEST_METHOD = "/morphtune.v1.SweepService/GetBestConfig"
GOAL_QPS_RATIO, GOAL_P99_RATIO = 0.85, 1.25
CONCURRENCY = (16, 64)
ITERATIONS = 100  # per trial; trials = rows / ITERATIONS
BATCH_ROWS = 50_000


# -- the store -------------------------------------------------------------------------------


def _rows(first_trial: int, trials: int, iteration: int) -> list[dict[str, Any]]:
    return [
        {
            "trial_id": f"t{trial:06d}",
            "iteration": iteration,
            "status": "running",
            "config": {"lr": 1e-4 * (trial % 97 + 1), "width": 32 * (trial % 8 + 1)},
            "metrics": {
                "acc": (trial * 7919 % 10007) / 10007 * iteration / ITERATIONS,
                "loss": 1.0 / iteration,
            },
        }
        for trial in range(first_trial, first_trial + trials)
    ]


def build_store(cache_dir: Path, rows: int) -> tuple[Path, str]:
    """The store (reused when complete) and a line saying how it was obtained."""
    from morphtune.store import ResultWriter

    root = cache_dir / f"p4-store-{rows}"
    marker = cache_dir / f"p4-store-{rows}.json"
    if marker.is_file() and root.is_dir():
        info = json.loads(marker.read_text())
        return root, f"store: {rows:,} rows reused from {root} (built in {info['seconds']:.1f} s)"
    shutil.rmtree(root, ignore_errors=True)
    trials = max(1, rows // ITERATIONS)
    per_batch = max(1, BATCH_ROWS // ITERATIONS)  # trials per batch, all iterations each
    writer = ResultWriter(root, SWEEP)
    writer.write_manifest(
        {"name": "p4", "objective": {"metric": "acc", "mode": "max"}, "status": "completed"}
    )
    started = time.perf_counter()
    written = 0
    for first in range(0, trials, per_batch):
        count = min(per_batch, trials - first)
        batch = [row for it in range(1, ITERATIONS + 1) for row in _rows(first, count, it)]
        written += writer.write_results(batch)
    seconds = time.perf_counter() - started
    marker.write_text(json.dumps({"rows": written, "seconds": seconds}))
    return root, (
        f"store: {written:,} rows built in {seconds:.1f} s ({written / seconds:,.0f} rows/s) "
        f"through ResultWriter, cached in {root}"
    )


# -- servers (each in its own process) -------------------------------------------------------


def _serve_ours(store: str, cpu: int | None, conn: Connection) -> None:
    _pin(cpu)
    from prometheus_client import CollectorRegistry

    from morphtune.service import DEFAULT_MAX_CONCURRENT, make_server

    options: dict[str, Any] = {
        "tokens": [TOKEN],
        "metrics_registry": CollectorRegistry(),
        "max_concurrent": DEFAULT_MAX_CONCURRENT,
    }
    server, port = make_server(store, **options)
    server.start()
    gc.collect()  # as serve() does once started
    gc.freeze()
    conn.send(port)
    conn.recv()
    server.stop(grace=None)


def _serve_echo(cpu: int | None, conn: Connection) -> None:
    _pin(cpu)

    async def echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def run() -> None:
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server = grpc.aio.server(handlers=[handler])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        conn.send(port)
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop(None)

    asyncio.run(run())


# -- the load generator (its own process) ----------------------------------------------------


async def _window(
    target: str,
    method: str,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
    concurrency: int,
    seconds: float,
    warm_up: float,
) -> tuple[int, float, bytes, list[str]]:
    latencies = array.array("d")
    errors: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        await call(payload, metadata=metadata, timeout=10)
        begin = time.perf_counter() + warm_up
        end = begin + seconds

        async def worker() -> None:
            while True:
                start = time.perf_counter()
                if start >= end:
                    return
                try:
                    await call(payload, metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError as error:
                    errors.append(f"{error.code().name}: {error.details()}")
                finished = time.perf_counter()
                if start >= begin:
                    latencies.append(finished - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), seconds, latencies.tobytes(), errors[:5]


def _load(cpu: int | None, conn: Connection) -> None:
    """The load generator; its cyclic GC is off during a window (as ``timeit`` does)."""
    _pin(cpu)
    while True:
        job = conn.recv()
        if job is None:
            return
        gc.collect()
        gc.disable()
        try:
            result = asyncio.run(_window(*job))
        finally:
            gc.enable()
        conn.send(result)


# -- measurement -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """One load window against one server."""

    calls: int
    seconds: float
    latencies: array.array[float]
    cpu: float  # server CPU seconds over the window (warm-up included)
    errors: list[str]

    @property
    def qps(self) -> float:
        return self.calls / self.seconds

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


def percentile(values: Iterable[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Level:
    """Every window at one concurrency level, paired by round."""

    concurrency: int
    ours: list[Window] = field(default_factory=list)
    echo: list[Window] = field(default_factory=list)

    def qps_ratios(self) -> list[float]:
        return [o.qps / e.qps for o, e in zip(self.ours, self.echo, strict=True)]

    def p99_ratios(self) -> list[float]:
        return [o.p99 / e.p99 for o, e in zip(self.ours, self.echo, strict=True)]

    @staticmethod
    def pooled(windows: list[Window]) -> tuple[float, float, float]:
        """QPS, p99 (s) and server CPU microseconds per call over all ``windows``."""
        calls = sum(w.calls for w in windows)
        latencies = [value for w in windows for value in w.latencies]
        cpu = sum(w.cpu for w in windows)
        return (
            calls / sum(w.seconds for w in windows),
            percentile(latencies, 0.99),
            1e6 * cpu / calls,
        )


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _start(target: Any, *args: Any) -> tuple[multiprocessing.Process, Connection, int]:
    parent, child = multiprocessing.get_context("spawn").Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=target, args=(*args, child), daemon=True
    )
    process.start()
    if not parent.poll(120):
        raise RuntimeError(f"{target.__name__} did not report a port")
    return process, parent, int(parent.recv())


def _check_answer(port: int) -> bytes:
    """One real GetBestConfig (parsed, checked) and the request bytes the load sends."""
    from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc

    request = morphtune_pb2.GetBestConfigRequest(sweep_id=SWEEP)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = morphtune_pb2_grpc.SweepServiceStub(channel)
        started = time.perf_counter()
        best = stub.GetBestConfig(
            request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=300
        )
        first = time.perf_counter() - started
    print(
        f"first GetBestConfig (computed from Parquet): {first * 1000:.0f} ms -> "
        f"trial {best.trial_id} iteration {best.iteration} {best.metric}={best.value:.4f}"
    )
    if best.iteration != ITERATIONS or best.metric != "acc":
        raise RuntimeError(f"unexpected best answer: {best}")
    return request.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer rounds")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, help="one window (default 2; quick 1)")
    parser.add_argument("--rounds", type=int, help="window pairs per level (default 10; quick 4)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "morphtune",
    )
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 2.0)
    rounds = args.rounds or (4 if args.quick else 10)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    server_cpu, load_cpu = (0, 1) if pin else (None, None)

    print(f"P4 gRPC QPS: GetBestConfig, {args.rows:,}-row store, vs a bare grpc.aio echo server")
    root, how = build_store(args.cache_dir, args.rows)
    print(how)
    ours, ours_conn, ours_port = _start(_serve_ours, str(root), server_cpu)
    echo, echo_conn, echo_port = _start(_serve_echo, server_cpu)
    load_parent, load_child = multiprocessing.get_context("spawn").Pipe()
    load = multiprocessing.get_context("spawn").Process(
        target=_load, args=(load_cpu, load_child), daemon=True
    )
    load.start()
    try:
        payload = _check_answer(ours_port)
        bearer = (("authorization", f"Bearer {TOKEN}"),)
        targets = {
            "ours": (f"127.0.0.1:{ours_port}", BEST_METHOD, bearer, ours.pid or 0),
            # Same bytes and headers to both: only what the servers do differs.
            "echo": (f"127.0.0.1:{echo_port}", ECHO_METHOD, bearer, echo.pid or 0),
        }
        print(
            f"{rounds} rounds of one {seconds:g} s window per server "
            f"(order alternating) per level; load from a separate grpc.aio process; "
            + ("both servers pinned to CPU 0, load to CPU 1" if pin else "no CPU pinning")
            + f"; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        levels = []
        for concurrency in CONCURRENCY:
            level = Level(concurrency)
            for round_index in range(rounds):
                order = ["ours", "echo"] if round_index % 2 == 0 else ["echo", "ours"]
                for name in order:
                    target, method, metadata, pid = targets[name]
                    load_parent.send((target, method, payload, metadata, concurrency, seconds, 0.3))
                    before = cpu_seconds(pid)
                    calls, spent, latencies, errors = load_parent.recv()
                    window = Window(
                        calls, spent, array.array("d", latencies), cpu_seconds(pid) - before, errors
                    )
                    (level.ours if name == "ours" else level.echo).append(window)
            levels.append(level)
    finally:
        load_parent.send(None)
        for conn in (ours_conn, echo_conn):
            conn.send(None)
        for process in (load, ours, echo):
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    report(levels)


def report(levels: list[Level]) -> None:
    print(
        f"{'in flight':>9} | {'ours QPS':>9} {'p99 ms':>7} {'CPU us':>6} | {'echo QPS':>9} "
        f"{'p99 ms':>7} {'CPU us':>6} | {'QPS ratio':>9} {'p99 ratio':>9} | errors"
    )
    lines = []
    for level in levels:
        ours_qps, ours_p99, ours_cpu = Level.pooled(level.ours)
        echo_qps, echo_p99, echo_cpu = Level.pooled(level.echo)
        qps_ratio = statistics.median(level.qps_ratios())
        p99_ratio = ours_p99 / echo_p99  # pooled: both servers see the same bursts
        errors = [e for w in level.ours + level.echo for e in w.errors]
        print(
            f"{level.concurrency:>9} | {ours_qps:>9,.0f} {ours_p99 * 1e3:>7.2f} {ours_cpu:>6.0f} | "
            f"{echo_qps:>9,.0f} {echo_p99 * 1e3:>7.2f} {echo_cpu:>6.0f} | {qps_ratio:>9.2f} "
            f"{p99_ratio:>9.2f} | {len(errors)}"
        )
        print(
            f"{'':>9}   per-round QPS ratios {' '.join(f'{r:.2f}' for r in level.qps_ratios())}"
            f"; per-round p99 ratios {' '.join(f'{r:.2f}' for r in level.p99_ratios())}"
        )
        for error in errors[:5]:
            print(f"  error: {error}")
        verdict = "PASS" if qps_ratio >= GOAL_QPS_RATIO and not errors else "FAIL"
        lines.append(
            f"RESULT P4 qps_ratio_c{level.concurrency}={qps_ratio:.2f} "
            f"goal=>={GOAL_QPS_RATIO} {verdict}"
        )
        verdict = "PASS" if p99_ratio <= GOAL_P99_RATIO and not errors else "FAIL"
        lines.append(
            f"RESULT P4 p99_ratio_c{level.concurrency}={p99_ratio:.2f} "
            f"goal=<={GOAL_P99_RATIO} {verdict}"
        )
    print(
        "QPS ratio: median over rounds of ours/echo in adjacent windows; "
        "p99 ratio: of the p99s over all of each server's windows (QPS, p99 and CPU us, "
        "server CPU per call, pool every window)"
    )
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
