"""SubmitSweep/CancelSweep without a cluster: the spec is checked first (with the spec's own
errors and field paths), then the Ray Jobs API is asked; a closed port stands in for a
cluster that cannot be reached (real sockets, no stand-in server)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from morphtune.service import SweepClient
from morphtune.service._jobs import RayJobsClient
from morphtune.service._servicer import SweepServicer
from morphtune.service._spec_check import SpecRejected, check_spec
from morphtune.service.v1 import morphtune_pb2_grpc
from morphtune.store import ResultWriter, SweepStore

REPO = Path(__file__).resolve().parents[2]
SPEC = (REPO / "examples" / "digits-demo.yaml").read_text()
TINY_SPEC = "name: tiny\n"  # every other field at its default: a quick check
BAD_SPEC = SPEC.replace("family: mlp", "family: perceptron").replace("lr: 0.003", "lr: -1")


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    return port


def _serve(root: Path, jobs: RayJobsClient | None) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = SweepServicer(SweepStore(root), jobs=jobs)
    morphtune_pb2_grpc.add_SweepServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("submit")
    ResultWriter(root, "taken").write_manifest({"name": "taken"})
    jobs = RayJobsClient(f"127.0.0.1:{_closed_port()}", timeout=3)
    server, target = _serve(root, jobs)
    yield target
    server.stop(grace=None)


def _error(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value


def test_invalid_spec_is_invalid_argument_with_field_paths(unreachable: str) -> None:
    with SweepClient(unreachable, timeout=120) as client:
        error = _error(client.submit, BAD_SPEC)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details()
    assert details.startswith("spec_yaml does not validate: invalid sweep spec <submitted spec>")
    assert "model.family" in details and "perceptron" in details
    assert "training.lr" in details
    assert "line 12" in details  # where model.family is in the YAML


def test_valid_spec_reaches_the_jobs_api(unreachable: str) -> None:
    with SweepClient(unreachable, timeout=120) as client:
        error = _error(client.submit, TINY_SPEC)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "Ray Jobs API at http://127.0.0.1:" in error.details()
        taken = _error(client.submit, TINY_SPEC, sweep_id="taken")
        assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "sweep_id 'taken' already exists" in taken.details()
        cancel = _error(client.cancel, "raysubmit_abc")
        assert cancel.code() == grpc.StatusCode.UNAVAILABLE


def test_no_cluster_is_failed_precondition(tmp_path: Path) -> None:
    server, target = _serve(tmp_path, None)
    try:
        with SweepClient(target, timeout=10) as client:
            for call, args in ((client.submit, (TINY_SPEC,)), (client.cancel, ("raysubmit_abc",))):
                error = _error(call, *args)
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "no Ray cluster configured (serve --ray-address)" in error.details()
            # cheap checks come first, even without a cluster
            error = _error(client.submit, "- not\n- a mapping\n")
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "spec_yaml must be a YAML mapping" in error.details()
    finally:
        server.stop(grace=None)


def test_spec_checks_are_cached() -> None:
    from morphtune.service import _spec_check

    assert check_spec(TINY_SPEC) == "tiny"
    cached = dict(_spec_check._cache)
    assert check_spec(TINY_SPEC) == "tiny"
    assert dict(_spec_check._cache) == cached  # answered from the cache, no new child
    with pytest.raises(SpecRejected, match=r"model\.family"):
        check_spec(BAD_SPEC)


def test_jobs_client_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="ray address must be the dashboard's http"):
        RayJobsClient("ray://head:10001")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        RayJobsClient("127.0.0.1:8265", timeout=0)
    client = RayJobsClient("head:8265", command="python -m morphtune.cli", results_root="/a b")
    assert client.address == "http://head:8265"
    assert client.entrypoint("s1") == (
        "python -m morphtune.cli run --spec-env MORPHTUNE_SPEC_YAML --sweep-id s1 --results '/a b'"
    )
