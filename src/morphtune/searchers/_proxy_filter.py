"""Discard the bottom fraction of candidates before training, by a training-free proxy.

``ProxyFilteredSearch`` is the sweep's Optuna searcher with a gate in ``suggest``: each
configuration the sampler proposes is built (untrained) and scored with a proxy from
:data:`morphtune.methods.proxies.PROXIES` on one fixed training batch; after ``warmup``
candidates, one scoring below the ``fraction`` quantile of every score seen so far is
told to Optuna as PRUNED (so the sampler learns from it) and never becomes a Ray trial.
The proxy is the cheapest fidelity: milliseconds per candidate against a trial's seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from optuna.trial import TrialState

from morphtune.searchers._optuna_search import SafeOptunaSearch

__all__ = ["ProxyFilteredSearch", "ProxyScorer", "make_proxy_scorer"]

Scorer = Callable[[dict[str, Any]], float]


class ProxyScorer:
    """``scorer(config)``: the proxy of the untrained model a trial config builds, on the
    first ``batch_size`` training samples of the trial's dataset (loaded once, lazily).

    A class, not a closure: Tune pickles the searcher when it checkpoints the experiment;
    the loaded batches are dropped from the pickle and rebuilt on demand.
    """

    def __init__(self, spec: Any, proxy: str, batch_size: int) -> None:
        self.spec, self.proxy, self.batch_size = spec, proxy, batch_size
        self._batches: dict[str, tuple[Any, tuple[torch.Tensor, torch.Tensor]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_batches": {}}

    def _batch(self, dataset: dict[str, Any]) -> tuple[Any, tuple[torch.Tensor, torch.Tensor]]:
        from morphtune.data import load_dataset
        from morphtune.models import TaskShape

        key = repr(sorted(dataset.items()))
        if key not in self._batches:
            data = load_dataset(
                dataset["name"],
                seed=dataset["seed"],
                val_fraction=dataset["val_fraction"],
                **dataset["options"],
            )
            count = min(self.batch_size, len(data.train))  # type: ignore[arg-type]
            items = [data.train[i] for i in range(count)]
            inputs = torch.stack([x for x, _ in items])
            targets = torch.stack([torch.as_tensor(y) for _, y in items])
            self._batches[key] = (TaskShape.of(data), (inputs, targets))
        return self._batches[key]

    def __call__(self, config: dict[str, Any]) -> float:
        from morphtune.methods.proxies import score_proxies
        from morphtune.models import build_model, config_from_spec
        from morphtune.spec import resolve_trial_config

        trial = resolve_trial_config(self.spec, config)
        task, batch = self._batch(trial["dataset"])
        family = trial["model"]["family"]
        seed = int(trial["training"]["seed"])
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = build_model(family, config_from_spec(family, task, trial["model"]))
        return float(score_proxies(model, batch, [self.proxy], seed=seed)[self.proxy])


def make_proxy_scorer(spec: Any, proxy: str, batch_size: int) -> ProxyScorer:
    """The scorer :class:`ProxyFilteredSearch` gates candidates with."""
    return ProxyScorer(spec, proxy, batch_size)


class ProxyFilteredSearch(SafeOptunaSearch):
    """:class:`SafeOptunaSearch` that discards low-proxy candidates before training."""

    def __init__(
        self,
        *args: Any,
        scorer: Scorer,
        fraction: float,
        warmup: int = 4,
        max_rejections: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must satisfy 0 < fraction < 1, but got {fraction!r}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, but got {warmup!r}")
        self.scorer = scorer
        self.fraction = fraction
        self.warmup = warmup
        self.max_rejections = max_rejections
        self.scores: list[float] = []  # every candidate's score, kept or not
        self.filtered = 0

    def threshold(self) -> float:
        """The ``fraction`` quantile of the scores seen so far (lower order statistic)."""
        ordered = sorted(self.scores, key=lambda s: -math.inf if math.isnan(s) else s)
        return ordered[math.floor(self.fraction * (len(ordered) - 1))]

    def keeps(self, score: float) -> bool:
        if len(self.scores) <= self.warmup:
            return True
        return not math.isnan(score) and score >= self.threshold()

    def _propose(self, trial_id: str) -> dict[str, Any] | None:
        for attempt in range(self.max_rejections + 1):
            config = super()._propose(trial_id)
            if not isinstance(config, dict):
                return config
            score = self.scorer(config)
            self.scores.append(score)
            if attempt == self.max_rejections or self.keeps(score):
                return config
            # discarded before training: the sampler hears of it, Ray never does
            ot_trial = self._ot_trials.pop(trial_id)
            self.study.tell(ot_trial, None, state=TrialState.PRUNED)
            self.filtered += 1
        return None  # unreachable: the last attempt always returns
