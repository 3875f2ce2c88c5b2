"""What a sweep report shows, gathered from the results store and the sweep's Optuna study.

Everything here is plain data (numpy arrays, dicts, dataclasses) so the charts and the HTML
page are pure functions of it, and tests can check the numbers without parsing images.

Rules shared with the rest of morphtune:

* a trial's *final* value of a metric is the value at its last iteration that reported the
  metric, and only finite values count (as ``SweepStore.best(scope="last")``);
* failed trials are never ranked; a sweep needs at least one *finished* trial (state
  ``completed`` or ``stopped``) with a finite primary objective to be reported on;
* the Pareto front is the store's (``morphtune pareto`` gives the same points).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from morphtune._keys import joined_keys
from morphtune.store import NoResults, SweepStore
from morphtune.store._conditions import InvalidArgument
from morphtune.store._frame import SweepFrame
from morphtune.store._pareto import MAX_OBJECTIVES, ParetoResult, pareto_front

__all__ = [
    "COMPUTE_AXES",
    "FINISHED_STATES",
    "TIMELINE_SIGNALS",
    "Importances",
    "NoFinishedTrials",
    "Objective",
    "ReportData",
    "ReportError",
    "SearchedParam",
    "TopRow",
    "TrialData",
    "gather",
]

#: Trial states that count as finished: ran to the end, or were stopped early by the scheduler.
FINISHED_STATES = frozenset({"completed", "stopped"})

#: Method signals drawn against the iteration, in this order, when the sweep reported them
#: (the training engines report ``width``/``depth``/``density``; GAN trials ``balance_ratio``
#: and the discriminator's ``d_density``).
TIMELINE_SIGNALS = ("width", "depth", "density", "d_density", "balance_ratio")

#: Compute axes for "quality against compute", in order of preference: training FLOPs spent
#: so far, then training seconds (a trial reports both cumulatively).
COMPUTE_AXES = ("train_flops", "wall_s", "time_total_s")

#: Cost columns shown in the top-configurations table.
TABLE_COSTS = ("params", "nonzero_params", "flops", "train_flops", "wall_s")

#: Optuna user attribute of a trial answered from the study instead of being trained again
#: (see ``searchers/_duplicates.py``): left out of importances so a repeat does not count twice.
REPEAT_ATTR = "repeat_of_finished_config"


class ReportError(Exception):
    """The sweep cannot be reported on (bad input: exit status 2 on the command line)."""


class NoFinishedTrials(ReportError):
    """The sweep has no finished trial with a finite value for its objective."""


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "max" or "min"
    column: str  # the result column holding it

    @property
    def label(self) -> str:
        return f"{self.metric} ({self.mode})"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


@dataclass(frozen=True)
class SearchedParam:
    """One key of the sweep's search space, as the spec declares it."""

    key: str  # "training.lr"
    kind: str  # "float", "int" or "categorical"
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # parent key -> values

    def value(self, config: Mapping[str, Any]) -> Any:
        """This knob's value in a trial's flattened ``config``; ``None`` where its ``when``
        condition does not hold (the knob did not exist for that trial, whatever default
        the config carries)."""
        for parent, values in self.when.items():
            if parent not in config or config[parent] not in values:
                return None
        return config.get(self.key)


@dataclass(frozen=True)
class TrialData:
    """One trial's rows, sorted by iteration, with every metric the report draws."""

    trial_id: str
    state: str
    config: dict[str, Any]  # flattened ("model.width": 32)
    iterations: NDArray[np.int64]
    timestamps: NDArray[np.float64]
    series: dict[str, NDArray[np.float64]]  # reported name -> values (NaN: not reported)
    final: dict[str, float]  # objective metric -> final value (finite only)

    @property
    def started(self) -> float:
        return float(self.timestamps.min()) if len(self.timestamps) else math.inf


@dataclass(frozen=True)
class TopRow:
    rank: int
    trial: TrialData
    values: tuple[float | None, ...]  # one per objective
    iteration: int
    on_front: bool | None  # None for a single-objective sweep


@dataclass(frozen=True)
class Importances:
    """Parameter importances per objective (``get_param_importances`` on the study), or why
    there are none."""

    by_objective: dict[str, dict[str, float]] = field(default_factory=dict)
    study_trials: dict[str, int] = field(default_factory=dict)  # Optuna state -> count
    note: str | None = None


@dataclass(frozen=True)
class ReportData:
    sweep_id: str
    manifest: dict[str, Any]
    objectives: tuple[Objective, ...]
    counts: dict[str, int]  # trial state -> count
    trials: tuple[TrialData, ...]  # every trial with results, by first report time
    searched: tuple[SearchedParam, ...]
    signals: tuple[str, ...]  # TIMELINE_SIGNALS the sweep reported
    timeline_x: str  # "step" (optimizer steps) when every trial reported it, else "iteration"
    compute_axes: tuple[str, ...]  # COMPUTE_AXES the sweep reported
    costs: tuple[str, ...]  # TABLE_COSTS the sweep reported
    top: tuple[TopRow, ...]
    pareto: ParetoResult | None
    importances: Importances

    @property
    def primary(self) -> Objective:
        return self.objectives[0]

    @property
    def best(self) -> TopRow:
        return self.top[0]

    def finished(self) -> list[TrialData]:
        """Finished trials with a finite primary objective, by first report time."""
        return [
            trial
            for trial in self.trials
            if trial.state in FINISHED_STATES and self.primary.metric in trial.final
        ]

    def ranked(self) -> list[TrialData]:
        """Trials that did not fail and have a finite primary objective, best first (ties:
        smaller trial id first, as ``SweepStore.best``)."""
        metric, sign = self.primary.metric, -1.0 if self.primary.mode == "max" else 1.0
        eligible = [t for t in self.trials if t.state != "failed" and metric in t.final]
        return sorted(eligible, key=lambda t: (sign * t.final[metric], t.trial_id))


# ------------------------------------------------------------------------------ gathering


def gather(
    store: SweepStore,
    sweep_id: str,
    *,
    top: int = 10,
    optuna_url: str | None = None,
) -> ReportData:
    """Everything the report of ``sweep_id`` shows.

    Raises ``ValueError`` (a malformed sweep id, ``top < 1``), :class:`SweepNotFound`,
    :class:`NoFinishedTrials` (also: the objective never reported), or :class:`ReportError`
    (a manifest without a usable objective, an ``optuna_url`` naming no file).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an integer >= 1, got {top!r}")
    manifest = store.manifest(sweep_id)  # SweepNotFound for an unknown sweep
    columns = store.result_columns(sweep_id)
    objectives = _objectives(manifest, sweep_id, columns)
    signals = tuple(name for name in TIMELINE_SIGNALS if _column(name, columns, "signal."))
    compute = tuple(name for name in COMPUTE_AXES if _column(name, columns, "cost."))
    costs = tuple(name for name in TABLE_COSTS if _column(name, columns, "cost."))
    wanted = {o.metric: o.column for o in objectives}
    for name in (*signals, *compute, *costs):
        wanted.setdefault(name, _column(name, columns, "cost.", "signal.") or "")
    step_column = _column("step", columns) if signals else None
    if step_column:
        wanted.setdefault("step", step_column)
    trials = _trials(store, sweep_id, wanted, objectives)
    stepped = bool(step_column) and all(np.isfinite(trial.series["step"]).all() for trial in trials)
    data = ReportData(
        sweep_id=sweep_id,
        manifest=manifest,
        objectives=objectives,
        counts={state: n for state, n in store.trial_counts(sweep_id).items() if n},
        trials=trials,
        searched=_searched(manifest, trials),
        signals=signals,
        timeline_x="step" if stepped else "iteration",
        compute_axes=compute,
        costs=costs,
        top=(),
        pareto=None,
        importances=Importances(),
    )
    if not data.finished():
        raise NoFinishedTrials(_no_finished_message(data))
    pareto = _pareto(store, sweep_id, objectives)
    return dataclasses.replace(
        data,
        pareto=pareto,
        top=_top_rows(data, pareto, top),
        importances=importances(store, sweep_id, manifest, objectives, optuna_url),
    )


def _column(name: str, columns: Sequence[str], *prefixes: str) -> str | None:
    """The column of a reported ``name``: a preferred prefix (``cost.``/``signal.``, the
    store's typed copies) first, then ``metrics.<name>`` (older sweeps have only that)."""
    present = set(columns)
    for prefix in (*prefixes, "metrics."):
        if prefix + name in present:
            return prefix + name
    return None


def _objectives(
    manifest: Mapping[str, Any], sweep_id: str, columns: Sequence[str]
) -> tuple[Objective, ...]:
    listed = _listed_objectives(manifest)
    objectives = []
    for index, item in enumerate(listed):
        metric = item.get("metric") if isinstance(item, Mapping) else None
        mode = item.get("mode") if isinstance(item, Mapping) else None
        if not isinstance(metric, str) or not metric or mode not in ("max", "min"):
            raise ReportError(
                f"sweep {sweep_id!r}: manifest objectives[{index}] must have a metric name and "
                f"mode 'max' or 'min', got {item!r}"
            )
        column = _column(metric, columns, "cost.", "signal.")
        if column is None:
            reported = sorted(
                c.removeprefix("metrics.") for c in columns if c.startswith("metrics.")
            )
            raise NoFinishedTrials(
                f"sweep {sweep_id!r} has no result reporting its objective {metric!r} yet "
                f"(reported metrics: {reported})"
            )
        objectives.append(Objective(metric, mode, column))
    if not objectives:
        raise ReportError(f"sweep {sweep_id!r}: its manifest names no objective")
    return tuple(objectives)


def _listed_objectives(manifest: Mapping[str, Any]) -> list[Any]:
    """The manifest's objectives: ``objectives`` (a sweep), ``subnet_search.objectives``
    (pairs, a subnet search), else the single ``objective``."""
    listed = manifest.get("objectives")
    if isinstance(listed, list) and listed:
        return listed
    subnet = manifest.get("subnet_search")
    pairs = subnet.get("objectives") if isinstance(subnet, Mapping) else None
    if isinstance(pairs, list) and pairs:
        if all(isinstance(pair, list | tuple) and len(pair) == 2 for pair in pairs):
            return [{"metric": metric, "mode": mode} for metric, mode in pairs]
    single = manifest.get("objective")
    return [single] if isinstance(single, Mapping) else []


#: At most this many config keys are drawn when a sweep declares no search space.
MAX_VARIED_KEYS = 12


def _searched(
    manifest: Mapping[str, Any], trials: Sequence[TrialData]
) -> tuple[SearchedParam, ...]:
    """The searched knobs: the spec's ``search.space``; for a subnet search, its subnet
    space (``subnet.<name>``); else the scalar config keys whose value varies across trials."""
    spec = manifest.get("spec")
    search = spec.get("search") if isinstance(spec, Mapping) else None
    space = search.get("space") if isinstance(search, Mapping) else None
    if isinstance(space, Mapping) and space:
        return _declared(space)
    subnet = manifest.get("subnet_search")
    subnet_space = subnet.get("space") if isinstance(subnet, Mapping) else None
    if isinstance(subnet_space, Mapping) and subnet_space:
        return tuple(
            SearchedParam(f"subnet.{name}", "categorical", choices=tuple(choices))
            for name, choices in subnet_space.items()
            if isinstance(choices, list | tuple)
        )
    return _varied(trials)


def _varied(trials: Sequence[TrialData]) -> tuple[SearchedParam, ...]:
    params = []
    for key in sorted({key for trial in trials for key in trial.config}):
        values = [trial.config.get(key) for trial in trials]
        if not all(value is None or isinstance(value, str | int | float) for value in values):
            continue
        present = [value for value in values if value is not None]
        if len({repr(value) for value in present}) < 2:
            continue
        if any(isinstance(value, str | bool) for value in present):
            choices = tuple(sorted(set(present), key=str))
            params.append(SearchedParam(key, "categorical", choices=choices))
        else:
            params.append(SearchedParam(key, "float"))
        if len(params) == MAX_VARIED_KEYS:
            break
    return tuple(params)


def _declared(space: Mapping[str, Any]) -> tuple[SearchedParam, ...]:
    params = []
    for key, param in space.items():
        if not isinstance(param, Mapping):
            continue
        kind = str(param.get("type", "categorical"))
        choices = param.get("choices") or ()
        when = param.get("when") or {}
        params.append(
            SearchedParam(
                key=str(key),
                kind=kind,
                log=bool(param.get("log")),
                choices=tuple(choices) if isinstance(choices, list | tuple) else (),
                when={
                    str(parent): tuple(values) if isinstance(values, list | tuple) else (values,)
                    for parent, values in (when.items() if isinstance(when, Mapping) else ())
                },
            )
        )
    return tuple(params)


def _float_column(table: pa.Table, name: str) -> NDArray[np.float64]:
    """A column as float64 with NaN for nulls; all NaN if it does not hold numbers."""
    column = table.column(name)
    try:
        column = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return np.full(table.num_rows, np.nan)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _trials(
    store: SweepStore,
    sweep_id: str,
    wanted: Mapping[str, str],
    objectives: Sequence[Objective],
) -> tuple[TrialData, ...]:
    columns = ["trial_id", "iteration", "timestamp", *dict.fromkeys(wanted.values())]
    table = store.results(sweep_id, columns).combine_chunks()
    ids = np.asarray(table.column("trial_id").to_pylist(), dtype=object)
    iterations = np.asarray(table.column("iteration").to_numpy(), dtype=np.int64)
    timestamps = _float_column(table, "timestamp")
    values = {name: _float_column(table, column) for name, column in wanted.items()}
    reported = {
        name: np.asarray(pc.is_valid(table.column(column)).to_numpy(zero_copy_only=False))
        for name, column in wanted.items()
    }
    summaries = {summary.trial_id: summary for summary in store.trials(sweep_id)}
    trial_names, codes = np.unique(ids.astype(str), return_inverse=True)
    order = np.lexsort((iterations, codes))  # by trial, then iteration
    bounds = np.searchsorted(codes[order], np.arange(len(trial_names) + 1))
    trials = []
    for index, trial_id in enumerate(trial_names.tolist()):
        rows = order[bounds[index] : bounds[index + 1]]
        final: dict[str, float] = {}
        for objective in objectives:
            said = rows[reported[objective.metric][rows]]
            if len(said):
                value = float(values[objective.metric][said[-1]])
                if math.isfinite(value):
                    final[objective.metric] = value
        summary = summaries.get(trial_id)
        trials.append(
            TrialData(
                trial_id=trial_id,
                state=summary.status if summary else "running",
                config=joined_keys(summary.config) if summary else {},
                iterations=iterations[rows],
                timestamps=timestamps[rows],
                series={name: column[rows] for name, column in values.items()},
                final=final,
            )
        )
    trials.sort(key=lambda trial: (trial.started, trial.trial_id))
    return tuple(trials)


def _no_finished_message(data: ReportData) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(data.counts.items())) or "none"
    return (
        f"sweep {data.sweep_id!r} has no finished trial (state completed or stopped) with a "
        f"finite {data.primary.metric!r} to report on; its trials: {counts}"
    )


def _pareto(
    store: SweepStore, sweep_id: str, objectives: Sequence[Objective]
) -> ParetoResult | None:
    if len(objectives) < 2:
        return None
    pairs = [(o.metric, o.mode) for o in objectives[:MAX_OBJECTIVES]]
    try:
        return pareto_front(SweepFrame(store, sweep_id), pairs)
    except (NoResults, InvalidArgument):  # no trial with every objective finite and numeric
        return None


def _top_rows(data: ReportData, pareto: ParetoResult | None, top: int) -> tuple[TopRow, ...]:
    on_front = {point.trial_id for point in pareto.points} if pareto is not None else None
    rows = []
    for rank, trial in enumerate(data.ranked()[:top], start=1):
        reported = trial.series[data.primary.metric]
        said = np.flatnonzero(~np.isnan(reported))
        iteration = int(trial.iterations[said[-1]]) if len(said) else int(trial.iterations[-1])
        rows.append(
            TopRow(
                rank=rank,
                trial=trial,
                values=tuple(trial.final.get(o.metric) for o in data.objectives),
                iteration=iteration,
                on_front=None if on_front is None else trial.trial_id in on_front,
            )
        )
    return tuple(rows)


# ---------------------------------------------------------------------------- importances


def study_url(store: SweepStore, sweep_id: str, manifest: Mapping[str, Any]) -> str | None:
    """Where the sweep's Optuna study is: ``optuna.db`` in the sweep's directory of a local
    store, else the manifest's storage URL when it is usable as is (not password-redacted,
    not an SQLite file that is gone)."""
    root = store.root
    if isinstance(root, Path):
        local = root / sweep_id / "optuna.db"
        if local.is_file():
            return f"sqlite:///{local.resolve()}"
    recorded = manifest.get("optuna_storage")
    if not isinstance(recorded, str) or not recorded or ":***@" in recorded:
        return None
    if recorded.startswith("sqlite:///"):
        return recorded if Path(recorded.removeprefix("sqlite:///")).is_file() else None
    return recorded


def importances(
    store: SweepStore,
    sweep_id: str,
    manifest: Mapping[str, Any],
    objectives: Sequence[Objective],
    optuna_url: str | None = None,
) -> Importances:
    """fANOVA importances (seeded) of the searched parameters, per objective, from the
    sweep's Optuna study (study name = sweep id). A sweep without a study (population-based
    schedulers keep none) or with too few complete trials gets a note instead."""
    import optuna

    url = optuna_url or study_url(store, sweep_id, manifest)
    if url is None:
        return Importances(
            note="no Optuna study found for this sweep: no optuna.db in its directory and no "
            "usable storage URL in its manifest (population-based schedulers and subnet "
            "searches keep none; pass --optuna URL for a study stored elsewhere)"
        )
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ReportError(f"--optuna {url}: no such SQLite file")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=sweep_id, storage=url)
    except KeyError:
        return Importances(note=f"the Optuna storage holds no study named {sweep_id!r}")
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    complete = [
        trial
        for trial in trials
        if trial.state == optuna.trial.TrialState.COMPLETE and REPEAT_ATTR not in trial.user_attrs
    ]
    if len(complete) < 2:
        return Importances(
            study_trials=counts,
            note=f"importances need at least 2 complete trials in the study, it has "
            f"{len(complete)}",
        )
    scratch = optuna.create_study(directions=study.directions)
    scratch.add_trials(complete)
    found: dict[str, dict[str, float]] = {}
    for index, objective in enumerate(objectives[: len(study.directions)]):
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            found[objective.metric] = dict(
                optuna.importance.get_param_importances(
                    scratch, evaluator=evaluator, target=_target(index, len(study.directions))
                )
            )
        except (ValueError, RuntimeError) as error:
            return Importances(
                study_trials=counts, note=f"Optuna could not compute importances: {error}"
            )
    if not any(found.values()):
        return Importances(
            study_trials=counts,
            note="no parameter took more than one value in every complete trial",
        )
    return Importances(by_objective=found, study_trials=counts)


def _target(index: int, count: int) -> Any:
    if count == 1:
        return None

    def value(trial: Any) -> float:
        return float(trial.values[index])

    return value
