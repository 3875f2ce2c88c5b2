"""WatchSweep against a real server while a real writer appends batches: order, resume
tokens (no repeats, no gaps), a trial filter, from_end, and bad tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from morphtune.service import SweepClient
from morphtune.service._servicer import SweepServicer
from morphtune.service._watch import Position, decode_token, encode_token
from morphtune.service.v1 import morphtune_pb2_grpc
from morphtune.store import ResultWriter, SweepStore
from morphtune.store._query import InvalidArgument

SWEEP = "live"
TRIALS = ("a", "b", "c")


def batch(iteration: int) -> list[dict[str, Any]]:
    return [
        {
            "trial_id": trial,
            "iteration": iteration,
            "status": "running",
            "config": {"lr": 0.1 * (index + 1)},
            "metrics": {"acc": round(0.1 * iteration + 0.01 * index, 3)},
        }
        for index, trial in enumerate(TRIALS)
    ]


class Served:
    def __init__(self, root: Path) -> None:
        self.servicer = SweepServicer(SweepStore(root), check_interval=0.05, watch_interval=0.02)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        morphtune_pb2_grpc.add_SweepServiceServicer_to_server(self.servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Served, ResultWriter]]:
    writer = ResultWriter(tmp_path, SWEEP)
    ResultWriter(tmp_path, "other").write_results(batch(1))
    writer.write_manifest({"objective": {"metric": "acc", "mode": "max"}})
    writer.write_results(batch(1))
    served = Served(tmp_path)
    yield served, writer
    served.servicer.close()
    served.server.stop(grace=None)


def take(
    stream: Iterator[tuple[dict[str, Any], str]], count: int
) -> list[tuple[dict[str, Any], str]]:
    got = []
    for item in stream:
        got.append(item)
        if len(got) == count:
            break
    return got


def keys(items: list[tuple[dict[str, Any], str]]) -> list[tuple[str, int]]:
    return [(row["trial_id"], row["iteration"]) for row, _ in items]


def write_later(writer: ResultWriter, iterations: range, pause: float = 0.05) -> threading.Thread:
    def run() -> None:
        for iteration in iterations:
            time.sleep(pause)
            writer.write_results(batch(iteration))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_watch_streams_new_rows_and_resumes_exactly(live: tuple[Served, ResultWriter]) -> None:
    served, writer = live
    with SweepClient(served.target, timeout=10) as client:
        writing = write_later(writer, range(2, 7))
        first = take(client.watch(SWEEP, timeout=30), 7)  # 3 old rows, then new ones
        writing.join()
        assert len(first) == 7
        rest = take(client.watch(SWEEP, resume_token=first[-1][1], timeout=30), 18 - 7)
        everything = first + rest
        assert len(everything) == 18
        assert len(set(keys(everything))) == 18  # no repeats
        expected = [(trial, it) for it in range(1, 7) for trial in TRIALS]  # write order
        assert keys(everything) == expected  # no gaps, in written order
        written = [row["written_at"] for row, _ in everything]
        assert written == sorted(written)
        # resuming from the middle gives exactly the rows after that one
        middle = take(client.watch(SWEEP, resume_token=everything[9][1], timeout=30), 8)
        assert keys(middle) == expected[10:18]
        assert middle[0][0]["metrics"] == {"acc": everything[10][0]["metrics"]["acc"]}
        # compaction merges the parts but keeps written_at: a resumed stream sends only the
        # batch written after it, not the compacted rows again
        assert writer.compact() > 0
        writer.write_results(batch(7))
        after = take(client.watch(SWEEP, resume_token=everything[-1][1], timeout=30), 3)
        assert keys(after) == [(trial, 7) for trial in TRIALS]


def test_watch_one_trial(live: tuple[Served, ResultWriter]) -> None:
    served, writer = live
    with SweepClient(served.target, timeout=10) as client:
        only_b = client.watch(SWEEP, trial_id="b", timeout=30)
        assert keys(take(only_b, 1)) == [("b", 1)]  # b's existing row
        writing = write_later(writer, range(2, 4))
        rows_b = take(only_b, 2)
        writing.join()
        assert keys(rows_b) == [("b", 2), ("b", 3)]


def test_watch_from_end_skips_written_rows(live: tuple[Served, ResultWriter]) -> None:
    served, writer = live
    stop = threading.Event()

    def keep_writing() -> None:  # until the stream has what it needs, however late it starts
        iteration = 2
        while not stop.is_set():
            writer.write_results(batch(iteration))
            iteration += 1
            time.sleep(0.05)

    with SweepClient(served.target, timeout=10) as client:
        new_only = client.watch(SWEEP, from_end=True, timeout=30)
        thread = threading.Thread(target=keep_writing)
        thread.start()
        try:
            rows = take(new_only, 6)
        finally:
            stop.set()
            thread.join()
    start = rows[0][0]["iteration"]
    assert start >= 2  # never a row that was there when the stream started
    assert keys(rows) == [(t, it) for it in (start, start + 1) for t in TRIALS]


def test_close_ends_streams(live: tuple[Served, ResultWriter]) -> None:
    served, _ = live
    with SweepClient(served.target, timeout=10) as client:
        stream = client.watch(SWEEP, from_end=True, timeout=30)
        ended = threading.Event()

        def drain() -> None:
            for _ in stream:
                pass
            ended.set()

        thread = threading.Thread(target=drain)
        thread.start()
        time.sleep(0.2)
        served.servicer.close()
        thread.join(timeout=10)
        assert ended.is_set()  # the stream finished OK; a client resumes with its last token


def test_bad_watch_requests(live: tuple[Served, ResultWriter]) -> None:
    served, _ = live
    with SweepClient(served.target, timeout=10) as client:
        ((_, other_token),) = take(client.watch("other", timeout=30), 1)
        cases = [
            (
                {"resume_token": "not-a-token"},
                "INVALID_ARGUMENT",
                "resume_token is not a resume token",
            ),
            (
                {"resume_token": other_token},
                "INVALID_ARGUMENT",
                "resume_token was issued for sweep 'other', not 'live'",
            ),
            (
                {"resume_token": other_token, "from_end": True},
                "INVALID_ARGUMENT",
                "from_end cannot be combined",
            ),
            ({"trial_id": "x\n"}, "INVALID_ARGUMENT", "trial_id must be printable"),
        ]
        for arguments, code, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                take(client.watch(SWEEP, timeout=10, **arguments), 1)
            assert info.value.code().name == code
            assert message in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            take(client.watch("missing", timeout=10), 1)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            take(client.watch("../etc", timeout=10), 1)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "sweep_id must match" in info.value.details()


def test_tokens_round_trip_exactly() -> None:
    position = Position(1795392670.6717253, "trial-\u00e9", 12)
    token = encode_token("s", position)
    assert decode_token(token, "s") == position
    with pytest.raises(InvalidArgument, match="resume_token was issued for sweep 's'"):
        decode_token(token, "t")
