"""Per-layer densities (uniform, ER, ERK) and exact per-layer counts.

ER/ERK follow Liu et al., "The Unreasonable Effectiveness of Random Pruning", ICLR 2022
(METHODS §1.6): every sparse layer gets ``d_l = eps * raw_l``; ``eps`` is solved so the
kept parameters meet the budget, moving the single layer with the largest ``raw_l`` to
the dense set (``d_l = 1``) whenever ``eps * raw_l > 1``, one layer per pass.

The budget is ``density * N`` in real numbers: dense layers consume their full size and
the remaining layers share the rest. Integer rounding happens once, in
:func:`layer_counts`, with the largest-remainder method, so the total kept count is
within 1 of ``round(density * N)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping

from morphtune.methods.sparsity._validation import check_density
from morphtune.registry import Registry

__all__ = [
    "LAYER_DISTRIBUTIONS",
    "layer_counts",
    "layer_densities",
    "register_layer_distribution",
]

#: ``raw(shape, erk_power) -> float``: a layer's unnormalised density.
RawDensityFn = Callable[[tuple[int, ...], float], float]

#: The registered raw-density functions; iterates over their names in registration order.
LAYER_DISTRIBUTIONS: Registry[RawDensityFn] = Registry(
    "layer distribution", "register_layer_distribution"
)


def register_layer_distribution(name: str) -> Callable[[RawDensityFn], RawDensityFn]:
    """Decorator registering ``raw(shape, erk_power) -> float`` under ``name``."""
    return LAYER_DISTRIBUTIONS.register(name)


@register_layer_distribution("uniform")
def _uniform(shape: tuple[int, ...], erk_power: float) -> float:
    return 1.0


@register_layer_distribution("er")
def _erdos_renyi(shape: tuple[int, ...], erk_power: float) -> float:
    # PyTorch kernels are (out, in, *kernel): the channel dims are the FIRST two
    # (google-research/rigl takes the last two because TF kernels are HWIO).
    if len(shape) < 2:
        raise ValueError(f"ER needs a tensor with at least 2 dims, but got shape={shape}")
    n_out, n_in = shape[0], shape[1]
    return (n_in + n_out) / (n_in * n_out)


@register_layer_distribution("erk")
def _erdos_renyi_kernel(shape: tuple[int, ...], erk_power: float) -> float:
    # Sum and product over all dims: invariant to the layout (OIHW vs HWIO).
    return (math.fsum(shape) / math.prod(shape)) ** erk_power


def _check_shapes(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    if not shapes:
        raise ValueError("shapes must name at least one layer, but got an empty mapping")
    checked: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():
        dims = tuple(shape)
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ValueError(
                f"shape of layer {name!r} must be a non-empty tuple of positive ints, "
                f"but got {shape!r}"
            )
        checked[name] = dims
    return checked


def layer_densities(
    shapes: Mapping[str, tuple[int, ...]],
    density: float,
    distribution: str = "uniform",
    *,
    erk_power: float = 1.0,
    dense_layers: Collection[str] = (),
) -> dict[str, float]:
    """Density of each layer so the total kept fraction is ``density``.

    ``distribution`` is one of :data:`LAYER_DISTRIBUTIONS` (``uniform``, ``er``, ``erk``);
    ``erk_power`` is ERK's exponent ``p`` (``p = 0`` is uniform before capping);
    ``dense_layers`` are forced to density 1 and count against the budget.
    """
    raw_fn = LAYER_DISTRIBUTIONS.get(distribution)
    density = check_density(density)
    if isinstance(erk_power, bool) or not isinstance(erk_power, int | float) or not erk_power >= 0:
        raise ValueError(f"erk_power must satisfy erk_power >= 0, but got erk_power={erk_power!r}")
    shapes = _check_shapes(shapes)
    unknown = sorted(set(dense_layers) - set(shapes))
    if unknown:
        raise ValueError(f"dense_layers {unknown} are not among the layers {sorted(shapes)}")

    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: raw_fn(shape, float(erk_power)) for name, shape in shapes.items()}
    budget = density * math.fsum(sizes.values())
    dense = set(dense_layers)
    eps = 0.0
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            break
        remaining = budget - math.fsum(sizes[name] for name in dense)
        if remaining <= 0:
            raise ValueError(
                f"the dense layers {sorted(dense)} hold {budget - remaining:.0f} parameters, "
                f"which leaves no budget at density={density} for the other layers"
            )
        eps = remaining / math.fsum(raw[name] * sizes[name] for name in sparse)
        # max() returns the first of equal maxima: deterministic in mapping order.
        largest = max(sparse, key=lambda name: raw[name])
        if eps * raw[largest] <= 1.0:
            break
        dense.add(largest)
    return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}


def layer_counts(
    shapes: Mapping[str, tuple[int, ...]], densities: Mapping[str, float]
) -> dict[str, int]:
    """Exact kept count per layer, rounding by the largest-remainder method.

    The total is ``round(sum(d_l * N_l))`` (half up) wherever the floor ``k_l >= 1`` and
    the ceiling ``k_l <= N_l`` allow, so ``|sum(k_l) - round(density * N)| <= 1`` for
    densities from :func:`layer_densities`. Remainder ties go to the earlier layer.
    """
    shapes = _check_shapes(shapes)
    if set(densities) != set(shapes):
        raise ValueError(
            f"densities must name exactly the layers of shapes; missing "
            f"{sorted(set(shapes) - set(densities))}, extra {sorted(set(densities) - set(shapes))}"
        )
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    exact = {
        name: check_density(densities[name], f"densities[{name!r}]") * sizes[name]
        for name in shapes
    }
    counts = {name: min(sizes[name], max(1, math.floor(exact[name]))) for name in shapes}
    target = math.floor(math.fsum(exact.values()) + 0.5)
    remainder = {name: exact[name] - counts[name] for name in shapes}
    order = list(shapes)
    shortfall = target - sum(counts.values())
    if shortfall > 0:
        growable = sorted(
            (name for name in order if counts[name] < sizes[name]),
            key=lambda name: -remainder[name],
        )
        for name in growable[:shortfall]:
            counts[name] += 1
    while shortfall < 0:
        # Only reachable when the k_l >= 1 floor lifted layers above their share: take
        # from the layer most above its exact share that can still give one up.
        shrinkable = [name for name in order if counts[name] > 1]
        if not shrinkable:
            break
        name = min(shrinkable, key=lambda name: exact[name] - counts[name])
        counts[name] -= 1
        shortfall += 1
    return counts
