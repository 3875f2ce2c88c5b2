"""A small Vision Transformer (Dosovitskiy et al., ICLR 2021) with Pre-LN blocks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from morphtune.models._base import TaskShape, check_positive_int
from morphtune.models._transformer import (
    Block,
    TransformerShape,
    attention_flops,
    block_flop_uses,
    heads_for,
)

__all__ = ["ViT", "ViTConfig"]


@dataclass(frozen=True)
class ViTConfig(TransformerShape):
    """Structure of a :class:`ViT`: square ``image_size`` images cut into
    ``patch_size`` patches, ``depth`` blocks of width ``dim`` with ``heads`` heads."""

    family: ClassVar[str] = "vit"
    TASK_FIELDS: ClassVar[tuple[str, ...]] = (
        "image_size",
        "patch_size",
        "in_channels",
        "num_classes",
    )

    image_size: int
    patch_size: int
    in_channels: int
    num_classes: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_positive_int("image_size", self.image_size)
        check_positive_int("patch_size", self.patch_size)
        check_positive_int("in_channels", self.in_channels)
        check_positive_int("num_classes", self.num_classes)
        self.check_shape()
        if self.image_size % self.patch_size:
            raise ValueError(
                "image_size must be divisible by patch_size, but got "
                f"image_size={self.image_size}, patch_size={self.patch_size}"
            )

    @property
    def tokens(self) -> int:
        """Patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def from_spec(cls, task: TaskShape, model: Mapping[str, Any]) -> ViTConfig:
        channels, height, width = task.image("vit")
        if height != width:
            raise ValueError(f"model family 'vit' needs square images, got {height}x{width}")
        dim = model["width"]
        heads = heads_for(dim, model.get("head_dim", 16))
        return cls(
            image_size=height,
            patch_size=model.get("patch_size", 2),
            in_channels=channels,
            num_classes=task.num_classes,
            dim=dim,
            depth=model["depth"],
            heads=heads,
            mlp_dim=round(model.get("mlp_ratio", 4.0) * dim),
        )


class ViT(nn.Module):
    """Patch embedding (a linear map of flattened patches), class token, learned position
    embedding, Pre-LN blocks, final LayerNorm and a linear head on the class token."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if not isinstance(config, ViTConfig):
            raise ValueError(f"config must be a ViTConfig, but got {type(config).__name__}")
        self.config: ViTConfig = config
        patch_values = config.in_channels * config.patch_size**2
        self.patch_embed = nn.Linear(patch_values, config.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, config.tokens, config.dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_dim, causal=False, ln_eps=config.ln_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.ln_eps)
        self.head = nn.Linear(config.dim, config.num_classes)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` to ``(B, patches, C * p * p)``, row-major over the patch grid."""
        batch = images.shape[0]
        p = self.config.patch_size
        grid = self.config.image_size // p
        x = images.reshape(batch, self.config.in_channels, grid, p, grid, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(batch, grid * grid, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.patches(images))
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))

    def flop_uses(self) -> dict[str, int]:
        tokens = self.config.tokens
        uses = {"patch_embed": tokens - 1, "head": 1}
        for index in range(len(self.blocks)):
            uses.update(block_flop_uses(f"blocks.{index}", tokens))
        return uses

    def extra_flops(self) -> int:
        return len(self.blocks) * attention_flops(self.config.dim, self.config.tokens)
