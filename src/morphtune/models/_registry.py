"""Name -> builder registry for model families."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from torch import nn

from morphtune.models._mlp import MLP, MLPConfig
from morphtune.registry import Registry

__all__ = ["MODEL_FAMILIES", "build_model", "register_model"]

ModelBuilder = Callable[[Any], nn.Module]
_Builder = TypeVar("_Builder", bound=ModelBuilder)

#: The registered model builders; iterates over their names in registration order.
MODEL_FAMILIES: Registry[ModelBuilder] = Registry("model family", "morphtune.models.register_model")


def register_model(name: str) -> Callable[[_Builder], _Builder]:
    """Decorator registering ``builder(config) -> nn.Module`` under ``name``."""
    add = MODEL_FAMILIES.register(name)

    # Hands back the builder's own type (not ModelBuilder), so typed builders stay typed.
    def decorator(builder: _Builder) -> _Builder:
        add(builder)
        return builder

    return decorator


def build_model(family: str, config: Any) -> nn.Module:
    """Build a model of the registered ``family`` from its config."""
    return MODEL_FAMILIES.get(family)(config)


@register_model("mlp")
def _build_mlp(config: MLPConfig | Mapping[str, Any]) -> MLP:
    if isinstance(config, Mapping):
        valid = {field.name for field in fields(MLPConfig)}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ValueError(f"unknown MLP config keys {unknown}; valid: {sorted(valid)}")
        missing = sorted(f.name for f in fields(MLPConfig) if f.default is MISSING)
        missing = [name for name in missing if name not in config]
        if missing:
            raise ValueError(f"MLP config is missing required keys {missing}")
        config = MLPConfig(**config)
    return MLP(config)
