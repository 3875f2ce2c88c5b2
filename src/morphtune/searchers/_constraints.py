"""Pre-launch constraint checks: is a proposed configuration within the sweep's limits?

A trial's cost is known before it runs: the analytic params and FLOPs per sample of the
largest model it will train (the model after its last growth event), and the inference
latency of that model, measured here on an untrained copy. A configuration over a limit
never becomes a Ray trial: the searcher tells Optuna it is infeasible (its constraint
values, ``value - limit`` per limit, are what ``constraints_func`` reads), so the sampler
learns where the limits are.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ConstraintChecker", "TrialCost", "measure_latency", "measure_model_latency"]


@dataclass(frozen=True)
class TrialCost:
    """The cost a configuration will have: params, FLOPs per sample, latency (ms)."""

    params: float
    flops: float
    latency_ms: float | None = None

    def get(self, metric: str) -> float:
        value = getattr(self, metric)
        if value is None:
            raise ValueError(f"no {metric} was measured for this configuration")
        return float(value)


class ConstraintChecker:
    """``checker(config) -> (values, cost)``: one value per limit (``cost - limit``;
    feasible when every value <= 0) for a flat trial config (dotted keys).

    A class, not a closure: Tune pickles the searcher; loaded task shapes are dropped from
    the pickle and rebuilt on demand.
    """

    def __init__(self, spec: Any, limits: Mapping[str, float], latency_batch_size: int = 1):
        unknown = sorted(set(limits) - {"params", "flops", "latency_ms"})
        if unknown:
            raise ValueError(f"constraints: unknown limit(s) {unknown}")
        self.spec = spec
        self.limits = dict(limits)
        self.latency_batch_size = latency_batch_size
        self._tasks: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tasks": {}}

    @property
    def names(self) -> list[str]:
        return list(self.limits)

    def _task(self, dataset: Mapping[str, Any]) -> Any:
        from morphtune.data import load_dataset
        from morphtune.models import TaskShape

        key = repr(sorted(dataset.items()))
        if key not in self._tasks:
            data = load_dataset(
                dataset["name"],
                seed=dataset["seed"],
                val_fraction=dataset["val_fraction"],
                **dataset["options"],
            )
            self._tasks[key] = TaskShape.of(data)
        return self._tasks[key]

    def cost(self, config: Mapping[str, Any]) -> TrialCost:
        """The cost of the largest model the trial ``config`` trains."""
        from morphtune.flops import config_cost
        from morphtune.methods.growth import GrowthPlan
        from morphtune.models import config_from_spec
        from morphtune.spec import resolve_trial_config

        trial = resolve_trial_config(self.spec, dict(config))
        family = trial["model"]["family"]
        task = self._task(trial["dataset"])
        model_config = config_from_spec(family, task, trial["model"])
        for event in GrowthPlan.from_section(trial["growth"]).events:
            model_config = event.target(model_config)
        analytic = config_cost(family, model_config)
        latency = None
        if "latency_ms" in self.limits:
            latency = measure_latency(family, model_config, task, self.latency_batch_size)
        return TrialCost(float(analytic.params), float(analytic.flops), latency)

    def __call__(self, config: Mapping[str, Any]) -> tuple[list[float], TrialCost]:
        cost = self.cost(config)
        return [cost.get(metric) - limit for metric, limit in self.limits.items()], cost


def measure_latency(family: str, model_config: Any, task: Any, batch_size: int) -> float:
    """Latency (ms) of an untrained model of ``model_config`` (see
    :func:`measure_model_latency`)."""
    from morphtune.models import build_model

    return measure_model_latency(build_model(family, model_config), task, batch_size)


def measure_model_latency(
    model: torch.nn.Module, task: Any, batch_size: int, repeats: int = 5
) -> float:
    """Median wall milliseconds of one eval forward pass of ``model`` on a batch of
    ``batch_size`` zero inputs on its own device, after one warm-up pass."""
    device = next(model.parameters()).device
    shape = (batch_size, *task.input_shape)
    dtype = torch.long if task.task == "lm" else torch.float32
    inputs = torch.zeros(shape, dtype=dtype, device=device)
    was_training = model.training
    model.eval()
    timings = []
    try:
        with torch.inference_mode():
            model(inputs)
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                model(inputs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                timings.append((time.perf_counter() - started) * 1e3)
    finally:
        model.train(was_training)
    return statistics.median(timings)
