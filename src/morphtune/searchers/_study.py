"""The sweep's Optuna study: where it is stored, warm starts, and crash reconciliation.

The study lives in an RDB storage (an SQLite file in the sweep's directory by default, so
optuna-dashboard can open it; PostgreSQL on a cluster) named after the sweep, so a driver
that crashed finds it again on resume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from morphtune.spec import CategoricalParam, FloatParam, IntParam, SweepSpec

__all__ = [
    "fail_orphans",
    "optuna_distributions",
    "optuna_storage",
    "storage_url",
    "warm_start_trials",
]

log = logging.getLogger(__name__)


def storage_url(spec: SweepSpec, directory: Path) -> str:
    """``storage.optuna`` when given, else an SQLite file in the sweep's directory."""
    if spec.storage.optuna:
        return spec.storage.optuna
    return f"sqlite:///{(directory / 'optuna.db').resolve()}"


def optuna_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage for ``url`` (SQLite waits for a lock instead of failing at once)."""
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 30}}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def optuna_distributions(space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every searched key (as the define-by-run space asks)."""
    out: dict[str, BaseDistribution] = {}
    for key, param in space.items():
        if isinstance(param, FloatParam):
            out[key] = FloatDistribution(param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, IntParam):
            out[key] = IntDistribution(param.low, param.high, log=param.log, step=param.step)
        elif isinstance(param, CategoricalParam):
            out[key] = CategoricalDistribution(param.choices)
    return out


def warm_start_trials(
    spec: SweepSpec, earlier: Iterable[Any], top_k: int | None = None
) -> list[optuna.trial.FrozenTrial]:
    """Optuna trials built from an earlier sweep's finished trials (store summaries):
    the searched keys of this spec that the earlier config has and that this space can
    take, and the earlier objective values when every one of them is finite."""
    distributions = optuna_distributions(spec.search.space)
    goals = spec.search.goals
    candidates = []
    for summary in earlier:
        if summary.status == "failed":
            continue
        values = [summary.metrics.get(goal.metric) for goal in goals]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            continue
        params, used = {}, {}
        for key, distribution in distributions.items():
            if key not in summary.config:
                continue
            value = summary.config[key]
            try:
                inside = distribution._contains(distribution.to_internal_repr(value))
            except (ValueError, TypeError):
                inside = False
            if inside:
                params[key], used[key] = value, distribution
        if params:
            candidates.append((values, params, used))
    primary = goals[0]
    candidates.sort(key=lambda c: c[0][0], reverse=primary.direction == "max")
    trials = []
    for values, params, used in candidates[:top_k]:
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions=used,
                values=[float(v) for v in values],
                user_attrs={"warm_start": True},
            )
        )
    return trials


def fail_orphans(study: optuna.Study, known_numbers: Iterable[int], reason: str) -> int:
    """Mark FAIL every RUNNING trial of ``study`` not in ``known_numbers`` (asked by a
    driver that crashed before it recorded the trial anywhere it can be resumed from)."""
    known = set(known_numbers)
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number in known:
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "failed_because", reason)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        count += 1
    if count:
        log.warning("marked %d orphaned Optuna trial(s) FAIL: %s", count, reason)
    return count
