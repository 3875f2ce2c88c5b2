"""Optuna sampler factories, by name, from a spec's ``search.sampler`` section.

Every sampler that can learn from constraints (TPE, GP, NSGA-II, NSGA-III) is given the
sweep's ``constraints_func``: a configuration the pre-launch check found infeasible is
told to Optuna with its violations, so the sampler steers away from that region.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from morphtune.registry import Registry
from morphtune.spec import CategoricalParam, FloatParam, IntParam, SamplerSpec

__all__ = [
    "CONSTRAINT_ATTR",
    "SAMPLERS",
    "ConstraintValues",
    "SweepGridSampler",
    "grid_of",
    "make_sampler",
]

#: The Optuna user attribute holding a trial's constraint values (<= 0 is feasible).
CONSTRAINT_ATTR = "morphtune_constraints"


class ConstraintValues:
    """``constraints_func`` reading :data:`CONSTRAINT_ATTR` (a class: it must pickle)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, trial: FrozenTrial) -> Sequence[float]:
        values = trial.user_attrs.get(CONSTRAINT_ATTR)
        return [float(v) for v in values] if values else [0.0] * self.count


SamplerFactory = Callable[[SamplerSpec, "SamplerContext"], optuna.samplers.BaseSampler]


class SamplerContext:
    """What a sampler may need beyond its own section: the space and the constraints."""

    def __init__(self, space: Mapping[str, Any] | None = None, constraints: int = 0) -> None:
        self.space = dict(space or {})
        self.constraints = constraints

    @property
    def constraints_func(self) -> ConstraintValues | None:
        return ConstraintValues(self.constraints) if self.constraints else None


# No registration hint: SamplerSpec.name is a fixed Literal, so a new sampler needs a
# spec change too.
SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


def _given(spec: SamplerSpec, *names: str) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in names if getattr(spec, name) is not None}


@SAMPLERS.register("tpe")
def _tpe(spec: SamplerSpec, context: SamplerContext) -> optuna.samplers.BaseSampler:
    # multivariate + group model the joint and conditional (define-by-run) structure of
    # growth/sparsity knobs; Optuna still labels them experimental.
    options: dict[str, Any] = {"n_startup_trials": 4, "multivariate": True}
    options.update(_given(spec, "n_startup_trials", "multivariate", "constant_liar"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=spec.seed,
            group=bool(options["multivariate"]),
            constraints_func=context.constraints_func,
            **options,
        )


@SAMPLERS.register("random")
def _random(spec: SamplerSpec, context: SamplerContext) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=spec.seed)


@SAMPLERS.register("cmaes")
def _cmaes(spec: SamplerSpec, context: SamplerContext) -> optuna.samplers.BaseSampler:
    options = _given(spec, "n_startup_trials", "sigma0", "restart_strategy", "population_size")
    if "population_size" in options:
        options["popsize"] = options.pop("population_size")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # conditional or categorical knobs fall back to an independent (random) sampler
        return optuna.samplers.CmaEsSampler(
            seed=spec.seed, warn_independent_sampling=False, **options
        )


@SAMPLERS.register("gp")
def _gp(spec: SamplerSpec, context: SamplerContext) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(
            seed=spec.seed,
            constraints_func=context.constraints_func,
            **_given(spec, "n_startup_trials"),
        )


@SAMPLERS.register("nsga2")
def _nsga2(spec: SamplerSpec, context: SamplerContext) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIISampler(
            seed=spec.seed,
            constraints_func=context.constraints_func,
            **_given(spec, "population_size", "crossover_prob", "mutation_prob"),
        )


@SAMPLERS.register("nsga3")
def _nsga3(spec: SamplerSpec, context: SamplerContext) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIIISampler(
            seed=spec.seed,
            constraints_func=context.constraints_func,
            **_given(spec, "population_size", "crossover_prob", "mutation_prob"),
        )


@SAMPLERS.register("qmc")
def _qmc(spec: SamplerSpec, context: SamplerContext) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(
            seed=spec.seed, warn_independent_sampling=False, **_given(spec, "qmc_type", "scramble")
        )


def grid_of(space: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every value each searched parameter can take (floats need a step)."""
    grid: dict[str, list[Any]] = {}
    for key, param in space.items():
        if isinstance(param, CategoricalParam):
            grid[key] = list(param.choices)
        elif isinstance(param, IntParam):
            grid[key] = list(range(param.low, param.high + 1, param.step))
        elif isinstance(param, FloatParam) and param.step is not None:
            count = round((param.high - param.low) / param.step) + 1
            grid[key] = [round(param.low + i * param.step, 12) for i in range(count)]
        else:
            raise ValueError(f"search.space.{key}: the grid sampler needs discrete values")
    return grid


class SweepGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for an ask-and-tell searcher.

    Optuna's own ``after_trial`` calls ``study.stop()`` once every grid point has been
    tried; outside ``study.optimize`` that raises ``RuntimeError`` from inside
    ``study.tell``, so the last outcomes were lost and used-up grids proposed points again.
    Here ``after_trial`` does nothing, and the searcher asks :meth:`points_left` instead
    (``FINISHED`` once every point ended, wait while the last ones run).
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None

    def points_left(self, study: optuna.Study) -> tuple[int, int]:
        """``(never started, started but not finished)`` grid points of ``study``."""
        started: set[int] = set()
        finished: set[int] = set()
        for trial in study.get_trials(deepcopy=False):
            grid_id = trial.system_attrs.get("grid_id")
            if grid_id is None or not self._same_search_space(trial.system_attrs["search_space"]):
                continue
            (finished if trial.state.is_finished() else started).add(int(grid_id))
        total = len(self._all_grids)
        return total - len(started | finished), len(started - finished)


@SAMPLERS.register("grid")
def _grid(spec: SamplerSpec, context: SamplerContext) -> optuna.samplers.BaseSampler:
    return SweepGridSampler(grid_of(context.space), seed=spec.seed)


def make_sampler(
    spec: SamplerSpec, space: Mapping[str, Any] | None = None, constraints: int = 0
) -> optuna.samplers.BaseSampler:
    """The sampler ``spec`` names; ``space`` (the spec's search space) is needed by grid,
    ``constraints`` (how many limits the sweep has) by the constraint-aware samplers."""
    return SAMPLERS.get(spec.name)(spec, SamplerContext(space, constraints))
