"""The report's figures, drawn with matplotlib (Agg, no pyplot state) into PNG bytes.

Each function takes the gathered :class:`~morphtune.report._data.ReportData` and returns a
:class:`Chart`, or ``None`` when the sweep has nothing to draw for it (the page then says
why). The best trial (rank 1 of the top table) is drawn in red in every figure.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from morphtune.report._data import FINISHED_STATES, Objective, ReportData, SearchedParam, TrialData

__all__ = [
    "Chart",
    "compute_chart",
    "history_chart",
    "importance_chart",
    "parallel_chart",
    "pareto_chart",
    "timeline_chart",
]

BEST = "#d62728"
STATE_COLOURS = {"completed": "#1f77b4", "stopped": "#ff7f0e", "running": "#7f7f7f"}
OTHER = "#1f77b4"
DPI = 100
WIDTH_IN = 10.0


@dataclass(frozen=True)
class Chart:
    title: str
    alt: str
    png: bytes
    width: int  # pixels
    height: int


def _render(figure: Figure, title: str, alt: str) -> Chart:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    png = buffer.getvalue()
    # the IHDR chunk: width and height are the big-endian words at bytes 16-24
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return Chart(title, alt, png, width, height)


def _figure(rows: int, columns: int, row_height: float = 3.2) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(WIDTH_IN, max(row_height * rows, 2.5)), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, [axis for row in axes for axis in row]


def _arrow(objective: Objective) -> str:
    return f"{objective.metric} ({'higher' if objective.mode == 'max' else 'lower'} is better)"


# ---------------------------------------------------------------------------- history


def history_chart(data: ReportData) -> Chart:
    """Each trial's final objective value in start order, and the best so far."""
    objectives = data.objectives
    figure, axes = _figure(len(objectives), 1, row_height=3.0 if len(objectives) > 1 else 3.6)
    best_id = data.best.trial.trial_id
    for axis, objective in zip(axes, objectives, strict=True):
        _history_axis(axis, data.trials, objective, best_id)
    axes[-1].set_xlabel("trial, in the order it first reported")
    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(loc="best", fontsize="small")
    figure.suptitle(f"Optimisation history of {data.sweep_id}")
    return _render(
        figure,
        "Optimisation history",
        f"final {', '.join(o.metric for o in objectives)} of each trial in start order, "
        "with the best value so far",
    )


def _history_axis(
    axis: Axes, trials: Sequence[TrialData], objective: Objective, best_id: str
) -> None:
    running_best: float | None = None
    steps_x: list[float] = []
    steps_y: list[float] = []
    seen: set[str] = set()
    for order, trial in enumerate(trials, start=1):
        value = trial.final.get(objective.metric)
        if value is None:
            continue
        if trial.state == "failed":
            axis.scatter([order], [value], marker="x", color="black", label=_once("failed", seen))
            continue
        colour = STATE_COLOURS.get(trial.state, OTHER)
        axis.scatter([order], [value], color=colour, s=28, label=_once(trial.state, seen))
        if running_best is None or objective.better(value, running_best):
            running_best = value
        steps_x.append(order)
        steps_y.append(running_best)
        if trial.trial_id == best_id:
            best_label = _once(f"best: {best_id}", seen)
            axis.scatter(
                [order], [value], marker="*", s=220, color=BEST, zorder=5, label=best_label
            )
    if steps_x:
        axis.step(steps_x, steps_y, where="post", color="#2ca02c", label=_once("best so far", seen))
    axis.set_ylabel(_arrow(objective), fontsize="small")
    axis.grid(alpha=0.3)


def _once(label: str, seen: set[str]) -> str | None:
    """A legend label the first time it is used, ``None`` (no legend entry) after that."""
    if label in seen:
        return None
    seen.add(label)
    return label


# ----------------------------------------------------------------------------- pareto


def pareto_chart(data: ReportData) -> Chart | None:
    """Finished trials' final objective values, the non-dominated ones in red (the first
    objective against each of the others)."""
    if data.pareto is None:
        return None
    objectives = data.objectives[: len(data.pareto.objectives)]
    front = {point.trial_id: point.values for point in data.pareto.points}
    candidates = [
        trial
        for trial in data.trials
        if trial.state != "failed" and all(o.metric in trial.final for o in objectives)
    ]
    pairs = [(0, other) for other in range(1, len(objectives))]
    columns = min(len(pairs), 2)
    rows = math.ceil(len(pairs) / columns)
    figure, axes = _figure(rows, columns, row_height=4.2)
    for axis, (first, second) in zip(axes, pairs, strict=False):
        x_all = [t.final[objectives[second].metric] for t in candidates]
        y_all = [t.final[objectives[first].metric] for t in candidates]
        axis.scatter(x_all, y_all, color="#9e9e9e", s=24, label="dominated or off this plane")
        points = sorted((values[second], values[first]) for values in front.values())
        front_x, front_y = [p[0] for p in points], [p[1] for p in points]
        label = f"Pareto front ({len(points)})"
        axis.scatter(front_x, front_y, color=BEST, s=40, label=label, zorder=4)
        if len(objectives) == 2 and len(points) > 1:
            axis.plot(front_x, front_y, color=BEST, alpha=0.5)
        axis.set_xlabel(_arrow(objectives[second]), fontsize="small")
        axis.set_ylabel(_arrow(objectives[first]), fontsize="small")
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    for axis in axes[len(pairs) :]:
        axis.set_visible(False)
    figure.suptitle(
        f"Pareto front: {len(front)} of {data.pareto.candidates} candidates non-dominated, "
        f"hypervolume {data.pareto.hypervolume:.4g}"
    )
    return _render(
        figure,
        "Pareto front",
        "scatter of every trial's final objective values, non-dominated trials in red",
    )


# ------------------------------------------------------------------ parallel coordinates


@dataclass(frozen=True)
class _Axis:
    label: str
    positions: NDArray[np.float64]  # per trial, in [0, 1]; NaN: no value
    ticks: tuple[tuple[float, str], ...]


def _param_axis(param: SearchedParam, trials: Sequence[TrialData]) -> _Axis:
    raw = [param.value(trial.config) for trial in trials]
    if param.kind == "categorical" or any(isinstance(v, str) for v in raw if v is not None):
        labels = [_label(choice) for choice in param.choices]
        for value in raw:  # a value outside the declared choices still gets a place
            if value is not None and _label(value) not in labels:
                labels.append(_label(value))
        span = max(len(labels) - 1, 1)
        positions = np.array(
            [np.nan if v is None else labels.index(_label(v)) / span for v in raw], dtype=float
        )
        if len(labels) == 1:
            positions[~np.isnan(positions)] = 0.5
        ticks = tuple(
            ((index / span if len(labels) > 1 else 0.5), label)
            for index, label in enumerate(labels)
        )
        return _Axis(param.key, positions, ticks)
    numbers = np.array([_number(v) for v in raw], dtype=float)
    return _numeric_axis(param.key, numbers, log=param.log)


def _numeric_axis(label: str, values: NDArray[np.float64], *, log: bool = False) -> _Axis:
    finite = values[np.isfinite(values)]
    use_log = log and len(finite) > 0 and bool(np.all(finite > 0))
    scaled = np.log10(np.where(values > 0, values, np.nan)) if use_log else values
    present = scaled[np.isfinite(scaled)]
    if len(present) == 0:
        return _Axis(label, np.full(len(values), np.nan), ())
    low, high = float(present.min()), float(present.max())
    ticks: tuple[tuple[float, str], ...]
    if high > low:
        positions = (scaled - low) / (high - low)
        ticks = ((0.0, _label(finite.min())), (1.0, _label(finite.max())))
    else:
        positions = np.where(np.isfinite(scaled), 0.5, np.nan)
        ticks = ((0.5, _label(finite[0])),)
    return _Axis(label + (" (log)" if use_log else ""), positions, ticks)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return math.nan


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def parallel_chart(data: ReportData) -> Chart | None:
    """One line per ranked trial across the searched parameters and the objectives,
    coloured by the primary objective (brighter is better)."""
    trials = data.ranked()
    axes_data = [_param_axis(param, trials) for param in data.searched]
    for objective in data.objectives:
        values = np.array([t.final.get(objective.metric, math.nan) for t in trials], dtype=float)
        axes_data.append(_numeric_axis(objective.label, values))
    if len(axes_data) < 2 or not trials:
        return None
    primary = np.array([t.final[data.primary.metric] for t in trials], dtype=float)
    low, high = float(primary.min()), float(primary.max())
    norm = Normalize(vmin=low, vmax=high if high > low else low + 1.0)
    cmap = "viridis" if data.primary.mode == "max" else "viridis_r"
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    figure = Figure(figsize=(WIDTH_IN, 4.8), layout="constrained")
    axis = figure.subplots()
    xs = np.arange(len(axes_data), dtype=float)
    best_id = data.best.trial.trial_id
    order = sorted(range(len(trials)), key=lambda i: trials[i].trial_id == best_id)
    for index in order:  # the best trial last, on top
        ys = np.array([a.positions[index] for a in axes_data])
        is_best = trials[index].trial_id == best_id
        axis.plot(
            xs,
            ys,
            color=BEST if is_best else mappable.to_rgba(primary[index]),
            linewidth=3.0 if is_best else 1.2,
            alpha=1.0 if is_best else 0.75,
            marker="o",
            markersize=3,
            zorder=4 if is_best else 2,
            label=f"best: {best_id}" if is_best else None,
        )
    for x, axis_data in zip(xs, axes_data, strict=True):
        axis.axvline(x, color="black", linewidth=0.8)
        for position, text in axis_data.ticks:
            axis.annotate(
                text,
                (x, position),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize="x-small",
                va="center",
            )
    axis.set_xticks(xs, [a.label for a in axes_data], rotation=20, ha="right", fontsize="small")
    axis.set_yticks([])
    axis.set_ylim(-0.05, 1.05)
    axis.set_xlim(-0.2, len(axes_data) - 0.5)
    figure.legend(loc="outside lower left", fontsize="small")
    figure.colorbar(mappable, ax=axis, label=data.primary.label)
    figure.suptitle("Parallel coordinates of the searched parameters and the objectives")
    return _render(
        figure,
        "Parallel coordinates",
        "one line per trial through its searched parameter values and final objectives",
    )


# ------------------------------------------------------------------------- importances


def importance_chart(data: ReportData) -> Chart | None:
    """Horizontal bars of the fANOVA importances, one panel per objective."""
    found = {name: values for name, values in data.importances.by_objective.items() if values}
    if not found:
        return None
    longest = max(len(values) for values in found.values())
    figure, axes = _figure(1, len(found), row_height=max(2.2, 0.4 * longest + 1.2))
    for axis, (metric, values) in zip(axes, found.items(), strict=True):
        ordered = sorted(values.items(), key=lambda item: item[1])
        axis.barh(
            [name for name, _ in ordered], [value for _, value in ordered], height=0.6, color=OTHER
        )
        axis.set_xlabel(f"importance for {metric}", fontsize="small")
        axis.set_xlim(0, 1)
        axis.tick_params(axis="y", labelsize="small")
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle("Parameter importances (Optuna fANOVA on the sweep's study)")
    return _render(
        figure,
        "Parameter importances",
        "bar chart of each searched parameter's importance for each objective",
    )


# -------------------------------------------------------------------------- timelines


def timeline_chart(data: ReportData) -> Chart | None:
    """Each trial's width, depth, density, balance ratio (what it reported) against its
    optimizer step (sweeps from before steps were reported: against the iteration)."""
    signals = data.signals
    if not signals:
        return None
    columns = 2 if len(signals) > 1 else 1
    rows = math.ceil(len(signals) / columns)
    figure, axes = _figure(rows, columns, row_height=3.0)
    best_id = data.best.trial.trial_id
    by_step = data.timeline_x == "step"
    x_of = (lambda t: t.series["step"]) if by_step else (lambda t: t.iterations)
    x_label = "optimizer step (per worker)" if by_step else "iteration (reported epoch)"
    for axis, signal in zip(axes, signals, strict=False):
        _trial_lines(axis, data.trials, best_id, x_of, signal)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(signal, fontsize="medium")
        axis.set_xlabel(x_label, fontsize="small")
        axis.grid(alpha=0.3)
    for axis in axes[len(signals) :]:
        axis.set_visible(False)
    axes[0].legend(loc="best", fontsize="small")
    figure.suptitle("Per-trial timelines of the method signals")
    return _render(
        figure,
        "Timelines",
        f"{', '.join(signals)} of every trial against its {data.timeline_x}",
    )


def _trial_lines(
    axis: Axes,
    trials: Sequence[TrialData],
    best_id: str,
    x_of: Any,
    y_name: str,
) -> None:
    seen: set[str] = set()
    ordered = sorted(trials, key=lambda t: t.trial_id == best_id)  # best drawn last
    for trial in ordered:
        xs = np.asarray(x_of(trial), dtype=float)
        ys = trial.series[y_name]
        keep = np.isfinite(xs) & np.isfinite(ys)
        if not keep.any():
            continue
        is_best = trial.trial_id == best_id
        label = f"best: {best_id}" if is_best else _once("other trials", seen)
        style: dict[str, Any] = {
            "color": BEST if is_best else OTHER,
            "alpha": 1.0 if is_best else 0.45,
            "linewidth": 2.4 if is_best else 1.0,
            "zorder": 4 if is_best else 2,
            "label": label,
        }
        axis.plot(xs[keep], ys[keep], marker=".", **style)


# ----------------------------------------------------------------------------- compute


def compute_chart(data: ReportData) -> Chart | None:
    """The primary objective against the compute each trial had spent when it reported."""
    axes_names = data.compute_axes[:2]
    if not axes_names:
        return None
    metric = data.primary.metric
    trials = [t for t in data.trials if t.state != "failed"]
    figure, axes = _figure(1, len(axes_names), row_height=4.0)
    best_id = data.best.trial.trial_id
    for axis, name in zip(axes, axes_names, strict=True):
        _trial_lines(axis, trials, best_id, lambda t, n=name: t.series[n], metric)
        finals = [
            (t.series[name][np.isfinite(t.series[name])][-1], t.final[metric])
            for t in trials
            if t.state in FINISHED_STATES
            and metric in t.final
            and np.isfinite(t.series[name]).any()
        ]
        if finals:
            spent_x, quality_y = [x for x, _ in finals], [y for _, y in finals]
            axis.scatter(spent_x, quality_y, color="black", s=12, zorder=5, label="final report")
        spent = np.concatenate([t.series[name] for t in trials])
        spent = spent[np.isfinite(spent) & (spent > 0)]
        if len(spent) and spent.max() > 100 * spent.min():
            axis.set_xscale("log")
        axis.set_xlabel(f"{name} spent so far", fontsize="small")
        axis.set_ylabel(_arrow(data.primary), fontsize="small")
        axis.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    figure.suptitle("Quality against compute spent")
    return _render(
        figure,
        "Quality against compute",
        f"{metric} of every trial against {' and '.join(axes_names)} spent",
    )
