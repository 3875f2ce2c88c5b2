"""The ``node_id`` result column: where a row's trial ran (the Tune callback fills it from
the ``node_id`` every trial reports); optional for other writers, kept through reads and
compaction, refused when it is not a non-empty string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from morphtune.store import RESULT_BASE_SCHEMA, ResultWriter, SweepStore
from tests.store.sweeps import row

NODE_A = "a" * 56
NODE_B = "b" * 56


def with_node(trial_id: str, iteration: int, node_id: Any) -> dict[str, Any]:
    return {**row(trial_id, iteration, {"acc": 0.1 * iteration}), "node_id": node_id}


def test_node_id_is_a_nullable_string_base_column() -> None:
    field = RESULT_BASE_SCHEMA.field("node_id")
    assert str(field.type) == "string" and field.nullable


def test_rows_keep_their_node_through_reads_and_compaction(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("old", 1, {"acc": 0.5})])  # no node named: no column
    first = sorted((tmp_path / "s" / "results").glob("part-*.parquet"))
    assert "node_id" not in pq.read_schema(first[0]).names
    writer.write_results([with_node("a", 1, NODE_A), with_node("b", 1, NODE_B)])
    writer.write_results([with_node("a", 2, NODE_A), with_node("c", 1, None)])
    store = SweepStore(tmp_path)
    expected = {("old", 1): None, ("a", 1): NODE_A, ("b", 1): NODE_B, ("a", 2): NODE_A}
    expected[("c", 1)] = None

    def stored(table: Any) -> dict[tuple[str, int], str | None]:
        return {(r["trial_id"], r["iteration"]): r["node_id"] for r in table.to_pylist()}

    assert stored(store.results("s")) == expected
    assert stored(store.results("s", ["trial_id", "iteration", "node_id"])) == expected
    assert "node_id" in store.result_columns("s")
    assert "metrics.node_id" not in store.result_columns("s")
    assert writer.compact() > 0
    assert stored(SweepStore(tmp_path).results("s")) == expected


@pytest.mark.parametrize("bad", ["", 7, b"node"])
def test_a_node_id_that_is_not_a_non_empty_string_is_refused(tmp_path: Path, bad: Any) -> None:
    writer = ResultWriter(tmp_path, "s")
    with pytest.raises(ValueError, match=r"rows\[1\]\.node_id must be a non-empty string or None"):
        writer.write_results([with_node("a", 1, NODE_A), with_node("a", 2, bad)])
    assert list((tmp_path / "s" / "results").iterdir()) == []
