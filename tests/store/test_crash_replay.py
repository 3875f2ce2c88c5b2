"""T12: a store writer SIGKILLed 25 times mid-write, then its batches replayed to the end.

The writer (``crash_writer.py``, a real subprocess) announces each step; the test kills it
at aimed moments, cycling through:

* ``temp``: while a result part's temp file exists (during the Parquet write / fsync);
* ``compact-temp``: while compaction writes its merged part;
* ``compact-delete``: as soon as the merged part has its final name (old parts being removed);
* ``manifest``: a random moment of the manifest rewrite;
* ``random``: a random moment of a batch write.

After every kill: every final-named file is valid Parquet, the manifest parses, and the reader
returns a subset of the expected rows with the expected values and no duplicate key. After the
replay to completion: exactly the expected rows, and no temp file left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq

from morphtune.store import SweepStore
from tests.store import crash_writer

KILLS = 25
MODES = ("temp", "compact-temp", "compact-delete", "manifest", "random")
WRITER = Path(crash_writer.__file__)


def _files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


def _temps(root: Path, subs: tuple[str, ...] = ("", "results", "trials")) -> list[Path]:
    sweep = root / crash_writer.SWEEP
    return [path for sub in subs for path in _files(sweep / sub) if path.name.endswith(".tmp")]


def _check_store(root: Path, model: dict[tuple[str, int], float]) -> int:
    """Every final part parses; the reader's rows are a duplicate-free subset of the model."""
    sweep = root / crash_writer.SWEEP
    for part in _files(sweep / "results") + _files(sweep / "trials"):
        if part.name.startswith("part-"):
            pq.read_table(part)  # raises on a torn or invalid file
    manifest = sweep / "manifest.json"
    if manifest.exists():
        assert isinstance(json.loads(manifest.read_text()), dict)
    if not (sweep / "results").is_dir():
        return 0
    store = SweepStore(root)
    if "metrics.acc" not in store.result_columns(crash_writer.SWEEP):
        assert store.results(crash_writer.SWEEP).num_rows == 0
        return 0
    table = store.results(crash_writer.SWEEP, ["trial_id", "iteration", "metrics.acc"])
    rows = table.to_pylist()
    keys = [(row["trial_id"], row["iteration"]) for row in rows]
    assert len(keys) == len(set(keys)), "duplicate keys visible to a reader"
    for row in rows:
        assert model[(row["trial_id"], row["iteration"])] == row["metrics.acc"]
    return len(rows)


def _start(root: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(root), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _names(paths: list[Path]) -> set[str]:
    return {path.name for path in paths}


def _new_temp(root: Path, watched: tuple[str, ...], before: set[str]) -> bool:
    return bool(_names(_temps(root, watched)) - before)


def _new_merged(results: Path, before: set[str]) -> bool:
    return any("~c" in name and name not in before for name in _names(_files(results)))


def _wait_for(condition: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.0005)
    return False


def _kill_once(
    root: Path, mode: str, target: int, rng: random.Random, completed: set[int]
) -> tuple[str, bool]:
    """Start the writer and kill it in ``mode`` at the first matching step whose batch index
    is at least ``target``; return (that step, whether a new temp file was seen). Batches
    whose manifest update started are added to ``completed``."""
    results = root / crash_writer.SWEEP / "results"
    process = _start(root)
    assert process.stdout is not None
    step, saw_temp = "", False
    wanted = {"temp": "W", "random": "W", "manifest": "M"}.get(mode, "C")
    watched = ("results",) if wanted == "W" else ("results", "trials")
    try:
        for line in process.stdout:
            step = line.strip()
            kind, _, number = step.partition(" ")
            if kind == "M":
                completed.add(int(number))
            if kind != wanted or int(number) < target:
                continue
            if mode in ("temp", "compact-temp"):
                if not _wait_for(
                    partial(_new_temp, root, watched, _names(_temps(root, watched))), 0.5
                ):
                    continue  # nothing new written at this step (a replayed batch)
                saw_temp = True
            elif mode == "compact-delete":
                if not _wait_for(partial(_new_merged, results, _names(_files(results))), 0.5):
                    continue
            else:
                time.sleep(rng.uniform(0.0, 0.03))
            break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()
    return step, saw_temp


def test_sigkilled_writer_replays_to_exact_rows(tmp_path: Path) -> None:
    model = crash_writer.expected()
    rng = random.Random(7)
    temps_seen, steps = 0, []
    completed: set[int] = set()
    for kill in range(KILLS):
        frontier = min(set(range(crash_writer.BATCHES + 1)) - completed)
        target = min(frontier + rng.randrange(2), crash_writer.BATCHES - 1)
        step, saw_temp = _kill_once(tmp_path, MODES[kill % len(MODES)], target, rng, completed)
        steps.append(step)
        temps_seen += saw_temp
        _check_store(tmp_path, model)
    assert "DONE" not in steps and len(steps) == KILLS, steps  # every kill hit a step
    assert temps_seen >= 8, f"only {temps_seen} kills landed during a temp-file write"
    assert any(step.startswith("C") for step in steps) and any(
        step.startswith("W") for step in steps
    )

    process = _start(tmp_path, "--cleanup")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert out.strip().endswith("DONE")
    assert _check_store(tmp_path, model) == len(model)  # no loss, no duplicates
    assert _temps(tmp_path) == []
    store = SweepStore(tmp_path)
    assert store.manifest(crash_writer.SWEEP)["progress"] == crash_writer.BATCHES - 1
    best = store.best(crash_writer.SWEEP, "acc", "max", "all")
    assert best.value == max(model.values())
