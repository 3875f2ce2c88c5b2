"""Optuna sampler factories, by name, from a spec's ``search.sampler`` section."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from morphtune.spec import SamplerSpec

__all__ = ["SAMPLERS", "make_sampler"]


def _tpe(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    # multivariate + group model the joint and conditional (define-by-run) structure of
    # growth/sparsity knobs; Optuna still labels them experimental.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=spec.seed, n_startup_trials=spec.n_startup_trials, multivariate=True, group=True
        )


def _random(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=spec.seed)


SAMPLERS: dict[str, Callable[[SamplerSpec], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
}


def make_sampler(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    try:
        factory = SAMPLERS[spec.name]
    except KeyError:
        raise ValueError(f"unknown sampler {spec.name!r}; valid: {sorted(SAMPLERS)}") from None
    return factory(spec)
