"""``best(scope="all")`` from footer statistics (a cold reader) equals the key scan."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from morphtune.store import ResultWriter, SweepStore
from morphtune.store._files import list_parts
from morphtune.store._location import open_location
from morphtune.store._stats_best import UNSURE, StatsWinner, best_from_statistics
from tests.store.sweeps import row


def _both(root: Path, metric: str, mode: str) -> tuple[object, object]:
    cold = SweepStore(root).best("s", metric, mode, "all")
    warm = SweepStore(root)
    warm.results("s", ["trial_id"])  # loads the key index: the scan path
    return cold, warm.best("s", metric, mode, "all")


def _search(
    root: Path, column: str = "metrics.acc", mode: str = "max", failed: tuple[str, ...] = ()
) -> object:
    location = open_location(root)
    return best_from_statistics(
        location, list_parts(location, location.join("s", "results")), column, mode, failed
    )


@pytest.fixture
def many_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("morphtune.store._files.ROW_GROUP_ROWS", 3)


def test_statistics_path_skips_failed_nan_and_inf(tmp_path: Path, many_groups: None) -> None:
    writer = ResultWriter(tmp_path, "s")
    values = [0.1, math.nan, 0.7, math.inf, 0.9, -math.inf, 0.3, 0.95, 0.2, 0.5]
    writer.write_results([row(f"t{i}", 1, {"acc": v}) for i, v in enumerate(values)])
    writer.write_trial("t7", "failed", config={})  # holds 0.95
    cold, warm = _both(tmp_path, "acc", "max")
    assert cold == warm and cold.trial_id == "t4" and cold.value == 0.9  # type: ignore[attr-defined]
    assert _both(tmp_path, "acc", "min")[0].value == 0.1  # type: ignore[attr-defined]
    found = _search(tmp_path, failed=("t7",))
    assert isinstance(found, StatsWinner) and found.trial_id == "t4"


def test_ties_go_to_the_smallest_key_across_groups(tmp_path: Path, many_groups: None) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("b", 1, {"acc": 1.0}), row("c", 1, {"acc": 0.0})])
    writer.write_results([row("a", 5, {"acc": 1.0}), row("a", 2, {"acc": 1.0})])
    cold, warm = _both(tmp_path, "acc", "max")
    assert cold == warm and (cold.trial_id, cold.iteration) == ("a", 2)  # type: ignore[attr-defined]


def test_a_later_copy_of_the_winner_means_unsure(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_results(
        [row("a", 1, {"acc": 0.9}), row("b", 1, {"acc": 0.5})]
    )
    assert isinstance(_search(tmp_path), StatsWinner)
    ResultWriter(tmp_path / "other", "s").write_results([row("a", 1, {"acc": 0.1})])
    late = next((tmp_path / "other" / "s" / "results").iterdir())
    late.rename(tmp_path / "s" / "results" / late.name)  # a concurrent writer's newer copy
    assert _search(tmp_path) is UNSURE
    cold, warm = _both(tmp_path, "acc", "max")
    assert cold == warm and cold.trial_id == "b"  # type: ignore[attr-defined]


def test_later_parts_with_other_keys_keep_the_fast_path(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("a", i, {"acc": i / 10}) for i in range(5)])
    writer.compact()
    writer.write_results([row("a", i, {"acc": 0.0}) for i in range(5, 8)])
    found = _search(tmp_path)
    assert isinstance(found, StatsWinner) and found.iteration == 4


def _foreign_part(root: Path, name: str, trial_id: str, value: float) -> None:
    """A part written without statistics (as another Parquet writer might)."""
    writer = ResultWriter(root / "template", "s")
    writer.write_results([row(trial_id, 1, {"acc": value})])
    table = pq.read_table(next((root / "template" / "s" / "results").iterdir()))
    pq.write_table(table, root / "s" / "results" / name, write_statistics=False)


def test_parts_without_statistics_are_read(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_results([row("a", 1, {"acc": 0.2})])
    _foreign_part(tmp_path, "part-00000000000000000000-000000-000000000000.parquet", "z", 0.8)
    found = _search(tmp_path)  # no bound: the stats-less part is read, and it wins
    assert isinstance(found, StatsWinner) and found.trial_id == "z"
    _foreign_part(tmp_path, "part-99999999999999999999-000000-000000000000.parquet", "y", 0.1)
    assert _search(tmp_path) is UNSURE  # a later part without key statistics
    cold, warm = _both(tmp_path, "acc", "max")
    assert cold == warm and cold.trial_id == "z"  # type: ignore[attr-defined]


def test_text_metric_is_left_to_the_scan(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_results([row("a", 1, {"phase": "warmup"})])
    assert _search(tmp_path, "metrics.phase") is UNSURE
    with pytest.raises(ValueError, match=r"metric 'phase' is not numeric"):
        SweepStore(tmp_path).best("s", "phase", "max", "all")
