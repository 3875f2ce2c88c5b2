"""MixtureGrowth (Pham et al., WACV 2024) for the ``mixture`` family (METHODS §4.3)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from morphtune.methods.growth._base import GrowthOperator, GrowthOptions, GrowthResult, empty_like
from morphtune.methods.growth._registry import register_growth_operator
from morphtune.models._mixture import MEMBERS

__all__ = ["DEFAULT_ORTHOGONAL_SCALE", "MixtureGrowth", "new_coefficients"]

#: Relative scale of ``orthogonal`` coefficient vectors when ``options.noise == 0``.
DEFAULT_ORTHOGONAL_SCALE = 1e-2

# Off-diagonal blocks (row member, column member), in the order they are drawn.
_OFF_DIAGONAL = ((0, 1), (1, 0))


def _null_direction(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random unit vector orthogonal to every row of ``rows`` (float64), drawn from
    the null space that the SVD of ``rows`` gives."""
    _, singular, vh = torch.linalg.svd(rows, full_matrices=True)
    top = float(singular.max()) if singular.numel() else 0.0
    tolerance = top * max(rows.shape) * torch.finfo(rows.dtype).eps
    rank = int((singular > tolerance).sum())
    null = vh[rank:]
    if null.shape[0] == 0:
        raise ValueError(
            f"coefficients='orthogonal' needs a null space, but {rows.shape[0]} coefficient "
            f"vectors of rank {rank} fill all {rows.shape[1]} dimensions; use more templates "
            "or coefficients='copy'/'random'/'zero'"
        )
    mix = torch.randn(null.shape[0], generator=generator, dtype=torch.float64)
    direction = mix @ null
    # Project out what rounding left of the old rows, then normalise.
    direction = direction - vh[:rank].T @ (vh[:rank] @ direction)
    return direction / direction.norm()


def new_coefficients(
    alpha: torch.Tensor,
    coefficients: str,
    noise: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Coefficients ``(2, 2, 2K)`` of one grown hidden layer from the members' ``alpha``
    ``(2, K)`` (computed in float64).

    Block ``(r, c)`` mixes the bank ``[T_0,1..K, T_1,1..K]``. The diagonal blocks keep
    the members' mixtures, ``[alpha_0, 0]`` and ``[0, alpha_1]``; the off-diagonal blocks
    ``(0, 1)`` and ``(1, 0)`` get new vectors. With ``ref = rms(|alpha_0|, |alpha_1|)``
    (``1`` if both are zero):

    - ``orthogonal``: a random unit direction from the SVD null space of the vectors
      already set (the two diagonal ones, then also the first new one, so the new ones
      are orthogonal to each other too), times ``noise * ref`` (``noise == 0``:
      :data:`DEFAULT_ORTHOGONAL_SCALE` ``* ref``). Needs ``K >= 2``.
    - ``copy``: the diagonal block of the same row (the receiving member's own mixture)
      plus a random unit vector times ``noise * |alpha_r|``; ``noise == 0`` copies exactly.
    - ``zero``: zeros (the grown model then computes exactly what the members did).
    - ``random``: a random unit vector times ``ref`` (times ``noise`` when ``noise > 0``).

    Every random draw comes from ``generator``, so the result is deterministic in it.
    """
    alpha = alpha.detach().to(device="cpu", dtype=torch.float64)
    members, k = alpha.shape
    bank = members * k
    result = torch.zeros(members, members, bank, dtype=torch.float64)
    for m in range(members):
        result[m, m, m * k : (m + 1) * k] = alpha[m]
    norms = alpha.norm(dim=1)
    ref = float(norms.square().mean().sqrt())
    ref = ref if ref > 0 else 1.0
    old = torch.stack([result[m, m] for m in range(members)])
    for r, c in _OFF_DIAGONAL:
        draw = torch.randn(bank, generator=generator, dtype=torch.float64)
        unit = draw / draw.norm()
        if coefficients == "orthogonal":
            scale = noise if noise > 0 else DEFAULT_ORTHOGONAL_SCALE
            vector = _null_direction(old, generator) * scale * ref
            old = torch.cat([old, vector[None]])
        elif coefficients == "copy":
            vector = result[r, r] + noise * float(norms[r]) * unit
        elif coefficients == "zero":
            vector = torch.zeros(bank, dtype=torch.float64)
        elif coefficients == "random":
            vector = unit * ref * (noise if noise > 0 else 1.0)
        else:
            raise ValueError(
                "coefficients must be one of ['orthogonal', 'copy', 'zero', 'random'], "
                f"but got coefficients={coefficients!r}"
            )
        result[r, c] = vector
    return result


@register_growth_operator("mixturegrowth")
class MixtureGrowth(GrowthOperator):
    """MixtureGrowth (Pham et al., WACV 2024): two members of a ``mixture`` model, each
    ``member_width`` wide with its own templates, become one network twice as wide.

    Every hidden-to-hidden layer becomes a 2x2 block matrix over the bank of both
    members' ``2K`` templates: the diagonal blocks keep each member's mixture exactly,
    the off-diagonal blocks get new coefficient vectors by ``options.coefficients``
    (``orthogonal`` by default, see :func:`new_coefficients`; ``options.noise`` scales
    them). Templates, biases, the input layer and the classifier are kept verbatim
    (and listed in ``carried``). Not function-preserving in general;
    ``coefficients='zero'`` keeps the function exactly.
    """

    families = ("mixture",)
    lossless = ()

    def check_target(self, source: Any, target: Any, options: GrowthOptions) -> None:
        if source.grown:
            raise ValueError(
                "mixturegrowth grows a 'mixture' model once: the model must have "
                "grown=False, but got grown=True"
            )
        double = MEMBERS * source.member_width
        if target.width != double:
            raise ValueError(
                "mixturegrowth grows a 'mixture' model by exactly 2x in width: target width "
                f"must be 2*member_width={double}, but got {target.width}"
            )
        if not target.grown or target.member_width != source.member_width:
            raise ValueError(
                "mixturegrowth's target must be the grown config (grown=True, member_width="
                f"{source.member_width}), i.e. config.resized({double}, {source.depth}), but "
                f"got grown={target.grown}, member_width={target.member_width}"
            )
        if target.depth != source.depth:
            raise ValueError(
                f"mixturegrowth keeps depth: target depth must be {source.depth}, "
                f"but got {target.depth}"
            )
        if target.templates != source.templates:
            raise ValueError(
                f"mixturegrowth keeps templates: target templates must be {source.templates}, "
                f"but got {target.templates}"
            )
        if options.coefficients == "orthogonal" and source.templates < 2 and source.depth > 1:
            raise ValueError(
                "coefficients='orthogonal' needs templates >= 2 (the new coefficient vectors "
                "must be orthogonal to both members' in a bank of 2*templates), but got "
                f"templates={source.templates}; use coefficients='copy', 'random' or 'zero'"
            )

    @torch.no_grad()
    def _expand(
        self, model: nn.Module, target: Any, *, seed: int, options: GrowthOptions
    ) -> GrowthResult:
        grown = empty_like(model, target)
        generator = torch.Generator().manual_seed(seed)
        carried: dict[str, str] = {}
        own = dict(model.named_parameters())
        for name, param in grown.named_parameters():
            old = own[name]
            if param.shape == old.shape:
                param.copy_(old)
                carried[name] = name
                continue
            fresh = new_coefficients(old, options.coefficients, options.noise, generator)
            param.copy_(fresh.to(device=param.device, dtype=param.dtype))
        return GrowthResult(grown, carried)
