"""Compaction: small runs only, crash-safe at every step, order kept for later parts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from morphtune.store import ResultWriter, SweepStore
from morphtune.store._compact import compact_directory
from morphtune.store._files import compacted_part_name, list_parts
from morphtune.store._location import open_location
from morphtune.store._schema import RESULT_BASE_SCHEMA
from tests.store.sweeps import row


def _parts(root: Path, sub: str = "results") -> list[str]:
    return sorted(
        path.name for path in (root / "s" / sub).iterdir() if path.name.startswith("part-")
    )


def _answers(store: SweepStore) -> tuple[object, ...]:
    return (
        store.results("s").to_pylist(),
        store.best("s", "acc", "max", "all"),
        store.trial_states("s"),
        store.trial_records("s").to_pylist(),
    )


def _sweep(root: Path) -> ResultWriter:
    writer = ResultWriter(root, "s")
    for iteration in range(4):
        writer.write_results([row(trial, iteration, {"acc": iteration / 10}) for trial in "ab"])
    writer.write_trial("a", "running", config={})
    writer.write_trial("a", "completed", config={})
    return writer


def test_crash_after_writing_the_merged_part_changes_no_answer(tmp_path: Path) -> None:
    writer = _sweep(tmp_path)
    store = SweepStore(tmp_path)
    before = _answers(store)
    old_results, old_trials = _parts(tmp_path), _parts(tmp_path, "trials")
    # Simulate a crash between step 3 (merged part written) and step 4 (old parts deleted):
    # compact a copy of the sweep, then put the old parts back beside the merged ones.
    saved = {
        (sub, name): (tmp_path / "s" / sub / name).read_bytes()
        for sub, names in (("results", old_results), ("trials", old_trials))
        for name in names
    }
    assert writer.compact() == len(saved)
    merged = _parts(tmp_path)
    assert len(merged) == 1 and merged[0] == compacted_part_name(old_results)
    for (sub, name), data in list(saved.items())[:3]:  # some old parts survived the crash
        (tmp_path / "s" / sub / name).write_bytes(data)
    assert _answers(SweepStore(tmp_path)) == before
    assert _answers(store) == before
    # the next compaction merges the leftovers again; a fresh writer still dedupes
    assert ResultWriter(tmp_path, "s").compact() == 4
    assert _answers(SweepStore(tmp_path)) == before
    assert ResultWriter(tmp_path, "s").write_results([row("a", 3, {"acc": 9.0})]) == 0


def test_part_written_during_compaction_still_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = _sweep(tmp_path)
    location = open_location(tmp_path)
    directory = location.join("s", "results")
    listed = list_parts(location, directory)
    # another process writes a newer copy of ("a", 3) after compaction listed the parts
    later = ResultWriter(tmp_path / "other", "s")
    later.write_results([row("a", 3, {"acc": 5.0})])
    late = next((tmp_path / "other" / "s" / "results").iterdir())
    os.replace(late, tmp_path / "s" / "results" / late.name)
    stamps: dict[str, float] = {}
    names = [part.name for part in listed]
    # compaction works from the listing it made before the late part arrived
    monkeypatch.setattr("morphtune.store._compact.list_parts", lambda *args: listed)
    assert compact_directory(location, directory, RESULT_BASE_SCHEMA, "keys", 1 << 30, stamps) == 4
    monkeypatch.undo()
    assert _parts(tmp_path) == sorted([compacted_part_name(names), late.name])
    assert SweepStore(tmp_path).best("s", "acc", "max", "all").value == 5.0
    assert writer.compact() == 4  # the two result parts, the two trial parts
    assert SweepStore(tmp_path).best("s", "acc", "max", "all").value == 5.0


def test_only_runs_of_small_parts_are_merged(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("a", 0, {"acc": 0.0})])
    writer.write_results([row("a", 1, {"acc": 0.1})])
    writer.write_results([row(f"t{i}", 0, {"acc": i, "pad": "x" * 200}) for i in range(300)])
    writer.write_results([row("a", 2, {"acc": 0.2})])
    sizes = [(tmp_path / "s" / "results" / name).stat().st_size for name in _parts(tmp_path)]
    limit = sorted(sizes)[-1]  # the big part is not below the limit
    store = SweepStore(tmp_path)
    before = store.results("s").to_pylist()
    assert writer.compact(max_part_bytes=limit) == 2  # the first two; the last is alone
    assert len(_parts(tmp_path)) == 3
    assert store.results("s").to_pylist() == before
    with pytest.raises(ValueError, match=r"max_part_bytes must be an int, got '1'"):
        writer.compact(max_part_bytes="1")  # type: ignore[arg-type]


def test_compaction_removes_only_stale_temp_files(tmp_path: Path) -> None:
    writer = _sweep(tmp_path)
    results = tmp_path / "s" / "results"
    stale = results / ".part-1.parquet.deadbeef.tmp"
    fresh = results / ".part-2.parquet.cafebabe.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    writer.compact()
    assert not stale.exists() and fresh.exists()
    assert writer.remove_stale_temp_files(0) == 1
    assert not fresh.exists()


def test_compacted_part_keeps_the_newest_stamp(tmp_path: Path) -> None:
    writer = _sweep(tmp_path)
    stamps = [
        float(pq.read_metadata(tmp_path / "s" / "results" / name).metadata[b"morphtune.written_at"])
        for name in _parts(tmp_path)
    ]
    writer.compact()
    [merged] = _parts(tmp_path)
    metadata = pq.read_metadata(tmp_path / "s" / "results" / merged).metadata
    assert float(metadata[b"morphtune.written_at"]) == max(stamps)


def test_compaction_refuses_a_corrupt_part(tmp_path: Path) -> None:
    writer = _sweep(tmp_path)
    first = tmp_path / "s" / "results" / _parts(tmp_path)[0]
    first.write_bytes(b"PAR1 not parquet")
    with pytest.raises(Exception, match="corrupt store file"):
        writer.compact()
    assert first.exists() and len(_parts(tmp_path)) == 4  # nothing changed


def test_trial_parts_are_compacted_as_they_accumulate(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s", compact_trials_every=3)
    for index, status in enumerate(["running", "completed", "running", "failed", "running"]):
        writer.write_trial(f"t{index % 2}", status, config={"i": index})
    assert len(_parts(tmp_path, "trials")) == 3  # 3 merged into 1, then 2 more
    records = SweepStore(tmp_path).trial_records("s")
    assert [record["config_json"] for record in records.to_pylist()] == [
        f'{{"i":{index}}}' for index in range(5)
    ]
    assert SweepStore(tmp_path).trial_states("s") == {"t0": "running", "t1": "failed"}
    with pytest.raises(ValueError, match=r"compact_trials_every must be an int >= 2 or None"):
        ResultWriter(tmp_path, "s", compact_trials_every=1)
