"""ListTrials, GetBestConfig with constraints and GetParetoFront through a real server, and
the per-fingerprint answer cache."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from morphtune.service import SweepClient, make_server
from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc
from morphtune.store import CorruptFileError, ResultWriter, SweepStore
from morphtune.store._query import SweepFrame, best_under, make_condition, pareto_front
from tests.service.api_data import FAILED, SWEEP, write_mo_sweep


@pytest.fixture(scope="module")
def mo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-mo")
    write_mo_sweep(root)
    return root


@pytest.fixture(scope="module")
def mo_target(mo_root: Path) -> Iterator[str]:
    server, port = make_server(mo_root, port=0)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def mo_client(mo_target: str) -> Iterator[SweepClient]:
    with SweepClient(mo_target, timeout=10.0) as client:
        yield client


def _error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def _keys(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(row["trial_id"], row["iteration"]) for row in rows]


# ----------------------------------------------------------------------------- ListTrials


def test_list_trials_pages_through_everything(mo_client: SweepClient, mo_root: Path) -> None:
    store = SweepStore(mo_root)
    whole = list(mo_client.list_trials(SWEEP, scope="all", order_by="acc", descending=True))
    assert len(whole) == store.results(SWEEP).num_rows
    paged = list(
        mo_client.list_trials(SWEEP, scope="all", order_by="acc", descending=True, page_size=7)
    )
    assert _keys(paged) == _keys(whole)
    assert len(set(_keys(paged))) == len(paged)
    limited = list(mo_client.list_trials(SWEEP, scope="all", page_size=5, limit=12))
    assert len(limited) == 12


def test_list_trials_filters_and_orders(mo_client: SweepClient) -> None:
    rows = list(
        mo_client.list_trials(
            SWEEP,
            ["params <= 6000", "config.model.family == mlp", ("state", "in", ["completed"])],
            order_by="acc",
            descending=True,
        )
    )
    assert rows, "the seeded sweep has matching trials"
    for row in rows:
        assert row["numbers"]["metrics.params"] <= 6000
        assert row["texts"]["config.model.family"] == "mlp"
        assert row["config"]["model"]["family"] == "mlp"
        assert row["state"] == "completed"
    accs = [row["numbers"]["metrics.acc"] for row in rows]
    finite = [value for value in accs if value == value]
    assert finite == sorted(finite, reverse=True)
    # one row per trial (its last report) by default
    assert len({row["trial_id"] for row in rows}) == len(rows)


def test_page_tokens_belong_to_their_query(mo_target: str) -> None:
    with grpc.insecure_channel(mo_target) as channel:
        stub = morphtune_pb2_grpc.SweepServiceStub(channel)
        first = stub.ListTrials(
            morphtune_pb2.ListTrialsRequest(sweep_id=SWEEP, page_size=3, scope="all"), timeout=10
        )
        assert len(first.rows) == 3 and first.next_page_token and first.total_size > 3
        second = stub.ListTrials(
            morphtune_pb2.ListTrialsRequest(
                sweep_id=SWEEP, page_size=3, scope="all", page_token=first.next_page_token
            ),
            timeout=10,
        )
        assert _keys_of(second) != _keys_of(first)
        other = morphtune_pb2.ListTrialsRequest(
            sweep_id=SWEEP,
            page_size=3,
            scope="all",
            order_by="acc",
            page_token=first.next_page_token,
        )
        error = _error(lambda: stub.ListTrials(other, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token was issued for a different query" in error.details()
        too_big = morphtune_pb2.ListTrialsRequest(sweep_id=SWEEP, page_size=1001)
        error = _error(lambda: stub.ListTrials(too_big, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_size must be between 1 and 1000" in error.details()
        assert "1001" in error.details()
        default = stub.ListTrials(
            morphtune_pb2.ListTrialsRequest(sweep_id=SWEEP, scope="all"), timeout=10
        )
        assert len(default.rows) == min(100, default.total_size)


def _keys_of(response: morphtune_pb2.ListTrialsResponse) -> list[tuple[str, int]]:
    return [(row.trial_id, row.iteration) for row in response.rows]


# ---------------------------------------------------------------------------- best, pareto


def test_best_with_constraints_matches_the_query(mo_client: SweepClient, mo_root: Path) -> None:
    frame = SweepFrame(SweepStore(mo_root), SWEEP)
    expected = best_under(
        frame, "acc", "max", "last", [make_condition("params", "<=", 3000.0, "constraints[0]")]
    )
    best = mo_client.best(SWEEP, constraints=["params <= 3000"])
    assert (best["trial_id"], best["iteration"], best["value"]) == (
        expected.trial_id,
        expected.iteration,
        expected.value,
    )
    assert best["metrics"]["params"] <= 3000
    unconstrained = mo_client.best(SWEEP)
    assert unconstrained["value"] >= best["value"]
    error = _error(lambda: mo_client.best(SWEEP, constraints=["params < 0"]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_pareto_front_over_grpc(mo_client: SweepClient, mo_root: Path) -> None:
    frame = SweepFrame(SweepStore(mo_root), SWEEP)
    expected = pareto_front(frame, [("acc", "max"), ("params", "min")])
    front = mo_client.pareto(SWEEP)  # the manifest's objectives
    assert front["objectives"] == [("acc", "max"), ("params", "min")]
    assert [p["trial_id"] for p in front["points"]] == [p.trial_id for p in expected.points]
    assert front["hypervolume"] == pytest.approx(expected.hypervolume)
    assert front["reference"] == pytest.approx(list(expected.reference))
    assert FAILED not in {p["trial_id"] for p in front["points"]}
    for point in front["points"]:
        assert set(point["values"]) == {"acc", "params"}
        assert point["config"]["model"]["family"] in {"mlp", "cnn"}
    three = mo_client.pareto(
        SWEEP,
        [("acc", "max"), ("params", "min"), ("density", "min")],
        scope="all",
        constraints=["config.model.family == cnn"],
        reference=[0.0, 1e5, 2.0],
    )
    assert three["reference"] == [0.0, 1e5, 2.0]
    assert three["hypervolume"] > 0
    error = _error(lambda: mo_client.pareto(SWEEP, [("acc", "max")]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "objectives must hold 2 to 4 objectives, got 1" in error.details()


# ---------------------------------------------------------------------------------- cache


def _poll(call: Callable[[], Any], done: Callable[[Any], bool], seconds: float = 10.0) -> Any:
    deadline = time.monotonic() + seconds
    answer = call()
    while not done(answer) and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = call()
    return answer


def test_answers_follow_new_writes(tmp_path: Path) -> None:
    root = tmp_path / "store"
    writer = write_mo_sweep(root)
    server, port = make_server(root, port=0)
    server.start()
    try:
        with SweepClient(f"127.0.0.1:{port}", timeout=10) as client:
            before = client.best(SWEEP)
            trials_before = sum(1 for _ in client.list_trials(SWEEP))
            row = {
                "trial_id": "t99",
                "iteration": 1,
                "status": "running",
                "config": {"lr": 0.5, "model": {"family": "mlp", "width": 8}},
                "metrics": {"acc": 0.999, "loss": 0.01, "params": 10.0, "density": 0.1},
                "node_id": "0f" * 28,
            }
            writer.write_results([row])
            after = _poll(lambda: client.best(SWEEP), lambda best: best["trial_id"] == "t99")
            assert after["trial_id"] == "t99" and after["value"] == 0.999
            assert before["trial_id"] != "t99"
            count = _poll(
                lambda: sum(1 for _ in client.list_trials(SWEEP)),
                lambda n: n == trials_before + 1,
            )
            assert count == trials_before + 1
            nodes = {r["trial_id"]: r["node_id"] for r in client.list_trials(SWEEP)}
            assert nodes["t99"] == "0f" * 28  # where it ran, as the runner records it
            assert {nodes[t] for t in nodes if t != "t99"} == {None}  # rows without a node
            front = client.pareto(SWEEP)
            assert [p["trial_id"] for p in front["points"]] == ["t99"]  # dominates everyone
    finally:
        server.stop(grace=None)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def test_cached_answers_read_no_parquet(tmp_path: Path) -> None:
    """While the fingerprint is unchanged, answers come from the cache: a part whose bytes
    were replaced in place (same name, size and mtime) is never read."""
    root = tmp_path / "store"
    write_mo_sweep(root)
    server, port = make_server(root, port=0)
    server.start()
    try:
        with SweepClient(f"127.0.0.1:{port}", timeout=10) as client:
            best = client.best(SWEEP)
            constrained = client.best(SWEEP, constraints=["params <= 3000"])
            rows = list(client.list_trials(SWEEP))
            front = client.pareto(SWEEP)
            for part in (root / SWEEP / "results").glob("part-*.parquet"):
                stat = part.stat()
                part.write_bytes(b"\0" * stat.st_size)
                os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            for _ in range(3):
                assert client.best(SWEEP) == best
                assert client.best(SWEEP, constraints=["params <= 3000"]) == constrained
                # NaN != NaN: compare the JSON text
                assert _text(list(client.list_trials(SWEEP))) == _text(rows)
                assert client.pareto(SWEEP) == front
                time.sleep(0.3)  # across fingerprint re-checks, too
    finally:
        server.stop(grace=None)
    with pytest.raises(CorruptFileError):  # the parts really are unreadable now
        SweepStore(root).best(SWEEP)


def test_unknown_and_young_sweeps(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ResultWriter(root, "young").write_manifest({"objective": {"metric": "acc", "mode": "max"}})
    server, port = make_server(root, port=0)
    server.start()
    try:
        with SweepClient(f"127.0.0.1:{port}", timeout=10) as client:
            assert list(client.list_trials("young", ["acc > 0.5"])) == []
            for call in (
                lambda: client.best("young", constraints=["acc > 0.5"]),
                lambda: client.pareto("young", [("acc", "max"), ("params", "min")]),
            ):
                assert _error(call).code() == grpc.StatusCode.FAILED_PRECONDITION
            for call in (
                lambda: list(client.list_trials("nope")),
                lambda: client.pareto("nope", [("acc", "max"), ("params", "min")]),
                lambda: client.best("nope", constraints=["acc > 0.5"]),
            ):
                error = _error(call)
                assert error.code() == grpc.StatusCode.NOT_FOUND
                assert "sweep 'nope' not found" in error.details()
    finally:
        server.stop(grace=None)
