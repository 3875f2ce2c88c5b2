"""Ray Tune trial schedulers (early stopping), by name, from ``search.scheduler``."""

from __future__ import annotations

from collections.abc import Callable

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from morphtune.registry import Registry
from morphtune.spec import SweepSpec

__all__ = ["SCHEDULERS", "make_scheduler"]

# No registration hint: SchedulerSpec.name is a fixed Literal, so a new scheduler needs a
# spec change too.
SCHEDULERS: Registry[Callable[[SweepSpec], TrialScheduler]] = Registry("scheduler")


@SCHEDULERS.register("asha")
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


@SCHEDULERS.register("fifo")
def _fifo(spec: SweepSpec) -> TrialScheduler:
    return FIFOScheduler()


def make_scheduler(spec: SweepSpec) -> TrialScheduler:
    return SCHEDULERS.get(spec.search.scheduler.name)(spec)
