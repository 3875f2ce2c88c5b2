"""Compile a spec's search space into an Optuna define-by-run function.

The space is an ordered mapping from dotted trial keys (``training.lr``) to parameter
distributions. A parameter with a ``when`` condition is only suggested when every named
parent parameter took one of the listed values, so conditional knobs (growth factor only
when a growth operator is chosen) exist only where they mean something.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from morphtune.spec import CategoricalParam, FloatParam, IntParam

__all__ = ["DefineByRun", "active", "define_by_run", "suggest"]

SpaceParam = FloatParam | IntParam | CategoricalParam


def suggest(trial: optuna.Trial, name: str, param: SpaceParam) -> Any:
    """Draw one value for ``name`` from ``param`` through ``trial``."""
    if isinstance(param, FloatParam):
        return trial.suggest_float(name, param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return trial.suggest_int(name, param.low, param.high, step=param.step, log=param.log)
    return trial.suggest_categorical(name, param.choices)


def active(param: SpaceParam, chosen: Mapping[str, Any]) -> bool:
    """Whether a conditional parameter applies given the values chosen so far."""
    if not param.when:
        return True
    return all(
        parent in chosen and chosen[parent] in values for parent, values in param.when.items()
    )


class DefineByRun:
    """A picklable define-by-run function suggesting every active parameter, in order.

    (Tune saves the searcher with plain pickle for resume, so this cannot be a closure.)
    """

    def __init__(self, space: Mapping[str, SpaceParam]) -> None:
        self.items = list(space.items())

    def __call__(self, trial: optuna.Trial) -> None:
        chosen: dict[str, Any] = {}
        for name, param in self.items:
            if active(param, chosen):
                chosen[name] = suggest(trial, name, param)


def define_by_run(space: Mapping[str, SpaceParam]) -> Callable[[optuna.Trial], None]:
    """The define-by-run function for ``space`` (see :class:`DefineByRun`)."""
    return DefineByRun(space)
