"""Optuna sampler factories, by name, from a spec's ``search.sampler`` section."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from morphtune.registry import Registry
from morphtune.spec import SamplerSpec

__all__ = ["SAMPLERS", "make_sampler"]

# No registration hint: SamplerSpec.name is a fixed Literal, so a new sampler needs a
# spec change too.
SAMPLERS: Registry[Callable[[SamplerSpec], optuna.samplers.BaseSampler]] = Registry("sampler")


@SAMPLERS.register("tpe")
def _tpe(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    # multivariate + group model the joint and conditional (define-by-run) structure of
    # growth/sparsity knobs; Optuna still labels them experimental.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=spec.seed, n_startup_trials=spec.n_startup_trials, multivariate=True, group=True
        )


@SAMPLERS.register("random")
def _random(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=spec.seed)


def make_sampler(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    return SAMPLERS.get(spec.name)(spec)
