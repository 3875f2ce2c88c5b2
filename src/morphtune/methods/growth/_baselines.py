"""Growth baselines ``random`` and ``zero`` (the G_random / G_zero of G_stack, §4.4).

Both build a fresh target model and copy every source tensor (parameters and buffers,
BatchNorm statistics included) into the leading slice of the matching target tensor:
hidden layer / block / stage block ``i`` of the source goes to layer / block ``i`` of the
target (an MLP's output layer to the target's output layer), everything else (embeddings,
norms, heads) to the tensor of the same name. They differ only in what fills the rest.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import torch
from torch import nn

from morphtune.methods.growth._base import (
    GrowthOperator,
    GrowthOptions,
    GrowthResult,
    empty_like,
    verbatim_copies,
)
from morphtune.methods.growth._registry import register_growth_operator
from morphtune.models import MLPConfig

__all__ = ["RandomGrowth", "ZeroGrowth"]

_FAMILIES = ("mlp", "cnn", "vit", "gpt")
#: Direct parameters (not inside a Linear/Conv/norm/embedding) and their random init,
#: as the ViT/GPT constructors draw them: ``std`` of a normal, 0 for zeros.
_DIRECT_STD = {"cls_token": 0.0, "pos_embed": 0.02}


def _check_target(source: Any, target: Any) -> None:
    """Every copied tensor must fit into the leading slice of its target tensor (the
    shared rules already keep cnn stages and transformer heads and MLPs from shrinking)."""
    if not isinstance(source, MLPConfig):
        return
    for index, width in enumerate(source.hidden):
        if target.hidden[index] < width:
            raise ValueError(
                f"hidden layer {index} can only grow: new_config.hidden[{index}] must be "
                f">= {width}, but got {target.hidden[index]}"
            )
    if target.hidden[-1] < source.hidden[-1]:
        raise ValueError(
            "the output layer is copied into the target's output layer, so "
            f"new_config.hidden[-1] must be >= {source.hidden[-1]}, but got "
            f"{target.hidden[-1]}"
        )


def _fill(tensor: torch.Tensor, draw: torch.Tensor | float) -> None:
    if isinstance(draw, float):
        tensor.fill_(draw)
    else:
        tensor.copy_(draw.to(device=tensor.device, dtype=tensor.dtype))


@torch.no_grad()
def _init(model: nn.Module, generator: torch.Generator, zero: bool) -> None:
    """Every tensor of ``model``: the families' default init drawn from ``generator``
    (uniform ``+-1/sqrt(fan_in)`` for Linear/Conv weights and biases, N(0, 1) embeddings,
    ``_DIRECT_STD`` for direct parameters), or 0 when ``zero``; norms get weight 1,
    bias 0, and BatchNorm the fresh statistics (mean 0, var 1, no batches tracked)."""

    def uniform(tensor: torch.Tensor, bound: float) -> torch.Tensor | float:
        if zero:
            return 0.0
        draw = torch.empty(tensor.shape, dtype=torch.float64)
        return draw.uniform_(-bound, bound, generator=generator)

    def normal(tensor: torch.Tensor, std: float) -> torch.Tensor | float:
        if zero or std == 0:
            return 0.0
        return std * torch.randn(tensor.shape, dtype=torch.float64, generator=generator)

    done: set[int] = set()
    for module in model.modules():
        owned = list(module.parameters(recurse=False))
        if isinstance(module, nn.Linear | nn.Conv2d):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            _fill(module.weight, uniform(module.weight, bound))
            if module.bias is not None:
                _fill(module.bias, uniform(module.bias, bound))
        elif isinstance(module, nn.BatchNorm2d | nn.LayerNorm):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
            if isinstance(module, nn.BatchNorm2d):
                cast(torch.Tensor, module.running_mean).zero_()
                cast(torch.Tensor, module.running_var).fill_(1.0)
                cast(torch.Tensor, module.num_batches_tracked).zero_()
        elif isinstance(module, nn.Embedding):
            _fill(module.weight, normal(module.weight, 1.0))
        else:
            continue
        done.update(id(p) for p in owned)
    for name, param in model.named_parameters():
        if id(param) in done:
            continue
        std = _DIRECT_STD.get(name.rsplit(".", 1)[-1])
        if std is None:
            raise RuntimeError(f"growth baseline does not know how to initialise {name!r}")
        _fill(param, normal(param, std))


def _source_names(source: Any, target: Any, names: list[str]) -> dict[str, str]:
    """``target tensor name -> source tensor name``: an MLP's output layer moves to the
    target's last layer; every other name (layer/block ``i``) is kept."""
    if not isinstance(source, MLPConfig):
        return {name: name for name in names}
    mapping = {}
    for name in names:
        _, index, kind = name.split(".", 2)
        new_index = int(index) if int(index) < source.depth else target.depth
        mapping[f"layers.{new_index}.{kind}"] = name
    return mapping


class _Baseline(GrowthOperator):
    families = _FAMILIES
    zero: ClassVar[bool] = False

    def check_target(self, source: Any, target: Any, options: GrowthOptions) -> None:
        _check_target(source, target)

    @torch.no_grad()
    def _expand(
        self, model: nn.Module, target: Any, *, seed: int, options: GrowthOptions
    ) -> GrowthResult:
        config = cast(Any, model).config
        grown = empty_like(model, target)
        _init(grown, torch.Generator().manual_seed(seed), self.zero)

        source_state = model.state_dict()
        grown_state = grown.state_dict()
        origins = _source_names(config, target, list(source_state))
        for new_name, old_name in origins.items():
            old, new = source_state[old_name], grown_state[new_name]
            if old.dim() != new.dim() or any(
                a > b for a, b in zip(old.shape, new.shape, strict=True)
            ):
                raise RuntimeError(  # pragma: no cover  (check_target rules it out)
                    f"cannot copy {old_name} {tuple(old.shape)} into {new_name} {tuple(new.shape)}"
                )
            new[tuple(slice(0, size) for size in old.shape)].copy_(old)
        return GrowthResult(grown, verbatim_copies(model, grown, origins))


@register_growth_operator("random")
class RandomGrowth(_Baseline):
    """G_random: the copied source sits in the leading slices of a freshly initialised
    target (seeded, the family's default init); new rows, columns, channels, layers and
    blocks keep their random values, new norm entries are the fresh ``weight 1, bias 0``
    (BatchNorm statistics ``mean 0, var 1``). Never function-preserving."""

    lossless = ()
    zero = False


@register_growth_operator("zero")
class ZeroGrowth(_Baseline):
    """G_zero: like ``random``, but every new entry of every weight, bias, embedding,
    class token and position embedding is 0, new layers and blocks included; norms keep
    their neutral init (``weight 1, bias 0``, BatchNorm ``mean 0, var 1``), so a zero
    BatchNorm channel stays 0. All-zero layers sit at a saddle point: their weights get
    no gradient (at most their output biases do), which is what this baseline measures.

    Per family:

    - ``mlp``: new hidden units have zero fan-in, bias and fan-out (outputs kept), but a
      new hidden layer is all zero and cuts the signal, so depth growth is not lossless.
    - ``cnn``: new channels are 0 after every conv, BatchNorm (beta 0, mean 0) and ReLU,
      and the head ignores them; a new block's branch outputs 0, so the block is the
      identity on its ReLU input. Lossless (eval and train mode) for every cnn target.
    - ``vit``/``gpt``: a new block is the identity (zero ``attn.proj`` and ``fc2``), but
      new zero entries of the residual stream change LayerNorm's mean and variance, so
      width growth is not lossless.
    """

    lossless = ("cnn",)
    zero = True
