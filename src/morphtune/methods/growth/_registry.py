"""Growth operators behind a registry: ``grow(model, new_config, operator)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import nn

from morphtune.methods.growth._net2net import net2net_deepen, net2net_widen
from morphtune.models import MLP, MLPConfig
from morphtune.registry import Registry

__all__ = ["GROWTH_OPERATORS", "GrowthOperator", "grow", "register_growth_operator"]


class GrowthOperator(Protocol):
    """``operator(model, new_config, seed=..., noise=...) -> grown model``.

    ``noise`` is the relative symmetry-breaking noise on new units (0 keeps a
    function-preserving operator exact).
    """

    def __call__(
        self, model: nn.Module, new_config: Any, *, seed: int, noise: float
    ) -> nn.Module: ...


#: The registered growth operators; iterates over their names in registration order.
GROWTH_OPERATORS: Registry[GrowthOperator] = Registry("growth operator", "register_growth_operator")


def register_growth_operator(name: str) -> Callable[[GrowthOperator], GrowthOperator]:
    """Decorator registering a :class:`GrowthOperator` under ``name``."""
    return GROWTH_OPERATORS.register(name)


def grow(
    model: nn.Module,
    new_config: Any,
    operator: str = "net2net",
    *,
    seed: int = 0,
    noise: float = 0.0,
) -> nn.Module:
    """Grow ``model`` to ``new_config`` with the named operator; ``model`` is left as is.

    The input and output sizes must stay the same: growth changes the inside of the
    network, not its task.
    """
    grow_fn = GROWTH_OPERATORS.get(operator)
    old_config = getattr(model, "config", None)
    for field in ("in_features", "out_features"):
        old, new = getattr(old_config, field, None), getattr(new_config, field, None)
        if old != new:
            raise ValueError(
                f"growth keeps {field}: new_config.{field} must equal the model's {old}, "
                f"but got {new}"
            )
    return grow_fn(model, new_config, seed=seed, noise=noise)


@register_growth_operator("net2net")
def _net2net_grow(model: nn.Module, new_config: Any, *, seed: int, noise: float) -> nn.Module:
    """Net2Wider on the existing hidden layers, then Net2Deeper identity layers appended
    after the last one and widened to their targets. Lossless end to end."""
    if not isinstance(model, MLP) or not isinstance(new_config, MLPConfig):
        raise ValueError(
            "net2net grows an MLP to an MLPConfig, but got "
            f"{type(model).__name__} and {type(new_config).__name__}"
        )
    old, new = model.config, new_config
    if new.bias != old.bias:
        raise ValueError(f"growth keeps bias: new_config.bias must be {old.bias}, got {new.bias}")
    if new.depth < old.depth:
        raise ValueError(
            f"net2net cannot remove layers: new_config has {new.depth} hidden layers, "
            f"the model {old.depth}"
        )
    last = new.hidden[old.depth - 1]
    for index in range(old.depth, new.depth):
        if new.hidden[index] < last:
            raise ValueError(
                f"net2net inserts identity layers of width {last} after hidden layer "
                f"{old.depth - 1}, so new_config.hidden[{index}] must be >= {last}, "
                f"but got {new.hidden[index]}"
            )
    grown = net2net_widen(model, new.hidden[: old.depth], seed=seed, noise=noise)
    if new.depth == old.depth:
        return grown
    for index in range(old.depth, new.depth):
        grown = net2net_deepen(grown, at=index - 1)
    # A second, independent draw for the replicas of the inserted layers.
    return net2net_widen(grown, new.hidden, seed=seed + 1, noise=noise)
