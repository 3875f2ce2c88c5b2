"""Ray Tune trial schedulers (early stopping), by name, from ``search.scheduler``."""

from __future__ import annotations

from collections.abc import Callable

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from morphtune.spec import SweepSpec

__all__ = ["SCHEDULERS", "make_scheduler"]


def _asha(spec: SweepSpec) -> TrialScheduler:
    objective = spec.search.objective
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=objective.metric,
        mode=objective.direction,
        max_t=spec.training.epochs,
        grace_period=spec.search.scheduler.grace_period,
        reduction_factor=spec.search.scheduler.reduction_factor,
    )


def _fifo(spec: SweepSpec) -> TrialScheduler:
    return FIFOScheduler()


SCHEDULERS: dict[str, Callable[[SweepSpec], TrialScheduler]] = {"asha": _asha, "fifo": _fifo}


def make_scheduler(spec: SweepSpec) -> TrialScheduler:
    name = spec.search.scheduler.name
    try:
        factory = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; valid: {sorted(SCHEDULERS)}") from None
    return factory(spec)
