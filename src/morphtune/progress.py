"""Live progress of a sweep: how many trials are done, running and failed, the best value so
far, the time spent and an estimate of the time left.

The same state drives ``morphtune run`` (a thread polls the sweep's store while Tune runs)
and ``morphtune watch --progress`` (the results service is polled over gRPC). This module
reads a store and renders; it never imports Ray, torch or gRPC.

* :class:`Progress` is one snapshot; :func:`build_progress` makes it from plain values (the
  manifest, the trial counts, the running trials' last iterations, the best so far) and
  :func:`read_store_progress` from a :class:`~morphtune.store.SweepStore`.
* :func:`estimate_eta` is the estimate of the time left (see its docstring for the rule).
* :func:`format_line` and :func:`format_json` render one snapshot as a status line or a
  JSON line; :class:`ProgressDisplay` writes snapshots to a stream in one of the
  :data:`PROGRESS_MODES`; :func:`track_progress` polls in a thread while a block runs.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = [
    "PROGRESS_MODES",
    "BestSoFar",
    "Budget",
    "Progress",
    "ProgressDisplay",
    "budget_of",
    "build_progress",
    "estimate_eta",
    "format_duration",
    "format_json",
    "format_line",
    "interval_seconds",
    "read_store_progress",
    "track_progress",
]

log = logging.getLogger(__name__)

#: ``auto``: a line rewritten in place on a terminal, else ``plain``; ``plain``: one status
#: line per change; ``json``: one JSON object per change; ``quiet``: nothing.
PROGRESS_MODES: tuple[str, ...] = ("auto", "plain", "json", "quiet")

#: Manifest statuses after which a sweep does no more work.
FINISHED_STATUSES = frozenset({"completed", "failed"})


@dataclass(frozen=True)
class Budget:
    """What a sweep may spend, from its resolved spec: ``trials`` (``search.num_samples``),
    ``epochs`` per trial (``training.epochs``) and the wall-clock ``time_s``
    (``search.time_budget_s``); ``None`` where the manifest does not say."""

    trials: int | None = None
    epochs: int | None = None
    time_s: float | None = None


@dataclass(frozen=True)
class BestSoFar:
    """The best value of the sweep's (first) objective so far, and the trial reporting it."""

    metric: str
    mode: str
    value: float
    trial_id: str


@dataclass(frozen=True)
class Progress:
    """One snapshot of a sweep's progress.

    ``status`` is the manifest's (``running``, ``completed``, ``failed``; ``""`` if none).
    Trials are counted by state: ``completed`` (ran every epoch), ``stopped`` (ended early by
    the scheduler), ``failed`` and ``running``; ``done`` is completed + stopped. ``total`` is
    the number of trials the budget allows (at least the number seen), ``None`` if unknown.
    ``eta_s`` is the estimated time left (0 once finished), ``None`` when there is no basis
    for an estimate yet. ``time`` is the Unix time of the snapshot.
    """

    sweep_id: str
    status: str
    total: int | None
    completed: int
    stopped: int
    running: int
    failed: int
    elapsed_s: float
    eta_s: float | None
    best: BestSoFar | None
    time: float

    @property
    def done(self) -> int:
        return self.completed + self.stopped

    @property
    def pending(self) -> int | None:
        """Trials the budget still allows that have not started (``None``: unknown)."""
        if self.total is None:
            return None
        return max(self.total - self.done - self.running - self.failed, 0)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """The JSON-line form: ``event`` is ``"progress"``, counts under ``trials``, times in
        seconds, ``final`` true once the sweep has finished."""
        best = None
        if self.best is not None:
            best = {
                "metric": self.best.metric,
                "mode": self.best.mode,
                "value": self.best.value,
                "trial_id": self.best.trial_id,
            }
        return {
            "event": "progress",
            "sweep_id": self.sweep_id,
            "status": self.status,
            "final": self.finished,
            "time": round(self.time, 3),
            "elapsed_s": round(self.elapsed_s, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "trials": {
                "total": self.total,
                "done": self.done,
                "completed": self.completed,
                "stopped": self.stopped,
                "running": self.running,
                "failed": self.failed,
                "pending": self.pending,
            },
            "best": best,
        }


# -------------------------------------------------------------------------- state and ETA


def _positive_int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _positive_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and number > 0:
            return number
    return None


def budget_of(manifest: Mapping[str, Any]) -> Budget:
    """The budget in a manifest's resolved spec; fields it lacks (an older or hand-written
    manifest) are ``None``."""
    spec = manifest.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    search = spec.get("search")
    search = search if isinstance(search, Mapping) else {}
    training = spec.get("training")
    training = training if isinstance(training, Mapping) else {}
    return Budget(
        trials=_positive_int(search.get("num_samples")),
        epochs=_positive_int(training.get("epochs")),
        time_s=_positive_float(search.get("time_budget_s")),
    )


def estimate_eta(
    budget: Budget, elapsed_s: float, ended: int, running_iterations: Sequence[int]
) -> float | None:
    """Seconds left, estimated from the share of the budget spent so far.

    Work is counted in trials: an ended trial (done or failed) is one, a running trial
    the share of its epochs it has reported (``iteration / epochs``, at most 1). With
    ``budget.trials`` known and some work done, the rest is assumed to go at the average
    rate so far: ``elapsed * (1 - share) / share``. A wall-clock budget
    (``budget.time_s``) caps the estimate at the time it leaves. ``None`` when neither
    gives a number (no trial budget or nothing done yet, and no time budget).
    """
    estimates: list[float] = []
    if budget.trials is not None:
        work = float(ended)
        if budget.epochs is not None:
            work += sum(min(max(it, 0) / budget.epochs, 1.0) for it in running_iterations)
        share = min(work / budget.trials, 1.0)
        if share >= 1.0:
            estimates.append(0.0)
        elif share > 0.0:
            estimates.append(max(elapsed_s, 0.0) * (1.0 - share) / share)
    if budget.time_s is not None:
        estimates.append(max(budget.time_s - elapsed_s, 0.0))
    return min(estimates) if estimates else None


def _elapsed(
    manifest: Mapping[str, Any], now: float, started: float | None, elapsed_before: float
) -> float:
    """Seconds of work so far: the manifest's ``wall_s`` once the sweep finished; else
    ``elapsed_before`` plus the time since ``started`` (this run's start); without it, the
    time since the manifest's ``resumed_at`` plus the wall time of the runs before, or
    since ``created``."""
    status = manifest.get("status")
    wall = _positive_float(manifest.get("wall_s"))
    if status in FINISHED_STATUSES and wall is not None:
        return wall
    if started is not None:
        return max(elapsed_before + now - started, 0.0)
    resumed_at = _positive_float(manifest.get("resumed_at"))
    if resumed_at is not None:
        return max((wall or 0.0) + now - resumed_at, 0.0)
    created = _positive_float(manifest.get("created"))
    return max(now - created, 0.0) if created is not None else 0.0


def build_progress(
    sweep_id: str,
    manifest: Mapping[str, Any],
    counts: Mapping[str, int],
    running_iterations: Sequence[int],
    best: BestSoFar | None,
    *,
    now: float,
    started: float | None = None,
    elapsed_before: float = 0.0,
) -> Progress:
    """A snapshot from plain values: ``counts`` maps trial state to a number of trials,
    ``running_iterations`` holds each running trial's last reported iteration.
    ``started`` (Unix time) and ``elapsed_before`` (seconds spent by earlier runs of a
    resumed sweep) are known to the driver; a watcher leaves them out (see
    :func:`_elapsed`)."""
    status = str(manifest.get("status") or "")
    completed, stopped = int(counts.get("completed", 0)), int(counts.get("stopped", 0))
    failed, running = int(counts.get("failed", 0)), int(counts.get("running", 0))
    budget = budget_of(manifest)
    seen = completed + stopped + failed + running
    total = max(budget.trials, seen) if budget.trials is not None else None
    elapsed = _elapsed(manifest, now, started, elapsed_before)
    if status in FINISHED_STATUSES:
        eta: float | None = 0.0
    else:
        eta = estimate_eta(budget, elapsed, completed + stopped + failed, running_iterations)
    return Progress(
        sweep_id=sweep_id,
        status=status,
        total=total,
        completed=completed,
        stopped=stopped,
        running=running,
        failed=failed,
        elapsed_s=elapsed,
        eta_s=eta,
        best=best,
        time=now,
    )


def read_store_progress(
    store: Any,
    sweep_id: str,
    *,
    now: float | None = None,
    started: float | None = None,
    elapsed_before: float = 0.0,
) -> Progress:
    """A snapshot of ``sweep_id`` read from ``store`` (a
    :class:`~morphtune.store.SweepStore`): counts by each trial's latest state, the best
    of the manifest's objective over each trial's last report (as ``morphtune best``
    answers it; failed trials never win). Raises the store's errors (``SweepNotFound``).

    Cheap enough to repeat every few seconds on a large sweep: the store caches what it
    read, and only the ``trial_id`` and ``iteration`` columns of the results are scanned.
    """
    from morphtune.store import NoResults

    manifest = store.manifest(sweep_id)
    states: dict[str, str] = store.trial_states(sweep_id)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    running = _running_iterations(
        store, sweep_id, {trial for trial, state in states.items() if state == "running"}
    )
    best = None
    if states:
        try:
            found = store.best(sweep_id)
        except (NoResults, ValueError):  # nothing finite yet, or no objective to rank by
            found = None
        if found is not None:
            best = BestSoFar(found.metric, found.mode, float(found.value), found.trial_id)
    return build_progress(
        sweep_id,
        manifest,
        counts,
        running,
        best,
        now=time.time() if now is None else now,
        started=started,
        elapsed_before=elapsed_before,
    )


def _running_iterations(store: Any, sweep_id: str, running: set[str]) -> list[int]:
    """The highest stored iteration of each running trial (0 before its first report)."""
    if not running:
        return []
    import pyarrow as pa
    import pyarrow.compute as pc

    table = store.results(sweep_id, columns=["trial_id", "iteration"])
    mine = table.filter(pc.is_in(table.column("trial_id"), value_set=pa.array(sorted(running))))
    last = mine.group_by("trial_id", use_threads=False).aggregate([("iteration", "max")])
    found = dict(
        zip(
            last.column("trial_id").to_pylist(),
            last.column("iteration_max").to_pylist(),
            strict=True,
        )
    )
    return [int(found.get(trial_id) or 0) for trial_id in sorted(running)]


# ---------------------------------------------------------------------------- rendering


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``1h02m``, ``2d03h``; ``?`` for ``None``."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_line(progress: Progress) -> str:
    """One human line, e.g. ``digits-demo running: 5/12 done (1 stopped early), 2 running,
    1 failed, 4 pending | best val_acc 0.9583 (max, trial a_00004) | 1m23s elapsed, ~2m10s
    left``."""
    total = "?" if progress.total is None else str(progress.total)
    counts = f"{progress.done}/{total} done"
    if progress.stopped:
        counts += f" ({progress.stopped} stopped early)"
    if progress.running or not progress.finished:
        counts += f", {progress.running} running"
    counts += f", {progress.failed} failed"
    if not progress.finished and progress.pending:
        counts += f", {progress.pending} pending"
    if progress.best is None:
        best = "best: none yet"
    else:
        b = progress.best
        best = f"best {b.metric} {b.value:.6g} ({b.mode}, trial {b.trial_id})"
    times = f"{format_duration(progress.elapsed_s)} elapsed"
    if not progress.finished:
        times += f", ~{format_duration(progress.eta_s)} left"
    status = progress.status or "unknown"
    return f"{progress.sweep_id} {status}: {counts} | {best} | {times}"


def format_json(progress: Progress) -> str:
    """One JSON object on one line (strict JSON: no NaN)."""
    return json.dumps(progress.to_dict(), sort_keys=True, allow_nan=False)


def _changed_key(progress: Progress) -> tuple[Any, ...]:
    best = progress.best
    return (
        progress.status,
        progress.total,
        progress.completed,
        progress.stopped,
        progress.running,
        progress.failed,
        None if best is None else (best.metric, best.value, best.trial_id),
    )


class ProgressDisplay:
    """Writes snapshots to ``stream`` in one mode of :data:`PROGRESS_MODES`.

    ``auto`` is ``live`` on a terminal (``is_tty``, default: ``stream.isatty()``) and
    ``plain`` elsewhere. ``live`` rewrites one line in place (cut to the terminal width so
    it never wraps); ``plain`` and ``json`` write a line when the counts, the status or the
    best change, and otherwise once every ``heartbeat_s``, so a log stays short; ``quiet``
    writes nothing. :meth:`finish` writes the final snapshot (there, and only there, a
    finished sweep's line is written, so it comes once and last). A stream that fails
    (a closed pipe) silences the display rather than the work it reports on.
    """

    def __init__(
        self,
        mode: str,
        stream: TextIO,
        *,
        is_tty: bool | None = None,
        heartbeat_s: float = 30.0,
    ) -> None:
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode must be one of {list(PROGRESS_MODES)}, got {mode!r}")
        if not heartbeat_s > 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s!r}")
        if mode == "auto":
            tty = is_tty if is_tty is not None else _isatty(stream)
            mode = "live" if tty else "plain"
        self.mode = mode
        self._stream = stream
        self._heartbeat_s = heartbeat_s
        self._last_key: tuple[Any, ...] | None = None
        self._last_written = -math.inf
        self._open_line = False  # a live line waits for its newline
        self._lock = threading.Lock()
        self._broken = False

    def update(self, progress: Progress) -> None:
        with self._lock:
            if self.mode == "quiet" or self._broken:
                return
            if self.mode == "live":
                self._write("\r" + _fit(format_line(progress)) + "\x1b[K")
                self._open_line = True
                return
            if progress.finished:  # the final line is finish()'s, written once
                return
            key = _changed_key(progress)
            due = time.monotonic() - self._last_written >= self._heartbeat_s
            if key != self._last_key or due:
                self._emit(progress, key)

    def finish(self, progress: Progress) -> None:
        """Write the final snapshot (and end a live line)."""
        with self._lock:
            if self.mode == "quiet" or self._broken:
                return
            if self.mode == "live":
                self._write("\r" + format_line(progress) + "\x1b[K\n")
                self._open_line = False
                return
            self._emit(progress, _changed_key(progress))

    def close(self) -> None:
        """End a live line left open (an interrupted watch) so the shell prompt starts clean."""
        with self._lock:
            if self._open_line and not self._broken:
                self._write("\n")
            self._open_line = False

    def _emit(self, progress: Progress, key: tuple[Any, ...]) -> None:
        text = format_json(progress) if self.mode == "json" else format_line(progress)
        self._write(text + "\n")
        self._last_key = key
        self._last_written = time.monotonic()

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: stop reporting, keep working
            self._broken = True


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _fit(line: str) -> str:
    width = shutil.get_terminal_size((100, 24)).columns
    return line if len(line) < width else line[: max(width - 2, 1)] + "…"


# ------------------------------------------------------------------------------ polling


def interval_seconds(text: str) -> float:
    """A polling interval from the command line: a finite number of seconds > 0 (an
    ``argparse`` type: a bad value becomes a usage error naming it)."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


@contextmanager
def track_progress(
    read: Callable[[], Progress], display: ProgressDisplay, *, interval_s: float = 2.0
) -> Iterator[None]:
    """Show ``read()`` on ``display`` every ``interval_s`` seconds from a daemon thread while
    the block runs, then the final snapshot, read once more after the block (also when it
    raises). A failing ``read`` is logged once and skipped: progress never stops the work.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    stop = threading.Event()
    last: list[Progress] = []
    warned = threading.Event()

    def poll() -> Progress | None:
        try:
            progress = read()
        except Exception as error:  # a store mid-write, a lost mount: try again next time
            if not warned.is_set():
                warned.set()
                log.warning("could not read the sweep's progress: %s", error)
            return None
        last[:] = [progress]
        return progress

    def loop() -> None:
        while True:
            progress = poll()
            if progress is not None:
                display.update(progress)
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=loop, name="morphtune-progress", daemon=True)
    if display.mode != "quiet":
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=max(interval_s, 5.0) + 30.0)
        final = poll() if display.mode != "quiet" else None
        if final is None and last:
            final = last[0]
        if final is not None:
            display.finish(final)
        display.close()
