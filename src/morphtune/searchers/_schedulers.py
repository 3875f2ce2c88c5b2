"""Ray Tune trial schedulers (early stopping, population training), by name, from
``search.scheduler``.

``asha``, ``hyperband`` and ``median`` stop poor trials on one objective; ``mo-asha``
promotes by non-dominated sorting over every objective (:mod:`._mo_asha`); ``pbt``
perturbs the searched hyper-parameters of a population; ``growth-pbt`` also grows or
prunes the copied model (:mod:`._growth_pbt`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)

from morphtune.registry import Registry
from morphtune.spec import CategoricalParam, IntParam, SweepSpec

__all__ = ["POPULATION_SCHEDULERS", "SCHEDULERS", "make_scheduler", "pbt_mutations", "tune_space"]

#: Schedulers that own the trial configs (Tune allows no search algorithm beside them).
POPULATION_SCHEDULERS = frozenset({"pbt", "growth-pbt"})

TIME_ATTR = "training_iteration"

# No registration hint: SchedulerSpec.name is a fixed Literal, so a new scheduler needs a
# spec change too.
SCHEDULERS: Registry[Callable[[SweepSpec], TrialScheduler]] = Registry("scheduler")


def _max_t(spec: SweepSpec) -> int:
    scheduler = spec.search.scheduler
    return scheduler.max_t if scheduler.max_t is not None else spec.training.epochs


def _primary(spec: SweepSpec) -> dict[str, Any]:
    objective = spec.search.objective
    return {"metric": objective.metric, "mode": objective.direction}


@SCHEDULERS.register("fifo")
def _fifo(spec: SweepSpec) -> TrialScheduler:
    return FIFOScheduler()


@SCHEDULERS.register("asha")
def _asha(spec: SweepSpec) -> TrialScheduler:
    scheduler = spec.search.scheduler
    return ASHAScheduler(
        time_attr=TIME_ATTR,
        max_t=_max_t(spec),
        grace_period=scheduler.grace,
        reduction_factor=scheduler.eta,
        **_primary(spec),
    )


@SCHEDULERS.register("hyperband")
def _hyperband(spec: SweepSpec) -> TrialScheduler:
    return HyperBandScheduler(
        time_attr=TIME_ATTR,
        max_t=_max_t(spec),
        reduction_factor=spec.search.scheduler.eta,
        **_primary(spec),
    )


@SCHEDULERS.register("median")
def _median(spec: SweepSpec) -> TrialScheduler:
    scheduler = spec.search.scheduler
    return MedianStoppingRule(
        time_attr=TIME_ATTR,
        grace_period=float(scheduler.grace),
        min_samples_required=scheduler.min_samples_required or 3,
        **_primary(spec),
    )


def _tune_domain(param: Any, *, grid: bool) -> Any:
    if isinstance(param, CategoricalParam):
        return list(param.choices) if grid else tune.choice(list(param.choices))
    if isinstance(param, IntParam):
        values = list(range(param.low, param.high + 1, param.step))
        return values if grid else tune.choice(values)
    if param.step is not None:
        return tune.quniform(param.low, param.high, param.step)
    if param.log:
        return tune.loguniform(param.low, param.high)
    return tune.uniform(param.low, param.high)


def tune_space(spec: SweepSpec) -> dict[str, Any]:
    """The search space as Tune distributions: the initial population of a PBT sweep."""
    return {key: _tune_domain(p, grid=False) for key, p in spec.search.space.items()}


def pbt_mutations(spec: SweepSpec) -> dict[str, Any]:
    """Tune ``hyperparam_mutations`` for the searched keys PBT may perturb
    (``scheduler.mutations``, default: every searched key)."""
    space = spec.search.space
    keys = spec.search.scheduler.mutations
    mutations: dict[str, Any] = {}
    for key in keys if keys is not None else list(space):
        mutations[key] = _tune_domain(space[key], grid=True)
    return mutations


def _pbt_options(spec: SweepSpec) -> dict[str, Any]:
    scheduler = spec.search.scheduler
    interval = scheduler.perturbation_interval
    if interval is None:
        interval = max(1, spec.training.epochs // 4)
    return {
        "time_attr": TIME_ATTR,
        "perturbation_interval": interval,
        "quantile_fraction": scheduler.quantile_fraction or 0.25,
        "resample_probability": (
            scheduler.resample_probability if scheduler.resample_probability is not None else 0.25
        ),
        "hyperparam_mutations": pbt_mutations(spec),
        "synch": bool(scheduler.synch),
        **_primary(spec),
    }


@SCHEDULERS.register("pbt")
def _pbt(spec: SweepSpec) -> TrialScheduler:
    options = _pbt_options(spec)
    if not options["hyperparam_mutations"]:
        # Tune's PBT insists on something to explore; with no searched key it only
        # exploits (copies the better trials), which custom_explore_fn expresses.
        options["custom_explore_fn"] = _keep_config
    return PopulationBasedTraining(**options)


def _keep_config(config: dict[str, Any]) -> dict[str, Any]:
    return config


@SCHEDULERS.register("growth-pbt")
def _growth_pbt(spec: SweepSpec) -> TrialScheduler:
    from morphtune.searchers._growth_pbt import GrowMove, GrowthPBT, PruneMove

    scheduler = spec.search.scheduler
    grow = prune = None
    if scheduler.grow is not None:
        grow = GrowMove(
            key=scheduler.grow.key,
            factor=scheduler.grow.factor,
            maximum=scheduler.grow.maximum,
            multiple_of=scheduler.grow.multiple_of,
            base=int(getattr(spec.model, scheduler.grow.key.split(".")[1])),
        )
    if scheduler.prune is not None:
        prune = PruneMove(
            factor=scheduler.prune.factor,
            minimum=scheduler.prune.minimum,
            base=spec.sparsity.density,
        )
    options = _pbt_options(spec)
    # the moves own their keys: the ordinary mutations leave them alone
    moved = {move.key for move in (grow, prune) if move is not None}
    mutations = options["hyperparam_mutations"]
    options["hyperparam_mutations"] = {k: v for k, v in mutations.items() if k not in moved}
    return GrowthPBT(
        grow=grow,
        prune=prune,
        move_probability=(
            scheduler.move_probability if scheduler.move_probability is not None else 0.5
        ),
        seed=spec.search.sampler.seed,
        **options,
    )


@SCHEDULERS.register("mo-asha")
def _mo_asha(spec: SweepSpec) -> TrialScheduler:
    from morphtune.searchers._mo_asha import MOASHAScheduler

    scheduler = spec.search.scheduler
    goals = spec.search.goals
    return MOASHAScheduler(
        metrics=[goal.metric for goal in goals],
        modes=[goal.direction for goal in goals],
        time_attr=TIME_ATTR,
        max_t=_max_t(spec),
        grace_period=scheduler.grace,
        reduction_factor=scheduler.eta,
    )


def make_scheduler(spec: SweepSpec) -> TrialScheduler:
    return SCHEDULERS.get(spec.search.scheduler.name)(spec)
