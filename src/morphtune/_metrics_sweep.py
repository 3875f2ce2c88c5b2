"""Read one sweep from the results store into the figures behind the ``morphtune_*`` metrics.

:func:`sweep_figures` reads a sweep once (trial states, one column selection of its result
rows, the best value per objective, the manifest) and hands per-trial facts to the
arithmetic in :mod:`morphtune._metrics_figures`. Malformed manifest entries do not stop the
other figures: they are listed in :attr:`SweepFigures.problems`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from morphtune._metrics_figures import (
    Objective,
    SweepFigures,
    TrialFacts,
    compute_seconds,
    hypervolume_figure,
    saved_seconds,
)
from morphtune._metrics_latency import parse_latency
from morphtune.store import NoResults, SweepStore, validate_objective
from morphtune.store._schema import TRIAL_STATES, column_for

__all__ = ["EPOCHS_COLUMN", "TIME_METRICS", "sweep_figures"]

#: Wall-time metrics, in order of preference: Tune's ``time_total_s`` (the trial's whole
#: wall time, setup and evaluation included), then the engines' ``wall_s`` (training only).
TIME_METRICS = ("time_total_s", "wall_s")
#: The per-trial epoch budget when the search space samples it.
EPOCHS_COLUMN = "config.training.epochs"


def _objectives(manifest: Mapping[str, Any]) -> list[Objective]:
    """The manifest's objectives (``objectives`` for MO sweeps, else ``objective``)."""
    listed = manifest.get("objectives")
    if not listed:
        listed = [manifest["objective"]] if manifest.get("objective") else []
    if not isinstance(listed, list):
        raise ValueError(f"manifest objectives must be a list, got {type(listed).__name__}")
    goals = []
    for index, item in enumerate(listed):
        try:
            checked = validate_objective(item)
        except ValueError as error:
            raise ValueError(f"manifest objectives[{index}]: {error}") from None
        goals.append(Objective(checked["metric"], checked["mode"]))
    return goals


def _positive_int(value: object, field_name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"manifest {field_name} must be an int >= 1, got {value!r}")
    return value


def _budget(manifest: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``(spec.training.epochs, spec.search.scheduler.max_t)`` of the resolved spec."""
    spec = manifest.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    training = spec.get("training")
    search = spec.get("search")
    scheduler = search.get("scheduler") if isinstance(search, Mapping) else None
    epochs = training.get("epochs") if isinstance(training, Mapping) else None
    max_t = scheduler.get("max_t") if isinstance(scheduler, Mapping) else None
    return (
        _positive_int(epochs, "spec.training.epochs"),
        _positive_int(max_t, "spec.search.scheduler.max_t"),
    )


def _metric_column(name: str, available: set[str]) -> str | None:
    """The result column holding the reported metric ``name`` (None: never reported)."""
    try:
        return column_for(name, available)
    except ValueError:
        return None


def _floats(table: pa.Table, column: str | None) -> np.ndarray:
    """The column as float64 (missing, null or non-numeric -> NaN)."""
    if column is None:
        return np.full(table.num_rows, np.nan)
    values = table.column(column)
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        array = _parse_floats(values)
    elif (
        pa.types.is_floating(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_null(kind)
    ):
        array = values.cast(pa.float64())
    else:
        return np.full(table.num_rows, np.nan)
    return np.asarray(array.fill_null(math.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def _reported(table: pa.Table, column: str | None) -> np.ndarray:
    """Rows where the column holds a value (NaN counts as a value; null does not)."""
    if column is None:
        return np.zeros(table.num_rows, dtype=bool)
    valid = pc.is_valid(table.column(column))
    return np.asarray(valid.to_numpy(zero_copy_only=False), dtype=bool)


def _parse_floats(values: pa.ChunkedArray) -> pa.Array:
    """A string column (numbers mixed with strings) as float64, non-numbers -> null."""
    parsed = []
    for value in values.to_pylist():
        try:
            parsed.append(float(value) if value is not None else None)
        except ValueError:
            parsed.append(None)
    return pa.array(parsed, type=pa.float64())


def row_order(codes: np.ndarray, iterations: np.ndarray) -> np.ndarray:
    """Row indices sorted by (trial code, iteration): one sort shared by every
    :func:`last_rows` call (a single int64 key when it fits, which sorts ~3x faster)."""
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = int(iterations.min()), int(iterations.max())
    span = high - low + 1
    if int(codes.max()) < np.iinfo(np.int64).max // span - 1:
        return np.argsort(codes * span + (iterations - low), kind="stable")
    return np.lexsort((iterations, codes))


def last_rows(codes: np.ndarray, order: np.ndarray, mask: np.ndarray, trials: int) -> np.ndarray:
    """Per trial code, the index of its highest-iteration row among ``mask`` (-1: none);
    ``order`` is :func:`row_order` of the same rows."""
    last = np.full(trials, -1, dtype=np.int64)
    kept = order[mask[order]]
    if kept.size == 0:
        return last
    ordered_codes = codes[kept]
    ends = np.ones(kept.size, dtype=bool)
    ends[:-1] = ordered_codes[1:] != ordered_codes[:-1]
    last[ordered_codes[ends]] = kept[ends]
    return last


def _trial_facts(
    store: SweepStore,
    sweep_id: str,
    states: Mapping[str, str],
    objectives: Sequence[Objective],
) -> list[TrialFacts]:
    available = set(store.result_columns(sweep_id))
    time_columns = [_metric_column(name, available) for name in TIME_METRICS]
    objective_columns = (
        [_metric_column(goal.metric, available) for goal in objectives]
        if len(objectives) > 1
        else []
    )
    epochs_column = EPOCHS_COLUMN if EPOCHS_COLUMN in available else None
    wanted = [
        name
        for name in dict.fromkeys([*time_columns, *objective_columns, epochs_column])
        if name is not None
    ]
    table = store.results(sweep_id, ["trial_id", "iteration", *wanted]) if available else None
    if table is None or table.num_rows == 0:
        return [
            TrialFacts(trial_id, state, None, None, None, None, None)
            for trial_id, state in sorted(states.items())
        ]
    encoded = pc.dictionary_encode(table.column("trial_id")).combine_chunks()
    names: list[str] = encoded.dictionary.to_pylist()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    iterations = np.asarray(
        table.column("iteration").to_numpy(zero_copy_only=False), dtype=np.int64
    )
    seconds = np.full(table.num_rows, np.nan)
    for column in reversed(time_columns):  # the preferred column wins where it is finite
        values = _floats(table, column)
        usable = np.isfinite(values) & (values >= 0)
        seconds = np.where(usable, values, seconds)
    epochs = _floats(table, epochs_column)
    goal_values = [_floats(table, column) for column in objective_columns]
    reported = np.ones(table.num_rows, dtype=bool)  # rows reporting every objective
    for column in objective_columns:
        reported &= _reported(table, column)
    count = len(names)
    order = row_order(codes, iterations)
    last_any = last_rows(codes, order, np.ones(table.num_rows, dtype=bool), count)
    last_timed = last_rows(codes, order, np.isfinite(seconds), count)
    last_reported = last_rows(codes, order, reported, count)
    facts = {}
    for code, trial_id in enumerate(names):
        row, timed, scored = int(last_any[code]), int(last_timed[code]), int(last_reported[code])
        trial_epochs = float(epochs[row]) if np.isfinite(epochs[row]) else None
        facts[trial_id] = TrialFacts(
            trial_id=trial_id,
            state=states.get(trial_id, "running"),
            last_iteration=int(iterations[row]),
            seconds=float(seconds[timed]) if timed >= 0 else None,
            seconds_iteration=int(iterations[timed]) if timed >= 0 else None,
            epochs=trial_epochs,
            objectives=tuple(float(values[scored]) for values in goal_values)
            if goal_values and scored >= 0
            else None,
        )
    for trial_id, state in states.items():
        facts.setdefault(trial_id, TrialFacts(trial_id, state, None, None, None, None, None))
    return [facts[trial_id] for trial_id in sorted(facts)]


def _best(store: SweepStore, sweep_id: str, objectives: Sequence[Objective]) -> dict[str, float]:
    best = {}
    for goal in objectives:
        try:
            best[goal.metric] = store.best(sweep_id, goal.metric, goal.mode).value
        except (NoResults, ValueError):  # nothing finite yet, or the metric not reported yet
            continue
    return best


def sweep_figures(store: SweepStore, sweep_id: str) -> SweepFigures:
    """Every figure of one sweep. Unreadable files raise (``StoreError``, ``OSError``);
    malformed manifest entries are reported in ``problems`` and skip their figures only."""
    manifest = store.manifest(sweep_id)
    problems: list[str] = []

    def attempt(read: Callable[[], Any], default: Any) -> Any:
        try:
            return read()
        except ValueError as error:
            problems.append(str(error))
            return default

    objectives: list[Objective] = attempt(lambda: _objectives(manifest), [])
    budget: tuple[int | None, int | None] = attempt(lambda: _budget(manifest), (None, None))
    search = manifest.get("search")
    summary = search.get("suggestion_seconds") if isinstance(search, Mapping) else None
    latency = None if summary is None else attempt(lambda: parse_latency(summary), None)

    states = store.trial_states(sweep_id)
    counted = Counter(states.values())
    counts = {state: counted.get(state, 0) for state in TRIAL_STATES} | dict(counted)
    trials = _trial_facts(store, sweep_id, states, objectives)
    volume: float | None = None
    reference: dict[str, float] = {}
    if len(objectives) > 1:
        volume, reference = hypervolume_figure(trials, objectives)
    epochs, max_t = budget
    known_budget = (
        epochs is not None or max_t is not None or any(trial.epochs is not None for trial in trials)
    )
    return SweepFigures(
        counts=counts,
        best=_best(store, sweep_id, objectives),
        hypervolume=volume,
        reference=reference,
        latency=latency,
        compute_seconds=compute_seconds(trials),
        saved_seconds=saved_seconds(trials, epochs, max_t) if known_budget else None,
        problems=tuple(problems),
    )
