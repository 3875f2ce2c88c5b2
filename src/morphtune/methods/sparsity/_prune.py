"""One-shot pruning at initialisation with local (per-layer) scope."""

from __future__ import annotations

import torch
from torch import nn

from morphtune.methods.sparsity._distributions import layer_counts, layer_densities
from morphtune.methods.sparsity._masks import MaskSet
from morphtune.methods.sparsity._params import prunable_parameters
from morphtune.methods.sparsity._scores import get_pruning_method
from morphtune.methods.sparsity._topk import topk_mask

__all__ = ["prune_at_init"]


def prune_at_init(
    model: nn.Module,
    method: str,
    density: float,
    distribution: str = "uniform",
    *,
    seed: int = 0,
    erk_power: float = 1.0,
) -> MaskSet:
    """Mask ``model``'s prunable parameters and apply the masks; return the :class:`MaskSet`.

    Local scope (METHODS §0): per-layer densities from ``distribution``, exact per-layer
    counts by largest-remainder rounding, then per-layer top-k of the ``method``'s
    scores. The result depends only on the seed and the weights, so every DDP rank
    computes the same masks.
    """
    score = get_pruning_method(method)
    params = prunable_parameters(model)
    if not params:
        raise ValueError("model has no prunable parameters (ndim >= 2) to mask")
    shapes = {name: tuple(param.shape) for name, param in params.items()}
    densities = layer_densities(shapes, density, distribution, erk_power=erk_power)
    counts = layer_counts(shapes, densities)
    generator = torch.Generator().manual_seed(seed)
    scores = score(model, params, generator=generator)
    masks = {name: topk_mask(scores[name], counts[name]) for name in params}
    mask_set = MaskSet(model, masks)
    mask_set.apply()
    return mask_set
