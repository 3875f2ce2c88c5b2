"""Bring a crashed sweep's Tune experiment snapshot up to date before it is resumed.

Tune snapshots its experiment (every trial's status, the searcher and its wrappers) into
the driver's staging directory and copies that snapshot to the experiment directory in
the background, so the copy a resume reads can be seconds older than the crash. A trial
that finished inside that gap is still RUNNING in it, and Tune would run it again (from
its last checkpoint in the snapshot, or from epoch 1). The results store records each
trial's end synchronously, so it is the durable truth: this module marks the trials that
the store records as finished (completed or stopped: ``TERMINATED``; failed: ``ERROR``)
as finished in the snapshot, and drops every finished trial from the concurrency
limiter's live set (Tune never reports a finished trial to the searcher again, so a slot
it held would stay taken for ever and the resumed sweep could wait without end).

The files are Tune-private formats of Ray 2.60 (see ``TuneController.save_to_dir`` and
``SearchGenerator.save_to_dir``): ``experiment_state-<session>.json`` (JSON; its
``trial_data`` is a list of ``[trial JSON, runtime metadata JSON]`` string pairs) and
``search_gen_state-<session>.json`` (a cloudpickled dict despite its name, holding the
``ConcurrencyLimiter``'s state under ``name:ConcurrencyLimiter``). Anything else found
there raises :class:`SnapshotFormatError` before a byte is written; each file that is
changed is replaced crash-safely (temp file, fsync, rename), the experiment state first:
a repair interrupted between the two files is completed by the next resume.

Tune's copy can also be cut short: it rewrites the files in place, so a crash during a
copy leaves an empty or partial ``experiment_state`` and the sweep cannot be restored
at all. :class:`SnapshotKeeper` (a Tune callback of every sweep) therefore keeps a copy
of its own, taken while Tune writes each snapshot (so it is never older than Tune's) and
published whole (one new directory per snapshot, renamed into place); before a resume,
:func:`install_kept_snapshot` puts the newest kept snapshot in place of Tune's copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from morphtune._atomic import atomic_write, fsync_directory

__all__ = [
    "FINISHED_STATUSES",
    "KEPT_SNAPSHOT_DIR",
    "SnapshotFormatError",
    "SnapshotKeeper",
    "SnapshotRepair",
    "install_kept_snapshot",
    "repair_snapshot",
]

log = logging.getLogger(__name__)

#: Where a sweep keeps its own copies of Tune's snapshot (beside Tune's ``tune/``).
KEPT_SNAPSHOT_DIR = "tune-snapshot"

#: The Tune status a trial gets for its final status in the results store.
FINISHED_STATUSES = {"completed": "TERMINATED", "stopped": "TERMINATED", "failed": "ERROR"}

#: Every status Tune 2.60 writes for a trial (``ray.tune.experiment.Trial``).
_TUNE_STATUSES = {"PENDING", "RUNNING", "PAUSED", "TERMINATED", "ERROR"}
_TUNE_FINISHED = {"TERMINATED", "ERROR"}

_EXPERIMENT_STATE = "experiment_state-*.json"
_SEARCH_GEN_STATE = "search_gen_state-*.json"
_LIMITER_KEY = "name:ConcurrencyLimiter"
#: What Tune writes into its staging directory at each snapshot (``TuneController.
#: save_to_dir``): the experiment state first, then the searcher and its wrappers (a
#: variant generator's state without a searcher). Callback states are written after
#: every callback was asked for its state, so a kept copy of them is one snapshot old.
_SNAPSHOT_FILES = (
    _EXPERIMENT_STATE,
    _SEARCH_GEN_STATE,
    "searcher-state-*.pkl",
    "basic-variant-state-*.json",
    "callback-states-*.pkl",
)
_CALLBACK_STATES = "callback-states-*.pkl"
_GENERATION = "gen-"


class SnapshotFormatError(ValueError):
    """A snapshot file is not in the format this module knows (another Ray version, or a
    file cut short): nothing was changed."""


@dataclass
class SnapshotRepair:
    """What :func:`repair_snapshot` changed."""

    #: trial id -> the status it had in the snapshot and the one it has now
    finished: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: trials dropped from the concurrency limiter's live set
    released: list[str] = field(default_factory=list)
    #: trial id -> (the missing checkpoint, the one it resumes from; None: from the start)
    checkpoints: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.finished or self.released or self.checkpoints)


def _newest(experiment: Path, pattern: str) -> Path | None:
    """The file Tune restores from: the greatest name (names end in the session's
    timestamp, which a resumed run keeps)."""
    found = sorted(experiment.glob(pattern))
    return found[-1] if found else None


def repair_snapshot(
    experiment: Path,
    store_statuses: Mapping[str, str],
    store_checkpoints: Mapping[str, Mapping[int, str]] | None = None,
) -> SnapshotRepair:
    """Mark the snapshot's unfinished trials that ``store_statuses`` (trial id -> the
    store's status) records as finished, and free their concurrency slots.

    An unfinished trial whose latest checkpoint in the snapshot is gone (the crashed
    driver deleted it, keeping ``num_to_keep`` newer ones, after the snapshot) resumes
    from the newest of its checkpoints that the store names (``store_checkpoints``:
    trial id -> iteration -> checkpoint path) and that still exists; with none, from the
    start.

    Idempotent: a second call on a repaired snapshot changes nothing.
    """
    repair = SnapshotRepair()
    state_path = _newest(experiment, _EXPERIMENT_STATE)
    if state_path is None:
        raise SnapshotFormatError(f"no {_EXPERIMENT_STATE} in {experiment}")
    state = _read_json(state_path)
    trial_data = state.get("trial_data")
    if not isinstance(trial_data, list):
        raise SnapshotFormatError(
            f"{state_path}: 'trial_data' must be a list, got {type(trial_data).__name__}"
        )
    statuses: dict[str, str] = {}
    for index, pair in enumerate(trial_data):
        where = f"{state_path}: trial_data[{index}]"
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise SnapshotFormatError(f"{where} must be a [trial JSON, metadata JSON] string pair")
        trial = _loads(pair[0], where)
        trial_id, status = trial.get("trial_id"), trial.get("status")
        if not isinstance(trial_id, str) or status not in _TUNE_STATUSES:
            raise SnapshotFormatError(
                f"{where}: expected a trial_id string and a status in {sorted(_TUNE_STATUSES)},"
                f" got trial_id={trial_id!r} status={status!r}"
            )
        final = FINISHED_STATUSES.get(store_statuses.get(trial_id, ""))
        if final is not None and status not in _TUNE_FINISHED:
            trial["status"] = final
            # Tune writes this string with indent=2 (Trial.get_json_state)
            pair[0] = json.dumps(trial, indent=2)
            repair.finished[trial_id] = (status, final)
            status = final
        statuses[trial_id] = status
        if status not in _TUNE_FINISHED:
            checkpoints = (store_checkpoints or {}).get(trial_id, {})
            moved = _resume_point(pair, checkpoints, where)
            if moved is not None:
                repair.checkpoints[trial_id] = moved

    limiter_path = _newest(experiment, _SEARCH_GEN_STATE)
    generator: dict[str, Any] | None = None
    if limiter_path is not None:
        generator = _read_pickle(limiter_path)
        limiter = generator.get(_LIMITER_KEY)
        if limiter is not None:
            repair.released = _release_finished(limiter, statuses, limiter_path)

    # every check has passed: write (the experiment state first, see the module doc)
    if repair.finished or repair.checkpoints:
        text = json.dumps(state).encode()
        atomic_write(state_path, lambda handle: handle.write(text))
    if repair.released and limiter_path is not None and generator is not None:
        from ray import cloudpickle

        blob = cloudpickle.dumps(generator)
        atomic_write(limiter_path, lambda handle: handle.write(blob))
    return repair


def _resume_point(
    pair: list[str], checkpoints: Mapping[int, str], where: str
) -> tuple[str, str | None] | None:
    """If the trial's latest checkpoint (in its runtime metadata ``pair[1]``) is gone,
    point it at the newest existing one of ``checkpoints`` (iteration -> path), or at
    none; rewrites ``pair[1]``. None when the checkpoint is there (or there is none)."""
    from ray import cloudpickle
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    metadata = _loads(pair[1], f"{where} (runtime metadata)")
    packed = metadata.get("checkpoint_manager")
    if not (isinstance(packed, dict) and packed.get("_type") == "CLOUDPICKLE_FALLBACK"):
        raise SnapshotFormatError(f"{where}: no pickled 'checkpoint_manager' in its metadata")
    try:
        manager = cloudpickle.loads(bytes.fromhex(packed["value"]))
    except Exception as error:
        raise SnapshotFormatError(f"{where}: cannot unpickle its checkpoint manager") from error
    if not isinstance(manager, _CheckpointManager):
        raise SnapshotFormatError(f"{where}: checkpoint_manager is a {type(manager).__name__}")
    latest = manager.latest_checkpoint_result
    if latest is None or latest.checkpoint is None:
        return None
    checkpoint = latest.checkpoint
    filesystem = checkpoint.filesystem
    if filesystem is None or filesystem.type_name != "local" or Path(checkpoint.path).exists():
        return None
    found = sorted((it, path) for it, path in checkpoints.items() if Path(path).is_dir())
    if found:
        iteration, path = found[-1]
        metrics = dict(latest.metrics)
        metrics.update(
            training_iteration=iteration,
            checkpoint_dir_name=Path(path).name,
            iterations_since_restore=0,
        )
        result = _TrainingResult(Checkpoint(path, filesystem=filesystem), metrics)
        manager._latest_checkpoint_result = result
        manager._checkpoint_results = [result]
        target: str | None = path
    else:  # nothing left to resume from: the trial starts over
        manager._latest_checkpoint_result = None
        manager._checkpoint_results = []
        target = None
    packed["value"] = cloudpickle.dumps(manager).hex()
    pair[1] = json.dumps(metadata)
    return checkpoint.path, target


def _release_finished(limiter: Any, statuses: Mapping[str, str], path: Path) -> list[str]:
    """Drop the finished trials from ``ConcurrencyLimiter`` state ``limiter`` (in place)."""
    if not isinstance(limiter, dict):
        raise SnapshotFormatError(f"{path}: {_LIMITER_KEY} must be a dict, got {limiter!r}")
    live, unfinished = limiter.get("live_trials"), limiter.get("num_unfinished_live_trials")
    if not isinstance(live, set) or not isinstance(unfinished, int):
        raise SnapshotFormatError(
            f"{path}: {_LIMITER_KEY} must hold a 'live_trials' set and a "
            f"'num_unfinished_live_trials' int, got {live!r} and {unfinished!r}"
        )
    released = sorted(t for t in live if statuses.get(t) in _TUNE_FINISHED)
    if not released:
        return []
    if limiter.get("batch"):
        # a batching limiter also caches results per trial; morphtune never asks for one
        raise SnapshotFormatError(f"{path}: a batching ConcurrencyLimiter cannot be repaired")
    live.difference_update(released)
    limiter["num_unfinished_live_trials"] = max(0, unfinished - len(released))
    return released


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SnapshotFormatError(f"{path}: cannot read it ({error})") from error
    value = _loads(text, str(path))
    return value


def _loads(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:  # a copy cut short by the crash
        raise SnapshotFormatError(f"{where}: not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise SnapshotFormatError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _read_pickle(path: Path) -> dict[str, Any]:
    from ray import cloudpickle

    try:
        value = cloudpickle.loads(path.read_bytes())
    except Exception as error:  # any unpickling failure: a file cut short, a foreign format
        raise SnapshotFormatError(f"{path}: cannot unpickle it ({error!r})") from error
    if not isinstance(value, dict):
        raise SnapshotFormatError(f"{path}: expected a dict, got {type(value).__name__}")
    return value


# --------------------------------------------------------------- the kept snapshot


def _snapshot_files(directory: Path) -> list[Path]:
    return sorted(path for pattern in _SNAPSHOT_FILES for path in directory.glob(pattern))


def _generations(kept: Path) -> list[Path]:
    """The published kept snapshots, oldest first (``gen-<number>`` directories)."""
    found = []
    for path in kept.glob(f"{_GENERATION}*"):
        number = path.name[len(_GENERATION) :]
        if path.is_dir() and number.isdigit():
            found.append((int(number), path))
    return [path for _number, path in sorted(found)]


def keep_snapshot(staging: Path, kept: Path) -> Path | None:
    """Copy Tune's snapshot files from ``staging`` into a new generation under ``kept``:
    every file fsynced in a hidden directory, which is then renamed into place (a reader
    sees a whole generation or none); older generations are removed after. None when
    ``staging`` holds no experiment state yet."""
    files = _snapshot_files(staging)
    if not any(path.match(_EXPERIMENT_STATE) for path in files):
        return None
    kept.mkdir(parents=True, exist_ok=True)
    older = _generations(kept)
    number = int(older[-1].name[len(_GENERATION) :]) + 1 if older else 1
    temp = kept / f".{_GENERATION}{uuid.uuid4().hex[:8]}.tmp"
    temp.mkdir()
    try:
        for path in files:
            blob = path.read_bytes()
            with open(temp / path.name, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
        fsync_directory(temp)
        target = kept / f"{_GENERATION}{number:08d}"
        os.rename(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    fsync_directory(kept)
    for path in older:
        shutil.rmtree(path, ignore_errors=True)
    return target


def install_kept_snapshot(kept: Path, experiment: Path) -> list[str]:
    """Before a resume: put the newest kept snapshot's files in place of Tune's copies in
    ``experiment`` (each replaced crash-safely); the names installed. Nothing without a
    kept snapshot (a sweep started before morphtune kept one)."""
    generations = _generations(kept) if kept.is_dir() else []
    if not generations or not experiment.is_dir():
        return []
    newest = generations[-1]
    installed = []
    for path in _snapshot_files(newest):
        if path.match(_CALLBACK_STATES) and _unpickles(experiment / path.name):
            continue  # Tune's copy is whole, and newer than a kept one (see _SNAPSHOT_FILES)
        _write_bytes(experiment / path.name, path.read_bytes())
        installed.append(path.name)
    return installed


def _write_bytes(path: Path, blob: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(blob))


def _unpickles(path: Path) -> bool:
    from ray import cloudpickle

    try:
        cloudpickle.loads(path.read_bytes())
    except Exception:  # missing, cut short, or not a pickle
        return False
    return True


class SnapshotKeeper(tune.Callback):
    """Keeps a whole copy of each experiment snapshot that Tune takes (see the module doc).

    Tune asks every callback for its state while it snapshots the experiment, after it
    has written the experiment and searcher state: that is when the copy is taken. The
    staging directory is learnt from the trials (each knows its storage). A failure to
    keep a copy is logged, never raised: it must not stop Tune's own snapshot.
    """

    def __init__(self, kept: str | Path) -> None:
        self.kept = Path(kept)
        self._staging: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        # pickled with the experiment: a resumed driver has a staging directory of its own
        return {**self.__dict__, "_staging": None}

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._staging is None and trials:
            storage = getattr(trials[0], "storage", None)
            staging = getattr(storage, "experiment_driver_staging_path", None)
            if staging:
                self._staging = Path(staging)

    def get_state(self) -> dict[str, Any] | None:
        if self._staging is not None:
            try:
                keep_snapshot(self._staging, self.kept)
            except Exception as error:  # Tune's own snapshot goes on without this copy
                log.warning("could not keep a copy of the experiment snapshot: %r", error)
        return None
