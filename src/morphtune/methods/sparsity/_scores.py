"""Pruning scores behind a registry: higher score = more worth keeping."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import torch
from torch import nn

from morphtune.registry import Registry

__all__ = ["PRUNING_METHODS", "ScoreFn", "get_pruning_method", "register_pruning_method"]


class ScoreFn(Protocol):
    """``score(model, params, generator=...) -> {name: scores of params[name]'s shape}``."""

    def __call__(
        self,
        model: nn.Module,
        params: Mapping[str, nn.Parameter],
        *,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]: ...


#: The registered pruning scores; iterates over their names in registration order.
PRUNING_METHODS: Registry[ScoreFn] = Registry("pruning method", "register_pruning_method")


def register_pruning_method(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering a :class:`ScoreFn` under ``name``."""
    return PRUNING_METHODS.register(name)


def get_pruning_method(name: str) -> ScoreFn:
    """The score function registered under ``name``."""
    return PRUNING_METHODS.get(name)


@register_pruning_method("random")
def random_scores(
    model: nn.Module, params: Mapping[str, nn.Parameter], *, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Data-free uniform scores (Liu et al., ICLR 2022), drawn on the CPU in name order.

    Drawing on the CPU from the caller's seeded generator makes the mask independent of
    the device, so every DDP rank computes the same one.
    """
    return {
        name: torch.rand(param.shape, generator=generator, dtype=torch.float64)
        for name, param in params.items()
    }


@register_pruning_method("magnitude")
def magnitude_scores(
    model: nn.Module, params: Mapping[str, nn.Parameter], *, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``|w|``: keep the largest weights (magnitude pruning, Han et al., NeurIPS 2015)."""
    return {name: param.detach().abs() for name, param in params.items()}
