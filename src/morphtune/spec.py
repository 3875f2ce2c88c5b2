"""Sweep specification: YAML in, validated :class:`SweepSpec` out.

A sweep spec describes one search: the dataset, the base trial (model, training, growth
and sparsity sections), the search space over dotted paths into those sections, the
objective, sampler, scheduler, budget, resources and storage. Every problem is reported as
a :class:`SpecIssue` naming the field path, the YAML line, the offending value and the
rule, and all of them are raised together as one :class:`SpecError`.

Nothing here imports Ray. The method registries (growth operators, pruning methods,
layer distributions, model families, datasets) are consulted lazily, so that the names a
spec may use are always exactly the names that are registered.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from morphtune.store._schema import validate_sweep_id

__all__ = [
    "REPORTED_METRICS",
    "TRIAL_SECTIONS",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "LoggingSpec",
    "MLflowSpec",
    "SpecError",
    "SpecIssue",
    "SweepSpec",
    "flatten_config",
    "load_spec",
    "parse_spec",
    "resolve_trial_config",
]

#: Metrics every trial reports each epoch; an objective must name one of them.
REPORTED_METRICS: dict[str, str] = {
    "val_acc": "max",
    "val_loss": "min",
    "train_loss": "min",
    "params": "min",
    "nonzero_params": "min",
    "flops": "min",
    "train_flops": "min",
    "density": "min",
    "width": "min",
    "depth": "min",
    "growth_stage": "min",
    "wall_s": "min",
    "latency_ms": "min",  # inference on the trial's model, resources.latency_batch_size
    # supernet trials: the smallest subnet's accuracy (val_acc is the largest's)
    "val_acc_smallest": "max",
    # sparse GAN trials (model.family 'gan') report these instead of val_acc / val_loss
    "fd": "min",
    "modes": "max",
    "high_quality": "max",
    "balance_ratio": "max",
    "d_density": "min",
}

#: Metrics only a GAN trial reports, and metrics a GAN trial does not report.
GAN_METRICS = frozenset({"fd", "modes", "high_quality", "balance_ratio", "d_density"})
CLASSIFIER_METRICS = frozenset({"val_acc", "val_loss", "width", "depth", "growth_stage"})

#: The sections of a spec that make up one trial's configuration (and may be searched).
TRIAL_SECTIONS = ("dataset", "model", "training", "growth", "sparsity", "supernet")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _registered(kind: str) -> list[str]:
    """Names registered for one kind of pluggable part (imported lazily: they need torch)."""
    if kind == "dataset":
        from morphtune.data import DATASETS

        return sorted(DATASETS)
    if kind == "model":
        from morphtune.models import MODEL_FAMILIES

        return sorted(MODEL_FAMILIES)
    if kind == "growth":
        from morphtune.methods.growth import GROWTH_OPERATORS

        return ["none", *sorted(GROWTH_OPERATORS)]
    if kind == "sparsity":
        from morphtune.methods.sparsity import sparsity_methods

        return ["none", *sparsity_methods()]
    if kind == "proxy":
        from morphtune.methods.proxies import PROXIES

        return list(PROXIES)
    if kind == "structure":
        from morphtune.methods.sparsity import SPARSITY_STRUCTURES

        return sorted(SPARSITY_STRUCTURES)
    if kind == "distribution":
        from morphtune.methods.sparsity import LAYER_DISTRIBUTIONS

        return sorted(LAYER_DISTRIBUTIONS)
    raise KeyError(kind)


def _registered_name(kind: str) -> AfterValidator:
    """A validator accepting exactly the names registered for ``kind``."""

    def check(value: str) -> str:
        valid = _registered(kind)
        if value not in valid:
            raise ValueError(f"must be one of {valid}")
        return value

    return AfterValidator(check)


DatasetName = Annotated[str, _registered_name("dataset")]
ModelFamily = Annotated[str, _registered_name("model")]
GrowthOperatorName = Annotated[str, _registered_name("growth")]
SparsityMethodName = Annotated[str, _registered_name("sparsity")]
StructureName = Annotated[str, _registered_name("structure")]
ProxyName = Annotated[str, _registered_name("proxy")]
DistributionName = Annotated[str, _registered_name("distribution")]
SweepName = Annotated[str, AfterValidator(validate_sweep_id)]


class DatasetSpec(_Strict):
    name: DatasetName = "digits"
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(_Strict):
    """The model family and its size; fields a family does not use are ignored by it."""

    family: ModelFamily = "mlp"
    width: int = Field(64, ge=1, le=65536)
    depth: int = Field(2, ge=1, le=64)
    head_dim: int = Field(16, ge=1, le=4096)  # vit, gpt: width must be a multiple
    mlp_ratio: float = Field(4.0, gt=0.0, le=64.0)  # vit, gpt
    patch_size: int = Field(2, ge=1, le=1024)  # vit
    stages: int = Field(2, ge=1, le=8)  # cnn
    templates: int = Field(2, ge=1, le=64)  # mixture

    @model_validator(mode="after")
    def _heads_fit(self) -> ModelSpec:
        if self.family in ("vit", "gpt") and self.width % self.head_dim:
            raise ValueError(
                f"width must be a multiple of head_dim for family {self.family!r}, but got "
                f"width={self.width}, head_dim={self.head_dim}"
            )
        return self


class TrainingSpec(_Strict):
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    schedule: Literal["constant", "cosine"] = "cosine"
    seed: int = 0


class GrowthEventSpec(_Strict):
    """One explicit growth event: a time (``at_fraction`` or ``at_step``), an operator
    (default: the section's), and a target (``width``/``depth``, or factors)."""

    operator: GrowthOperatorName | None = None
    at_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    at_step: int | None = Field(None, ge=1)
    factor: float | None = Field(None, ge=1.0, le=16.0)
    depth_factor: float | None = Field(None, ge=1.0, le=8.0)
    width: int | None = Field(None, ge=1, le=65536)
    depth: int | None = Field(None, ge=1, le=256)

    @model_validator(mode="after")
    def _one_time(self) -> GrowthEventSpec:
        if (self.at_fraction is None) == (self.at_step is None):
            raise ValueError("give exactly one of at_fraction and at_step")
        if self.operator == "none":
            raise ValueError("an event's operator must be a growth operator, not 'none'")
        if (self.width is not None or self.depth is not None) and (
            self.factor is not None or self.depth_factor is not None
        ):
            raise ValueError("give a target (width/depth) or factors, not both")
        return self


class GrowthSpec(_Strict):
    """The growth plan: generated from the searchable knobs, or an explicit ``plan``.

    Generated: ``stages`` events of ``operator``, the last at ``at_fraction`` of the step
    budget (earlier ones evenly before it), each growing the width by ``factor`` and the
    depth by ``depth_factor``. ``timing: gstack`` places a single event by G_stack's
    formula instead of ``at_fraction``.
    """

    operator: GrowthOperatorName = "none"
    at_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    timing: Literal["fraction", "gstack"] = "fraction"
    stages: int = Field(1, ge=1, le=8)
    factor: float = Field(2.0, ge=1.0, le=16.0)
    depth_factor: float = Field(1.0, ge=1.0, le=8.0)
    noise: float = Field(0.0, ge=0.0, le=1.0)
    new_block: Literal["cancel", "zero"] = "cancel"
    placement: Literal["interleave", "stack"] = "interleave"
    coefficients: Literal["orthogonal", "copy", "zero", "random"] = "orthogonal"
    pattern: Literal["repeat", "interleave"] = "repeat"
    lr_after: Literal["continue", "lemon", "rewarm"] = "continue"
    warmup_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    plan: list[GrowthEventSpec] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _plan_rules(self) -> GrowthSpec:
        if self.plan:
            if self.operator == "none" and any(e.operator is None for e in self.plan):
                raise ValueError("plan events without an operator need growth.operator set")
            if self.timing == "gstack":
                raise ValueError("timing 'gstack' places a generated event; not with a plan")
        if self.timing == "gstack" and self.stages != 1:
            raise ValueError(f"timing 'gstack' places one event, but stages={self.stages}")
        return self


class SparsitySpec(_Strict):
    """Which weights to keep, how many, in which layers, and whether the mask moves.

    ``method`` is a pruning-at-init score (``random``, ``magnitude``, ``snip``, ``grasp``,
    ``synflow``, ``ntk_sap``), a during-training method (``gmp``, ``set``, ``rigl``), a
    sparse-GAN method (``gan_single``, ``gan_double``; family ``gan``) or ``none``.
    ``density`` is the kept fraction at the end (the generator's, for a GAN). Knobs a
    method does not use are ignored by it; ``None`` means the method's default.
    """

    method: SparsityMethodName = "none"
    density: float = Field(1.0, gt=0.0, le=1.0)
    distribution: DistributionName = "uniform"  # per-layer densities; local scope only
    erk_power: float = Field(1.0, ge=0.0, le=4.0)
    scope: Literal["local", "global"] = "local"
    structure: StructureName = "unstructured"
    # pruning at initialisation
    iterations: int | None = Field(None, ge=1, le=1000)
    schedule: Literal["exponential", "linear"] = "exponential"
    samples_per_class: int = Field(10, ge=1, le=1000)
    labels: Literal["supervised", "uniform"] = "supervised"
    init: Literal["default", "orthogonal"] = "default"
    isometry_steps: int = Field(0, ge=0, le=100_000)
    isometry_lr: float = Field(0.1, gt=0.0, le=10.0)
    temperature: float | None = Field(None, gt=0.0, le=1e6)
    epsilon: float | None = Field(None, gt=0.0, le=1.0)
    ntk_samples: int | None = Field(None, ge=1, le=100)
    float64: bool = False
    # during training (GMP, SET, RigL) and the sparse GAN's generator
    update_interval: int | None = Field(None, ge=1, le=10_000_000)
    drop_fraction: float | None = Field(None, gt=0.0, le=1.0)
    start_fraction: float | None = Field(None, ge=0.0, lt=1.0)
    end_fraction: float | None = Field(None, gt=0.0, le=1.0)
    anneal: Literal["cosine", "constant"] | None = None
    grow_init: Literal["zero", "random"] | None = None
    drop_rule: Literal["magnitude", "magnitude_sign"] | None = None  # SET
    # balanced sparse GAN training: the discriminator's density and its control band
    d_density: float = Field(0.5, gt=0.0, le=1.0)
    balance_lower: float = Field(0.45, ge=0.0, le=1.0)
    balance_upper: float = Field(0.55, ge=0.0, le=1.0)
    d_interval: int | None = Field(None, ge=1, le=10_000_000)
    d_step: float = Field(0.05, gt=0.0, le=0.5)
    d_cap: float = Field(1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> SparsitySpec:
        if self.balance_lower >= self.balance_upper:
            raise ValueError(
                "balance_lower < balance_upper must hold, but got "
                f"balance_lower={self.balance_lower}, balance_upper={self.balance_upper}"
            )
        start, end = self.start_fraction, self.end_fraction
        if start is not None and end is not None and start >= end:
            raise ValueError(
                "start_fraction < end_fraction must hold, but got "
                f"start_fraction={start}, end_fraction={end}"
            )
        return self


class SupernetSpec(_Strict):
    """Train a weight-sharing supernet instead of one model (METHODS §5).

    ``model`` gives the largest subnet; the choices below span the subnets it holds:
    ``width_choices`` are fractions of ``model.width`` (hidden units, channels),
    ``depth_choices`` block/layer counts (per stage for a cnn), ``kernel_choices`` the
    cnn's kernel sizes, ``heads_choices`` / ``mlp_ratio_choices`` the vit's. Each step
    trains the largest subnet on the labels and ``n_random`` more (plus the smallest,
    with ``sampling: sandwich``; nested SortedNet sub-models with ``nested``) on the
    largest's detached soft labels, weighted by ``kd_weight`` at ``temperature``.
    """

    enabled: bool = False
    width_choices: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75, 1.0], min_length=1, max_length=16
    )
    depth_choices: list[int] | None = Field(None, min_length=1, max_length=16)
    kernel_choices: list[int] = Field(default_factory=lambda: [3], min_length=1, max_length=4)
    heads_choices: list[int] | None = Field(None, min_length=1, max_length=16)
    mlp_ratio_choices: list[float] | None = Field(None, min_length=1, max_length=8)
    sampling: Literal["sandwich", "nested"] = "sandwich"
    n_random: int = Field(2, ge=0, le=16)
    kd_weight: float = Field(1.0, ge=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0, le=100.0)
    recalibration_batches: int = Field(8, ge=1, le=1000)

    @field_validator("width_choices")
    @classmethod
    def _fractions(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0.0 < value <= 1.0:
                raise ValueError(
                    f"every width choice is a fraction of model.width in (0, 1], but got {value}"
                )
        return values

    @field_validator("depth_choices", "kernel_choices", "heads_choices")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        for value in values or []:
            if value < 1:
                raise ValueError(f"choices must be positive integers, but got {value}")
        return values


_SECTION_MODELS: dict[str, type[_Strict]] = {
    "dataset": DatasetSpec,
    "model": ModelSpec,
    "training": TrainingSpec,
    "growth": GrowthSpec,
    "sparsity": SparsitySpec,
    "supernet": SupernetSpec,
}

Scalar = bool | int | float | str


class _Param(_Strict):
    when: dict[str, list[Scalar]] | None = None


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step and log cannot both be set")
        return self

    def candidates(self) -> list[Scalar]:
        return [self.low, self.high]


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step must be 1 when log is true")
        return self

    def candidates(self) -> list[Scalar]:
        return [self.low, self.high]


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Scalar]) -> list[Scalar]:
        if len({(type(c), c) for c in choices}) != len(choices):
            raise ValueError(f"choices must be distinct, but got {choices}")
        return choices

    def candidates(self) -> list[Scalar]:
        return list(self.choices)


def _check_bounds(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"low and high must be finite, but got low={low}, high={high}")
    if low > high:
        raise ValueError(f"low <= high must hold, but got low={low}, high={high}")
    if log and low <= 0:
        raise ValueError(f"low > 0 must hold when log is true, but got low={low}")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class Objective(_Strict):
    metric: str = "val_acc"
    mode: Literal["max", "min"] | None = None

    @field_validator("metric")
    @classmethod
    def _reported(cls, value: str) -> str:
        if value not in REPORTED_METRICS:
            raise ValueError(f"must be a reported metric {sorted(REPORTED_METRICS)}, got {value!r}")
        return value

    @property
    def direction(self) -> str:
        return self.mode or REPORTED_METRICS[self.metric]


#: Which sampler each optional sampler knob applies to (a knob set for another sampler is
#: an error, not silently ignored).
SAMPLER_KNOBS: dict[str, tuple[str, ...]] = {
    "n_startup_trials": ("tpe", "gp", "cmaes"),
    "multivariate": ("tpe",),
    "constant_liar": ("tpe",),
    "population_size": ("nsga2", "nsga3", "cmaes"),
    "crossover_prob": ("nsga2", "nsga3"),
    "mutation_prob": ("nsga2", "nsga3"),
    "qmc_type": ("qmc",),
    "scramble": ("qmc",),
    "sigma0": ("cmaes",),
    "restart_strategy": ("cmaes",),
}

#: Samplers that take several objectives (CMA-ES optimises one).
MULTI_OBJECTIVE_SAMPLERS = frozenset({"tpe", "gp", "nsga2", "nsga3", "qmc", "random", "grid"})


def _misplaced_knobs(
    section: SamplerSpec | SchedulerSpec, table: Mapping[str, tuple[str, ...]]
) -> list[tuple[str, Any, str]]:
    """``(knob, value, rule)`` for each knob set on ``section`` that its ``name`` (the
    chosen sampler or scheduler) does not take."""
    name = section.name
    wrong = []
    for knob, users in table.items():
        value = getattr(section, knob)
        if knob in section.model_fields_set and value is not None and name not in users:
            wrong.append((knob, value, f"{knob} applies to {list(users)}, not to {name!r}"))
    return wrong


class SamplerSpec(_Strict):
    """Optuna sampler and its options; a knob exists only for the samplers it applies to
    (:data:`SAMPLER_KNOBS`)."""

    name: Literal["tpe", "cmaes", "gp", "nsga2", "nsga3", "qmc", "random", "grid"] = "tpe"
    seed: int | None = None
    n_startup_trials: int | None = Field(None, ge=0, le=10_000)
    multivariate: bool | None = None
    constant_liar: bool | None = None
    population_size: int | None = Field(None, ge=2, le=100_000)
    crossover_prob: float | None = Field(None, ge=0.0, le=1.0)
    mutation_prob: float | None = Field(None, ge=0.0, le=1.0)
    qmc_type: Literal["sobol", "halton"] | None = None
    scramble: bool | None = None
    sigma0: float | None = Field(None, gt=0.0, le=1e6)
    restart_strategy: Literal["ipop", "bipop"] | None = None


#: Which scheduler each optional scheduler knob applies to.
SCHEDULER_KNOBS: dict[str, tuple[str, ...]] = {
    "grace_period": ("asha", "mo-asha", "median"),
    "reduction_factor": ("asha", "hyperband", "mo-asha"),
    "max_t": ("asha", "hyperband", "mo-asha"),
    "min_samples_required": ("median",),
    "perturbation_interval": ("pbt", "growth-pbt"),
    "quantile_fraction": ("pbt", "growth-pbt"),
    "resample_probability": ("pbt", "growth-pbt"),
    "mutations": ("pbt", "growth-pbt"),
    "grow": ("growth-pbt",),
    "prune": ("growth-pbt",),
    "move_probability": ("growth-pbt",),
    "synch": ("pbt", "growth-pbt"),
}

#: Schedulers that rank trials by one objective.
SINGLE_OBJECTIVE_SCHEDULERS = frozenset({"asha", "hyperband", "median", "pbt", "growth-pbt"})


class GrowMoveSpec(_Strict):
    """growth-pbt explore move: ``key`` times ``factor`` (rounded up to a multiple of
    ``multiple_of``, at most ``maximum``), applied with a function-preserving grow."""

    key: Literal["model.width", "model.depth"] = "model.width"
    factor: float = Field(1.5, gt=1.0, le=16.0)
    maximum: int = Field(ge=1, le=65536)
    multiple_of: int = Field(1, ge=1, le=4096)


class PruneMoveSpec(_Strict):
    """growth-pbt explore move: ``sparsity.density`` times ``factor``, at least
    ``minimum``, applied by pruning to the new density and regrowing from there."""

    factor: float = Field(0.7, gt=0.0, lt=1.0)
    minimum: float = Field(0.05, gt=0.0, le=1.0)


class SchedulerSpec(_Strict):
    """Tune trial scheduler (early stopping / population training) and its options; a
    knob exists only for the schedulers it applies to (:data:`SCHEDULER_KNOBS`)."""

    name: Literal["fifo", "asha", "hyperband", "median", "pbt", "growth-pbt", "mo-asha"] = "asha"
    grace_period: int | None = Field(None, ge=1, le=1_000_000)
    reduction_factor: float | None = Field(None, gt=1.0, le=100.0)
    max_t: int | None = Field(None, ge=1, le=1_000_000)
    min_samples_required: int | None = Field(None, ge=1, le=10_000)
    perturbation_interval: int | None = Field(None, ge=1, le=1_000_000)
    quantile_fraction: float | None = Field(None, gt=0.0, le=0.5)
    resample_probability: float | None = Field(None, ge=0.0, le=1.0)
    mutations: list[str] | None = Field(None, max_length=64)
    grow: GrowMoveSpec | None = None
    prune: PruneMoveSpec | None = None
    move_probability: float | None = Field(None, ge=0.0, le=1.0)
    synch: bool | None = None

    @model_validator(mode="after")
    def _applicable(self) -> SchedulerSpec:
        if self.name == "growth-pbt" and self.grow is None and self.prune is None:
            raise ValueError("growth-pbt needs a grow move, a prune move or both")
        return self

    # effective values (the field when set, else the scheduler's default)
    @property
    def grace(self) -> int:
        return self.grace_period if self.grace_period is not None else 2

    @property
    def eta(self) -> float:
        if self.reduction_factor is not None:
            return self.reduction_factor
        return 3.0 if self.name in ("hyperband", "mo-asha") else 2.0


class ProxyFilterSpec(_Strict):
    """Discard the bottom ``fraction`` of proposed configurations by a training-free
    proxy (``ntk_cond``, ``naswot``, ``synflow``, ``params``, ``flops``) before training,
    after ``warmup`` candidates; the proxy scores one batch of ``batch_size`` samples."""

    proxy: ProxyName
    fraction: float = Field(0.5, gt=0.0, lt=1.0)
    warmup: int = Field(4, ge=1, le=10_000)
    batch_size: int = Field(64, ge=2, le=4096)


class ConstraintsSpec(_Strict):
    """Hard limits a configuration must meet, checked before it launches: analytic params
    and FLOPs per sample (``morphtune.flops``), and latency measured on the untrained model
    (``latency_batch_size`` samples, CPU, median of a few runs). An infeasible
    configuration never becomes a trial, and the sampler is told it is infeasible."""

    max_params: int | None = Field(None, ge=1)
    max_flops: float | None = Field(None, gt=0.0)
    max_latency_ms: float | None = Field(None, gt=0.0)
    latency_batch_size: int = Field(1, ge=1, le=4096)

    def limits(self) -> dict[str, float]:
        """``{metric: limit}`` for the limits that are set (metric as trials report it)."""
        named = {"params": self.max_params, "flops": self.max_flops}
        named["latency_ms"] = self.max_latency_ms
        return {metric: float(limit) for metric, limit in named.items() if limit is not None}


class WarmStartSpec(_Strict):
    """Seed a new sweep with an earlier sweep's finished trials (from the results store):
    the sampler starts from their configurations and values instead of from nothing."""

    sweep: SweepName
    results: str | None = None  # default: this spec's storage.results
    top_k: int | None = Field(None, ge=1, le=100_000)  # only the best k (default: all)


class SearchSpec(_Strict):
    objective: Objective = Field(default_factory=Objective)
    objectives: list[Objective] | None = Field(None, min_length=1, max_length=4)
    constraints: ConstraintsSpec = Field(default_factory=ConstraintsSpec)
    proxy_filter: ProxyFilterSpec | None = None
    space: dict[str, Param] = Field(default_factory=dict)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    num_samples: int = Field(12, ge=1, le=100_000)
    max_concurrent: int = Field(2, ge=1, le=4096)
    time_budget_s: float | None = Field(None, gt=0.0, le=1e8)
    warm_start: WarmStartSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_way_to_say_objectives(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("objectives") is not None:
            objectives = data["objectives"]
            if isinstance(objectives, list) and objectives:
                if "objective" in data and data["objective"] != objectives[0]:
                    raise ValueError(
                        "give search.objective (one) or search.objectives (several), not "
                        "both (objective may only repeat objectives[0])"
                    )
                return {**data, "objective": objectives[0]}
        return data

    @model_validator(mode="after")
    def _distinct_objectives(self) -> SearchSpec:
        metrics = [goal.metric for goal in self.goals]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives must name distinct metrics, but got {metrics}")
        return self

    @property
    def goals(self) -> list[Objective]:
        """Every objective, the primary (``objective``) first."""
        return list(self.objectives) if self.objectives else [self.objective]

    @property
    def multi_objective(self) -> bool:
        return len(self.goals) > 1


class ResourcesSpec(_Strict):
    """Per-trial resources. ``executor``: ``train`` runs each trial as a Ray Train
    TorchTrainer job (DDP over ``num_workers``); ``function`` runs a single-worker trial
    inside its Tune actor (no worker group to start; needed by PBT, whose exploit restores
    Tune checkpoints); ``auto`` is ``function`` for one worker and ``train`` otherwise.

    GPU knobs: ``use_gpu`` (one GPU per worker) or ``gpus_per_worker`` (a fraction <= 1,
    so trials share a GPU, or a whole number); ``precision`` ``bf16`` runs forward passes
    under ``torch.autocast`` to bfloat16 (CUDA on a GPU trial, the CPU's autocast on a CPU
    trial); ``pin_memory`` pins the DataLoaders' host batches for asynchronous copies to the
    GPU (``auto``: on for a GPU trial); ``backend`` is the DDP process group's
    (``auto``: ``nccl`` on GPUs, ``gloo`` on CPUs and where a trial's workers hold fractions
    of GPUs, since NCCL refuses two ranks on one GPU)."""

    num_workers: int = Field(1, ge=1, le=4096)
    cpus_per_worker: float = Field(1.0, gt=0.0, le=1024)
    use_gpu: bool = False
    gpus_per_worker: float | None = Field(None, gt=0.0, le=64)
    max_failures: int = Field(0, ge=0, le=100)
    executor: Literal["auto", "train", "function"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    pin_memory: bool | Literal["auto"] = "auto"
    backend: Literal["auto", "nccl", "gloo"] = "auto"

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpu_amount(cls, amount: float | None) -> float | None:
        if amount is not None and amount > 1 and amount != int(amount):
            raise ValueError(f"must be a fraction <= 1 or a whole number, but got {amount}")
        return amount

    @field_validator("pin_memory", mode="before")
    @classmethod
    def _pin_choice(cls, value: object) -> object:
        # only the three documented values: pydantic's bool would also take 'yes', 'on', 1
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError(f"must be auto, true or false, but got {value!r}")

    @field_validator("pin_memory")
    @classmethod
    def _pin_needs_gpu(cls, value: bool | str, info: ValidationInfo) -> bool | str:
        if value is True and _has_no_gpu(info.data):
            raise ValueError(
                "pin_memory true pins host batches for copies to a GPU, but the trial has no "
                "GPU (use_gpu false, gpus_per_worker unset); set use_gpu or gpus_per_worker, "
                "or use pin_memory auto or false"
            )
        return value

    @field_validator("backend")
    @classmethod
    def _backend_needs_gpu(cls, value: str, info: ValidationInfo) -> str:
        if value != "nccl":
            return value
        if _has_no_gpu(info.data):
            raise ValueError(
                "backend nccl runs collectives on CUDA devices, but the trial has no GPU "
                "(use_gpu false, gpus_per_worker unset); set use_gpu or gpus_per_worker, "
                "or use backend auto or gloo"
            )
        if _shares_a_gpu(info.data):
            raise ValueError(
                "backend nccl refuses two ranks on one GPU, and workers of "
                f"gpus_per_worker={info.data['gpus_per_worker']} < 1 with num_workers="
                f"{info.data['num_workers']} can share one; use whole GPUs per worker, "
                "one worker, or backend auto or gloo"
            )
        return value

    @model_validator(mode="after")
    def _one_worker_in_process(self) -> ResourcesSpec:
        if self.executor == "function" and self.num_workers > 1:
            raise ValueError(
                "executor 'function' runs one worker per trial, but num_workers="
                f"{self.num_workers}; use 'train' (or 'auto') for multi-worker trials"
            )
        return self

    @property
    def gpus(self) -> float:
        """GPUs per worker (0 on CPU)."""
        return _requested_gpus({"use_gpu": self.use_gpu, "gpus_per_worker": self.gpus_per_worker})

    @property
    def in_process(self) -> bool:
        """Whether trials run inside their Tune actor (the ``function`` executor)."""
        return self.executor == "function" or (self.executor == "auto" and self.num_workers == 1)

    @property
    def resolved_backend(self) -> str:
        """The DDP backend a ``train`` trial's workers use: ``nccl`` or ``gloo``."""
        if self.backend != "auto":
            return self.backend
        fields = {"num_workers": self.num_workers, "gpus_per_worker": self.gpus_per_worker}
        return "nccl" if self.gpus > 0 and not _shares_a_gpu(fields) else "gloo"

    @property
    def resolved_pin_memory(self) -> bool:
        """Whether the trial's DataLoaders pin host memory (``auto``: a GPU trial)."""
        if self.pin_memory == "auto":
            return self.gpus > 0
        return bool(self.pin_memory)


def _requested_gpus(fields: Mapping[str, Any]) -> float:
    """GPUs per worker that ``use_gpu``/``gpus_per_worker`` ask for (0: a CPU trial)."""
    amount = fields.get("gpus_per_worker")
    if amount is not None:
        return float(amount)
    return 1.0 if fields.get("use_gpu") else 0.0


def _shares_a_gpu(fields: Mapping[str, Any]) -> bool:
    """Whether workers of one trial may be packed onto one GPU (a fraction per worker and
    more than one worker): NCCL cannot run there, gloo can (it stages CUDA tensors)."""
    amount = fields.get("gpus_per_worker")
    return amount is not None and amount < 1 and fields.get("num_workers", 1) > 1


def _has_no_gpu(fields: Mapping[str, Any]) -> bool:
    """Whether the validated ``fields`` surely ask for no GPU (a GPU field that failed its
    own validation is missing from them, and is reported already: no second error)."""
    complete = "use_gpu" in fields and "gpus_per_worker" in fields
    return complete and _requested_gpus(fields) == 0


SUBNET_METRICS: dict[str, str] = {
    "val_acc": "max",
    "params": "min",
    "flops": "min",
    "latency_ms": "min",
}


class SubnetObjective(_Strict):
    metric: Literal["val_acc", "params", "flops", "latency_ms"]
    mode: Literal["max", "min"] | None = None

    @property
    def direction(self) -> str:
        return self.mode or SUBNET_METRICS[self.metric]


class SubnetSearchSpec(_Strict):
    """After a supernet sweep: search subnets of the best trial's supernet on its shared
    weights (batches scored as Ray tasks), stored as the sweep ``<name>-subnets``."""

    num_subnets: int = Field(48, ge=1, le=100_000)
    batch_size: int = Field(8, ge=1, le=1024)
    sampler: Literal["nsga2", "tpe"] = "nsga2"
    seed: int = 0
    objectives: list[SubnetObjective] = Field(
        default_factory=lambda: [
            SubnetObjective(metric="val_acc"),
            SubnetObjective(metric="params"),
        ],
        min_length=1,
        max_length=4,
    )
    constraints: dict[Literal["params", "flops", "latency_ms"], float] = Field(default_factory=dict)
    candidates: list[dict[str, Scalar]] = Field(default_factory=list, max_length=1000)

    @field_validator("constraints")
    @classmethod
    def _positive_limits(cls, values: dict[str, float]) -> dict[str, float]:
        for name, limit in values.items():
            if not limit > 0:
                raise ValueError(f"constraint {name} must be a limit > 0, but got {limit}")
        return values


class StorageSpec(_Strict):
    """Where results go and where the Optuna study lives. ``results`` is a directory or a
    filesystem URI (``s3://bucket/prefix``, ``gs://...``); with an object store the driver
    keeps its working state (Tune's experiment and checkpoints, the SQLite study) under the
    local directory ``work``. ``optuna`` is an SQLAlchemy URL (``sqlite:///path.db``,
    ``postgresql://user@host/db``); by default an SQLite file ``optuna.db`` in the sweep's
    local directory (optuna-dashboard opens it)."""

    results: str = "./morphtune-results"
    work: str | None = None
    optuna: str | None = None

    @field_validator("work")
    @classmethod
    def _local_directory(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "://" in value):
            raise ValueError(
                "must be a local directory path (the driver's working state: Tune's "
                "experiment, checkpoints and the SQLite study need real files)"
            )
        return value

    @field_validator("optuna")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split(":", 1)[0]
        allowed = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql")
        if "://" not in value or scheme not in allowed:
            raise ValueError(
                f"must be a database URL with a scheme in {list(allowed)} "
                "(e.g. sqlite:///optuna.db or postgresql://user@host:5432/db)"
            )
        return value


#: The Python module each logger needs where the sweep's driver runs, and what to install.
LOGGER_PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboardX", "tensorboardX"),
    "mlflow": ("mlflow", "mlflow-skinny (or mlflow)"),
}

#: URI schemes an MLflow tracking URI may have (a database scheme may name a driver:
#: ``postgresql+psycopg2``); ``databricks`` may also stand alone.
MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")


class MLflowSpec(_Strict):
    """Log every trial as one MLflow run (Ray Tune's ``MLflowLoggerCallback``, run on the
    sweep's driver): its searched config as params, every reported metric per iteration.

    ``tracking_uri`` defaults to ``$MLFLOW_TRACKING_URI`` when set, else an SQLite file
    ``mlflow.db`` in the sweep's results directory; ``experiment`` defaults to the sweep
    id. Credentials belong in MLflow's environment variables (``MLFLOW_TRACKING_TOKEN``,
    ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``), never in the spec: the spec is stored in
    the sweep's manifest and served with it.
    """

    tracking_uri: str | None = Field(None, min_length=1, max_length=2048)
    experiment: str | None = Field(None, min_length=1, max_length=500)
    tags: dict[str, str] = Field(default_factory=dict, max_length=64)

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri(cls, value: str | None) -> str | None:
        if value is None or value == "databricks":
            return value
        scheme, separator, _ = value.partition("://")
        if not separator or scheme.split("+", 1)[0] not in MLFLOW_SCHEMES:
            raise ValueError(
                f"must be a tracking URI with a scheme in {list(MLFLOW_SCHEMES)} (e.g. "
                "sqlite:///mlflow.db or http://mlflow.example:5000), not a bare path"
            )
        try:
            password = urlsplit(value).password
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise ValueError(f"is not a valid URI: {exc}") from None
        if password is not None:
            raise ValueError(
                "must not hold a password (the spec is stored in the sweep's manifest): "
                "give it in MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN instead"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, text in tags.items():
            if not 0 < len(key) <= 250 or key.startswith("mlflow."):
                raise ValueError(
                    "tag keys must be 1 to 250 characters and not start with 'mlflow.' "
                    f"(MLflow reserves it), but got {key!r}"
                )
            if len(text) > 5000:
                raise ValueError(f"tag values must be at most 5000 characters ({key!r} has more)")
        return tags


class LoggingSpec(_Strict):
    """Where trial results go besides the results store, through Ray Tune's logger
    callbacks: ``tensorboard`` (event files in each trial's directory under
    ``<results>/<sweep id>/tune/``) and ``mlflow`` (one run per trial). Each needs its
    package importable where the sweep's driver runs (:data:`LOGGER_PACKAGES`)."""

    tensorboard: bool = False
    mlflow: MLflowSpec | None = None

    def package_issues(self) -> list[tuple[str, Any, str]]:
        """``(field, value, rule)`` for every logger asked for whose package cannot be
        imported here (found without importing it)."""
        asked = {"tensorboard": self.tensorboard, "mlflow": self.mlflow is not None}
        issues = []
        for name, wanted in asked.items():
            module, install = LOGGER_PACKAGES[name]
            if wanted and importlib.util.find_spec(module) is None:
                value = getattr(self, name)
                issues.append(
                    (
                        f"logging.{name}",
                        value.model_dump() if isinstance(value, BaseModel) else value,
                        f"needs the Python package {module!r} where the sweep runs, and it is "
                        f"not installed: pip install {install}",
                    )
                )
        return issues


class SweepSpec(_Strict):
    """A whole sweep: base trial sections, search, resources, storage and logging."""

    name: SweepName  # the default sweep id: the store's directory-name rule applies
    description: str = ""
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    growth: GrowthSpec = Field(default_factory=GrowthSpec)
    sparsity: SparsitySpec = Field(default_factory=SparsitySpec)
    supernet: SupernetSpec = Field(default_factory=SupernetSpec)
    subnet_search: SubnetSearchSpec = Field(default_factory=SubnetSearchSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    seed: StrictInt | None = None  # default for the sampler, training and dataset seeds left unset

    @model_validator(mode="before")
    @classmethod
    def _spread_seed(cls, data: Any) -> Any:
        """A top-level ``seed`` fills every seed the spec leaves unset."""
        if not isinstance(data, Mapping) or data.get("seed") is None:
            return data
        seed = data["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            return data  # the field's own validation reports it
        filled = dict(data)
        for section in ("dataset", "training"):
            part = filled.get(section) or {}
            if isinstance(part, Mapping) and "seed" not in part:
                filled[section] = {**part, "seed": seed}
        search = filled.get("search") or {}
        if isinstance(search, Mapping):
            sampler = search.get("sampler") or {}
            if isinstance(sampler, Mapping) and sampler.get("seed") is None:
                filled["search"] = {**search, "sampler": {**sampler, "seed": seed}}
        return filled

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def base_trial(self) -> dict[str, dict[str, Any]]:
        """The trial configuration before any searched value is applied."""
        dumped = self.to_dict()
        return {section: dumped[section] for section in TRIAL_SECTIONS}


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where it is, what value it has, and which rule it breaks."""

    path: str
    line: int | None
    value: Any
    rule: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.path or '<root>'}: {self.rule} (got {self.value!r})"


class SpecError(ValueError):
    """A spec that cannot be used; carries every :class:`SpecIssue` found."""

    def __init__(self, source: str, issues: Sequence[SpecIssue]) -> None:
        self.source = source
        self.issues = list(issues)
        lines = "\n".join(f"  {source}:{issue}" for issue in self.issues)
        super().__init__(f"invalid sweep spec {source} ({len(self.issues)} problem(s)):\n{lines}")


_MISSING = object()


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each mapping/sequence path in a YAML document to its 1-based line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(key_node.value)
                lines[(*path, key)] = key_node.start_mark.line + 1
                walk(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, str(index)))

    if root is not None:
        walk(root, ())
    return lines


def _lookup(data: Any, path: Sequence[str]) -> Any:
    current = data
    for part in path:
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _nearest_line(lines: Mapping[tuple[str, ...], int], path: Sequence[str]) -> int | None:
    for end in range(len(path), -1, -1):
        line = lines.get(tuple(path[:end]))
        if line is not None:
            return line
    return None


_DISCRIMINATOR_PARTS = {"float", "int", "categorical"}


def _issues_from_validation(
    error: ValidationError,
    data: Any,
    lines: Mapping[tuple[str, ...], int],
    prefix: Sequence[str] = (),
) -> list[SpecIssue]:
    issues = []
    search = data.get("search") if isinstance(data, Mapping) else None
    # with only `objectives` given, `objective` is a copy of objectives[0]: report once
    copied = isinstance(search, Mapping) and "objective" not in search
    for item in error.errors():
        loc = [*prefix, *(str(part) for part in item["loc"])]
        if copied and not prefix and loc[:2] == ["search", "objective"]:
            continue
        # pydantic inserts the tagged-union tag ('float', 'int', ...) into the location
        loc = [
            part
            for i, part in enumerate(loc)
            if not (part in _DISCRIMINATOR_PARTS and i == 3 and loc[:2] == ["search", "space"])
        ]
        value = _lookup(data, loc)
        if value is _MISSING:
            value = item.get("input")
        rule = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            rule = "unknown key (not a field of this section)"
        elif item["type"] == "missing":
            rule = "required field is missing"
            value = None
        issues.append(SpecIssue(".".join(loc), _nearest_line(lines, loc), value, rule))
    return issues


# ------------------------------------------------------------------ loading / checks


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file; raise :class:`SpecError` on any problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(source, [SpecIssue("", None, source, f"cannot read file: {exc}")]) from exc
    return parse_spec(text, source=source)


def parse_spec(text: str, *, source: str = "<spec>") -> SweepSpec:
    """Validate spec text (YAML); raise :class:`SpecError` listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [SpecIssue("", line, None, f"not valid YAML: {problem}")]) from exc
    lines = _line_index(text)
    if not isinstance(data, Mapping):
        raise SpecError(
            source, [SpecIssue("", 1, data, "a spec must be a YAML mapping (key: value)")]
        )
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, _issues_from_validation(exc, data, lines)) from exc
    issues = _check_space(spec, lines)
    # Growth plans combine searched values; checked once every value is valid on its own.
    issues += _check_cross_fields(spec, lines, plans=not issues)
    if issues:
        raise SpecError(source, issues)
    return spec


def _check_space(spec: SweepSpec, lines: Mapping[tuple[str, ...], int]) -> list[SpecIssue]:
    """Each searched key must name a trial field, and every value it can take must be valid."""
    issues: list[SpecIssue] = []
    declared: dict[str, Param] = {}
    for key, param in spec.search.space.items():
        path = ["search", "space", key]
        line = _nearest_line(lines, path)
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in _SECTION_MODELS:
            issues.append(
                SpecIssue(
                    ".".join(path),
                    line,
                    key,
                    "a searched key must be '<section>.<field>' with section one of "
                    f"{list(_SECTION_MODELS)}",
                )
            )
            continue
        section, field = parts
        model = _SECTION_MODELS[section]
        if field not in model.model_fields:
            issues.append(
                SpecIssue(
                    ".".join(path),
                    line,
                    key,
                    f"unknown field {field!r} of section {section!r}; valid: "
                    f"{sorted(model.model_fields)}",
                )
            )
            continue
        base = getattr(spec, section).model_dump()
        for candidate in param.candidates():
            try:
                model.model_validate({**base, field: candidate})
            except ValidationError as exc:
                for sub in _issues_from_validation(exc, {}, {}):
                    issues.append(SpecIssue(".".join(path), line, candidate, sub.rule))
        issues.extend(_check_condition(key, param, declared, path, line))
        declared[key] = param
    return issues


def _check_condition(
    key: str,
    param: Param,
    declared: Mapping[str, Param],
    path: list[str],
    line: int | None,
) -> list[SpecIssue]:
    if not param.when:
        return []
    issues = []
    for parent, values in param.when.items():
        where = ".".join([*path, "when", parent])
        if parent == key or parent not in declared:
            issues.append(
                SpecIssue(where, line, parent, "a condition must name a param declared above it")
            )
            continue
        parent_param = declared[parent]
        if not isinstance(parent_param, CategoricalParam):
            issues.append(
                SpecIssue(where, line, parent, "a condition must name a categorical param")
            )
            continue
        unknown = [v for v in values if v not in parent_param.choices]
        if unknown or not values:
            issues.append(
                SpecIssue(
                    where,
                    line,
                    values,
                    f"condition values must be non-empty and among {parent_param.choices}",
                )
            )
    return issues


_PLAN_SECTIONS = ("model", "growth", "sparsity", "training", "supernet")
_MAX_PLAN_COMBINATIONS = 256


def _probe_task(family: str, model: Mapping[str, Any]) -> Any:
    """A stand-in task of the right kind for checking growth rules before data loads
    (growth never changes the task, so its sizes do not matter to the rules)."""
    from morphtune.models import TaskShape

    if family == "gpt":
        return TaskShape((64,), 256, "lm")
    if family in ("cnn", "vit"):
        size = 4 * int(model.get("patch_size", 2))
        return TaskShape((1, size, size), 10)
    return TaskShape((16,), 10)


def _plan_combinations(spec: SweepSpec) -> list[dict[str, Scalar]]:
    """Every combination of the searched model/growth values that a trial can get
    (numeric ranges contribute their bounds), honouring ``when`` conditions."""
    keys = [k for k in spec.search.space if k.split(".", 1)[0] in _PLAN_SECTIONS]
    combos: list[dict[str, Scalar]] = [{}]
    for key in keys:
        param = spec.search.space[key]
        grown: list[dict[str, Scalar]] = []
        for combo in combos:
            active = all(
                combo.get(parent) in values for parent, values in (param.when or {}).items()
            )
            if active:
                grown.extend({**combo, key: value} for value in param.candidates())
            else:
                grown.append(combo)
        combos = grown[:_MAX_PLAN_COMBINATIONS]
    return combos


def _check_masked_growth(family: str, operators: Sequence[str]) -> None:
    from morphtune.methods.growth import GROWTH_OPERATORS

    for operator in operators:
        if family not in GROWTH_OPERATORS.get(operator).mask_families:
            raise ValueError(
                f"growth operator {operator!r} does not grow the pruning masks of a "
                f"{family!r} model: with sparsity.method set, grow with net2net on an mlp "
                "(the only operator that grows masks) or leave sparsity.method 'none'"
            )


def _combo_issue(
    combo: Mapping[str, Scalar],
    trial: Mapping[str, Any],
    lines: Mapping[tuple[str, ...], int],
    section: str,
    rule: str,
) -> SpecIssue:
    """A problem of one combination of searched values (or of the base spec)."""
    path = ["search", "space"] if combo else [section]
    value: Any = combo or {
        "model.family": trial["model"]["family"],
        "growth.operator": trial["growth"]["operator"],
        "sparsity.method": trial["sparsity"]["method"],
    }
    return SpecIssue(".".join(path), _nearest_line(lines, path), value, rule)


def _check_growth_plan(trial: Mapping[str, Any]) -> None:
    """Build the trial's growth plan on a probe task; the operators' own rules apply."""
    from morphtune.methods.growth import GrowthPlan
    from morphtune.models import config_from_spec

    model = ModelSpec.model_validate(trial["model"])
    growth = GrowthSpec.model_validate(trial["growth"])
    config = config_from_spec(
        model.family, _probe_task(model.family, trial["model"]), trial["model"]
    )
    plan = GrowthPlan.from_section(growth.model_dump())
    plan.schedule(config, total_steps=10_000)
    if trial["sparsity"]["method"] != "none":
        _check_masked_growth(model.family, [e.operator for e in plan.events])


_STEP_CACHE: dict[str, int | None] = {}


def _steps_per_worker(trial: Mapping[str, Any], workers: int) -> int | None:
    """Optimizer steps one worker takes in the trial (as the trial engine counts them),
    or ``None`` when the dataset cannot be loaded here (e.g. files only on the cluster)."""
    dataset, training = trial["dataset"], trial["training"]
    key = json.dumps([dataset, training["batch_size"], workers], sort_keys=True, default=str)
    if key not in _STEP_CACHE:
        from morphtune.data import load_dataset

        try:
            data = load_dataset(
                dataset["name"],
                seed=dataset["seed"],
                val_fraction=dataset["val_fraction"],
                **dataset["options"],
            )
        except (OSError, ValueError, TypeError):
            _STEP_CACHE[key] = None
        else:
            shard = math.ceil(len(data.train) / workers)
            _STEP_CACHE[key] = math.ceil(shard / max(1, training["batch_size"] // workers))
    per_epoch = _STEP_CACHE[key]
    return None if per_epoch is None else per_epoch * int(training["epochs"])


def _check_window(field: str, interval: int, start: int, end: int, steps: int) -> None:
    if interval + start >= end:
        raise ValueError(
            f"sparsity.{field}={interval} is longer than the training allows: the trial "
            f"has {steps} steps per worker and mask updates must happen after step {start} "
            f"and before step {end}, so sparsity.{field} < {end - start} must hold"
        )


def _check_sparsity_plan(trial: Mapping[str, Any], workers: int) -> None:
    """The sparsity method fits the model family, the growth plan and the step budget."""
    from morphtune.methods.sparsity import sparsity_method_kind

    sparsity = SparsitySpec.model_validate(trial["sparsity"]).model_dump()
    family, method = trial["model"]["family"], sparsity["method"]
    kind = None if method == "none" else sparsity_method_kind(method)
    if (family == "gan") != (kind == "gan") and not (family == "gan" and kind is None):
        if kind == "gan":
            raise ValueError(
                f"sparsity.method {method!r} trains a GAN, so model.family must be 'gan', "
                f"but got model.family={family!r}"
            )
        raise ValueError(
            f"model.family 'gan' trains with sparsity.method 'none', 'gan_single' or "
            f"'gan_double', but got sparsity.method={method!r}"
        )
    if kind in ("training", "gan") and trial["growth"]["operator"] != "none":
        raise ValueError(
            f"sparsity.method {method!r} moves the masks during training, which growth does "
            "not carry over: set growth.operator 'none' or use a pruning-at-init method"
        )
    if kind == "init":
        if sparsity["scope"] == "global" and sparsity["structure"] != "unstructured":
            raise ValueError(
                "sparsity.scope 'global' ranks all entries of all layers together, so it "
                "takes sparsity.structure 'unstructured', but got "
                f"structure={sparsity['structure']!r}"
            )
        if method == "synflow" and family == "gpt":
            raise ValueError(
                "sparsity.method 'synflow' scores with an all-ones input, which a token "
                "model (model.family 'gpt') cannot take: use snip, grasp, ntk_sap or magnitude"
            )
    if kind not in ("training", "gan"):
        return
    steps = _steps_per_worker(trial, workers)
    if steps is None:
        return
    default_end = 1.0 if kind == "gan" else 0.75
    end = math.floor((sparsity["end_fraction"] or default_end) * steps)
    start = math.floor((sparsity["start_fraction"] or 0.0) * steps) if method == "gmp" else 0
    default_interval = 100 if kind == "training" else 50
    _check_window(
        "update_interval", sparsity["update_interval"] or default_interval, start, end, steps
    )
    if method == "gan_double":
        _check_window("d_interval", sparsity["d_interval"] or 2 * default_interval, 0, steps, steps)


def supernet_section(trial: Mapping[str, Any]) -> dict[str, Any]:
    """The keys ``build_supernet`` takes: the model's sizes and the supernet's choices."""
    model, supernet = trial["model"], trial["supernet"]
    section = {
        key: model[key]
        for key in ("width", "depth", "stages", "head_dim", "patch_size", "mlp_ratio")
    }
    section.update(
        {
            key: supernet[key]
            for key in (
                "width_choices",
                "depth_choices",
                "kernel_choices",
                "heads_choices",
                "mlp_ratio_choices",
            )
            if supernet[key] is not None
        }
    )
    return section


def _build_probe_supernet(trial: Mapping[str, Any]) -> Any:
    """The trial's supernet on a stand-in task (its choices checked by the family)."""
    from morphtune.methods.supernet import SUPERNET_FAMILIES, build_supernet

    family = trial["model"]["family"]
    if family not in SUPERNET_FAMILIES:
        raise ValueError(
            f"supernet.enabled needs a model family with a supernet {sorted(SUPERNET_FAMILIES)}, "
            f"but got model.family={family!r}"
        )
    return build_supernet(family, _probe_task(family, trial["model"]), supernet_section(trial))


def _check_supernet_plan(trial: Mapping[str, Any]) -> None:
    if trial["growth"]["operator"] != "none" or trial["sparsity"]["method"] != "none":
        raise ValueError(
            "supernet.enabled trains a weight-sharing supernet: set growth.operator 'none' "
            "and sparsity.method 'none' (got growth.operator="
            f"{trial['growth']['operator']!r}, sparsity.method={trial['sparsity']['method']!r})"
        )
    _build_probe_supernet(trial)


def _check_subnet_candidates(
    spec: SweepSpec, lines: Mapping[tuple[str, ...], int]
) -> list[SpecIssue]:
    """Explicit ``subnet_search.candidates`` must lie inside the base supernet's range."""
    if not spec.supernet.enabled or not spec.subnet_search.candidates:
        return []
    try:
        space = _build_probe_supernet(spec.base_trial()).space
    except ValueError:
        return []  # reported by the supernet check
    issues = []
    for index, candidate in enumerate(spec.subnet_search.candidates):
        path = ["subnet_search", "candidates", str(index)]
        try:
            space.validate(candidate, field=f"subnet_search.candidates[{index}]")
        except ValueError as exc:
            issues.append(
                SpecIssue(".".join(path), _nearest_line(lines, path), candidate, str(exc))
            )
    return issues


def _check_trial_plans(spec: SweepSpec, lines: Mapping[tuple[str, ...], int]) -> list[SpecIssue]:
    """Build every reachable combination of searched model/growth/sparsity values and
    check it with the methods' own rules: growth operators (family supported, no
    shrinking, depth limits, ...) and sparsity methods (family, growth, step budget)."""
    issues: list[SpecIssue] = []
    seen: set[str] = set()
    base = spec.base_trial()
    for combo in _plan_combinations(spec):
        trial = copy.deepcopy(base)
        for key, chosen in combo.items():
            section, _, name = key.partition(".")
            trial[section][name] = chosen
        checks: list[tuple[str, Callable[[], None]]] = []
        if trial["growth"]["operator"] != "none" or trial["growth"]["plan"]:
            checks.append(("growth", functools.partial(_check_growth_plan, trial)))
        checks.append(
            ("sparsity", functools.partial(_check_sparsity_plan, trial, spec.resources.num_workers))
        )
        if trial["supernet"]["enabled"]:
            checks.append(("supernet", functools.partial(_check_supernet_plan, trial)))
        for section, check in checks:
            try:
                check()
            except (ValidationError, ValueError) as exc:
                if isinstance(exc, ValidationError):
                    rule = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                else:
                    rule = str(exc)
                if rule not in seen:
                    seen.add(rule)
                    issues.append(_combo_issue(combo, trial, lines, section, rule))
                break
    return issues


def _check_cross_fields(
    spec: SweepSpec, lines: Mapping[tuple[str, ...], int], *, plans: bool = True
) -> list[SpecIssue]:
    issues = _check_trial_plans(spec, lines) if plans else []
    if plans:
        issues += _check_subnet_candidates(spec, lines)
    if spec.search.proxy_filter is not None and (
        spec.supernet.enabled or spec.model.family == "gan"
    ):
        path = ["search", "proxy_filter"]
        issues.append(
            SpecIssue(
                ".".join(path),
                _nearest_line(lines, path),
                spec.search.proxy_filter.proxy,
                "a proxy filter scores single untrained models: not with supernet.enabled "
                f"or model.family 'gan' (got model.family={spec.model.family!r}, "
                f"supernet.enabled={spec.supernet.enabled})",
            )
        )
    gan = spec.model.family == "gan"
    goals = spec.search.goals
    for index, goal in enumerate(goals):
        if goal.metric in (CLASSIFIER_METRICS if gan else GAN_METRICS):
            path = (
                ["search", "objectives", str(index), "metric"]
                if spec.search.objectives
                else ["search", "objective", "metric"]
            )
            kind = "a GAN" if gan else "a classifier or language-model"
            issues.append(
                SpecIssue(
                    ".".join(path),
                    _nearest_line(lines, path),
                    goal.metric,
                    f"{kind} trial (model.family={spec.model.family!r}) does not report "
                    f"{goal.metric!r}; GAN trials report {sorted(GAN_METRICS)}",
                )
            )
    issues += _check_search_machinery(spec, lines)
    issues += [_issue(lines, *problem) for problem in spec.logging.package_issues()]
    return issues


def _issue(
    lines: Mapping[tuple[str, ...], int], path: str | Sequence[str], value: Any, rule: str
) -> SpecIssue:
    """An issue at ``path``: dotted, or a list of parts when a part (a searched key such
    as ``training.lr``) has dots of its own."""
    parts = path.split(".") if isinstance(path, str) else list(path)
    return SpecIssue(".".join(parts), _nearest_line(lines, parts), value, rule)


def _check_search_machinery(
    spec: SweepSpec, lines: Mapping[tuple[str, ...], int]
) -> list[SpecIssue]:
    """Sampler, scheduler and objectives must fit together and fit the trials."""
    search, issues = spec.search, []
    sampler, scheduler = search.sampler, search.scheduler
    for part, section, table in (
        ("sampler", sampler, SAMPLER_KNOBS),
        ("scheduler", scheduler, SCHEDULER_KNOBS),
    ):
        for knob, value, rule in _misplaced_knobs(section, table):
            issues.append(_issue(lines, f"search.{part}.{knob}", value, rule))
    count = len(search.goals)
    if count > 1 and sampler.name not in MULTI_OBJECTIVE_SAMPLERS:
        issues.append(
            _issue(
                lines,
                "search.sampler.name",
                sampler.name,
                f"{sampler.name!r} optimises one objective, but search.objectives has {count};"
                f" use one of {sorted(MULTI_OBJECTIVE_SAMPLERS)}",
            )
        )
    if sampler.name == "grid":
        if not search.space:
            issues.append(
                _issue(lines, "search.sampler.name", "grid", "grid needs a non-empty search.space")
            )
        for key, param in search.space.items():
            if isinstance(param, FloatParam) and param.step is None:
                issues.append(
                    _issue(
                        lines,
                        ["search", "space", key],
                        key,
                        "the grid sampler needs discrete values: give this float a step",
                    )
                )
    if count > 1 and scheduler.name in SINGLE_OBJECTIVE_SCHEDULERS:
        issues.append(
            _issue(
                lines,
                "search.scheduler.name",
                scheduler.name,
                f"{scheduler.name!r} ranks trials by one objective, but search.objectives has "
                f"{count}; use 'mo-asha' (non-dominated promotion) or 'fifo'",
            )
        )
    epochs = spec.training.epochs
    max_t = scheduler.max_t if scheduler.max_t is not None else epochs
    if scheduler.max_t is not None and scheduler.max_t > epochs:
        issues.append(
            _issue(
                lines,
                "search.scheduler.max_t",
                scheduler.max_t,
                f"max_t <= training.epochs must hold (training.epochs={epochs})",
            )
        )
    strict = scheduler.name == "mo-asha"  # its rungs need room above the grace period
    if scheduler.name in ("asha", "mo-asha", "median") and (
        scheduler.grace >= max_t if strict else scheduler.grace > max_t
    ):
        issues.append(
            _issue(
                lines,
                "search.scheduler.grace_period",
                scheduler.grace,
                f"grace_period <= max_t must hold (max_t={max_t}, from training.epochs when unset)",
            )
        )
    if scheduler.name in ("pbt", "growth-pbt"):
        issues += _check_population(spec, lines)
    return issues


def _check_population(spec: SweepSpec, lines: Mapping[tuple[str, ...], int]) -> list[SpecIssue]:
    search, issues = spec.search, []
    scheduler = search.scheduler
    if not spec.resources.in_process:
        issues.append(
            _issue(
                lines,
                "search.scheduler.name",
                scheduler.name,
                "PBT restores Tune checkpoints, which only single-worker trials run in their "
                f"Tune actor produce: needs resources.num_workers=1 (got "
                f"{spec.resources.num_workers}) and executor 'auto' or 'function'",
            )
        )
    optuna_only = {
        "search.constraints": search.constraints.limits() or None,
        "search.proxy_filter": search.proxy_filter,
        "search.warm_start": search.warm_start,
    }
    for field, value in optuna_only.items():
        if value:
            issues.append(
                _issue(
                    lines,
                    field,
                    value if not isinstance(value, BaseModel) else value.model_dump(),
                    f"{scheduler.name} samples its own population (Tune allows no searcher "
                    "beside PBT), so this Optuna-searcher option cannot apply",
                )
            )
    for key, param in search.space.items():
        if param.when:
            issues.append(
                _issue(
                    lines,
                    ["search", "space", key, "when"],
                    param.when,
                    f"{scheduler.name} samples every searched key (no conditional knobs)",
                )
            )
    interval = scheduler.perturbation_interval
    if interval is not None and interval >= spec.training.epochs:
        issues.append(
            _issue(
                lines,
                "search.scheduler.perturbation_interval",
                interval,
                f"perturbation_interval < training.epochs must hold "
                f"(training.epochs={spec.training.epochs})",
            )
        )
    if scheduler.synch and search.max_concurrent < search.num_samples:
        issues.append(
            _issue(
                lines,
                "search.scheduler.synch",
                True,
                "synchronous PBT pauses every trial until the whole population reaches a "
                "perturbation point, so the population must run at once: "
                f"search.max_concurrent ({search.max_concurrent}) >= search.num_samples "
                f"({search.num_samples}) must hold",
            )
        )
    moved: set[str] = set()
    if scheduler.grow is not None:
        moved.add(scheduler.grow.key)
    if scheduler.prune is not None:
        moved.add("sparsity.density")
    for index, key in enumerate(scheduler.mutations or []):
        if key in moved:
            issues.append(
                _issue(
                    lines,
                    f"search.scheduler.mutations.{index}",
                    key,
                    "a key a grow or prune move changes cannot also be mutated",
                )
            )
        elif key not in search.space:
            issues.append(
                _issue(
                    lines,
                    f"search.scheduler.mutations.{index}",
                    key,
                    f"a mutated key must be a searched key {sorted(search.space)}",
                )
            )
    grow = scheduler.grow
    if grow is not None:
        field = grow.key.split(".")[1]
        base = int(getattr(spec.model, field))
        if grow.maximum <= base:
            issues.append(
                _issue(
                    lines,
                    "search.scheduler.grow.maximum",
                    grow.maximum,
                    f"maximum > the base {grow.key} ({base}) must hold, or no trial can grow",
                )
            )
        if spec.model.family in ("gan", "mixture") or spec.supernet.enabled:
            issues.append(
                _issue(
                    lines,
                    "search.scheduler.grow",
                    grow.key,
                    "growth moves need a growable classifier family (mlp, cnn, vit, gpt), not "
                    f"model.family={spec.model.family!r}"
                    + (" with supernet.enabled" if spec.supernet.enabled else ""),
                )
            )
    return issues


# ------------------------------------------------------------------- trial configs


def resolve_trial_config(spec: SweepSpec, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply searched values (dotted keys like ``training.lr``) to the base trial.

    Returns the nested trial configuration (``{section: {field: value}}``), validated again
    so a trial never starts from a value its section rejects.
    """
    trial = copy.deepcopy(spec.base_trial())
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if section not in trial or field not in trial[section]:
            raise ValueError(f"unknown trial config key {key!r}: must be '<section>.<field>'")
        trial[section][field] = value
    resolved: dict[str, Any] = {}
    issues: list[SpecIssue] = []
    for section, values in trial.items():
        try:
            model = _SECTION_MODELS[section].model_validate(values)
        except ValidationError as exc:
            issues.extend(_issues_from_validation(exc, trial, {}, prefix=[section]))
            continue
        resolved[section] = model.model_dump(mode="json")
    if issues:
        raise ValueError("invalid trial config: " + "; ".join(map(str, issues)))
    return resolved


def flatten_config(trial: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested trial config to dotted keys (``{'training': {'lr': 1}} -> {'training.lr': 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in trial.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
