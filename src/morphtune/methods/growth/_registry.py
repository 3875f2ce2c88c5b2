"""Growth operators behind a registry: ``expand(model, target, operator)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

from torch import nn

from morphtune.methods.growth._base import GrowthOperator, GrowthOptions, GrowthResult
from morphtune.methods.sparsity import find_masks
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

#: Config fields an operator may set itself (LEMON rescales LayerNorm's eps).
ADJUSTABLE_FIELDS = ("ln_eps",)

_Op = TypeVar("_Op", bound=type[GrowthOperator])


def register_growth_operator(name: str) -> Callable[[_Op], _Op]:
    """Class decorator registering an instance of a :class:`GrowthOperator` under ``name``."""

    def decorator(cls: _Op) -> _Op:
        GROWTH_OPERATORS.register(name)(cls())
        return cls

    return decorator


def _family_of(config: Any) -> str:
    family = getattr(type(config), "family", None)
    if not isinstance(family, str):
        raise ValueError(f"not a model config of a registered family: {type(config).__name__}")
    return family


def check_growth(
    source: Any, target: Any, operator: str, options: GrowthOptions | None = None
) -> None:
    """Raise ``ValueError`` unless ``operator`` can grow config ``source`` into ``target``.

    Works on configs alone, so a spec can be checked before any model is built.
    """
    op = GROWTH_OPERATORS.get(operator)
    family = _family_of(source)
    if family not in op.families:
        raise ValueError(
            f"growth operator {operator!r} cannot grow model family {family!r}; "
            f"it grows {list(op.families)}"
        )
    if type(target) is not type(source):
        raise ValueError(
            f"growth keeps the model family: the target must be a {type(source).__name__}, "
            f"but got {type(target).__name__}"
        )
    for name in source.TASK_FIELDS:
        old, new = getattr(source, name), getattr(target, name)
        if old != new:
            raise ValueError(
                f"growth keeps {name}: new_config.{name} must equal the model's {old}, "
                f"but got {new}"
            )
    if target.width < source.width or target.depth < source.depth:
        raise ValueError(
            "growth cannot shrink a model: the target's width and depth must be >= the "
            f"model's ({source.width}, {source.depth}), but got ({target.width}, {target.depth})"
        )
    if op.max_depth_factor is not None and target.depth > op.max_depth_factor * source.depth:
        raise ValueError(
            f"growth operator {operator!r} grows depth at most {op.max_depth_factor:g}x per "
            f"event: target depth must be <= {int(op.max_depth_factor * source.depth)}, "
            f"but got {target.depth}"
        )
    op.check_target(source, target, options or GrowthOptions())


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
    options = options or GrowthOptions()
    source = getattr(model, "config", None)
    check_growth(source, new_config, operator, options)
    op = GROWTH_OPERATORS.get(operator)
    if find_masks(model) and _family_of(source) not in op.mask_families:
        raise ValueError(
            f"growth operator {operator!r} does not grow the sparsity masks of a "
            f"{_family_of(source)!r} model (it grows masks for {list(op.mask_families)}); "
            "prune after growth or use net2net on an mlp"
        )
    result = op.expand(model, new_config, seed=seed, options=options)
    grown = getattr(result.model, "config", None)
    mismatched = [
        f.name
        for f in fields(new_config)
        if f.name not in ADJUSTABLE_FIELDS and getattr(grown, f.name) != getattr(new_config, f.name)
    ]
    if mismatched:
        raise RuntimeError(f"growth operator {operator!r} built fields {mismatched} wrongly")
    return result


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
