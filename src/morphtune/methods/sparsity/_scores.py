"""Pruning scores behind a registry: higher score = more worth keeping."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import torch
from torch import nn

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


_SCORES: dict[str, ScoreFn] = {}
#: Names of the registered pruning scores (kept in sync by the decorator).
PRUNING_METHODS: list[str] = []


def register_pruning_method(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering a :class:`ScoreFn` under ``name``."""

    def decorator(score: ScoreFn) -> ScoreFn:
        if name in _SCORES:
            raise ValueError(f"pruning method {name!r} is already registered")
        _SCORES[name] = score
        PRUNING_METHODS.append(name)
        return score

    return decorator


def get_pruning_method(name: str) -> ScoreFn:
    """The score function registered under ``name``."""
    score = _SCORES.get(name)
    if score is None:
        raise ValueError(
            f"unknown pruning method {name!r}; valid: {sorted(_SCORES)} "
            "(register more with register_pruning_method)"
        )
    return score


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
