"""Live progress (``morphtune.progress``): the ETA rule, snapshots from real stores, the
renderings, the display modes, the polling thread, ``morphtune watch --progress`` against a
real server, and one real ``morphtune run --progress json`` on a tiny sweep."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from morphtune.progress import (
    BestSoFar,
    Budget,
    Progress,
    ProgressDisplay,
    budget_of,
    build_progress,
    estimate_eta,
    format_duration,
    format_json,
    format_line,
    read_store_progress,
    track_progress,
)
from morphtune.spec import parse_spec
from morphtune.store import ResultWriter, SweepStore
from tests.cli_run import run_cli as cli
from tests.store.sweeps import COUNTS, write_demo_sweep

SPEC = """
name: progress
dataset: {name: synthetic}
model: {width: 8, depth: 1}
training: {epochs: 2, batch_size: 64, lr: 0.02}
search:
  objective: {metric: val_acc, mode: max}
  num_samples: 3
  max_concurrent: 2
  sampler: {name: random, seed: 3}
  scheduler: {name: fifo}
  space:
    training.lr: {type: float, low: 0.005, high: 0.05, log: true}
"""


def snapshot(**fields: Any) -> Progress:
    values: dict[str, Any] = {
        "sweep_id": "s",
        "status": "running",
        "total": 10,
        "completed": 2,
        "stopped": 1,
        "running": 2,
        "failed": 1,
        "elapsed_s": 83.0,
        "eta_s": 130.0,
        "best": BestSoFar("val_acc", "max", 0.95833, "t_00004"),
        "time": 1_700_000_000.0,
    }
    values.update(fields)
    return Progress(**values)


# ------------------------------------------------------------------------------- the ETA


def test_eta_extrapolates_the_share_of_trials_done() -> None:
    budget = Budget(trials=10, epochs=4)
    # 2 ended + 2 running halfway = 3 of 10 trials in 30 s: 7 more take 70 s
    assert estimate_eta(budget, 30.0, 2, [2, 2]) == pytest.approx(70.0)
    # an iteration past the last epoch counts as one trial, never more
    assert estimate_eta(budget, 30.0, 2, [9]) == pytest.approx(30.0 * 7 / 3)
    assert estimate_eta(budget, 30.0, 10, []) == 0.0
    assert estimate_eta(budget, 30.0, 12, []) == 0.0  # more trials than the budget (resumes)


def test_eta_is_capped_by_the_time_budget_and_unknown_without_a_basis() -> None:
    assert estimate_eta(Budget(trials=10, epochs=4), 30.0, 0, []) is None
    assert estimate_eta(Budget(), 30.0, 5, [1]) is None
    assert estimate_eta(Budget(time_s=100.0), 30.0, 0, []) == pytest.approx(70.0)
    assert estimate_eta(Budget(trials=10, time_s=100.0), 30.0, 1, []) == pytest.approx(70.0)
    assert estimate_eta(Budget(trials=10, time_s=100.0), 30.0, 5, []) == pytest.approx(30.0)
    assert estimate_eta(Budget(time_s=100.0), 130.0, 0, []) == 0.0
    # no epochs known: running trials count nothing, ended ones still do
    assert estimate_eta(Budget(trials=4), 10.0, 2, [5]) == pytest.approx(10.0)


@pytest.mark.parametrize("elapsed", [1.0, 60.0, 3600.0])
def test_eta_falls_as_work_is_done(elapsed: float) -> None:
    budget = Budget(trials=8, epochs=5)
    steps = [(ended, its) for ended in range(8) for its in ([0], [2], [4])]
    etas = [estimate_eta(budget, elapsed, ended, its) for ended, its in steps]
    numbers = [eta for eta in etas if eta is not None]
    assert numbers == sorted(numbers, reverse=True)
    assert all(0.0 <= eta for eta in numbers)


# ---------------------------------------------------------------------------- snapshots


def test_budget_comes_from_the_resolved_spec_and_ignores_nonsense() -> None:
    spec = parse_spec(SPEC.replace("num_samples: 3", "num_samples: 3\n  time_budget_s: 600"))
    assert budget_of({"spec": spec.to_dict()}) == Budget(trials=3, epochs=2, time_s=600.0)
    assert budget_of({}) == Budget()
    nonsense = {"search": {"num_samples": "3", "time_budget_s": -1}, "training": {"epochs": True}}
    assert budget_of({"spec": nonsense}) == Budget()
    assert budget_of({"spec": ["not", "a", "mapping"]}) == Budget()


def test_build_progress_counts_and_times() -> None:
    manifest = {"status": "running", "created": 1000.0, "spec": parse_spec(SPEC).to_dict()}
    counts = {"completed": 1, "stopped": 0, "failed": 0, "running": 1}
    progress = build_progress("p", manifest, counts, [1], None, now=1040.0)
    assert (progress.total, progress.done, progress.pending) == (3, 1, 1)
    assert progress.elapsed_s == pytest.approx(40.0)  # since created
    # 1 + 1/2 of 3 trials in 40 s: 1.5 more take 40 s
    assert progress.eta_s == pytest.approx(40.0)
    assert not progress.finished
    driver = build_progress(
        "p", manifest, counts, [1], None, now=1040.0, started=1030.0, elapsed_before=5.0
    )
    assert driver.elapsed_s == pytest.approx(15.0)
    resumed = {**manifest, "wall_s": 100.0, "resumed_at": 1030.0}
    assert build_progress("p", resumed, counts, [], None, now=1040.0).elapsed_s == 110.0
    more = {"completed": 4, "failed": 1, "running": 1}  # more trials than the budget names
    seen = build_progress("p", manifest, more, [], None, now=1040.0)
    assert (seen.total, seen.pending) == (6, 0)
    finished = {**manifest, "status": "completed", "wall_s": 77.5}
    final = build_progress("p", finished, {"completed": 3}, [], None, now=5000.0)
    assert final.finished and final.elapsed_s == 77.5 and final.eta_s == 0.0


def test_read_store_progress_agrees_with_the_store(tmp_path: Path) -> None:
    write_demo_sweep(tmp_path)
    store = SweepStore(tmp_path)
    progress = read_store_progress(store, "demo", now=time.time())
    assert {
        "completed": progress.completed,
        "stopped": progress.stopped,
        "failed": progress.failed,
        "running": progress.running,
    } == COUNTS
    best = store.best("demo")
    assert progress.best == BestSoFar("acc", "max", best.value, best.trial_id)
    assert progress.best.trial_id == "t0"  # failed t3 (0.99) never wins
    # the manifest's spec names no budget: no total, no estimate
    assert progress.total is None and progress.eta_s is None


def test_read_store_progress_of_a_sweep_without_results(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "young").write_manifest(
        {"status": "running", "created": time.time(), "spec": parse_spec(SPEC).to_dict()}
    )
    progress = read_store_progress(SweepStore(tmp_path), "young")
    assert (progress.total, progress.done, progress.running, progress.best) == (3, 0, 0, None)
    assert progress.pending == 3 and progress.eta_s is None


def test_read_store_progress_counts_the_epochs_of_running_trials(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "half")
    created = time.time() - 100
    writer.write_manifest(
        {"status": "running", "created": created, "spec": parse_spec(SPEC).to_dict()}
    )
    row = {"status": "running", "config": {}, "metrics": {"val_acc": 0.5}}
    writer.write_results([{**row, "trial_id": "a", "iteration": i} for i in (1, 2)])
    writer.write_trial("a", "completed", config={}, last_iteration=2)
    writer.write_results([{**row, "trial_id": "b", "iteration": 1}])  # 1 of 2 epochs
    writer.write_trial("c", "running", config={})  # started, nothing reported yet
    progress = read_store_progress(SweepStore(tmp_path), "half", now=created + 30.0)
    assert (progress.done, progress.running, progress.pending) == (1, 2, 0)
    # 1 + 1/2 + 0 of 3 trials in 30 s: the other 1.5 take 30 s more
    assert progress.eta_s == pytest.approx(30.0)


# ---------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "?"),
        (float("inf"), "?"),
        (-3.0, "0s"),
        (0.4, "0s"),
        (42.0, "42s"),
        (59.6, "1m00s"),
        (185.0, "3m05s"),
        (3720.0, "1h02m"),
        (2 * 86400 + 3 * 3600 + 59, "2d03h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_line_running_and_finished() -> None:
    line = format_line(snapshot())
    assert line == (
        "s running: 3/10 done (1 stopped early), 2 running, 1 failed, 4 pending | "
        "best val_acc 0.95833 (max, trial t_00004) | 1m23s elapsed, ~2m10s left"
    )
    final = format_line(
        snapshot(status="completed", running=0, stopped=0, completed=9, eta_s=0.0, best=None)
    )
    assert final == "s completed: 9/10 done, 1 failed | best: none yet | 1m23s elapsed"
    unknown = format_line(snapshot(total=None, eta_s=None))
    assert "3/? done" in unknown and "~? left" in unknown


def test_format_json_round_trips() -> None:
    data = json.loads(format_json(snapshot()))
    assert data["event"] == "progress" and data["final"] is False
    assert data["trials"] == {
        "total": 10,
        "done": 3,
        "completed": 2,
        "stopped": 1,
        "running": 2,
        "failed": 1,
        "pending": 4,
    }
    assert data["best"] == {
        "metric": "val_acc",
        "mode": "max",
        "value": 0.95833,
        "trial_id": "t_00004",
    }
    assert (data["elapsed_s"], data["eta_s"]) == (83.0, 130.0)
    assert json.loads(format_json(snapshot(status="failed")))["final"] is True


# ------------------------------------------------------------------------------ display


def test_plain_and_json_write_a_line_per_change_only() -> None:
    for mode, parse in (("plain", str), ("json", json.loads)):
        stream = io.StringIO()
        display = ProgressDisplay(mode, stream, heartbeat_s=3600)
        display.update(snapshot())
        display.update(snapshot(elapsed_s=90.0, eta_s=120.0))  # only the times moved
        display.update(snapshot(completed=3, running=1))
        display.update(snapshot(status="completed", completed=8, running=0))  # finish's
        display.finish(snapshot(status="completed", completed=8, running=0))
        lines = stream.getvalue().splitlines()
        assert len(lines) == 3, lines
        parsed = [parse(line) for line in lines]
        if mode == "json":
            assert [p["trials"]["completed"] for p in parsed] == [2, 3, 8]
            assert [p["final"] for p in parsed] == [False, False, True]


def test_heartbeat_repeats_an_unchanged_line() -> None:
    stream = io.StringIO()
    display = ProgressDisplay("plain", stream, heartbeat_s=1e-9)
    display.update(snapshot())
    display.update(snapshot(elapsed_s=90.0))
    assert len(stream.getvalue().splitlines()) == 2


def test_live_mode_rewrites_one_line() -> None:
    stream = io.StringIO()
    display = ProgressDisplay("auto", stream, is_tty=True)
    assert display.mode == "live"
    display.update(snapshot())
    display.update(snapshot())
    text = stream.getvalue()
    assert text.count("\r") == 2 and "\n" not in text
    display.close()  # an interrupted watch ends the line
    assert stream.getvalue().endswith("\n")
    display.finish(snapshot(status="completed", running=0))
    assert stream.getvalue().endswith("elapsed\x1b[K\n")
    assert ProgressDisplay("auto", io.StringIO(), is_tty=False).mode == "plain"
    assert ProgressDisplay("auto", io.StringIO()).mode == "plain"  # StringIO is no terminal


def test_quiet_writes_nothing_and_a_broken_stream_is_silenced() -> None:
    stream = io.StringIO()
    quiet = ProgressDisplay("quiet", stream)
    quiet.update(snapshot())
    quiet.finish(snapshot(status="completed"))
    assert stream.getvalue() == ""
    closed = io.StringIO()
    closed.close()
    broken = ProgressDisplay("json", closed)
    broken.update(snapshot())  # no exception: progress must never stop the work
    broken.finish(snapshot(status="completed"))


def test_display_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"progress mode must be one of .* got 'loud'"):
        ProgressDisplay("loud", io.StringIO())
    with pytest.raises(ValueError, match="heartbeat_s must be > 0"):
        ProgressDisplay("plain", io.StringIO(), heartbeat_s=0)


# ------------------------------------------------------------------------------ polling


def test_track_progress_polls_while_the_block_runs_then_shows_the_final_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reads: list[int] = []

    def read() -> Progress:
        reads.append(len(reads))
        if len(reads) == 2:
            raise OSError("store mid-write")
        return snapshot(completed=len(reads), status="running")

    stream = io.StringIO()
    display = ProgressDisplay("json", stream)
    with caplog.at_level(logging.WARNING, logger="morphtune.progress"):
        with track_progress(read, display, interval_s=0.01):
            deadline = time.monotonic() + 10
            while len(reads) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    done = [line["trials"]["completed"] for line in lines]
    assert len(lines) >= 4 and done == sorted(done)
    assert done[-1] == len(reads)  # the last line is the read made after the block
    assert "store mid-write" in caplog.text and caplog.text.count("store mid-write") == 1


def test_track_progress_shows_the_last_good_state_when_the_final_read_fails() -> None:
    calls = threading.Event()

    def read() -> Progress:
        if calls.is_set():
            raise OSError("gone")
        calls.set()
        return snapshot()

    stream = io.StringIO()
    with pytest.raises(RuntimeError, match="work failed"):
        with track_progress(read, ProgressDisplay("plain", stream), interval_s=60):
            deadline = time.monotonic() + 10
            while not calls.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            raise RuntimeError("work failed")
    lines = stream.getvalue().splitlines()
    assert lines == [format_line(snapshot())] * 2  # the first poll, then the same as final
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        with track_progress(read, ProgressDisplay("plain", stream), interval_s=0):
            pass


# ------------------------------------------------------------------------ watch --progress


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from morphtune.service import make_server

    root = tmp_path_factory.mktemp("progress-service")
    write_demo_sweep(root)
    grpc_server, port = make_server(root, port=0)
    grpc_server.start()
    yield f"127.0.0.1:{port}", root
    grpc_server.stop(grace=None)


class Lines(io.StringIO):
    """stdout for the watcher: tells the driver when the first line is out."""

    def __init__(self) -> None:
        super().__init__()
        self.first = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "\n" in text:
            self.first.set()
        return written


def finish_later(root: Path, sweep_id: str, status: str, seen: threading.Event) -> threading.Thread:
    """Play the driver: once the watcher has shown the running sweep, a trial ends, then
    the sweep."""

    def work() -> None:
        writer = ResultWriter(root, sweep_id)
        seen.wait(timeout=60)
        row = {"trial_id": "b", "iteration": 2, "status": "running", "config": {}}
        writer.write_results([{**row, "metrics": {"val_acc": 0.7}}])
        writer.write_trial("b", "completed", config={}, last_iteration=2)
        time.sleep(0.2)
        writer.update_manifest(status=status, wall_s=12.5, finished=time.time())

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def start_sweep(root: Path, sweep_id: str) -> None:
    writer = ResultWriter(root, sweep_id)
    writer.write_manifest(
        {
            "sweep_id": sweep_id,
            "objective": {"metric": "val_acc", "mode": "max"},
            "spec": parse_spec(SPEC).to_dict(),
            "created": time.time(),
            "status": "running",
        }
    )
    writer.write_results(
        [
            {"trial_id": "a", "iteration": 1, "status": "running", "config": {}, "metrics": m}
            for m in [{"val_acc": 0.5}]
        ]
    )
    writer.write_trial("a", "completed", config={}, last_iteration=1)
    writer.write_results(
        [{"trial_id": "b", "iteration": 1, "status": "running", "config": {}, "metrics": {}}]
    )


@pytest.mark.parametrize(("status", "code"), [("completed", 0), ("failed", 1)])
def test_watch_progress_follows_a_sweep_until_it_ends(
    server: tuple[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    status: str,
    code: int,
) -> None:
    address, root = server
    sweep_id = f"live-{status}"
    start_sweep(root, sweep_id)
    stdout = Lines()
    monkeypatch.setattr("sys.stdout", stdout)
    driver = finish_later(root, sweep_id, status, stdout.first)
    try:
        flags = ["--server", address, "--progress", "--json", "--interval", "0.05"]
        got, _, err = cli(capsys, "watch", sweep_id, *flags)
    finally:
        stdout.first.set()
        driver.join()
    assert got == code, err
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    first, last = lines[0], lines[-1]
    assert first["status"] == "running" and first["trials"]["running"] == 1
    assert first["trials"]["pending"] == 1 and first["eta_s"] is not None
    assert first["best"]["value"] == 0.5
    assert last["final"] and last["status"] == status and last["elapsed_s"] == 12.5
    assert last["trials"]["completed"] == 2 and last["trials"]["running"] == 0
    assert last["best"] == {"metric": "val_acc", "mode": "max", "value": 0.7, "trial_id": "b"}
    done = [line["trials"]["done"] for line in lines]
    assert done == sorted(done) and all(not line["final"] for line in lines[:-1])


def test_watch_progress_plain_and_quiet(
    server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    address, root = server
    start_sweep(root, "plain")
    ResultWriter(root, "plain").update_manifest(status="completed", wall_s=3.0)
    code, out, _ = cli(capsys, "watch", "plain", "--server", address, "--progress", "plain")
    assert code == 0
    expected = "plain completed: 1/3 done, 1 running, 0 failed | best val_acc 0.5 (max, trial a)"
    assert out == expected + " | 3s elapsed\n"
    code, out, _ = cli(capsys, "watch", "plain", "--server", address, "--progress", "quiet")
    assert (code, out) == (0, "")


def test_watch_progress_bad_input(
    server: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    address, _ = server
    code, _, err = cli(capsys, "watch", "demo", "--server", address, "--progress", "--count", "3")
    assert code == 2 and "--progress follows the whole sweep and takes no --count" in err
    code, _, err = cli(capsys, "watch", "nope", "--server", address, "--progress")
    assert code == 2 and "NOT_FOUND" in err
    code, _, err = cli(capsys, "watch", "demo", "--progress", "--interval", "0")
    assert code == 2 and "must be a number of seconds > 0, got '0'" in err
    code, _, err = cli(capsys, "watch", "demo", "--progress", "loud")
    assert code == 2 and "invalid choice: 'loud'" in err


def test_run_progress_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    code, _, err = cli(capsys, "run", str(spec), "--progress", "loud")
    assert code == 2 and "invalid choice: 'loud'" in err
    code, _, err = cli(capsys, "run", str(spec), "--progress-interval", "nan")
    assert code == 2 and "must be a number of seconds > 0, got 'nan'" in err
    assert not (tmp_path / "progress").exists()


# --------------------------------------------------------------------- a real run, JSON


@pytest.mark.ray
def test_run_progress_json_lines(
    ray_session: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "progress.yaml"
    spec.write_text(SPEC)
    results = tmp_path / "results"
    flags = ["--results", str(results), "--progress", "json", "--progress-interval", "0.2"]
    code, out, err = cli(capsys, "run", str(spec), *flags)
    assert code == 0, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines()]  # every stdout line is JSON
    *progress, summary = lines
    assert summary["event"] == "summary" and summary["sweep_id"] == "progress"
    assert len(progress) >= 2 and all(line["event"] == "progress" for line in progress)
    assert all(not line["final"] for line in progress[:-1]) and progress[0]["status"] == "running"
    for field in ("done", "completed", "failed"):
        series = [line["trials"][field] for line in progress]
        assert series == sorted(series), (field, series)
    elapsed = [line["elapsed_s"] for line in progress]
    assert elapsed == sorted(elapsed)
    for line in progress:
        trials = line["trials"]
        assert trials["total"] == 3
        assert trials["done"] + trials["running"] + trials["failed"] <= 3
        if not line["final"] and trials["done"] + trials["failed"]:
            assert line["eta_s"] is not None and line["eta_s"] >= 0
    final = progress[-1]
    assert final["final"] and final["status"] == "completed" and final["eta_s"] == 0.0
    counts = SweepStore(results).trial_counts("progress")
    assert {key: final["trials"][key] for key in counts} == counts
    assert counts["completed"] == 3 and final["trials"]["pending"] == 0
    assert summary["trials"] == counts
    best = summary["best"]
    assert final["best"] == {
        "metric": "val_acc",
        "mode": "max",
        "value": best["value"],
        "trial_id": best["trial_id"],
    }
    assert final["elapsed_s"] == pytest.approx(summary["wall_s"], abs=0.1)
