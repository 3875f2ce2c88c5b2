"""Ray Tune callback that writes every reported result into the results store.

Rows are buffered and flushed as one atomic Parquet part at most every
``flush_interval_s`` seconds, and always when a trial ends and when the sweep ends, so
a reader (the gRPC service) sees live results without thousands of tiny files. The
writer deduplicates on (sweep, trial, iteration), so a result Tune delivers twice after
a worker restart is stored once.

Each result names the Ray node its trial reported from (``node_id``, set by the trainables
on the trial's rank-0 worker); it becomes the row's top-level ``node_id`` column, not a
metric.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from morphtune._keys import ERROR_KEY
from morphtune.spec import SweepSpec, flatten_config, resolve_trial_config
from morphtune.store._reader import SweepStore
from morphtune.store._schema import NODE_ID_KEY
from morphtune.store._writer import ResultWriter

__all__ = ["ORPHAN_ERROR", "StoreCallback"]

#: The error recorded for a trial abandoned by a crashed driver (see ``_abandon_orphans``).
ORPHAN_ERROR = (
    "abandoned: the sweep driver crashed before it recorded this trial in an experiment "
    "snapshot, so the resumed sweep ran another trial in its place"
)


#: Tune's bookkeeping keys, left out of the stored metrics (``time_total_s`` and the
#: ``checkpoint_path`` of the epoch are kept).
_TUNE_KEYS = {
    "config",
    "trial_id",
    "experiment_id",
    "date",
    "timestamp",
    "time_this_iter_s",
    "time_since_restore",
    "timesteps_since_restore",
    "iterations_since_restore",
    "pid",
    "hostname",
    "node_ip",
    "done",
    "training_iteration",
    "experiment_tag",
    "timesteps_total",
    "episodes_total",
    "should_checkpoint",
}


class StoreCallback(Callback):
    """Persist Tune results of one sweep with a :class:`ResultWriter`."""

    def __init__(
        self,
        root: str | Path,
        sweep_id: str,
        spec: SweepSpec,
        flush_interval_s: float = 1.0,
        *,
        checkpoints: bool = False,
    ) -> None:
        # kept as given: a results URI (s3://bucket/prefix) must not become a local path
        self.root: str | Path = root
        self.sweep_id = sweep_id
        self._writer: ResultWriter | None = None
        self.spec = spec
        self.flush_interval_s = flush_interval_s
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._last_iteration: dict[str, int] = {}
        self._errors: dict[str, str] = {}  # trials that reported a deterministic failure
        # in-process trials report a Tune checkpoint with each result: hold the row until
        # it arrives so the row names it (the first write of a row is final)
        self.checkpoints = checkpoints
        self._held: dict[str, dict[str, Any]] = {}
        self._configs: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------- helpers

    @property
    def writer(self) -> ResultWriter:
        # created lazily: Tune pickles its callbacks with the experiment state, and the
        # writer holds a lock
        if self._writer is None:
            self._writer = ResultWriter(self.root, self.sweep_id)
        return self._writer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_writer"] = None
        state["_pending"] = []
        state["_held"] = {}
        return state

    def _trial_config(self, trial: Any) -> dict[str, Any]:
        """The trial's resolved, flattened config (resolved once per trial: it is the
        same for every result the trial reports)."""
        config = self._configs.get(trial.trial_id)
        if config is None:
            try:
                config = flatten_config(resolve_trial_config(self.spec, trial.config))
            except ValueError:  # the trial fails the same way; keep what was sampled
                config = {key: value for key, value in trial.config.items() if _scalar(value)}
            self._configs[trial.trial_id] = config
        return config

    def flush(self) -> int:
        if not self._pending:
            return 0
        rows, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        return self.writer.write_results(rows)

    # ------------------------------------------------------------- Tune hooks

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: Mapping[str, Any], **info: Any
    ) -> None:
        if result.get(ERROR_KEY):
            # a deterministic failure: recorded on the trial (failed, with its message),
            # not as a result row (its objectives are NaN placeholders)
            self._errors[trial.trial_id] = str(result[ERROR_KEY])
            self._release(trial.trial_id)
            return
        step = int(result.get("training_iteration", 0))
        metrics = {
            key: value
            for key, value in result.items()
            if key not in _TUNE_KEYS and key != NODE_ID_KEY and _scalar(value)
        }
        node_id = result.get(NODE_ID_KEY)
        row = {
            "trial_id": trial.trial_id,
            "iteration": step,
            "status": "running",
            "config": self._trial_config(trial),
            "metrics": metrics,
            # where the trial ran; None (no column) for a result that named no node
            NODE_ID_KEY: node_id if isinstance(node_id, str) and node_id else None,
        }
        self._release(trial.trial_id)
        if self.checkpoints:
            self._held[trial.trial_id] = row
        else:
            self._pending.append(row)
        self._last_iteration[trial.trial_id] = max(
            step, self._last_iteration.get(trial.trial_id, 0)
        )
        # flushed in on_step_end, after Tune has registered this result's checkpoint

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        """A single-worker (in-process) trial reports its checkpoint to Tune; the row of
        the result it came with gets its path (a Ray Train trial's row already has it)."""
        row = self._held.pop(trial.trial_id, None)
        if row is not None:
            row["metrics"].setdefault("checkpoint_path", checkpoint.path)
            self._pending.append(row)

    def _release(self, trial_id: str) -> None:
        row = self._held.pop(trial_id, None)
        if row is not None:
            self._pending.append(row)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._pending and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def get_state(self) -> dict[str, Any] | None:
        """Tune calls this while it snapshots the experiment, the state a resumed sweep
        restarts each trial from. Every row of a result that snapshot covers is written
        now: a driver killed before the next timed flush would otherwise lose rows that
        no resumed trial reports again. (Held rows wait for their checkpoint, which the
        snapshot does not hold yet: the resumed trial reports them again.)"""
        self.flush()
        return None

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.writer.write_trial(trial.trial_id, "running", config=self._trial_config(trial))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._release(trial.trial_id)
        self.flush()
        last = _last_iteration(trial, self._last_iteration.get(trial.trial_id))
        if trial.trial_id in self._errors:
            self.writer.write_trial(
                trial.trial_id,
                "failed",
                config=self._trial_config(trial),
                error=self._errors[trial.trial_id],
                last_iteration=last,
            )
            return
        finished = last is not None and last >= self.spec.training.epochs
        self.writer.write_trial(
            trial.trial_id,
            "completed" if finished else "stopped",
            config=self._trial_config(trial),
            last_iteration=last,
        )

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._release(trial.trial_id)
        self.flush()
        self.writer.write_trial(
            trial.trial_id,
            "failed",
            config=self._trial_config(trial),
            error=_trial_error(trial),
            last_iteration=self._last_iteration.get(trial.trial_id),
        )

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for trial_id in list(self._held):
            self._release(trial_id)
        self.flush()
        self._abandon_orphans({trial.trial_id for trial in trials})

    def _abandon_orphans(self, known: set[str]) -> None:
        """A trial that a crashed driver started after its last experiment snapshot is
        unknown to the resumed sweep, which starts another in its place: record it
        failed instead of leaving it running for ever."""
        for summary in SweepStore(self.root).trials(self.sweep_id):
            if summary.status == "running" and summary.trial_id not in known:
                self.writer.write_trial(
                    summary.trial_id,
                    "failed",
                    config=summary.config,
                    error=ORPHAN_ERROR,
                    last_iteration=summary.last_iteration,
                )


def _last_iteration(trial: Any, seen: int | None) -> int | None:
    """The trial's last iteration: reported to this driver, or, for a trial a resumed
    sweep restored from its final checkpoint (it reports nothing again), the one Tune
    restored with it."""
    restored = (getattr(trial, "last_result", None) or {}).get("training_iteration")
    if isinstance(restored, int) and (seen is None or restored > seen):
        return restored
    return seen


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def _trial_error(trial: Any, limit: int = 4000) -> str:
    """The root cause of a trial's failure: the last ``SomeError: message`` line of the
    traceback Tune wrote locally (the stored copy is synced later), then the full tail."""
    path = trial.error_file
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace") if path else ""
    except OSError:
        text = ""
    if not text.strip():
        return "unknown error (Tune recorded no traceback)"
    causes = [line.strip() for line in text.splitlines() if _EXCEPTION_LINE.match(line.strip())]
    head = causes[-1] if causes else ""
    tail = text.strip()[-(limit - len(head) - 2) :]
    return f"{head}\n{tail}" if head else tail
