"""Name -> model family registry: config type, builder, and config-from-spec."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any

from torch import nn

from morphtune.models._base import TaskShape
from morphtune.models._cnn import CNN, CNNConfig
from morphtune.models._gpt import GPT, GPTConfig
from morphtune.models._mlp import MLP, MLPConfig
from morphtune.models._vit import ViT, ViTConfig
from morphtune.registry import Registry

__all__ = [
    "MODEL_FAMILIES",
    "ModelFamily",
    "build_model",
    "config_from_dict",
    "config_from_spec",
    "config_to_dict",
    "register_model",
]


@dataclass(frozen=True)
class ModelFamily:
    """One registered family: its config dataclass (which has ``from_spec``, ``width``,
    ``depth`` and ``resized``) and the module class built from such a config."""

    name: str
    config_type: type
    model_type: Callable[[Any], nn.Module]


#: The registered model families; iterates over their names in registration order.
MODEL_FAMILIES: Registry[ModelFamily] = Registry("model family", "morphtune.models.register_model")


def register_model(name: str, config_type: type, model_type: Callable[[Any], nn.Module]) -> None:
    """Register a family: ``model_type(config)`` builds it from a ``config_type`` instance."""
    if not is_dataclass(config_type):
        raise ValueError(f"config_type must be a dataclass, but got {config_type!r}")
    MODEL_FAMILIES.register(name)(ModelFamily(name, config_type, model_type))


def config_from_dict(family: str, values: Mapping[str, Any]) -> Any:
    """The family's config from a mapping of its fields (unknown or missing keys refused)."""
    config_type = MODEL_FAMILIES.get(family).config_type
    valid = [field.name for field in fields(config_type)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"unknown {family} config keys {unknown}; valid: {sorted(valid)}")
    missing = [
        f.name
        for f in fields(config_type)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in values
    ]
    if missing:
        raise ValueError(f"{family} config is missing required keys {sorted(missing)}")
    converted = {key: tuple(v) if isinstance(v, list) else v for key, v in values.items()}
    return config_type(**converted)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config's fields as plain values (tuples as lists), the inverse of ``config_from_dict``."""
    return {
        field.name: list(value)
        if isinstance(value := getattr(config, field.name), tuple)
        else value
        for field in fields(config)
    }


def config_from_spec(family: str, task: TaskShape, model: Mapping[str, Any]) -> Any:
    """The family's config for a task from the spec's ``model`` section (width, depth, ...)."""
    config_type = MODEL_FAMILIES.get(family).config_type
    return config_type.from_spec(task, model)  # type: ignore[attr-defined]


def build_model(family: str, config: Any) -> nn.Module:
    """Build a model of the registered ``family`` from its config (or a mapping of fields)."""
    entry = MODEL_FAMILIES.get(family)
    if isinstance(config, Mapping):
        config = config_from_dict(family, config)
    if not isinstance(config, entry.config_type):
        raise ValueError(
            f"model family {family!r} is built from a {entry.config_type.__name__}, "
            f"but got {type(config).__name__}"
        )
    return entry.model_type(config)


register_model("mlp", MLPConfig, MLP)
register_model("cnn", CNNConfig, CNN)
register_model("vit", ViTConfig, ViT)
register_model("gpt", GPTConfig, GPT)
