"""Sparsity: scores x layer distributions x exact top-k masks held as buffers.

The decomposition follows JaxPruner (score fn, layer-distribution fn, top-k maker);
conventions are in METHODS §0, the ER/ERK distributions in §1.6.
"""

from morphtune.methods.sparsity._distributions import (
    LAYER_DISTRIBUTIONS,
    layer_counts,
    layer_densities,
    register_layer_distribution,
)
from morphtune.methods.sparsity._masks import (
    MASK_SUFFIX,
    MaskSet,
    find_masks,
    masks_in_state_dict,
)
from morphtune.methods.sparsity._params import prunable_parameters
from morphtune.methods.sparsity._prune import prune_at_init
from morphtune.methods.sparsity._scores import (
    PRUNING_METHODS,
    ScoreFn,
    get_pruning_method,
    register_pruning_method,
)
from morphtune.methods.sparsity._topk import topk_mask

__all__ = [
    "LAYER_DISTRIBUTIONS",
    "MASK_SUFFIX",
    "PRUNING_METHODS",
    "MaskSet",
    "ScoreFn",
    "find_masks",
    "get_pruning_method",
    "layer_counts",
    "layer_densities",
    "masks_in_state_dict",
    "prunable_parameters",
    "prune_at_init",
    "register_layer_distribution",
    "register_pruning_method",
    "topk_mask",
]
