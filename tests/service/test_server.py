from __future__ import annotations

import dataclasses
import json
import time

import grpc
import pytest
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from morphtune.service import SERVICE_NAME, SweepClient, make_server
from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc
from morphtune.store import SweepStore
from tests.store.sweeps import COUNTS, SWEEP


def _rpc_error(call: object, *args: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


def test_service_name() -> None:
    assert SERVICE_NAME == "morphtune.v1.SweepService"


def test_list_and_get_sweep(client: SweepClient, store: SweepStore) -> None:
    assert client.list_sweeps() == [SWEEP]
    sweep = client.get_sweep(SWEEP)
    assert sweep["trial_counts"] == COUNTS
    assert sweep["objective"] == {"metric": "acc", "mode": "max"}
    assert sweep["name"] == "demo sweep" and sweep["status"] == "running"
    assert sweep["manifest"] == store.manifest(SWEEP)


@pytest.mark.parametrize(
    ("metric", "mode", "scope"),
    [(None, None, "last"), ("acc", "max", "all"), ("acc", "min", "last"), ("loss", "min", "all")],
)
def test_best_matches_store(
    client: SweepClient, store: SweepStore, metric: str | None, mode: str | None, scope: str
) -> None:
    expected = dataclasses.asdict(store.best(SWEEP, metric, mode, scope))
    assert client.best(SWEEP, metric, mode, scope) == expected


def test_raw_stub_best_config(target: str, store: SweepStore) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = morphtune_pb2_grpc.SweepServiceStub(channel)
        reply = stub.GetBestConfig(morphtune_pb2.GetBestConfigRequest(sweep_id=SWEEP), timeout=5)
    best = store.best(SWEEP)
    assert (reply.trial_id, reply.iteration, reply.value) == (best.trial_id, 2, 0.8)
    assert json.loads(reply.config_json) == best.config
    assert dict(reply.metrics) == {"acc": 0.8, "loss": 0.5}


def test_unknown_sweep_is_not_found(client: SweepClient) -> None:
    for call in (client.best, client.get_sweep):
        error = _rpc_error(call, "nope")
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "sweep 'nope' not found" in error.details()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((SWEEP, "acc", "up"), "mode must be one of ['max', 'min'], got 'up'"),
        ((SWEEP, "acc", "max", "first"), "scope must be one of ['last', 'all'], got 'first'"),
        ((SWEEP, "nope", "max"), "metric 'nope' not reported in sweep 'demo'; available:"),
        (("",), "sweep_id must be a non-empty string, got ''"),
        (("../x",), "sweep_id must match"),
        ((SWEEP, "loss"), "mode: none given and metric 'loss' is not the objective"),
    ],
)
def test_bad_arguments_are_invalid_argument(
    client: SweepClient, args: tuple[str, ...], field: str
) -> None:
    error = _rpc_error(client.best, *args)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()


def test_server_keeps_serving_after_bad_requests(client: SweepClient) -> None:
    for _ in range(3):
        _rpc_error(client.best, SWEEP, "acc", "sideways")
        _rpc_error(client.best, "missing")
    assert client.best(SWEEP)["trial_id"] == "t0"
    assert client.health() == "SERVING"


def test_no_finite_results_is_failed_precondition(tmp_path_factory: pytest.TempPathFactory) -> None:
    from morphtune.store import ResultWriter
    from tests.store.sweeps import row

    root = tmp_path_factory.mktemp("nan")
    ResultWriter(root, "s").write_results([row("a", 1, {"acc": float("nan")})])
    (root / "s" / "trials").mkdir(exist_ok=True)
    corrupt = root / "s" / "trials" / "part-99999999999999999999-000000-000000000000.parquet"
    server, port = make_server(root)
    server.start()
    try:
        with SweepClient(f"127.0.0.1:{port}") as client:
            error = _rpc_error(client.best, "s", "acc", "max")
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "no finite result for metric 'acc'" in error.details()
            corrupt.write_bytes(b"garbage")
            # answers are cached until the sweep's fingerprint is re-checked (<= 0.5 s)
            deadline = time.monotonic() + 10
            error = _rpc_error(client.best, "s", "acc", "max")
            while error.code() != grpc.StatusCode.DATA_LOSS and time.monotonic() < deadline:
                time.sleep(0.1)
                error = _rpc_error(client.best, "s", "acc", "max")
            assert error.code() == grpc.StatusCode.DATA_LOSS
            assert "corrupt store file" in error.details()
    finally:
        server.stop(grace=None)


def test_health_serving(client: SweepClient) -> None:
    assert client.health() == "SERVING"
    assert client.health(SERVICE_NAME) == "SERVING"
    error = _rpc_error(client.health, "no.such.Service")
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services(target: str) -> None:
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME} <= services
        descriptor = database.FindFileContainingSymbol(SERVICE_NAME)
        assert descriptor.package == "morphtune.v1"


def test_client_validates_arguments() -> None:
    with pytest.raises(ValueError, match="target must be a non-empty"):
        SweepClient("")
    with pytest.raises(ValueError, match="timeout must be > 0 seconds, got 0"):
        SweepClient("127.0.0.1:1", timeout=0)


def test_bind_failure_is_reported(target: str) -> None:
    port = int(target.rsplit(":", 1)[1])
    with pytest.raises(OSError, match=f"cannot bind the gRPC server to 127.0.0.1:{port}"):
        make_server(".", port=port)
