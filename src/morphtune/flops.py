"""Analytic parameter and FLOP counts, available before a trial launches.

Conventions: FLOPs are forward FLOPs per sample; a multiply-add is 2 FLOPs, so a
linear layer costs ``2 * nnz(W)`` (masked weights are skipped) plus ``out`` bias adds.
Activations cost nothing. ``nonzero_params`` counts the structurally kept parameters
(biases always kept, masked entries not), not values that happen to be zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from morphtune.methods.sparsity import find_masks, layer_counts, layer_densities
from morphtune.models import MLPConfig, build_model

__all__ = ["Cost", "config_cost", "mlp_cost", "model_cost"]


@dataclass(frozen=True)
class Cost:
    """Size and forward compute of one model."""

    params: int
    nonzero_params: int
    flops: int


def _mlp_weight_shapes(config: MLPConfig) -> dict[str, tuple[int, int]]:
    widths = config.widths
    return {f"layers.{i}.weight": (widths[i + 1], widths[i]) for i in range(len(widths) - 1)}


def _weight_densities(
    shapes: dict[str, tuple[int, int]],
    density: float | Mapping[str, float],
    distribution: str,
    erk_power: float,
) -> dict[str, float]:
    if isinstance(density, Mapping):
        unknown = sorted(set(density) - set(shapes))
        if unknown:
            raise ValueError(f"density names unknown parameters {unknown}; valid: {list(shapes)}")
        return {name: density.get(name, 1.0) for name in shapes}
    return layer_densities(shapes, density, distribution, erk_power=erk_power)


def mlp_cost(
    config: MLPConfig,
    density: float | Mapping[str, float] = 1.0,
    *,
    distribution: str = "uniform",
    erk_power: float = 1.0,
) -> Cost:
    """Cost of an :class:`~morphtune.models.MLP` with its weights kept at ``density``.

    ``density`` is one overall density, spread over the weight matrices by
    ``distribution`` exactly as :func:`~morphtune.methods.sparsity.prune_at_init` does,
    or a per-parameter map (``"layers.0.weight"``; missing layers are dense). Kept
    counts use the same largest-remainder rounding as the pruner, so the estimate equals
    ``model_cost`` of the pruned model.
    """
    if not isinstance(config, MLPConfig):
        raise ValueError(f"config must be an MLPConfig, but got {type(config).__name__}")
    shapes = _mlp_weight_shapes(config)
    counts = layer_counts(shapes, _weight_densities(shapes, density, distribution, erk_power))
    biases = sum(config.hidden) + config.out_features if config.bias else 0
    weights = sum(math.prod(shape) for shape in shapes.values())
    kept = sum(counts.values())
    return Cost(params=weights + biases, nonzero_params=kept + biases, flops=2 * kept + biases)


_FREE_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.Embedding)


def model_cost(model: nn.Module) -> Cost:
    """Cost of a built model, counting its ``*_keep_mask`` buffers where present.

    ``params`` covers every parameter. A model family says through ``flop_uses()`` how
    often per sample each ``nn.Linear``/``nn.Conv2d`` is applied (tokens, output
    positions), and through ``extra_flops()`` what its parameter-free products cost
    (attention); a weight entry costs a multiply-add (2 FLOPs) per use, a bias one add.
    Norms, embedding lookups and loose parameters (position embeddings) count as free,
    like activations. A model without ``flop_uses`` is counted as applying each linear
    once; a parameter-owning module that cannot be counted raises ``ValueError`` rather
    than being silently free.
    """
    masks = find_masks(model)
    uses_of = getattr(model, "flop_uses", None)
    uses: dict[str, int] | None = uses_of() if callable(uses_of) else None
    params = nonzero = 0
    flops = 0
    extra_of = getattr(model, "extra_flops", None)
    if callable(extra_of):
        flops += int(extra_of())
    for module_name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        prefix = f"{module_name}." if module_name else ""
        kept = {
            name: int(masks[prefix + name].count_nonzero())
            if prefix + name in masks
            else param.numel()
            for name, param in own.items()
        }
        params += sum(param.numel() for param in own.values())
        nonzero += sum(kept.values())
        if isinstance(module, nn.Linear | nn.Conv2d):
            if uses is None and isinstance(module, nn.Linear):
                applied = 1
            elif uses is not None and module_name in uses:
                applied = uses[module_name]
            else:
                raise ValueError(
                    f"model_cost cannot count module {module_name!r} ({type(module).__name__}): "
                    "the model's flop_uses() does not say how often it is applied"
                )
            bias = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            flops += applied * (2 * kept["weight"] + (bias if module.bias is not None else 0))
        elif uses is not None and (isinstance(module, _FREE_MODULES) or module is model):
            continue
        else:
            raise ValueError(
                f"model_cost counts FLOPs for nn.Linear only, but module {module_name!r} "
                f"is a {type(module).__name__} with parameters"
            )
    return Cost(params=params, nonzero_params=nonzero, flops=flops)


def config_cost(family: str, config: object) -> Cost:
    """Dense cost of a model of ``family`` built from ``config``, without allocating it
    (built on the meta device), so a trial's cost is known before it launches."""
    with torch.device("meta"):
        model = build_model(family, config)
    return model_cost(model)
