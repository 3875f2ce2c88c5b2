"""Template-mixture MLP: two members whose layers mix template banks (MixtureGrowth).

MixtureGrowth (Pham et al., WACV 2024) trains two narrow networks ("members") whose
layer weights are learned linear combinations of templates, ``W = sum_k alpha_k T_k``,
then grows them into one network twice as wide whose hidden layers are 2x2 block
matrices over both members' templates (the ``mixturegrowth`` growth operator).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from morphtune.models._base import TaskShape, check_positive_int
from morphtune.models._registry import register_model

__all__ = ["MEMBERS", "MixtureConfig", "MixtureMLP"]

#: Number of members before growth (the grown network is their 2x2 block union).
MEMBERS = 2


@dataclass(frozen=True)
class MixtureConfig:
    """Structure of a :class:`MixtureMLP`.

    - ``in_features``, ``out_features``: the task (flattened input size, classes).
    - ``member_width``: hidden width of each of the two members.
    - ``depth``: hidden layers per member (``depth - 1`` hidden-to-hidden layers).
    - ``templates``: templates per member and layer (the bank of a grown hidden layer
      holds ``2 * templates``).
    - ``grown``: ``False`` for the two independent members, ``True`` for the connected
      network ``2 * member_width`` wide that ``mixturegrowth`` makes of them.
    """

    family: ClassVar[str] = "mixture"
    TASK_FIELDS: ClassVar[tuple[str, ...]] = ("in_features", "out_features")

    in_features: int
    out_features: int
    member_width: int
    depth: int
    templates: int = 2
    grown: bool = False

    def __post_init__(self) -> None:
        for name in ("in_features", "out_features", "member_width", "depth", "templates"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.grown, bool):
            raise ValueError(f"grown must be a bool, but got grown={self.grown!r}")

    @property
    def width(self) -> int:
        """Hidden width of one connected network: ``member_width`` for each member before
        growth, ``2 * member_width`` after."""
        return MEMBERS * self.member_width if self.grown else self.member_width

    def resized(self, width: int, depth: int) -> MixtureConfig:
        """The grown config (``width == 2 * member_width``, same depth), or ``self`` for
        its own size; a mixture model grows only by that one step."""
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        if width == self.width and depth == self.depth:
            return self
        if depth != self.depth:
            raise ValueError(
                f"a 'mixture' model keeps its depth when grown: depth must be {self.depth}, "
                f"but got depth={depth}"
            )
        if self.grown:
            raise ValueError(
                f"a grown 'mixture' model cannot be resized: width must stay {self.width}, "
                f"but got width={width}"
            )
        if width != MEMBERS * self.member_width:
            raise ValueError(
                "a 'mixture' model grows by exactly 2x in width: width must be "
                f"2*member_width={MEMBERS * self.member_width} (or {self.width} to keep it), "
                f"but got width={width}"
            )
        return MixtureConfig(
            self.in_features,
            self.out_features,
            self.member_width,
            self.depth,
            self.templates,
            grown=True,
        )

    @classmethod
    def from_spec(cls, task: TaskShape, model: Mapping[str, Any]) -> MixtureConfig:
        """Two members ``width`` wide with ``depth`` hidden layers and ``templates``
        templates per layer (default 2), over the flattened input."""
        if task.task != "classify":
            raise ValueError(f"model family 'mixture' classifies, but the task is {task.task!r}")
        in_features = 1
        for size in task.input_shape:
            in_features *= size
        return cls(
            in_features=in_features,
            out_features=task.num_classes,
            member_width=model["width"],
            depth=model["depth"],
            templates=model.get("templates", 2),
        )


class MixtureMLP(nn.Module):
    """ReLU MLP whose weights are mixtures of templates, before or after MixtureGrowth.

    Layers are indexed like :class:`~morphtune.models.MLP`'s: ``0`` is the input layer,
    ``1 .. depth-1`` the hidden-to-hidden layers, ``depth`` the classifier. Each layer
    ``i`` owns three parameters, kept directly on this module (so
    :func:`~morphtune.flops.model_cost` counts them):

    - ``templates_i``: ``(2, K, out, in)``, member ``m``'s ``K`` templates of its block.
    - ``coefficients_i``: ``(2, K)``, member ``m``'s block is
      ``W_m = sum_k coefficients_i[m, k] * templates_i[m, k]``; for a hidden layer of a
      grown model ``(2, 2, 2K)`` instead: block ``(r, c)`` (from member ``c``'s units to
      member ``r``'s) is ``sum_j coefficients_i[r, c, j] * bank[j]`` over the bank
      ``templates_i.reshape(2K, out, in)`` of both members' templates.
    - ``bias_i``: ``(2, out)`` per member, and ``(out_features,)`` for the classifier.

    Before growth the two members are independent networks: the input layer stacks
    ``[W_0; W_1]`` (each member reads the whole input), hidden layers are block
    diagonal, and the classifier adds the members' logits and one shared bias,
    ``W_out,0 h_0 + W_out,1 h_1 + b``. After growth every hidden layer is a full 2x2
    block matrix; input layer and classifier are unchanged. Inputs are flattened.
    """

    def __init__(self, config: MixtureConfig) -> None:
        super().__init__()
        if not isinstance(config, MixtureConfig):
            raise ValueError(f"config must be a MixtureConfig, but got {type(config).__name__}")
        self.config: MixtureConfig = config
        width, k = config.member_width, config.templates
        for index in range(config.depth + 1):
            fan_in = self.layer_shape(index)[1]
            if self._is_hidden(index) and not config.grown:
                fan_in = width  # block diagonal: each unit reads its own member only
            out, inp = self._block_shape(index)
            bound = fan_in**-0.5
            templates = torch.empty(MEMBERS, k, out, inp).uniform_(-bound, bound)
            self.register_parameter(f"templates_{index}", nn.Parameter(templates))
            if config.grown and self._is_hidden(index):
                coefficients = torch.randn(MEMBERS, MEMBERS, MEMBERS * k)
            else:
                coefficients = torch.randn(MEMBERS, k)
            coefficients = coefficients / coefficients.norm(dim=-1, keepdim=True)
            self.register_parameter(f"coefficients_{index}", nn.Parameter(coefficients))
            bias_shape = (config.out_features,) if index == config.depth else (MEMBERS, width)
            bias = torch.empty(bias_shape).uniform_(-bound, bound)
            self.register_parameter(f"bias_{index}", nn.Parameter(bias))

    # ------------------------------------------------------------------ structure

    def _is_hidden(self, index: int) -> bool:
        return 0 < index < self.config.depth

    def _block_shape(self, index: int) -> tuple[int, int]:
        """``(out, in)`` of one member's block (one template) of layer ``index``."""
        config = self.config
        out = config.out_features if index == config.depth else config.member_width
        inp = config.in_features if index == 0 else config.member_width
        return out, inp

    def layer_shape(self, index: int) -> tuple[int, int]:
        """``(out, in)`` of the assembled weight :meth:`layer_weight` of layer ``index``."""
        config = self.config
        self._check_index(index)
        out = config.out_features if index == config.depth else MEMBERS * config.member_width
        inp = config.in_features if index == 0 else MEMBERS * config.member_width
        return out, inp

    def _check_index(self, index: int) -> None:
        depth = self.config.depth
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= depth:
            raise ValueError(f"layer index must satisfy 0 <= index <= {depth}, but got {index!r}")

    def layer_templates(self, index: int) -> torch.Tensor:
        """``templates_i``: ``(2, K, out, in)``."""
        self._check_index(index)
        return self.get_parameter(f"templates_{index}")

    def layer_coefficients(self, index: int) -> torch.Tensor:
        """``coefficients_i``: ``(2, K)``, or ``(2, 2, 2K)`` for a grown hidden layer."""
        self._check_index(index)
        return self.get_parameter(f"coefficients_{index}")

    def layer_bias(self, index: int) -> torch.Tensor:
        """``bias_i``: ``(2, member_width)``, or ``(out_features,)`` for the classifier."""
        self._check_index(index)
        return self.get_parameter(f"bias_{index}")

    def layer_blocks(self, index: int) -> torch.Tensor:
        """The mixed blocks of layer ``index``: ``(2, out, in)`` per member, or
        ``(2, 2, out, in)`` (row block, column block) for a grown hidden layer."""
        templates, coefficients = self.layer_templates(index), self.layer_coefficients(index)
        if coefficients.dim() == 3:
            bank = templates.reshape(-1, *templates.shape[2:])
            return torch.einsum("rcj,joi->rcoi", coefficients, bank)
        return torch.einsum("mk,mkoi->moi", coefficients, templates)

    def layer_weight(self, index: int) -> torch.Tensor:
        """The dense weight of layer ``index`` of the connected network (what the forward
        pass computes): ``[W_0; W_1]`` for the input layer, block diagonal (before
        growth) or the full 2x2 block matrix (after) for hidden layers, and
        ``[W_out,0, W_out,1]`` for the classifier."""
        blocks = self.layer_blocks(index)
        if blocks.dim() == 4:
            return torch.cat([torch.cat(list(row), dim=1) for row in blocks], dim=0)
        if index == 0:
            return torch.cat(list(blocks), dim=0)
        if index == self.config.depth:
            return torch.cat(list(blocks), dim=1)
        return torch.block_diag(*blocks)

    # ------------------------------------------------------------------ cost

    def flop_uses(self) -> dict[str, int]:
        """No ``nn.Linear`` modules: every FLOP is in :meth:`extra_flops`."""
        return {}

    def extra_flops(self) -> int:
        """Forward FLOPs per sample: 2 per multiply-add over the weights actually applied
        (each member's own block before growth, all four blocks of a grown hidden layer)
        plus one add per bias entry. Mixing templates into weights is done once per
        batch, not per sample, and is not counted."""
        config = self.config
        flops = 0
        for index in range(config.depth + 1):
            out, inp = self._block_shape(index)
            grown_hidden = config.grown and self._is_hidden(index)
            blocks = MEMBERS * MEMBERS if grown_hidden else MEMBERS
            biases = config.out_features if index == config.depth else MEMBERS * out
            flops += 2 * blocks * out * inp + biases
        return flops

    # ------------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        depth = self.config.depth
        # Hidden state (batch, member, member_width): [h_0, h_1].
        h = torch.einsum("moi,bi->bmo", self.layer_blocks(0), x) + self.layer_bias(0)
        h = torch.relu(h)
        for index in range(1, depth):
            blocks = self.layer_blocks(index)
            if blocks.dim() == 4:
                h = torch.einsum("rcoi,bci->bro", blocks, h)
            else:
                h = torch.einsum("moi,bmi->bmo", blocks, h)
            h = torch.relu(h + self.layer_bias(index))
        return torch.einsum("moi,bmi->bo", self.layer_blocks(depth), h) + self.layer_bias(depth)


register_model("mixture", MixtureConfig, MixtureMLP)
