"""Readers during writes and compactions: never an error, a duplicate or a gap."""

from __future__ import annotations

import threading

import pytest

from morphtune.store import ResultWriter, SweepStore
from tests.store.conftest import RootFactory
from tests.store.sweeps import row

BATCHES = 24


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_reader_sees_growing_complete_results(backend: tuple[str, RootFactory]) -> None:
    _, make_root = backend
    writer = ResultWriter(make_root(), "s")
    writer.write_results([row("t0", 0, {"acc": 0.0})])
    done = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for batch in range(1, BATCHES):
                writer.write_results(
                    [row(f"t{n}", batch, {"acc": batch + n / 10}) for n in range(5)]
                )
                if batch % 3 == 0:
                    writer.compact()
        except BaseException as error:  # reported by the test thread
            failures.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    cached, seen, reads = SweepStore(make_root()), 0, 0
    try:
        while not done.is_set() or reads < 3:
            for store in (cached, SweepStore(make_root())):
                table = store.results("s", ["trial_id", "iteration"])
                trial_ids, iterations = (
                    table["trial_id"].to_pylist(),
                    table["iteration"].to_pylist(),
                )
                keys = list(zip(trial_ids, iterations, strict=True))
                assert len(keys) == len(set(keys)), "a reader saw a duplicate key"
                assert len(keys) >= seen, f"a reader saw a gap: {len(keys)} rows after {seen}"
                seen = len(keys)
                assert store.best("s", "acc", "max", "all").value >= 0.0
            reads += 1
    finally:
        thread.join()
    assert not failures, failures
    assert SweepStore(make_root()).results("s").num_rows == 1 + 5 * (BATCHES - 1)
