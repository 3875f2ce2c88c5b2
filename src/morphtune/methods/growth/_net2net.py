"""Net2Net function-preserving growth for :class:`~morphtune.models.MLP` (METHODS §4.1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import torch
from torch import nn

from morphtune.methods.sparsity import MaskSet, find_masks
from morphtune.models import MLP, MLPConfig

__all__ = ["net2net_deepen", "net2net_widen"]


def _check_mlp(model: object) -> MLP:
    if not isinstance(model, MLP):
        raise ValueError(f"Net2Net grows a morphtune MLP, but got {type(model).__name__}")
    return model


def _linears(model: MLP) -> list[nn.Linear]:
    """``model.layers`` typed as the ``nn.Linear`` layers an :class:`MLP` holds."""
    return [cast(nn.Linear, layer) for layer in model.layers]


def _empty_mlp_like(model: MLP, config: MLPConfig) -> MLP:
    """An uninitialised MLP on ``model``'s device and dtype (no global RNG draws)."""
    reference = _linears(model)[0].weight
    with torch.device("meta"):
        grown = MLP(config)
    grown = grown.to_empty(device=reference.device).to(dtype=reference.dtype)
    grown.train(model.training)
    return grown


def _replica_map(width: int, new_width: int, generator: torch.Generator) -> torch.Tensor:
    """``g``: unit ``j`` of the wide layer copies unit ``g[j]`` of the narrow one."""
    extra = torch.randint(0, width, (new_width - width,), generator=generator)
    return torch.cat([torch.arange(width), extra])


def _expand(
    tensor: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None
) -> torch.Tensor:
    """Copy rows by ``rows`` and replicate columns by ``cols`` (indices on the CPU)."""
    if rows is not None:
        tensor = tensor[rows.to(tensor.device)]
    if cols is not None:
        tensor = tensor[:, cols.to(tensor.device)]
    return tensor


def _widen_weight(
    weight: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None
) -> torch.Tensor:
    """Copy fan-in rows; replicate fan-out columns divided by their replica counts."""
    wide = _expand(weight, rows, cols)
    if cols is not None:
        replicas = torch.bincount(cols, minlength=weight.shape[1])[cols]
        wide = wide / replicas.to(device=weight.device, dtype=weight.dtype)
    return wide


def _perturb_new_rows(
    wide: torch.Tensor, weight: torch.Tensor, noise: float, generator: torch.Generator
) -> None:
    """Add ``noise * std(weight)`` Gaussian noise, in place, to the rows past the source's."""
    new_rows = wide[weight.shape[0] :]
    if new_rows.numel() == 0:
        return
    draw = torch.randn(new_rows.shape, generator=generator, dtype=torch.float64)
    scale = noise * float(weight.to(torch.float64).std(correction=0))
    new_rows += (scale * draw).to(device=wide.device, dtype=wide.dtype)


def _check_new_hidden(config: MLPConfig, new_hidden: Sequence[int]) -> tuple[int, ...]:
    new_hidden = tuple(new_hidden)
    if len(new_hidden) != config.depth:
        raise ValueError(
            f"new_hidden must give one width per hidden layer ({config.depth}), "
            f"but got {len(new_hidden)}: new_hidden={new_hidden}"
        )
    for index, (width, new_width) in enumerate(zip(config.hidden, new_hidden, strict=True)):
        if isinstance(new_width, bool) or not isinstance(new_width, int) or new_width < width:
            raise ValueError(
                f"hidden layer {index} can only grow: new_hidden[{index}] must be an int "
                f">= {width}, but got {new_width!r}"
            )
    return new_hidden


@torch.no_grad()
def net2net_widen(
    model: MLP, new_hidden: Sequence[int], *, seed: int = 0, noise: float = 0.0
) -> MLP:
    """Net2WiderNet (Chen, Goodfellow, Shlens, ICLR 2016): widen every hidden layer.

    Hidden layer ``i`` grows from ``n_i`` to ``new_hidden[i]`` units. Unit ``j`` of the
    wide layer copies unit ``g(j)`` (``g(j) = j`` for ``j < n_i``, otherwise uniform on
    ``{0..n_i-1}`` from a generator seeded with ``seed``): its incoming weights and bias
    are copied, and the outgoing weights of every replica are divided by the number of
    replicas of its source unit, so the function is unchanged.

    Keep-masks (``<param>_keep_mask`` buffers) are grown by the same mapping (rows
    copied, columns replicated) and attached, already applied, to the new model.
    ``noise > 0`` adds ``noise * std(W)`` Gaussian noise to the incoming weights of the
    new replicas to break their symmetry; the function is then only approximately kept.
    Returns a new model on the same device, dtype and train/eval mode; ``model`` is
    left untouched.
    """
    model = _check_mlp(model)
    config = model.config
    new_hidden = _check_new_hidden(config, new_hidden)
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
        raise ValueError(f"noise must satisfy noise >= 0, but got noise={noise!r}")
    if not math.isfinite(noise):
        raise ValueError(f"noise must be finite, but got noise={noise!r}")

    generator = torch.Generator().manual_seed(seed)
    maps = [
        _replica_map(width, new_width, generator)
        for width, new_width in zip(config.hidden, new_hidden, strict=True)
    ]
    source_masks = find_masks(model)
    widened = _empty_mlp_like(model, replace(config, hidden=new_hidden))
    grown_masks: dict[str, torch.Tensor] = {}
    layer_pairs = zip(_linears(model), _linears(widened), strict=True)
    for index, (layer, wide_layer) in enumerate(layer_pairs):
        rows = maps[index] if index < len(maps) else None
        cols = maps[index - 1] if index > 0 else None
        name = f"layers.{index}.weight"
        weight = layer.weight.detach()
        mask = source_masks.get(name)
        if mask is not None:
            weight = weight * mask  # the function the source computes
        wide_weight = _widen_weight(weight, rows, cols)
        if rows is not None and noise > 0:
            _perturb_new_rows(wide_weight, weight, noise, generator)
        if mask is not None:
            grown_masks[name] = _expand(mask, rows, cols)
            wide_weight = wide_weight * grown_masks[name]
        wide_layer.weight.copy_(wide_weight)
        if layer.bias is not None:
            bias = layer.bias.detach()
            wide_layer.bias.copy_(bias[rows.to(bias.device)] if rows is not None else bias)
    if grown_masks:
        MaskSet(widened, grown_masks)
    return widened


@torch.no_grad()
def net2net_deepen(model: MLP, at: int) -> MLP:
    """Net2DeeperNet (Chen, Goodfellow, Shlens, ICLR 2016): insert an identity layer.

    A new hidden layer of width ``hidden[at]`` with identity weights and zero bias goes
    right after hidden layer ``at``. Its input is already a ReLU output (non-negative),
    so ``ReLU(I h) = h`` and the function is unchanged. Masks on the copied layers are
    carried over under their new names; the inserted layer is dense.
    """
    model = _check_mlp(model)
    config = model.config
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < config.depth:
        raise ValueError(f"at must satisfy 0 <= at < {config.depth}, but got at={at!r}")
    hidden = (*config.hidden[: at + 1], config.hidden[at], *config.hidden[at + 1 :])
    deepened = _empty_mlp_like(model, replace(config, hidden=hidden))
    source_masks = find_masks(model)
    moved_masks: dict[str, torch.Tensor] = {}
    deepened_layers = _linears(deepened)
    for index, layer in enumerate(_linears(model)):
        new_index = index if index <= at else index + 1
        target = deepened_layers[new_index]
        target.weight.copy_(layer.weight)
        if layer.bias is not None:
            target.bias.copy_(layer.bias)
        mask = source_masks.get(f"layers.{index}.weight")
        if mask is not None:
            moved_masks[f"layers.{new_index}.weight"] = mask
    identity = deepened_layers[at + 1]
    nn.init.eye_(identity.weight)
    if identity.bias is not None:
        nn.init.zeros_(identity.bias)
    if moved_masks:
        MaskSet(deepened, moved_masks)
    return deepened
