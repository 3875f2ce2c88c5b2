"""A small GPT-style causal decoder over bytes (nanoGPT's shape, Pre-LN)."""

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

__all__ = ["GPT", "GPTConfig"]


@dataclass(frozen=True)
class GPTConfig(TransformerShape):
    """Structure of a :class:`GPT`: ``vocab_size`` tokens (256 for bytes), ``context``
    positions, ``depth`` causal blocks of width ``dim`` with ``heads`` heads."""

    family: ClassVar[str] = "gpt"
    TASK_FIELDS: ClassVar[tuple[str, ...]] = ("vocab_size", "context")

    vocab_size: int
    context: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    ln_eps: float = 1e-5

    def __post_init__(self) -> None:
        check_positive_int("vocab_size", self.vocab_size)
        check_positive_int("context", self.context)
        self.check_shape()

    @classmethod
    def from_spec(cls, task: TaskShape, model: Mapping[str, Any]) -> GPTConfig:
        if task.task != "lm" or len(task.input_shape) != 1:
            raise ValueError(
                "model family 'gpt' needs a language-model dataset (task 'lm', token "
                f"sequences), but the dataset gives task {task.task!r} with inputs of "
                f"shape {task.input_shape}"
            )
        dim = model["width"]
        return cls(
            vocab_size=task.num_classes,
            context=task.input_shape[0],
            dim=dim,
            depth=model["depth"],
            heads=heads_for(dim, model.get("head_dim", 16)),
            mlp_dim=round(model.get("mlp_ratio", 4.0) * dim),
        )


class GPT(nn.Module):
    """Token and learned position embeddings, causal Pre-LN blocks, final LayerNorm and an
    untied linear head: ``(B, T)`` int tokens to ``(B, T, vocab_size)`` logits."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"config must be a GPTConfig, but got {type(config).__name__}")
        self.config: GPTConfig = config
        self.tok_embed = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embed = nn.Parameter(torch.randn(1, config.context, config.dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_dim, causal=True, ln_eps=config.ln_eps)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.ln_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.config.context:
            raise ValueError(
                f"sequence length must be <= context={self.config.context}, got {length}"
            )
        x = self.tok_embed(tokens) + self.pos_embed[:, :length]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def flop_uses(self) -> dict[str, int]:
        """Per sample = per sequence of ``context`` tokens; the embedding is a lookup."""
        context = self.config.context
        uses = {"tok_embed": 0, "head": context}
        for index in range(len(self.blocks)):
            uses.update(block_flop_uses(f"blocks.{index}", context))
        return uses

    def extra_flops(self) -> int:
        return len(self.blocks) * attention_flops(self.config.dim, self.config.context)
