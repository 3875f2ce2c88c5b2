"""Name -> builder registry for model families."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from torch import nn

from morphtune.models._mlp import MLP, MLPConfig

__all__ = ["MODEL_FAMILIES", "build_model", "register_model"]

ModelBuilder = Callable[[Any], nn.Module]
_Builder = TypeVar("_Builder", bound=ModelBuilder)

_BUILDERS: dict[str, ModelBuilder] = {}
#: Names of the registered model families, in registration order (kept in sync by
#: :func:`register_model`).
MODEL_FAMILIES: list[str] = []


def register_model(name: str) -> Callable[[_Builder], _Builder]:
    """Decorator registering ``builder(config) -> nn.Module`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model family name must be a non-empty str, but got {name!r}")

    def decorator(builder: _Builder) -> _Builder:
        if name in _BUILDERS:
            raise ValueError(f"model family {name!r} is already registered")
        _BUILDERS[name] = builder
        MODEL_FAMILIES.append(name)
        return builder

    return decorator


def build_model(family: str, config: Any) -> nn.Module:
    """Build a model of the registered ``family`` from its config."""
    builder = _BUILDERS.get(family)
    if builder is None:
        raise ValueError(
            f"unknown model family {family!r}; valid: {sorted(_BUILDERS)} "
            "(register more with morphtune.models.register_model)"
        )
    return builder(config)


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
