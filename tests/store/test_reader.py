from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from morphtune.store import NoResults, ResultWriter, SweepNotFound, SweepStore
from tests.store.sweeps import ACC, COUNTS, SWEEP, config_of, row, write_demo_sweep


@pytest.fixture
def store(tmp_path: Path) -> SweepStore:
    write_demo_sweep(tmp_path)
    return SweepStore(tmp_path)


def test_list_sweeps(tmp_path: Path) -> None:
    assert SweepStore(tmp_path / "missing").list_sweeps() == []
    write_demo_sweep(tmp_path, "b")
    write_demo_sweep(tmp_path, "a")
    (tmp_path / "not a sweep").mkdir()
    (tmp_path / "empty").mkdir()
    assert SweepStore(tmp_path).list_sweeps() == ["a", "b"]


def test_unknown_sweep_names_sweep_and_root(store: SweepStore) -> None:
    with pytest.raises(SweepNotFound, match=r"sweep 'nope' not found under store root .*") as info:
        store.manifest("nope")
    assert isinstance(info.value, LookupError)
    assert str(store.root) in str(info.value)
    for query in (store.results, store.trials, store.best, store.trial_counts):
        with pytest.raises(SweepNotFound):
            query("nope")


def test_reading_rejects_path_like_sweep_ids(store: SweepStore) -> None:
    with pytest.raises(ValueError, match="sweep_id must match"):
        store.manifest("../etc")


def test_manifest_defaults_when_only_results_exist(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "bare").write_results([row("a", 1, {"acc": 1.0})])
    store = SweepStore(tmp_path)
    assert store.manifest("bare") == {"sweep_id": "bare"}
    with pytest.raises(ValueError, match=r"metric: none given .* has no objective\.metric"):
        store.best("bare")
    assert store.best("bare", "acc", "max").value == 1.0


def test_results_columns_and_selection(store: SweepStore) -> None:
    table = store.results(SWEEP)
    assert table.num_rows == sum(len(values) for values in ACC.values())
    assert {"config.lr", "config.model.family", "metrics.acc", "metrics.loss"} <= set(
        table.column_names
    )
    assert store.metric_names(SWEEP) == ["acc", "loss"]
    selected = store.results(SWEEP, ["trial_id", "metrics.acc"])
    assert selected.column_names == ["trial_id", "metrics.acc"]
    with pytest.raises(ValueError, match=r"columns \['metrics\.nope'\] not in sweep 'demo'"):
        store.results(SWEEP, ["metrics.nope"])


def test_trials_and_counts(store: SweepStore) -> None:
    trials = {trial.trial_id: trial for trial in store.trials(SWEEP)}
    assert sorted(trials) == sorted(ACC)
    assert {trial_id: trial.status for trial_id, trial in trials.items()} == {
        "t0": "completed",
        "t1": "completed",
        "t2": "stopped",
        "t3": "failed",
        "t4": "running",
    }
    assert trials["t1"].last_iteration == 2 and trials["t1"].metrics["acc"] == 0.6
    assert trials["t2"].metrics["acc"] is None  # NaN is null in JSON
    assert trials["t3"].error == "diverged" and trials["t3"].last_iteration == 1
    assert trials["t4"].config == config_of("t4")
    assert store.trial_counts(SWEEP) == COUNTS


def test_trial_with_only_a_status_record(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_trial("queued", "running", config={"lr": 0.5})
    [trial] = SweepStore(tmp_path).trials("s")
    assert trial.status == "running" and trial.config == {"lr": 0.5}
    assert trial.metrics == {} and trial.last_iteration is None


def test_latest_status_record_wins(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("a", 1, {"acc": 0.9})])
    writer.write_trial("a", "failed", config={}, error="oom")
    writer.write_trial("a", "running", config={})  # Tune restarted it
    store = SweepStore(tmp_path)
    assert store.trial_states("s") == {"a": "running"}
    assert store.best("s", "acc", "max").trial_id == "a"
    writer.write_trial("a", "failed", config={}, error="oom again")
    with pytest.raises(NoResults, match=r"sweep 's' has no finite result for metric 'acc'"):
        store.best("s", "acc", "max")


@pytest.mark.parametrize(
    ("mode", "scope", "trial_id", "iteration", "value"),
    [
        ("max", "last", "t0", 2, 0.8),  # t3 (0.99) failed, t2 last is NaN, t4 last is inf
        ("max", "all", "t1", 1, 0.9),
        ("min", "last", "t1", 2, 0.6),
        ("min", "all", "t0", 1, 0.5),
    ],
)
def test_best(
    store: SweepStore, mode: str, scope: str, trial_id: str, iteration: int, value: float
) -> None:
    best = store.best(SWEEP, "acc", mode, scope)
    assert (best.trial_id, best.iteration, best.value) == (trial_id, iteration, value)
    assert (best.sweep_id, best.metric, best.mode) == (SWEEP, "acc", mode)
    assert best.config == config_of(trial_id)
    assert best.metrics == {"acc": value, "loss": 1.0 / iteration}


def test_best_defaults_to_manifest_objective(store: SweepStore) -> None:
    assert store.best(SWEEP) == store.best(SWEEP, "acc", "max", "last")
    assert store.best(SWEEP, mode="min").trial_id == "t1"


def test_best_needs_mode_for_a_non_objective_metric(store: SweepStore) -> None:
    with pytest.raises(
        ValueError, match=r"mode: none given and metric 'loss' is not the objective"
    ):
        store.best(SWEEP, "loss")
    assert store.best(SWEEP, "loss", "min").value == 0.5


def test_best_ignores_nan_and_inf_and_skips_failed(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results(
        [
            row("nan", 1, {"acc": math.nan}),
            row("inf", 1, {"acc": math.inf}),
            row("ninf", 1, {"acc": -math.inf}),
            row("bad", 1, {"acc": 5.0}),
            row("ok", 1, {"acc": 0.1}),
        ]
    )
    writer.write_trial("bad", "failed", config={})
    store = SweepStore(tmp_path)
    assert store.best("s", "acc", "max").trial_id == "ok"
    assert store.best("s", "acc", "min").trial_id == "ok"


def test_best_last_uses_last_iteration_that_reported_the_metric(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results(
        [
            row("a", 1, {"val": 0.3, "loss": 1.0}),
            row("a", 2, {"loss": 0.5}),  # no evaluation this iteration
            row("b", 1, {"val": 0.2, "loss": 1.0}),
        ]
    )
    best = SweepStore(tmp_path).best("s", "val", "max")
    assert (best.trial_id, best.iteration, best.value) == ("a", 1, 0.3)


def test_ties_go_to_smallest_trial_then_iteration(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row("b", 1, {"acc": 1.0}), row("a", 2, {"acc": 1.0})])
    writer.write_results([row("a", 3, {"acc": 1.0})])
    best = SweepStore(tmp_path).best("s", "acc", "max", "all")
    assert (best.trial_id, best.iteration) == ("a", 2)


def test_best_sees_rewritten_keys_as_last_written(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_results([row("a", 1, {"acc": 0.9})])
    ResultWriter(tmp_path / "other", "s").write_results([row("a", 1, {"acc": 0.1})])
    # A later part with the same key (e.g. from a concurrent writer) supersedes the earlier.
    late = next((tmp_path / "other" / "s" / "results").iterdir())
    late.rename(tmp_path / "s" / "results" / late.name)
    assert SweepStore(tmp_path).best("s", "acc", "max").value == 0.1


def test_unknown_metric_lists_available(store: SweepStore) -> None:
    with pytest.raises(
        ValueError,
        match=r"metric 'accuracy' not reported in sweep 'demo'; available: \['acc', 'loss'\]",
    ):
        store.best(SWEEP, "accuracy", "max")


def test_non_numeric_metric_is_rejected(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_results([row("a", 1, {"phase": "warmup"})])
    with pytest.raises(ValueError, match=r"metric 'phase' is not numeric"):
        SweepStore(tmp_path).best("s", "phase", "max")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "up"}, r"mode must be one of \['max', 'min'\], got 'up'"),
        ({"scope": "first"}, r"scope must be one of \['last', 'all'\], got 'first'"),
        ({"metric": ""}, r"metric must be a non-empty string, got ''"),
    ],
)
def test_bad_arguments(store: SweepStore, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.best(SWEEP, **kwargs)


def test_no_finite_results(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_results([row("a", 1, {"acc": math.nan})])
    with pytest.raises(NoResults, match="no finite result for metric 'acc'") as info:
        SweepStore(tmp_path).best("s", "acc", "max")
    assert isinstance(info.value, LookupError)


def test_empty_sweep_has_no_results(tmp_path: Path) -> None:
    ResultWriter(tmp_path, "s").write_manifest({"objective": {"metric": "acc", "mode": "max"}})
    store = SweepStore(tmp_path)
    assert store.results("s").num_rows == 0
    assert store.trials("s") == []
    assert store.trial_counts("s") == {"running": 0, "completed": 0, "failed": 0, "stopped": 0}
    with pytest.raises(NoResults, match=r"not reported yet; available: \[\]"):
        store.best("s")
    with pytest.raises(NoResults, match=r"not reported yet"):
        store.best("s", "loss", "min")


def test_objective_metric_not_reported_yet_is_no_results(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    writer.write_manifest({"objective": {"metric": "val_acc", "mode": "max"}})
    writer.write_results([row("a", 1, {"loss": 1.0})])
    with pytest.raises(NoResults, match=r"'val_acc': not reported yet; available: \['loss'\]"):
        SweepStore(tmp_path).best("s")


def test_best_reads_config_from_the_right_row_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("morphtune.store._files.ROW_GROUP_ROWS", 2)
    writer = ResultWriter(tmp_path, "s")
    writer.write_results([row(f"t{index}", 1, {"acc": index % 4}) for index in range(7)])
    part = next((tmp_path / "s" / "results").iterdir())
    assert pq.ParquetFile(part).metadata.num_row_groups == 4
    best = SweepStore(tmp_path).best("s", "acc", "max")
    assert (best.trial_id, best.config) == ("t3", config_of("t3"))
    assert SweepStore(tmp_path).best("s", "acc", "min", "all").trial_id == "t0"
