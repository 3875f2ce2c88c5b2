"""Pre-LayerNorm transformer blocks shared by the ViT and GPT families."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from morphtune.models._base import check_positive_int, rescale

__all__ = ["Attention", "Block", "TransformerShape", "check_transformer_shape", "heads_for"]


def check_transformer_shape(dim: int, heads: int, mlp_dim: int, depth: int) -> None:
    """Shared rules: positive sizes and ``dim`` divisible by ``heads``."""
    check_positive_int("dim", dim)
    check_positive_int("heads", heads)
    check_positive_int("mlp_dim", mlp_dim)
    check_positive_int("depth", depth)
    if dim % heads:
        raise ValueError(f"dim must be divisible by heads, but got dim={dim}, heads={heads}")


def heads_for(dim: int, head_dim: int) -> int:
    """Number of heads of size ``head_dim`` in a model of width ``dim``."""
    check_positive_int("head_dim", head_dim)
    if dim % head_dim:
        raise ValueError(
            f"width must be a multiple of head_dim, but got width={dim}, head_dim={head_dim}"
        )
    return dim // head_dim


class TransformerShape:
    """The growth view shared by the transformer configs (a mixin of frozen dataclasses
    with ``dim``, ``depth``, ``heads``, ``mlp_dim`` and ``ln_eps`` fields)."""

    dim: int
    depth: int
    heads: int
    mlp_dim: int
    ln_eps: float

    def check_shape(self) -> None:
        check_transformer_shape(self.dim, self.heads, self.mlp_dim, self.depth)
        eps = self.ln_eps
        if not (isinstance(eps, float) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"ln_eps must be a float > 0, but got ln_eps={eps!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def width(self) -> int:
        return self.dim

    def resized(self, width: int, depth: int) -> Self:
        """Same ``head_dim`` (heads = width / head_dim), ``mlp_dim`` scaled with the width
        (rounded half up)."""
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        if width % self.head_dim:
            raise ValueError(
                f"width must be a multiple of head_dim={self.head_dim} (heads keep their "
                f"size), but got width={width}"
            )
        mlp_dim = rescale(self.mlp_dim, width, self.dim)
        changes: dict[str, Any] = {
            "dim": width,
            "depth": depth,
            "heads": width // self.head_dim,
            "mlp_dim": mlp_dim,
        }
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


class Attention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` projections (with bias)
    and an output projection ``proj``; scale ``1/sqrt(head_dim)``."""

    def __init__(self, dim: int, heads: int, *, causal: bool) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.causal = causal
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=self.causal
        )
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.heads * self.head_dim))


class Block(nn.Module):
    """``x + attn(ln1(x))`` then ``x + fc2(gelu(fc1(ln2(x))))`` (Pre-LN)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, *, causal: bool, ln_eps: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = Attention(dim, heads, causal=causal)
        self.ln2 = nn.LayerNorm(dim, eps=ln_eps)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def block_flop_uses(prefix: str, tokens: int) -> dict[str, int]:
    """Every linear of a block is applied once per token."""
    names = ("attn.q", "attn.k", "attn.v", "attn.proj", "fc1", "fc2")
    return {f"{prefix}.{name}": tokens for name in names}


def attention_flops(dim: int, tokens: int) -> int:
    """``q k^T`` and ``softmax(.) v``: two ``tokens x tokens x dim`` products per block."""
    return 2 * 2 * tokens * tokens * dim
