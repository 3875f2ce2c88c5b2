"""The last-row side index (``last_rows.parquet``): a cold ``best(scope="last")`` answers
from it while the listing is exactly what the compaction indexed, and always equals the
key scan's answer."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from morphtune.store import BestResult, NoResults, ResultWriter, SweepStore
from morphtune.store._files import is_part_name, list_parts
from morphtune.store._lastindex import LAST_INDEX_NAME, META_KEY
from morphtune.store._location import Location, open_location
from tests.store.conftest import RootFactory
from tests.store.sweeps import SWEEP, row, write_demo_sweep

S = "s"


def _cold(root: Any, metric: str | None, mode: str | None, sweep: str = S) -> tuple[Any, bool]:
    """(answer or the exception's type, whether the side index answered it)."""
    store = SweepStore(root)
    try:
        answer: Any = store.best(sweep, metric, mode, "last")
    except (ValueError, LookupError) as error:
        answer = type(error)
    return answer, not store._index(sweep).results_loaded


def _scan(root: Any, metric: str | None, mode: str | None, sweep: str = S) -> Any:
    """The key scan's answer (keys loaded first, so no side path is taken)."""
    store = SweepStore(root)
    store.results(sweep, ["trial_id"])
    try:
        return store.best(sweep, metric, mode, "last")
    except (ValueError, LookupError) as error:
        return type(error)


def _agree(root: Any, metric: str | None, mode: str | None, sweep: str = S) -> tuple[Any, bool]:
    cold, side = _cold(root, metric, mode, sweep)
    assert cold == _scan(root, metric, mode, sweep), (metric, mode, side)
    return cold, side


def _side_path(root: Path, sweep: str = S) -> Path:
    return root / sweep / LAST_INDEX_NAME


def test_demo_sweep_on_every_backend(backend: tuple[str, RootFactory]) -> None:
    _, make_root = backend
    writer = write_demo_sweep(make_root())
    writer.compact()
    for mode in ("max", "min"):
        best, side = _agree(make_root(), "acc", mode, SWEEP)
        assert side and isinstance(best, BestResult)
        # t3 (0.99, failed) skipped, t2 (last NaN) and t4 (last inf) disqualified
        assert (best.trial_id, best.iteration) == (("t0", 2) if mode == "max" else ("t1", 2))
        assert best.config["lr"] == pytest.approx(0.01 * (int(best.trial_id[1]) + 1))
    best, side = _agree(make_root(), None, None, SWEEP)  # the objective
    assert side and best.trial_id == "t0"  # type: ignore[union-attr]
    loss, side = _agree(make_root(), "loss", "min", SWEEP)
    assert side and isinstance(loss, BestResult) and loss.value == 0.5


def test_side_file_is_not_a_part_nor_read_by_a_directory_scan(tmp_path: Path) -> None:
    write_demo_sweep(tmp_path).compact()
    path = _side_path(tmp_path, SWEEP)
    assert path.is_file() and not is_part_name(path.name)
    assert META_KEY in (pq.read_schema(path).metadata or {})
    location = open_location(tmp_path)
    parts = list_parts(location, location.join(SWEEP, "results"))
    assert len(parts) == 1 and all(is_part_name(part.name) for part in parts)
    frame = pd.read_parquet(tmp_path / SWEEP / "results")
    assert len(frame) == 9 and "value:metrics.acc" not in frame.columns


def _random_sweep(root: Any, seed: int, parts: int = 4) -> set[str]:
    """Random rows over ``parts`` writes: NaN, inf, -inf, missing (null) values, metrics
    reported only on some iterations, an int-valued metric, ties, and keys repeated by a
    second writer (the later copy supersedes, sometimes without the metric). Returns the
    failed trials."""
    rng = np.random.default_rng(seed)
    first, second = ResultWriter(root, S), ResultWriter(root, S)  # not deduplicated
    first.write_manifest({"objective": {"metric": "acc", "mode": "max"}})
    trials = [f"t{index:02d}" for index in range(12)]
    specials = [math.nan, math.inf, -math.inf, None, 0.5, 0.5]
    next_iteration = dict.fromkeys(trials, 0)
    for batch in range(parts):
        rows = []
        for trial_id in rng.choice(trials, size=8, replace=False).tolist():
            iteration = next_iteration[trial_id]
            next_iteration[trial_id] += 1
            metrics: dict[str, Any] = {"steps": int(rng.integers(0, 5))}
            draw = rng.random()
            if draw < 0.3:
                metrics["acc"] = specials[int(rng.integers(0, len(specials)))]
            elif draw < 0.9:
                metrics["acc"] = float(np.round(rng.random(), 1))  # ties happen
            if iteration % 2 == 0:
                metrics["params"] = float(rng.integers(1, 4))  # a cost column, some rows
            rows.append(row(trial_id, iteration, metrics))
        (first if batch % 2 == 0 else second).write_results(rows)
        if batch % 2 == 1:  # a repeat of an earlier key, from the other writer
            trial_id = str(rng.choice([t for t in trials if next_iteration[t] > 0]))
            again = int(rng.integers(0, next_iteration[trial_id]))
            value = None if rng.random() < 0.5 else float(rng.random())
            first.write_results([row(trial_id, again, {"acc": value, "steps": 9})])
            second.write_results([row(trial_id, again, {"acc": value, "steps": 9})])
    failed = set(rng.choice(trials, size=2, replace=False).tolist())
    for trial_id in trials:
        first.write_trial(trial_id, "failed" if trial_id in failed else "completed", config={})
    return failed


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("max_part_bytes", [1, 64 << 20])  # nothing merged / all merged
def test_random_sweeps_agree_with_the_key_scan(
    tmp_path: Path, seed: int, max_part_bytes: int
) -> None:
    _random_sweep(tmp_path, seed)
    ResultWriter(tmp_path, S).compact(max_part_bytes=max_part_bytes)
    assert _side_path(tmp_path).is_file()
    used = 0
    for metric in ("acc", "steps", "params", "cost.params", "metrics.params", "config.lr"):
        for mode in ("max", "min"):
            answer, side = _agree(tmp_path, metric, mode)
            used += side
            if side:
                assert isinstance(answer, BestResult)
    assert used >= 6  # steps and params: always some finite value


def test_superseded_copy_without_the_metric_moves_the_last_report(tmp_path: Path) -> None:
    first, second = ResultWriter(tmp_path, S), ResultWriter(tmp_path, S)
    first.write_results([row("a", 1, {"acc": 0.2}), row("a", 2, {"acc": 0.9})])
    first.write_results([row("b", 1, {"acc": 0.5})])
    second.write_results([row("a", 2, {"loss": 1.0})])  # supersedes a@2: no acc any more
    ResultWriter(tmp_path, S).compact(max_part_bytes=1)  # keep the three parts
    best, side = _agree(tmp_path, "acc", "max")
    assert side and (best.trial_id, best.iteration, best.value) == ("b", 1, 0.5)  # type: ignore[union-attr]
    best, side = _agree(tmp_path, "acc", "min")
    assert side and (best.trial_id, best.iteration, best.value) == ("a", 1, 0.2)  # type: ignore[union-attr]


def test_ties_go_to_the_smallest_trial(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, S)
    writer.write_results([row(t, 3, {"acc": 1.0}) for t in ("c", "a", "b")])
    writer.write_results([row("a", 4, {"acc": 0.0}), row("b", 4, {"acc": 1.0})])
    writer.compact()
    best, side = _agree(tmp_path, "acc", "max")
    assert side and (best.trial_id, best.iteration) == ("b", 4)  # type: ignore[union-attr]


def _compacted(root: Path) -> ResultWriter:
    writer = ResultWriter(root, S)
    writer.write_manifest({"objective": {"metric": "acc", "mode": "max"}})
    for iteration in range(3):
        writer.write_results(
            [row(f"t{i}", iteration, {"acc": 0.1 * i + 0.01 * iteration}) for i in range(4)]
        )
    writer.write_trial("t3", "failed", config={})
    writer.compact()
    return writer


def test_append_falls_back_and_a_new_compaction_writes_a_new_index(tmp_path: Path) -> None:
    writer = _compacted(tmp_path)
    best, side = _agree(tmp_path, None, None)
    assert side and (best.trial_id, best.iteration) == ("t2", 2)  # type: ignore[union-attr]
    writer.write_results([row("t0", 3, {"acc": 0.95})])  # newer part: the index is stale
    best, side = _agree(tmp_path, None, None)
    assert not side and (best.trial_id, best.iteration) == ("t0", 3)  # type: ignore[union-attr]
    old = _side_path(tmp_path).read_bytes()
    writer.compact()
    assert _side_path(tmp_path).read_bytes() != old
    best, side = _agree(tmp_path, None, None)
    assert side and (best.trial_id, best.iteration) == ("t0", 3)  # type: ignore[union-attr]
    # an index from the older compaction (restored over the new one) is not used
    _side_path(tmp_path).write_bytes(old)
    best, side = _agree(tmp_path, None, None)
    assert not side and best.trial_id == "t0"  # type: ignore[union-attr]


def test_a_failed_winner_or_a_new_failure_is_skipped(tmp_path: Path) -> None:
    writer = _compacted(tmp_path)  # t3 holds the best last value but failed
    best, side = _agree(tmp_path, "acc", "max")
    assert side and best.trial_id == "t2"  # type: ignore[union-attr]
    writer.write_trial("t2", "failed", config={})  # trial records are read fresh
    best, side = _agree(tmp_path, "acc", "max")
    assert side and best.trial_id == "t1"  # type: ignore[union-attr]
    writer.write_trial("t2", "running", config={})  # restarted: counts again
    best, side = _agree(tmp_path, "acc", "max")
    assert side and best.trial_id == "t2"  # type: ignore[union-attr]


def test_missing_part_or_missing_index_falls_back(tmp_path: Path) -> None:
    _compacted(tmp_path)
    (part,) = (tmp_path / S / "results").glob("part-*.parquet")
    shutil.move(part, tmp_path / "elsewhere.parquet")
    assert _agree(tmp_path, "acc", "max") == (NoResults, False)
    shutil.move(tmp_path / "elsewhere.parquet", part)
    assert _agree(tmp_path, "acc", "max")[1]
    _side_path(tmp_path).unlink()
    best, side = _agree(tmp_path, "acc", "max")
    assert not side and best.trial_id == "t2"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "content", [b"", b"not parquet at all", None], ids=["empty", "garbage", "bad-meta"]
)
def test_a_corrupt_index_falls_back(tmp_path: Path, content: bytes | None) -> None:
    _compacted(tmp_path)
    path = _side_path(tmp_path)
    if content is None:  # valid Parquet, metadata that does not parse
        table = pq.read_table(path)
        table = table.replace_schema_metadata({META_KEY: b'{"version": 1, "parts": 3}'})
        pq.write_table(table, path)
    else:
        path.write_bytes(content)
    best, side = _agree(tmp_path, "acc", "max")
    assert not side and best.trial_id == "t2"  # type: ignore[union-attr]
    ResultWriter(tmp_path, S).compact()  # a compaction replaces it
    assert _agree(tmp_path, "acc", "max")[1]


@pytest.mark.parametrize("damage", ["rows-rolled", "value-raised", "rows-as-text"])
def test_an_index_that_misdescribes_rows_is_not_believed(tmp_path: Path, damage: str) -> None:
    _compacted(tmp_path)
    path = _side_path(tmp_path)
    table = pq.read_table(path)
    name = {"value-raised": "value:metrics.acc"}.get(damage, "row:metrics.acc")
    column = table.column(name).to_numpy()
    if damage == "rows-rolled":
        replaced: Any = np.roll(column, 1)
    elif damage == "value-raised":  # t0 now claims the best last value
        replaced = np.where(np.arange(len(column)) == 0, 5.0, column)
    else:
        replaced = [str(value) for value in column]
    table = table.set_column(table.schema.get_field_index(name), name, [replaced])
    pq.write_table(table, path)
    best, side = _agree(tmp_path, "acc", "max")
    assert not side and best.trial_id == "t2"  # type: ignore[union-attr]


def test_metrics_absent_from_the_index_take_the_key_scan(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, S)
    writer.write_results(
        [row("a", 1, {"acc": 0.5, "tag": "x", "never": None}), row("b", 1, {"acc": 0.7})]
    )
    writer.write_results([row("a", 2, {"tag": 3.0, "late": math.nan})])  # tag: text + number
    writer.compact()
    assert _agree(tmp_path, "tag", "max") == (ValueError, False)  # not numeric
    assert _agree(tmp_path, "never", "max") == (ValueError, False)  # never reported
    assert _agree(tmp_path, "unknown", "max") == (ValueError, False)
    assert _agree(tmp_path, "late", "max") == (NoResults, False)  # only NaN
    best, side = _agree(tmp_path, "acc", "max")
    assert side and (best.trial_id, best.iteration) == ("b", 1)  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["object", "s3"], indirect=True)  # local: never rewritten
def test_a_rewritten_object_falls_back(backend: tuple[str, RootFactory]) -> None:
    _, make_root = backend
    root = make_root()
    writer = ResultWriter(root, S)
    writer.write_results([row("a", 1, {"acc": 0.5}), row("b", 1, {"acc": 0.7})])
    writer.write_results([row("a", 2, {"acc": 0.1})])
    writer.compact(max_part_bytes=1)  # nothing merged: the replayable parts stay
    assert _agree(make_root(), "acc", "max")[1]
    location: Location = open_location(root)
    parts = list_parts(location, location.join(S, "results"))
    # a replayed batch lands on the same object with other content (size changes)
    replay = ResultWriter(make_root(), S, compact_trials_every=None)
    replay._written = type(replay._written)()  # forget the stored keys: a true replay
    replay.write_results([row("a", 2, {"acc": 0.95, "extra": 1.0})])
    assert {part.name for part in list_parts(location, location.join(S, "results"))} == {
        part.name for part in parts
    }
    best, side = _agree(make_root(), "acc", "max")
    assert not side and (best.trial_id, best.value) == ("a", 0.95)  # type: ignore[union-attr]
