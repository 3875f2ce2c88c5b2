from __future__ import annotations

import json
import math
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from morphtune._atomic import atomic_write
from morphtune.store import CorruptFileError, ResultWriter, SweepStore
from tests.store.sweeps import row


def _part_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def test_write_leaves_only_final_parts(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    assert writer.write_results([row("a", 1, {"acc": 0.1}), row("b", 1, {"acc": 0.2})]) == 2
    writer.write_trial("a", "completed", config={"lr": 0.1})
    writer.write_manifest({"objective": {"metric": "acc", "mode": "max"}})
    for sub in ("results", "trials"):
        names = _part_files(tmp_path / "s" / sub)
        assert len(names) == 1
        assert names[0].startswith("part-") and names[0].endswith(".parquet")
    assert _part_files(tmp_path / "s") == ["manifest.json", "results", "trials"]


def test_failed_atomic_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"

    def write_then_fail(handle: BinaryIO) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, write_then_fail)
    assert list(tmp_path.iterdir()) == []
    atomic_write(target, lambda handle: handle.write(b"whole"))
    assert [path.name for path in tmp_path.iterdir()] == ["file.bin"]
    assert target.read_bytes() == b"whole"


def test_zero_new_rows_writes_no_file(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    assert writer.write_results([]) == 0
    assert _part_files(tmp_path / "s" / "results") == []


def test_dedupe_within_batch_keeps_first(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    written = writer.write_results(
        [row("a", 1, {"acc": 0.1}), row("a", 1, {"acc": 0.9}), row("a", 2, {"acc": 0.3})]
    )
    assert written == 2
    table = SweepStore(tmp_path).results("s")
    assert table.column("metrics.acc").to_pylist() == [0.1, 0.3]


def test_dedupe_across_batches(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    assert writer.write_results([row("a", 1, {"acc": 0.1})]) == 1
    assert writer.write_results([row("a", 1, {"acc": 0.5}), row("a", 2, {"acc": 0.2})]) == 1
    assert writer.write_results([row("a", 2, {"acc": 0.7})]) == 0
    assert len(_part_files(tmp_path / "s" / "results")) == 2
    assert SweepStore(tmp_path).results("s").num_rows == 2


def test_dedupe_across_reopened_writer(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_results([row("a", 1, {"acc": 0.1}), row("b", 1, {})])
    resumed = ResultWriter(tmp_path, "s")
    assert resumed.write_results([row("a", 1, {"acc": 0.9}), row("a", 2, {"acc": 0.3})]) == 1
    table = SweepStore(tmp_path).results("s")
    keys = list(zip(table["trial_id"].to_pylist(), table["iteration"].to_pylist(), strict=True))
    assert keys == [("a", 1), ("b", 1), ("a", 2)]


def test_reader_keeps_last_written_of_two_concurrent_writers(tmp_path: Path) -> None:
    first, second = ResultWriter(tmp_path, "s"), ResultWriter(tmp_path, "s")
    first.write_results([row("a", 1, {"acc": 0.1})])
    second.write_results([row("a", 1, {"acc": 0.2})])
    table = SweepStore(tmp_path).results("s")
    assert table.column("metrics.acc").to_pylist() == [0.2]


def test_flattened_columns_and_json(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    config = {"lr": 1, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "bias": True}
    metrics = {"acc": math.nan, "up": math.inf, "down": -math.inf, "none": None, "n": 3}
    writer.write_results([{**row("a", 0, metrics, config), "timestamp": 123.5}])
    table = SweepStore(tmp_path).results("s")
    first = table.to_pylist()[0]
    assert table.schema.field("config.lr").type == pa.float64()
    assert table.schema.field("config.opt.name").type == pa.string()
    assert "config.opt.betas" not in table.column_names  # lists live in JSON only
    assert "metrics.none" not in table.column_names  # all-None key gets no column
    assert first["config.bias"] == 1.0 and first["config.opt.name"] == "adam"
    assert math.isnan(first["metrics.acc"])
    assert first["metrics.up"] == math.inf and first["metrics.down"] == -math.inf
    assert first["timestamp"] == 123.5 and first["sweep_id"] == "s"
    assert json.loads(first["config_json"]) == config
    assert json.loads(first["metrics_json"]) == {
        "acc": None,
        "up": None,
        "down": None,
        "none": None,
        "n": 3,
    }


def test_mixed_types_in_batch_become_string(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("a", 1, {"tag": 1}), row("a", 2, {"tag": "best"})])
    table = SweepStore(tmp_path).results("s")
    assert table.schema.field("metrics.tag").type == pa.string()
    assert table.column("metrics.tag").to_pylist() == ["1.0", "best"]


def test_schema_promotion_across_parts(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("a", 1, {"acc": 0.1, "tag": 2})])
    writer.write_results([row("a", 2, {"loss": 0.5, "tag": "x"})])
    table = SweepStore(tmp_path).results("s")
    assert table.column("metrics.acc").to_pylist() == [0.1, None]
    assert table.column("metrics.loss").to_pylist() == [None, 0.5]
    assert table.schema.field("metrics.tag").type == pa.string()  # float64 vs string
    assert table.column("metrics.tag").to_pylist() == ["2", "x"]


def test_nested_key_collision_is_rejected(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    with pytest.raises(ValueError, match=r"metrics key 'a\.b' occurs twice"):
        writer.write_results([row("a", 1, {"a.b": 1, "a": {"b": 2}})])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"iteration": -1}, r"rows\[0\]\.iteration must be an int >= 0, got -1"),
        ({"iteration": True}, r"rows\[0\]\.iteration must be an int >= 0, got True"),
        ({"trial_id": ""}, r"rows\[0\]\.trial_id must be a non-empty string"),
        ({"metrics": [1]}, r"rows\[0\]\.metrics must be a mapping, got list"),
        ({"timestamp": math.nan}, r"rows\[0\]\.timestamp must be finite"),
        ({"config": {"f": object()}}, r"config\.f must be JSON-serialisable"),
    ],
)
def test_invalid_rows_are_rejected(tmp_path: Path, bad: dict[str, object], message: str) -> None:
    writer = ResultWriter(tmp_path, "s")
    with pytest.raises(ValueError, match=message):
        writer.write_results([{**row("a", 1, {}), **bad}])
    assert _part_files(tmp_path / "s" / "results") == []


def test_missing_row_keys_are_listed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"rows\[0\] is missing required keys \['metrics'\]"):
        ResultWriter(tmp_path, "s").write_results(
            [{"trial_id": "a", "iteration": 1, "status": "running", "config": {}}]
        )


def test_trial_status_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"status must be one of .*'stopped'\], got 'done'"):
        ResultWriter(tmp_path, "s").write_trial("a", "done", config={})


@pytest.mark.parametrize("sweep_id", ["", "../up", "a/b", ".hidden", "-x", "a" * 129, "sp ace"])
def test_invalid_sweep_id_is_rejected(tmp_path: Path, sweep_id: str) -> None:
    with pytest.raises(ValueError, match=r"sweep_id must match \[A-Za-z0-9\]"):
        ResultWriter(tmp_path, sweep_id)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sweep_id", ["a", "A.b_c-1", "9" * 128])
def test_valid_sweep_ids(tmp_path: Path, sweep_id: str) -> None:
    assert ResultWriter(tmp_path, sweep_id).directory == tmp_path / sweep_id


def test_manifest_round_trip_and_update(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_manifest(
        {
            "name": "first",
            "objective": {"metric": "acc", "mode": "max"},
            "spec": {"lr": {"low": 1e-4, "high": 1.0}, "bad": math.nan},
        }
    )
    manifest = SweepStore(tmp_path).manifest("s")
    assert manifest["sweep_id"] == "s" and manifest["name"] == "first"
    assert manifest["status"] == "created" and manifest["created"].endswith("+00:00")
    assert manifest["spec"] == {"lr": {"low": 1e-4, "high": 1.0}, "bad": None}
    merged = writer.update_manifest(status="completed")
    assert merged["status"] == "completed" and merged["created"] == manifest["created"]
    assert SweepStore(tmp_path).manifest("s") == merged
    assert _part_files(tmp_path / "s") == ["manifest.json", "results", "trials"]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"objective": {"metric": "acc", "mode": "up"}}, r"objective\.mode must be one of"),
        ({"objective": {"mode": "max"}}, r"objective\.metric must be a non-empty string"),
        ({"sweep_id": "other"}, r"manifest\.sweep_id must equal the writer's sweep id 's'"),
    ],
)
def test_invalid_manifest_is_rejected(
    tmp_path: Path, manifest: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ResultWriter(tmp_path, "s").write_manifest(manifest)


def test_stray_temp_file_is_ignored(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("a", 1, {"acc": 0.1})])
    results = tmp_path / "s" / "results"
    (results / ".part-00000000000000000001-000000-abcdefabcdef.parquet.1234abcd.tmp").write_bytes(
        b"half a parquet file"
    )
    (results / "notes.txt").write_text("not a part")
    assert SweepStore(tmp_path).results("s").num_rows == 1
    assert ResultWriter(tmp_path, "s").write_results([row("a", 2, {})]) == 1


def test_corrupt_final_part_raises_naming_file(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_results([row("a", 1, {"acc": 0.1})])
    corrupt = tmp_path / "s" / "results" / "part-99999999999999999999-000000-000000000000.parquet"
    corrupt.write_bytes(b"PAR1 garbage")
    with pytest.raises(CorruptFileError, match=r"corrupt store file .*part-9999") as caught:
        SweepStore(tmp_path).results("s")
    assert caught.value.path == str(corrupt)
    with pytest.raises(CorruptFileError):
        ResultWriter(tmp_path, "s")  # must not append duplicates past unreadable keys


def test_truncated_part_can_be_skipped_with_warning(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("a", 1, {"acc": 0.1})])
    writer.write_results([row("a", 2, {"acc": 0.2})])
    second = sorted((tmp_path / "s" / "results").iterdir())[1]
    second.write_bytes(second.read_bytes()[:40])
    with pytest.warns(RuntimeWarning, match="skipping corrupt store file"):
        table = SweepStore(tmp_path, on_corrupt="warn").results("s")
    assert table.column("metrics.acc").to_pylist() == [0.1]


def test_on_corrupt_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"on_corrupt must be one of \['raise', 'warn'\]"):
        SweepStore(tmp_path, on_corrupt="ignore")


def test_trial_records_schema(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_trial("a", "failed", config={"lr": 0.1}, error="boom", last_iteration=3)
    part = next((tmp_path / "s" / "trials").iterdir())
    record = pq.read_table(part).to_pylist()[0]
    assert record["status"] == "failed" and record["error"] == "boom"
    assert record["last_iteration"] == 3 and json.loads(record["config_json"]) == {"lr": 0.1}


def test_keep_last_with_huge_iterations(tmp_path: Path) -> None:
    # Iterations beyond 2**32 take the Arrow group-by path instead of the packed int64 key.
    first, second = ResultWriter(tmp_path, "s"), ResultWriter(tmp_path, "s")
    first.write_results([row("a", 2**40, {"acc": 0.1}), row("a", 1, {"acc": 0.3})])
    second.write_results([row("a", 2**40, {"acc": 0.2})])
    table = SweepStore(tmp_path).results("s")
    assert table.column("iteration").to_pylist() == [1, 2**40]
    assert table.column("metrics.acc").to_pylist() == [0.3, 0.2]
    assert SweepStore(tmp_path).best("s", "acc", "max").iteration == 2**40


def test_compact_merges_parts_and_keeps_answers(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("a", 1, {"acc": 0.1}), row("b", 1, {"acc": 0.4})])
    writer.write_results([row("a", 2, {"acc": 0.5, "tag": "x"})])
    ResultWriter(tmp_path / "elsewhere", "s").write_results([row("b", 1, {"acc": 0.9})])
    late = next((tmp_path / "elsewhere" / "s" / "results").iterdir())
    late.rename(tmp_path / "s" / "results" / late.name)  # a later duplicate of (b, 1)
    writer.write_trial("a", "running", config={})
    writer.write_trial("a", "completed", config={})
    store = SweepStore(tmp_path)
    before = (store.results("s"), store.trial_records("s"), store.best("s", "acc", "max"))
    assert writer.compact() == 5
    assert len(_part_files(tmp_path / "s" / "results")) == 1
    assert len(_part_files(tmp_path / "s" / "trials")) == 1
    after = (store.results("s"), store.trial_records("s"), store.best("s", "acc", "max"))
    assert after[0].equals(before[0]) and after[1].equals(before[1])
    assert after[2] == before[2] and after[2].value == 0.9
    assert writer.compact() == 0
    assert ResultWriter(tmp_path, "s").write_results([row("b", 1, {"acc": 1.0})]) == 0
