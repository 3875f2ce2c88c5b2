"""The arithmetic behind the ``morphtune_*`` search metrics, on per-trial facts.

:func:`morphtune._metrics_sweep.sweep_figures` reads a sweep into :class:`TrialFacts` and
calls these; ``docs/metrics.md`` documents each figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from morphtune._metrics_latency import Latency
from morphtune.hypervolume import hypervolume

__all__ = [
    "Objective",
    "SweepFigures",
    "TrialFacts",
    "compute_seconds",
    "hypervolume_figure",
    "saved_seconds",
    "trial_budget",
]


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "max" or "min"


@dataclass(frozen=True)
class TrialFacts:
    """What the figures need of one trial (from its rows and its latest status)."""

    trial_id: str
    state: str
    last_iteration: int | None  # highest stored iteration
    seconds: float | None  # last reported finite wall time (see TIME_METRICS)
    seconds_iteration: int | None  # the iteration that reported ``seconds``
    epochs: float | None  # the trial's own training.epochs, when its config has it
    objectives: tuple[float, ...] | None  # MO sweeps: values of the last row reporting all


@dataclass(frozen=True)
class SweepFigures:
    counts: dict[str, int]
    best: dict[str, float]  # objective metric -> best value (absent: none finite yet)
    hypervolume: float | None  # multi-objective sweeps with at least one point
    reference: dict[str, float]  # the hypervolume's reference point, per objective
    latency: Latency | None
    compute_seconds: float
    saved_seconds: float | None  # None: the sweep's epoch budget is unknown
    problems: tuple[str, ...] = field(default=())


def compute_seconds(trials: Sequence[TrialFacts]) -> float:
    """Sum over trials of their last reported wall time (trials reporting none add 0)."""
    return math.fsum(trial.seconds for trial in trials if trial.seconds is not None)


def trial_budget(trial: TrialFacts, epochs: int | None, max_t: int | None) -> float | None:
    """Iterations the trial would have run unstopped: its epochs (its own, else the
    spec's), capped by the scheduler's ``max_t``; None when none of them is known."""
    own = trial.epochs if trial.epochs is not None else epochs
    bounds = [float(bound) for bound in (own, max_t) if bound is not None]
    return min(bounds) if bounds else None


def saved_seconds(trials: Sequence[TrialFacts], epochs: int | None, max_t: int | None) -> float:
    """Estimated compute early stopping saved: over ``stopped`` trials,
    ``max(0, budget - last_iteration) * seconds / seconds_iteration``."""
    total = []
    for trial in trials:
        if (
            trial.state != "stopped"
            or trial.seconds is None
            or not trial.seconds_iteration
            or trial.last_iteration is None
        ):
            continue
        budget = trial_budget(trial, epochs, max_t)
        if budget is None:
            continue
        remaining = max(0.0, budget - trial.last_iteration)
        total.append(remaining * trial.seconds / trial.seconds_iteration)
    return math.fsum(total)


def hypervolume_figure(
    trials: Sequence[TrialFacts], objectives: Sequence[Objective]
) -> tuple[float | None, dict[str, float]]:
    """The hypervolume of the non-failed trials' last reports, and its reference point.

    Points: each non-failed trial's values in its last row reporting every objective (the
    API's GetParetoFront, scope "last"), trials with a non-finite value there left out.
    Reference: per objective, the worst value among those points (GetParetoFront's
    default), so it moves when a worse trial arrives; a point on the reference in some
    objective adds no volume. ``(None, {})`` while there is no point.
    """
    points = [
        trial.objectives
        for trial in trials
        if trial.state != "failed"
        and trial.objectives is not None
        and all(math.isfinite(value) for value in trial.objectives)
    ]
    if not points:
        return None, {}
    reference = {
        goal.metric: (max if goal.mode == "min" else min)(point[index] for point in points)
        for index, goal in enumerate(objectives)
    }
    corner = [reference[goal.metric] for goal in objectives]
    directions = [goal.mode for goal in objectives]
    return float(hypervolume([list(point) for point in points], corner, directions)), reference
