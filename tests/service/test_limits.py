"""T10/T11: oversize messages, deadlines, the concurrency cap, real health status, and a
graceful SIGTERM of the real server process with calls in flight."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from morphtune.service import SERVICE_NAME
from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc
from morphtune.store import ResultWriter
from tests.service.processes import server_process
from tests.service.servers import RunningServer, running_server
from tests.store.sweeps import ACC, SWEEP, write_demo_sweep

ROWS = sum(len(values) for values in ACC.values())  # result rows of the demo sweep
LIMIT = 64 * 1024
OK, UNAVAILABLE, CANCELLED = (
    grpc.StatusCode.OK,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _eventually(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def limits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits-store")
    write_demo_sweep(root)
    big = ResultWriter(root, "big-manifest")
    big.write_manifest({"name": "big", "notes": "x" * (2 * LIMIT)})
    return root


@pytest.fixture(scope="module")
def capped_server(limits_root: Path) -> Iterator[tuple[RunningServer, CollectorRegistry]]:
    registry = CollectorRegistry()
    options = {"max_message_bytes": LIMIT, "max_concurrent": 2, "metrics_registry": registry}
    with running_server(limits_root, **options) as server:
        yield server, registry


@pytest.fixture(scope="module")
def capped(capped_server: tuple[RunningServer, CollectorRegistry]) -> RunningServer:
    return capped_server[0]


@pytest.fixture(scope="module")
def registry(capped_server: tuple[RunningServer, CollectorRegistry]) -> CollectorRegistry:
    return capped_server[1]


@pytest.fixture
def channel(capped: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(capped.target) as channel:
        yield channel
    _eventually(lambda: capped.limiter is not None and capped.limiter.in_flight == 0, "drained")


def _handled(registry: CollectorRegistry, method: str, code: str, kind: str = "unary") -> float:
    labels = {"grpc_type": kind, "grpc_service": SERVICE_NAME, "grpc_method": method}
    value = registry.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": code})
    return value or 0.0


def _watch(channel: grpc.Channel, timeout: float | None = None) -> Iterator[object]:
    stub = morphtune_pb2_grpc.SweepServiceStub(channel)
    return stub.WatchSweep(  # type: ignore[no-any-return]
        morphtune_pb2.WatchSweepRequest(sweep_id=SWEEP), timeout=timeout
    )


# -- message size ---------------------------------------------------------------------------


def test_oversize_request_is_resource_exhausted(channel: grpc.Channel) -> None:
    stub = morphtune_pb2_grpc.SweepServiceStub(channel)
    huge = morphtune_pb2.GetSweepRequest(sweep_id="s" * (LIMIT + 1))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSweep(huge, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    under = morphtune_pb2.GetSweepRequest(sweep_id="s" * 2000)  # parsed, then judged
    assert _code(lambda: stub.GetSweep(under, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.GetSweep(morphtune_pb2.GetSweepRequest(sweep_id=SWEEP), timeout=5).sweep_id


def test_oversize_response_is_resource_exhausted(channel: grpc.Channel) -> None:
    stub = morphtune_pb2_grpc.SweepServiceStub(channel)
    request = morphtune_pb2.GetSweepRequest(sweep_id="big-manifest")
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSweep(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "big-manifest" in stub.ListSweeps(morphtune_pb2.ListSweepsRequest(), timeout=5).sweep_ids


def test_message_limit_is_validated(limits_root: Path) -> None:
    with pytest.raises(ValueError, match="max_message_bytes must be >= 1024, got 10"):
        with running_server(limits_root, max_message_bytes=10):
            pass
    with pytest.raises(ValueError, match="max_concurrent must be >= 1, got 0"):
        with running_server(limits_root, max_concurrent=0):
            pass


# -- deadlines ------------------------------------------------------------------------------


def test_deadline_ends_a_slow_stream_and_frees_its_slot(
    capped: RunningServer, channel: grpc.Channel, registry: CollectorRegistry
) -> None:
    def ended() -> float:  # a client giving up at its deadline a moment before the server's
        # copy of it passes is seen as a cancel
        return sum(
            _handled(registry, "WatchSweep", code, "server_stream")
            for code in ("DEADLINE_EXCEEDED", "CANCELLED")
        )

    before = ended()
    started = time.monotonic()
    stream = _watch(channel, timeout=2.0)
    received = 0
    with pytest.raises(grpc.RpcError) as info:
        for _ in stream:  # the existing rows, then it waits for new ones past the deadline
            received += 1
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received <= ROWS and time.monotonic() - started >= 2.0
    # The server stopped too: the handler released its slot and the call was counted ended.
    assert capped.limiter is not None
    _eventually(lambda: capped.limiter.in_flight == 0, "slot released")  # type: ignore[union-attr]
    _eventually(lambda: ended() == before + 1, "WatchSweep counted as ended by its deadline")


# -- concurrency cap ------------------------------------------------------------------------


def test_calls_over_the_cap_are_resource_exhausted(
    capped: RunningServer, channel: grpc.Channel, registry: CollectorRegistry
) -> None:
    stub = morphtune_pb2_grpc.SweepServiceStub(channel)
    get_sweep = morphtune_pb2.GetSweepRequest(sweep_id=SWEEP)
    streams = [_watch(channel, timeout=60) for _ in range(2)]
    for stream in streams:  # both admitted: each delivered the rows already written
        for _ in range(ROWS):
            next(stream)  # type: ignore[call-overload]
    assert capped.limiter is not None and capped.limiter.in_flight == 2
    before = _handled(registry, "GetSweep", "RESOURCE_EXHAUSTED")
    # Answered at once rather than queued: both slots stay taken for up to 60 s.
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSweep(get_sweep, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server busy: 2 calls in flight (--max-concurrent 2)" in info.value.details()
    third = _watch(channel, timeout=30)
    assert _code(lambda: next(third)) == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[call-overload]
    health = health_pb2_grpc.HealthStub(channel)  # probes are exempt
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
    _eventually(  # counted just after the status is sent
        lambda: _handled(registry, "GetSweep", "RESOURCE_EXHAUSTED") == before + 1,
        "the refusal counted as RESOURCE_EXHAUSTED",
    )
    streams[0].cancel()  # type: ignore[attr-defined]
    _eventually(lambda: capped.limiter.in_flight == 1, "cancelled stream released its slot")  # type: ignore[union-attr]
    assert stub.GetSweep(get_sweep, timeout=5).sweep_id == SWEEP
    streams[1].cancel()  # type: ignore[attr-defined]


def test_health_watches_hold_no_worker_thread(limits_root: Path) -> None:
    # Every interceptor on: none may turn the callback-driven Watch into a blocking one.
    options = {
        "max_workers": 2,
        "metrics_registry": CollectorRegistry(),
        "tokens": ["watch-test-token-0123456789"],
        "max_concurrent": 1,
    }
    with running_server(limits_root, **options) as server:
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=20) for _ in range(6)]
            assert [next(watch).status for watch in watches] == [SERVING] * 6
            stub = morphtune_pb2_grpc.SweepServiceStub(channel)
            request = morphtune_pb2.GetSweepRequest(sweep_id=SWEEP)
            metadata = (("authorization", "Bearer watch-test-token-0123456789"),)
            assert stub.GetSweep(request, metadata=metadata, timeout=10).sweep_id == SWEEP
            server.health_shutdown()
            for watch in watches:  # NOT_SERVING, then the stream ends OK
                assert [reply.status for reply in watch] == [NOT_SERVING]


# -- health reflects the store --------------------------------------------------------------


def test_health_is_serving_only_while_the_store_is_readable(tmp_path: Path) -> None:
    root = tmp_path / "not-yet"
    with running_server(root) as server:
        with grpc.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def status(service: str = "") -> int:
                request = health_pb2.HealthCheckRequest(service=service)
                return int(health.Check(request, timeout=5).status)

            assert status() == NOT_SERVING and status(SERVICE_NAME) == NOT_SERVING
            assert "is not a readable directory" in str(server.health_problem)
            write_demo_sweep(root)
            _eventually(lambda: status() == SERVING, "SERVING once the store exists")
            assert status(SERVICE_NAME) == SERVING
            root.rename(tmp_path / "moved")  # e.g. a volume unmounted under the server
            root.write_text("not a directory")
            _eventually(lambda: status() == NOT_SERVING, "NOT_SERVING when unreadable")


# -- graceful shutdown of the real process --------------------------------------------------


def test_sigterm_drains_with_calls_in_flight(limits_root: Path) -> None:
    options = ("--grace", "20", "--max-concurrent", "16")
    with server_process(limits_root, *options) as server:
        channel = grpc.insecure_channel(server.target)
        health = health_pb2_grpc.HealthStub(channel)
        watch_health = health.Watch(health_pb2.HealthCheckRequest())
        assert next(watch_health).status == SERVING
        streams = [_watch(channel, timeout=60) for _ in range(3)]
        for stream in streams:
            for _ in range(ROWS):
                next(stream)  # type: ignore[call-overload]

        codes: list[grpc.StatusCode] = []
        stop_calling = threading.Event()

        def call_until_refused() -> None:
            # A fresh channel per round: a new caller after SIGTERM must be refused too.
            while not stop_calling.is_set():
                with grpc.insecure_channel(server.target) as caller:
                    stub = morphtune_pb2_grpc.SweepServiceStub(caller)
                    request = morphtune_pb2.GetBestConfigRequest(sweep_id=SWEEP)
                    codes.append(_code(lambda: stub.GetBestConfig(request, timeout=30)))  # noqa: B023
                if codes[-1] == grpc.StatusCode.UNAVAILABLE:
                    return

        callers = [threading.Thread(target=call_until_refused) for _ in range(4)]
        for caller in callers:
            caller.start()
        _eventually(lambda: len(codes) >= 8, "calls answered before SIGTERM")
        server.process.send_signal(signal.SIGTERM)

        # Health turns NOT_SERVING first, then the stream ends.
        assert [reply.status for reply in watch_health] == [NOT_SERVING]
        # Streams in flight end cleanly (OK: clients resume with their last token).
        for stream in streams:
            assert list(stream) == []  # type: ignore[call-overload]
            assert stream.code() == grpc.StatusCode.OK  # type: ignore[attr-defined]
        for caller in callers:
            caller.join(timeout=30)
        stop_calling.set()
        # Served, or refused: UNAVAILABLE, or CANCELLED by gRPC core for a call it had
        # received but not yet dispatched (test_drain_finishes_every_started_call).
        assert {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE} <= set(codes), set(codes)
        assert set(codes) <= {OK, UNAVAILABLE, CANCELLED}, set(codes)
        assert server.process.wait(timeout=30) == 0
        channel.close()
    log = server.log()
    assert log.index("draining") < log.index("morphtune service stopped")


def test_drain_finishes_every_started_call(limits_root: Path) -> None:
    """In-process: every call a handler started during the drain finished OK, whatever the
    clients saw (the server's own count against the clients')."""
    registry = CollectorRegistry()
    with running_server(limits_root, metrics_registry=registry, max_concurrent=16) as s:
        _drain_under_load(s, registry)


def _drain_under_load(server: RunningServer, registry: CollectorRegistry) -> None:
    target = server.target
    codes: list[grpc.StatusCode] = []

    def call_until_refused() -> None:
        while True:
            with grpc.insecure_channel(target) as caller:
                stub = morphtune_pb2_grpc.SweepServiceStub(caller)
                request = morphtune_pb2.GetSweepRequest(sweep_id=SWEEP)
                codes.append(_code(lambda: stub.GetSweep(request, timeout=30)))  # noqa: B023
            if codes[-1] == UNAVAILABLE:
                return

    callers = [threading.Thread(target=call_until_refused) for _ in range(4)]
    for caller in callers:
        caller.start()
    _eventually(lambda: len(codes) >= 20, "calls answered before the drain")
    server.drain(grace=20)
    for caller in callers:
        caller.join(timeout=30)
    started = registry.get_sample_value(
        "grpc_server_started_total",
        {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": "GetSweep"},
    )
    assert started == _handled(registry, "GetSweep", "OK") == codes.count(OK)
    assert set(codes) <= {OK, UNAVAILABLE, CANCELLED} and codes.count(UNAVAILABLE) == 4
