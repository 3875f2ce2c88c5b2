"""Growth operators behind a registry: ``expand(model, target, operator)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from morphtune.methods.growth._base import (
    ADJUSTABLE_FIELDS,
    GrowthOperator,
    GrowthOptions,
    GrowthResult,
)
from morphtune.registry import Registry

__all__ = [
    "ADJUSTABLE_FIELDS",
    "GROWTH_OPERATORS",
    "check_growth",
    "expand",
    "grow",
    "register_growth_operator",
]

#: The registered growth operators (instances); iterates over their names.
GROWTH_OPERATORS: Registry[GrowthOperator] = Registry(
    "growth operator", "morphtune.methods.growth.register_growth_operator"
)

_Op = TypeVar("_Op", bound=type[GrowthOperator])


def register_growth_operator(name: str) -> Callable[[_Op], _Op]:
    """Class decorator registering an instance of a :class:`GrowthOperator` under ``name``."""

    def decorator(cls: _Op) -> _Op:
        cls.name = name
        GROWTH_OPERATORS.register(name)(cls())
        return cls

    return decorator


def check_growth(
    source: Any, target: Any, operator: str, options: GrowthOptions | None = None
) -> None:
    """Raise ``ValueError`` unless ``operator`` can grow config ``source`` into ``target``
    (:meth:`GrowthOperator.check`). Works on configs alone, so a spec can be checked
    before any model is built."""
    GROWTH_OPERATORS.get(operator).check(source, target, options)


def expand(
    model: nn.Module,
    new_config: Any,
    operator: str = "net2net",
    *,
    seed: int = 0,
    options: GrowthOptions | None = None,
) -> GrowthResult:
    """Grow ``model`` to ``new_config`` with the named operator; ``model`` is left as is.

    The task (input and output sizes) must stay the same, the model may not shrink, and
    the operator must support the family. Returns the grown model and the map of
    parameters copied verbatim (for carrying optimizer state).
    """
    return GROWTH_OPERATORS.get(operator).expand(model, new_config, seed=seed, options=options)


def grow(
    model: nn.Module,
    new_config: Any,
    operator: str = "net2net",
    *,
    seed: int = 0,
    noise: float = 0.0,
    options: GrowthOptions | None = None,
) -> nn.Module:
    """:func:`expand`, returning only the grown model (``noise`` sets ``options.noise``)."""
    if options is None:
        options = GrowthOptions(noise=noise)
    return expand(model, new_config, operator, seed=seed, options=options).model
