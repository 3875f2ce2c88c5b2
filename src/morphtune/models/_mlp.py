"""A plain ReLU multilayer perceptron and its config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from morphtune.models._base import TaskShape, check_positive_int, rescale

__all__ = ["MLP", "MLPConfig", "mlp_config_from"]


@dataclass(frozen=True)
class MLPConfig:
    """Structure of an :class:`MLP`: input size, output size and hidden widths.

    ``hidden`` holds one width per hidden layer (at least one); a list is accepted and
    stored as a tuple so configs stay hashable and comparable.
    """

    family: ClassVar[str] = "mlp"
    TASK_FIELDS: ClassVar[tuple[str, ...]] = ("in_features", "out_features", "bias")

    in_features: int
    out_features: int
    hidden: tuple[int, ...]
    bias: bool = True

    def __post_init__(self) -> None:
        check_positive_int("in_features", self.in_features)
        check_positive_int("out_features", self.out_features)
        if isinstance(self.hidden, str | bytes) or not hasattr(self.hidden, "__iter__"):
            raise ValueError(f"hidden must be a sequence of ints, but got hidden={self.hidden!r}")
        hidden = tuple(self.hidden)
        if len(hidden) < 1:
            raise ValueError(f"hidden must name at least one hidden layer, but got hidden={hidden}")
        for index, width in enumerate(hidden):
            check_positive_int(f"hidden[{index}]", width)
        object.__setattr__(self, "hidden", hidden)
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias must be a bool, but got bias={self.bias!r}")

    @property
    def depth(self) -> int:
        """Number of hidden layers."""
        return len(self.hidden)

    @property
    def width(self) -> int:
        """The widest hidden layer."""
        return max(self.hidden)

    def resized(self, width: int, depth: int) -> MLPConfig:
        """Every hidden width scaled by ``width / self.width`` (rounded half up), then
        layers of the last width appended (or trailing ones dropped) to reach ``depth``."""
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        hidden = [rescale(h, width, self.width) for h in self.hidden]
        hidden = (hidden + [hidden[-1]] * depth)[:depth]
        return MLPConfig(self.in_features, self.out_features, tuple(hidden), self.bias)

    @classmethod
    def from_spec(cls, task: TaskShape, model: Mapping[str, Any]) -> MLPConfig:
        """``depth`` hidden layers ``width`` wide, over the flattened input."""
        if task.task != "classify":
            raise ValueError(f"model family 'mlp' classifies, but the task is {task.task!r}")
        in_features = 1
        for size in task.input_shape:
            in_features *= size
        return mlp_config_from(in_features, task.num_classes, model["width"], model["depth"])

    @property
    def widths(self) -> tuple[int, ...]:
        """All feature sizes from input to output: ``(in, *hidden, out)``."""
        return (self.in_features, *self.hidden, self.out_features)


def mlp_config_from(in_features: int, out_features: int, width: int, depth: int) -> MLPConfig:
    """Config of an MLP with ``depth`` hidden layers, all ``width`` wide."""
    check_positive_int("depth", depth)
    return MLPConfig(in_features=in_features, out_features=out_features, hidden=(width,) * depth)


class MLP(nn.Module):
    """ReLU multilayer perceptron: ``Linear -> ReLU -> ... -> Linear``.

    The baseline model family that growth (Net2Net, Chen et al., ICLR 2016) and
    sparsity (ER/ERK, Liu et al., ICLR 2022) act on. ``layers[i]`` maps
    ``config.widths[i]`` to ``config.widths[i + 1]``; ReLU follows every layer but the
    last. Inputs are flattened to ``(batch, -1)``, so images can be fed directly.
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        if not isinstance(config, MLPConfig):
            raise ValueError(f"config must be an MLPConfig, but got {type(config).__name__}")
        self.config: MLPConfig = config
        widths = config.widths
        self.layers = nn.ModuleList(
            nn.Linear(widths[i], widths[i + 1], bias=config.bias) for i in range(len(widths) - 1)
        )
        self.activation = nn.ReLU()

    def flop_uses(self) -> dict[str, int]:
        """How often each weight-bearing module is applied per sample (for FLOP counts)."""
        return {f"layers.{index}": 1 for index in range(len(self.layers))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = self.activation(x)
        return x
