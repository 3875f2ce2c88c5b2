"""Resume after a driver crash: the Tune snapshot is brought up to date with the store.

Tune copies its experiment snapshot to the experiment directory in the background, so
the copy a resumed sweep restores from can be older than the crash. The Ray tests here
make that happen for real: one small sweep (3 trials, two at a time, a trial function
that holds its first two trials after epoch 1) keeps a copy of the snapshot files taken
while those two trials run, finishes, and gets that copy back in place of the final
snapshot, just as a crash inside the gap leaves it. The searcher tests need no Ray.
"""

from __future__ import annotations

import json
import pickle
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from morphtune.runner import make_searcher, resume_sweep, run_sweep
from morphtune.searchers._resume_repair import (
    KEPT_SNAPSHOT_DIR,
    SnapshotFormatError,
    install_kept_snapshot,
    keep_snapshot,
    repair_snapshot,
)
from morphtune.searchers._study import optuna_storage
from morphtune.spec import parse_spec
from morphtune.store import SweepStore

SWEEP = "stale-snapshot"
EPOCHS = 3
SPEC = f"""
name: {SWEEP}
training: {{epochs: {EPOCHS}}}
search:
  num_samples: 3
  max_concurrent: 2
  sampler: {{name: random, seed: 5}}
  scheduler: {{name: fifo}}
  space:
    training.lr: {{type: float, low: 0.001, high: 0.1, log: true}}
resources: {{executor: function, max_failures: 0}}
"""
#: the snapshot files Tune writes at the top of the experiment directory
SNAPSHOT_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


def held_trial(
    entries: Path, go: Path
) -> Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None]:
    """Logs each entry (its lr); the first two entries wait for ``go`` after epoch 1; the
    third raises (so the first run ends with a trial to spare for the resumed one)."""

    def trial_fn(trial: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> None:
        lr = float(trial["training"]["lr"])
        with entries.open("a") as log:
            before = len(entries.read_text().split()) if entries.exists() else 0
            log.write(f"{lr!r}\n")
        if before == 2:
            raise RuntimeError("the third entry fails on purpose")
        for epoch in range(1, EPOCHS + 1):
            report({"val_acc": 0.5 + 0.01 * epoch, "val_loss": 1.0 - 0.01 * epoch})
            deadline = time.monotonic() + 120
            while epoch == 1 and before < 2 and not go.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("never released")
                time.sleep(0.05)

    return trial_fn


def snapshot_trials(tune_dir: Path) -> dict[str, str]:
    """Trial id -> status in the newest experiment state file ({} while unreadable)."""
    found = sorted(tune_dir.glob("experiment_state-*.json"))
    if not found:
        return {}
    try:
        state = json.loads(found[-1].read_text())
    except (OSError, ValueError):  # a copy in progress
        return {}
    trials = [json.loads(trial) for trial, _meta in state["trial_data"]]
    return {trial["trial_id"]: trial["status"] for trial in trials}


def copy_snapshot(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for pattern in SNAPSHOT_FILES:
        for path in source.glob(pattern):
            shutil.copy2(path, target / path.name)


def limiter_live(tune_dir: Path) -> set[str]:
    """The concurrency limiter's live trials in the snapshot (empty while unreadable)."""
    from ray import cloudpickle

    try:
        blob = next(tune_dir.glob("search_gen_state-*.json")).read_bytes()
        state = cloudpickle.loads(blob)
    except (StopIteration, OSError, EOFError, pickle.UnpicklingError):
        return set()
    return set(state["name:ConcurrencyLimiter"]["live_trials"])


def in_background(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # surfaced by the test
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


@dataclass
class StaleSweep:
    root: Path
    stale: Path  # the snapshot files as copied while the first two trials ran
    held: list[str]  # the two trials running in that snapshot (both completed since)
    entries: Path
    go: Path


@pytest.fixture(scope="module")
def stale_sweep(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> StaleSweep:
    base = tmp_path_factory.mktemp("stale")
    root, entries, go, stale = base / "results", base / "entries", base / "go", base / "stale"
    spec = parse_spec(SPEC)
    trial_fn = held_trial(entries, go)
    thread, outcome = in_background(lambda: run_sweep(spec, results_root=root, trial_fn=trial_fn))
    tune_dir = root / SWEEP / "tune"
    deadline = time.monotonic() + 120
    while True:  # both held trials entered, and a snapshot naming both has been copied
        assert thread.is_alive(), outcome
        assert time.monotonic() < deadline, "no snapshot with the two held trials"
        trials = snapshot_trials(tune_dir)
        entered = len(entries.read_text().split()) if entries.exists() else 0
        if entered == 2 and len(trials) == 2 and set(trials.values()) <= {"PENDING", "RUNNING"}:
            copy_snapshot(tune_dir, stale)
            if snapshot_trials(stale) == trials and limiter_live(stale) == set(trials):
                break
        time.sleep(0.2)
    go.touch()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the first run did not finish"
    assert outcome[0].trial_states["completed"] == 2, outcome
    # the sweep kept a whole copy of Tune's last snapshot
    (kept,) = (root / SWEEP / KEPT_SNAPSHOT_DIR).iterdir()
    assert snapshot_trials(kept) == snapshot_trials(tune_dir)
    assert len(snapshot_trials(kept)) == 3
    return StaleSweep(root, stale, sorted(trials), entries, go)


@pytest.mark.ray
def test_resume_from_a_stale_snapshot_runs_no_finished_trial_again(
    stale_sweep: StaleSweep,
) -> None:
    """The two trials that completed after the snapshot stay completed: not entered again,
    no status record after "completed"; their concurrency slots are free, so the resumed
    sweep runs the trial it has to spare instead of waiting for ever."""
    root, tune_dir = stale_sweep.root, stale_sweep.root / SWEEP / "tune"
    store = SweepStore(root)
    assert {t: store.trial_states(SWEEP)[t] for t in stale_sweep.held} == dict.fromkeys(
        stale_sweep.held, "completed"
    )
    # the crash came before the next snapshot (the kept copy is the stale one) and cut
    # Tune's background copy short (its files are empty)
    kept = root / SWEEP / KEPT_SNAPSHOT_DIR
    shutil.rmtree(kept)
    copy_snapshot(stale_sweep.stale, kept / "gen-00000007")
    for path in tune_dir.glob("*_state-*.json"):
        path.write_bytes(b"")

    trial_fn = held_trial(stale_sweep.entries, stale_sweep.go)
    thread, outcome = in_background(
        lambda: resume_sweep(SWEEP, results_root=root, trial_fn=trial_fn)
    )
    thread.join(timeout=120)
    assert not thread.is_alive(), "the resumed sweep waits for trials that never report"
    assert not isinstance(outcome[0], BaseException), outcome

    # four entries in all: the held two once each, the failing third, one new trial (whose
    # config may repeat the third's: the sampler's state is the snapshot's)
    entries = stale_sweep.entries.read_text().split()
    assert len(entries) == 4, entries
    assert all(entries.count(held) == 1 for held in entries[:2]), entries
    states = SweepStore(root).trial_states(SWEEP)
    assert Counter(states.values()) == {"completed": 3, "failed": 1}, states
    history: dict[str, list[str]] = {}
    for record in SweepStore(root).trial_records(SWEEP).to_pylist():
        history.setdefault(record["trial_id"], []).append(record["status"])
    for trial_id in stale_sweep.held:
        assert history[trial_id] == ["running", "completed"], (trial_id, history[trial_id])
    assert snapshot_trials(tune_dir)[stale_sweep.held[0]] == "TERMINATED"
    # the resumed run kept snapshots of its own, numbered on from the crashed run's
    (generation,) = kept.iterdir()
    assert generation.name.startswith("gen-") and int(generation.name[4:]) > 7, generation

    manifest = SweepStore(root).manifest(SWEEP)
    assert manifest["resumed"]["finished_in_store"] == stale_sweep.held
    study = optuna.load_study(
        study_name=SWEEP, storage=optuna_storage(f"sqlite:///{root / SWEEP / 'optuna.db'}")
    )
    told = Counter(trial.state for trial in study.get_trials())
    assert told == {TrialState.COMPLETE: 3, TrialState.FAIL: 1}, told


@pytest.mark.ray
def test_repair_marks_store_outcomes_and_frees_their_slots_once(
    stale_sweep: StaleSweep, tmp_path: Path
) -> None:
    copy_snapshot(stale_sweep.stale, tmp_path)
    done, failed = stale_sweep.held
    repair = repair_snapshot(tmp_path, {done: "completed", failed: "failed", "other": "completed"})
    assert {t: after for t, (_before, after) in repair.finished.items()} == {
        done: "TERMINATED",
        failed: "ERROR",
    }
    assert repair.released == sorted(stale_sweep.held)
    assert snapshot_trials(tmp_path) == {done: "TERMINATED", failed: "ERROR"}
    assert limiter_live(tmp_path) == set()

    # Tune reads the repaired trials back (its own loader, its own Trial class)
    from ray.tune.experiment import Trial
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    state = _loads_with_cloudpickle(next(tmp_path.glob("experiment_state-*.json")).read_text())
    statuses = {
        Trial.from_json_state(trial, stub=True).status for trial, _meta in state["trial_data"]
    }
    assert statuses == {"TERMINATED", "ERROR"}

    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert not repair_snapshot(tmp_path, {done: "completed", failed: "failed"}).changed
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def _point_at_checkpoint(state_path: Path, trial_id: str, checkpoint: Path) -> None:
    """Give ``trial_id`` in the snapshot a latest checkpoint at ``checkpoint`` (Tune's own
    classes and encoder: what a trial that checkpointed there has in its metadata)."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune.utils.serialization import TuneFunctionEncoder

    state = json.loads(state_path.read_text())
    for pair in state["trial_data"]:
        if json.loads(pair[0])["trial_id"] == trial_id:
            metadata = json.loads(pair[1])
            manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
            metrics = {"training_iteration": 6, "time_total_s": 1.5, "val_acc": 0.5}
            manager.register_checkpoint(
                _TrainingResult(Checkpoint.from_directory(str(checkpoint)), metrics)
            )
            metadata["checkpoint_manager"] = manager
            pair[1] = json.dumps(metadata, cls=TuneFunctionEncoder)
    state_path.write_text(json.dumps(state))


def _latest_checkpoint(state_path: Path, trial_id: str) -> Any:
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    for trial, metadata in json.loads(state_path.read_text())["trial_data"]:
        if json.loads(trial)["trial_id"] == trial_id:
            return _loads_with_cloudpickle(metadata)["checkpoint_manager"].latest_checkpoint_result
    raise KeyError(trial_id)


@pytest.mark.ray
def test_a_trial_whose_checkpoint_is_gone_resumes_from_the_newest_left(
    stale_sweep: StaleSweep, tmp_path: Path
) -> None:
    """The crashed driver deleted the snapshot's checkpoint of a running trial after the
    snapshot (keeping newer ones): the trial resumes from the newest checkpoint the store
    names that still exists, at that checkpoint's iteration; with none left, from the
    start."""
    snapshot = tmp_path / "tune"
    copy_snapshot(stale_sweep.stale, snapshot)
    state_path = next(snapshot.glob("experiment_state-*.json"))
    trial, other = stale_sweep.held
    kept = tmp_path / "checkpoint_000006"
    kept.mkdir()
    _point_at_checkpoint(state_path, trial, tmp_path / "checkpoint_000005")  # gone
    _point_at_checkpoint(state_path, other, kept)  # still there
    stored = {
        trial: {5: str(tmp_path / "checkpoint_000004"), 7: str(kept), 8: str(tmp_path / "x")},
        other: {7: str(kept)},
    }
    repair = repair_snapshot(snapshot, {}, stored)
    assert repair.checkpoints == {trial: (str(tmp_path / "checkpoint_000005"), str(kept))}
    latest = _latest_checkpoint(state_path, trial)
    assert latest.checkpoint.path == str(kept)
    assert latest.metrics["training_iteration"] == 7 and latest.metrics["val_acc"] == 0.5
    assert _latest_checkpoint(state_path, other).checkpoint.path == str(kept)
    assert not repair_snapshot(snapshot, {}, stored).changed

    shutil.rmtree(kept)
    repair = repair_snapshot(snapshot, {}, stored)
    assert repair.checkpoints == {trial: (str(kept), None), other: (str(kept), None)}
    assert _latest_checkpoint(state_path, trial) is None


@pytest.mark.ray
def test_trials_the_store_still_sees_running_are_left_as_they_are(
    stale_sweep: StaleSweep, tmp_path: Path
) -> None:
    copy_snapshot(stale_sweep.stale, tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    statuses = dict.fromkeys(stale_sweep.held, "running")
    assert not repair_snapshot(tmp_path, statuses).changed
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


@pytest.mark.ray
@pytest.mark.parametrize("broken", ["experiment_state", "search_gen_state"])
def test_a_snapshot_file_cut_short_is_refused_and_nothing_is_written(
    stale_sweep: StaleSweep, tmp_path: Path, broken: str
) -> None:
    copy_snapshot(stale_sweep.stale, tmp_path)
    path = next(tmp_path.glob(f"{broken}-*.json"))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(SnapshotFormatError, match=path.name):
        repair_snapshot(tmp_path, dict.fromkeys(stale_sweep.held, "completed"))
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_kept_snapshots_are_published_whole_and_installed_over_tunes_copy(
    tmp_path: Path,
) -> None:
    staging, kept, experiment = tmp_path / "staging", tmp_path / "kept", tmp_path / "tune"
    staging.mkdir()
    experiment.mkdir()
    assert keep_snapshot(staging, kept) is None  # nothing to keep before Tune's first
    assert install_kept_snapshot(kept, experiment) == []
    state = "experiment_state-2026-11-23_00-00-00.json"
    callbacks = "callback-states-2026-11-23_00-00-00.pkl"
    (staging / state).write_text('{"trial_data": [], "gen": 1}')
    (staging / "result.json").write_text("not a snapshot file")
    first = keep_snapshot(staging, kept)
    (staging / state).write_text('{"trial_data": [], "gen": 2}')
    (staging / callbacks).write_bytes(pickle.dumps({0: "kept"}))
    second = keep_snapshot(staging, kept)
    assert first is not None and second is not None and not first.exists()
    (kept / ".gen-abcdef.tmp").mkdir()  # a copy a crash interrupted: never read
    assert [p.name for p in kept.iterdir() if not p.name.startswith(".")] == [second.name]
    assert sorted(p.name for p in second.iterdir()) == [callbacks, state]

    # Tune's copy of the experiment state was cut short; its callback states are whole
    (experiment / state).write_text('{"trial_da')
    (experiment / callbacks).write_bytes(pickle.dumps({0: "tune"}))
    assert install_kept_snapshot(kept, experiment) == [state]
    assert json.loads((experiment / state).read_text())["gen"] == 2
    assert pickle.loads((experiment / callbacks).read_bytes()) == {0: "tune"}
    (experiment / callbacks).write_bytes(b"")
    assert install_kept_snapshot(kept, experiment) == [callbacks, state]
    assert pickle.loads((experiment / callbacks).read_bytes()) == {0: "kept"}


def test_an_unknown_trial_status_is_refused(tmp_path: Path) -> None:
    trial = json.dumps({"trial_id": "a", "status": "SOMETHING_NEW"})
    state = tmp_path / "experiment_state-2026-11-23_00-00-00.json"
    state.write_text(json.dumps({"trial_data": [[trial, "{}"]], "runner_data": {}}))
    with pytest.raises(SnapshotFormatError, match="SOMETHING_NEW"):
        repair_snapshot(tmp_path, {"a": "completed"})
    with pytest.raises(SnapshotFormatError, match="no experiment_state"):
        repair_snapshot(tmp_path / "missing", {})


# ------------------------------------------------------------------ the searcher


SEARCH_SPEC = """
name: s
training: {epochs: 2}
search:
  num_samples: 4
  sampler: {name: random, seed: 1}
  space:
    training.lr: {type: float, low: 0.001, high: 0.1, log: true}
"""


def test_a_second_outcome_for_a_told_trial_keeps_the_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A resumed driver may finish a trial the crashed one had told Optuna already:
    Optuna would raise ValueError("Cannot tell a COMPLETE trial."); the searcher keeps
    the first outcome and goes on."""
    searcher = make_searcher(parse_spec(SEARCH_SPEC))
    assert isinstance(searcher.suggest("t0"), dict)
    searcher.on_trial_result("t0", {"val_acc": 0.4, "training_iteration": 1})
    searcher.on_trial_complete("t0", {"val_acc": 0.5})
    searcher._completed_trials.discard("t0")  # a restored searcher that never heard of it
    searcher.on_trial_result("t0", {"val_acc": 0.6, "training_iteration": 2})
    with caplog.at_level("WARNING"):
        searcher.on_trial_complete("t0", {"val_acc": 0.9})
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    (trial,) = searcher.study.get_trials()
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5


def test_a_searcher_pickled_before_newer_fields_restores_with_defaults(tmp_path: Path) -> None:
    """Tune restores the searcher from an older morphtune's pickle (``restore``) or
    unpickles it with the tuner (``__setstate__``): fields it lacks get their defaults."""
    searcher = make_searcher(parse_spec(SEARCH_SPEC))
    assert isinstance(searcher.suggest("t0"), dict)
    saved = tmp_path / "searcher-state.pkl"
    searcher.save(str(saved))
    state = pickle.loads(saved.read_bytes())
    newer = ("_latest", "finished", "suggest_seconds", "exhausted", "infeasible")
    for name in newer:
        del state[name]
    saved.write_bytes(pickle.dumps(state))

    restored = make_searcher(parse_spec(SEARCH_SPEC))
    for name in newer:
        del restored.__dict__[name]
    blob = pickle.dumps(restored)  # as an older tuner.pkl holds it
    restored.restore(str(saved))
    unpickled = pickle.loads(blob)
    assert unpickled.exhausted is None and unpickled._latest == {}  # by __setstate__
    unpickled.restore(str(saved))
    for copy in (restored, unpickled):
        assert copy._latest == {} and copy.exhausted is None and copy.infeasible == 0
        copy.on_trial_result("t0", {"val_acc": 0.4, "training_iteration": 1})
        assert isinstance(copy.suggest("t1"), dict)
    restored.on_trial_complete("t0", {"val_acc": 0.5})
    assert restored.study.get_trials()[0].state == TrialState.COMPLETE
