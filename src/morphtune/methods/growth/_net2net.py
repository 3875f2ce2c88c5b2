"""Net2Net function-preserving growth (METHODS §4.1) for the ``mlp`` and ``cnn`` families.

Net2Wider copies units (channels) by a random replica map and splits their fan-out;
Net2Deeper inserts identity layers (MLP) or residual blocks whose branch outputs 0 (CNN).
Transformers (``vit``, ``gpt``) are out of scope: plain replicas in the residual stream
change LayerNorm's statistics, which LEMON (§4.2) handles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

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
from morphtune.methods.sparsity import MaskSet, find_masks
from morphtune.models import CNN, MLP, BasicBlock, CNNConfig, MLPConfig

__all__ = [
    "Net2Net",
    "net2net_deepen",
    "net2net_deepen_cnn",
    "net2net_widen",
    "net2net_widen_cnn",
]


def _check_mlp(model: object) -> MLP:
    if not isinstance(model, MLP):
        raise ValueError(f"Net2Net grows a morphtune MLP, but got {type(model).__name__}")
    return model


def _linears(model: MLP) -> list[nn.Linear]:
    """``model.layers`` typed as the ``nn.Linear`` layers an :class:`MLP` holds."""
    return [cast(nn.Linear, layer) for layer in model.layers]


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
    """Copy fan-in rows; replicate fan-out columns (dim 1, also of conv kernels) divided
    by their replica counts."""
    wide = _expand(weight, rows, cols)
    if cols is not None:
        replicas = torch.bincount(cols, minlength=weight.shape[1])[cols]
        shape = (1, -1) + (1,) * (weight.dim() - 2)
        wide = wide / replicas.to(device=weight.device, dtype=weight.dtype).view(shape)
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
    GrowthOptions(noise=noise)  # validates noise (finite, >= 0)

    generator = torch.Generator().manual_seed(seed)
    maps = [
        _replica_map(width, new_width, generator)
        for width, new_width in zip(config.hidden, new_hidden, strict=True)
    ]
    source_masks = find_masks(model)
    widened = cast(MLP, empty_like(model, replace(config, hidden=new_hidden)))
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
    deepened = cast(MLP, empty_like(model, replace(config, hidden=hidden)))
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


# --------------------------------------------------------------------------- CNN


def _cnn_config(model: object) -> CNNConfig:
    if not isinstance(model, CNN):
        raise ValueError(f"Net2Net grows a morphtune CNN here, but got {type(model).__name__}")
    return model.config


def _copy_bn(target: nn.BatchNorm2d, source: nn.BatchNorm2d, rows: torch.Tensor) -> None:
    """Every replica ``j`` gets the affine parameters AND running statistics of channel
    ``rows[j]`` (the reference copies stats to the last replica only, METHODS §4.1)."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = cast(torch.Tensor, getattr(source, name)).detach()
        cast(torch.Tensor, getattr(target, name)).copy_(value[rows.to(value.device)])
    tracked = cast(torch.Tensor, target.num_batches_tracked)
    tracked.copy_(cast(torch.Tensor, source.num_batches_tracked))


def _copy_conv(
    target: nn.Conv2d,
    source: nn.Conv2d,
    rows: torch.Tensor,
    cols: torch.Tensor | None,
    noise: float,
    generator: torch.Generator,
) -> None:
    weight = source.weight.detach()
    wide = _widen_weight(weight, rows, cols)
    if noise > 0:
        _perturb_new_rows(wide, weight, noise, generator)
    target.weight.copy_(wide)


def _identity_block(block: BasicBlock) -> None:
    """A new block (stride 1, no projection) that is the identity on its input, which is
    a ReLU output (non-negative): ``bn2`` has ``gamma = beta = 0``, so the residual branch
    outputs exactly 0 in eval and train mode, and ``relu(0 + x) = x``. The branch's own
    layers start as Net2Net's identity (centred delta kernels; ``bn1`` the identity of its
    running statistics ``mean = 0, var = 1``: ``gamma = sqrt(1 + eps), beta = 0``), so once
    training moves ``bn2``'s scale off 0 the branch adds a scaled, normalised copy of its
    input rather than noise."""
    for conv in (block.conv1, block.conv2):
        nn.init.dirac_(conv.weight)
    for bn in (block.bn1, block.bn2):
        cast(torch.Tensor, bn.running_mean).zero_()
        cast(torch.Tensor, bn.running_var).fill_(1.0)
        cast(torch.Tensor, bn.num_batches_tracked).zero_()
        bn.bias.zero_()
    block.bn1.weight.fill_(math.sqrt(1.0 + block.bn1.eps))
    block.bn2.weight.zero_()


@torch.no_grad()
def _grow_cnn(model: CNN, target: CNNConfig, seed: int, noise: float) -> CNN:
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    streams = [
        _replica_map(width, new_width, generator)
        for width, new_width in zip(config.widths, target.widths, strict=True)
    ]
    inner = [
        [_replica_map(width, new_width, generator) for _ in range(blocks)]
        for width, new_width, blocks in zip(
            config.widths, target.widths, config.blocks, strict=True
        )
    ]
    grown = cast(CNN, empty_like(model, target))

    _copy_conv(grown.stem, model.stem, streams[0], None, noise, generator)
    _copy_bn(grown.stem_bn, model.stem_bn, streams[0])
    pairs = zip(model.stage_blocks(), grown.stage_blocks(), strict=True)
    for s, (blocks, wide_blocks) in enumerate(pairs):
        for b, (block, wide) in enumerate(zip(blocks, wide_blocks, strict=False)):
            g_in = streams[s - 1] if (b == 0 and s > 0) else streams[s]
            h = inner[s][b]
            _copy_conv(wide.conv1, block.conv1, h, g_in, noise, generator)
            _copy_bn(wide.bn1, block.bn1, h)
            _copy_conv(wide.conv2, block.conv2, streams[s], h, noise, generator)
            _copy_bn(wide.bn2, block.bn2, streams[s])
            if block.proj is not None and block.proj_bn is not None:
                if wide.proj is None or wide.proj_bn is None:  # pragma: no cover
                    raise RuntimeError(f"stages.{s}.{b} lost its projection")
                _copy_conv(wide.proj, block.proj, streams[s], g_in, noise, generator)
                _copy_bn(wide.proj_bn, block.proj_bn, streams[s])
        for wide in wide_blocks[len(blocks) :]:
            _identity_block(wide)
    head = model.head.weight.detach()
    grown.head.weight.copy_(_widen_weight(head, None, streams[-1]))
    grown.head.bias.copy_(model.head.bias.detach())
    return grown


def net2net_widen_cnn(
    model: CNN, new_widths: Sequence[int], *, seed: int = 0, noise: float = 0.0
) -> CNN:
    """Net2WiderNet on a :class:`~morphtune.models.CNN`: stage ``s`` grows to
    ``new_widths[s]`` channels.

    Channels are grouped into streams, each with its own random replica map ``g``
    (``g(j) = j`` for old channels, uniform otherwise; a generator seeded with ``seed``):
    every layer writing stage ``s``'s residual stream (the stem for stage 0, each block's
    ``conv2``/``bn2`` and the projection ``proj``/``proj_bn``) shares stage ``s``'s map, so
    the shortcut and the branch stay aligned; each block's inner channels (``conv1``'s
    output) get their own map. Fan-in (output channels) and BatchNorm parameters and
    running statistics are copied to every replica; fan-out (input channels, and the
    head's columns) is divided by the replica count. Exact in eval mode, and in train
    mode too (a replica has its source channel's batch statistics); ``noise > 0`` adds
    ``noise * std(W)`` Gaussian noise to the new replicas' fan-in kernels. Masked models
    are refused. Returns a new model on the same device, dtype and train/eval mode.
    """
    new_widths = tuple(new_widths)
    try:
        target = replace(_cnn_config(model), widths=new_widths)
    except ValueError as error:
        raise ValueError(f"new_widths={new_widths} is not a valid cnn width: {error}") from None
    grown = Net2Net().expand(model, target, seed=seed, options=GrowthOptions(noise=noise))
    return cast(CNN, grown.model)


def net2net_deepen_cnn(model: CNN, new_blocks: Sequence[int]) -> CNN:
    """Net2DeeperNet on a :class:`~morphtune.models.CNN`: stage ``s`` gets
    ``new_blocks[s]`` blocks, the new ones appended after its last block (stride 1, no
    projection) as exact identities: their residual branch outputs 0 (``bn2``'s gamma and
    beta are 0) and their input is a ReLU output, so ``relu(0 + x) = x``. The branch starts
    as Net2Net's identity: ``conv1`` and ``conv2`` centred delta kernels, ``bn1`` the
    identity in eval mode (running mean 0, var 1, ``gamma = sqrt(1 + eps)``, beta 0).
    Returns a new model on the same device, dtype and train/eval mode."""
    new_blocks = tuple(new_blocks)
    try:
        target = replace(_cnn_config(model), blocks=new_blocks)
    except ValueError as error:
        raise ValueError(f"new_blocks={new_blocks} is not a valid cnn depth: {error}") from None
    return cast(CNN, Net2Net().expand(model, target).model)


# ---------------------------------------------------------------------- operator


def _mlp_names(config: MLPConfig, target: MLPConfig) -> dict[str, str]:
    """Hidden layers keep their index; the output layer moves past the inserted ones."""
    names = {}
    for index in range(config.depth + 1):
        new_index = index if index < config.depth else target.depth
        for kind in ("weight", "bias"):
            names[f"layers.{new_index}.{kind}"] = f"layers.{index}.{kind}"
    return names


@register_growth_operator("net2net")
class Net2Net(GrowthOperator):
    """Net2Net (Chen, Goodfellow, Shlens, ICLR 2016), lossless when ``noise == 0``.

    - ``mlp``: Net2Wider on the existing hidden layers, then Net2Deeper identity layers
      appended after the last one and widened to their targets. Keep-masks are grown
      along with the weights.
    - ``cnn``: :func:`net2net_widen_cnn` (one replica map per residual stream, one per
      block-internal channel set; BatchNorm parameters and running statistics copied to
      every replica) and :func:`net2net_deepen_cnn` (identity blocks appended to each
      stage) in one pass; exact in eval and train mode. Masks are refused.

    ``vit``/``gpt`` are not supported: replicas in the residual stream break LayerNorm
    (use ``lemon``). ``carried`` lists the parameters whose shape did not change (and
    which are therefore verbatim copies).
    """

    families = ("mlp", "cnn")
    lossless = ("mlp", "cnn")
    mask_families = ("mlp",)

    def check_target(self, source: Any, target: Any, options: GrowthOptions) -> None:
        if isinstance(source, CNNConfig):
            return  # the shared rules (no stage shrinks) are all a cnn needs
        old, new = source, target
        for index, (width, new_width) in enumerate(zip(old.hidden, new.hidden, strict=False)):
            if new_width < width:
                raise ValueError(
                    f"hidden layer {index} can only grow: new_hidden[{index}] must be an int "
                    f">= {width}, but got {new_width!r}"
                )
        last = new.hidden[old.depth - 1]
        for index in range(old.depth, new.depth):
            if new.hidden[index] < last:
                raise ValueError(
                    f"net2net inserts identity layers of width {last} after hidden layer "
                    f"{old.depth - 1}, so new_config.hidden[{index}] must be >= {last}, "
                    f"but got {new.hidden[index]}"
                )

    def _expand(
        self, model: nn.Module, target: Any, *, seed: int, options: GrowthOptions
    ) -> GrowthResult:
        if isinstance(model, CNN):
            grown_cnn = _grow_cnn(model, target, seed, options.noise)
            names = {name: name for name, _ in model.named_parameters()}
            return GrowthResult(grown_cnn, verbatim_copies(model, grown_cnn, names))
        model = _check_mlp(model)
        old, new = model.config, target
        grown = net2net_widen(model, new.hidden[: old.depth], seed=seed, noise=options.noise)
        if new.depth > old.depth:
            for index in range(old.depth, new.depth):
                grown = net2net_deepen(grown, at=index - 1)
            # A second, independent draw for the replicas of the inserted layers.
            grown = net2net_widen(grown, new.hidden, seed=seed + 1, noise=options.noise)
        return GrowthResult(grown, verbatim_copies(model, grown, _mlp_names(old, new)))
