"""LEMON: lossless model expansion (Wang et al., ICLR 2024; METHODS §4.2).

LEMON ("Lossless MOdel ExpansioN", Yite Wang, Jiahao Su, Hanlin Lu, Cong Xie, Tianyi Liu,
Jianbo Yuan, Haibin Lin, Ruoyu Sun, Hongxia Yang; ICLR 2024) initialises a larger model
from a trained smaller one so that the function is kept exactly, while the replicas of a
unit are **not** symmetric (unlike Net2Net, whose replicas stay identical under SGD):

- **Width, outputs.** A wider layer's unit ``j`` copies unit ``j mod d_s`` (circular).
  Layers that write a transformer's residual stream (embeddings, attention ``proj``,
  ``fc2``) copy circularly up to the last full copy and put the *mean* over the source
  units after it, so the stream becomes ``[x, x, ..., mean(x), ...]``.
- **Width, inputs.** The ``n_j`` copies of input ``j`` share its fan-in column
  asymmetrically: random ``R_k`` become ``R_k - (sum_k R_k - W[:, j]) / n_j``, which sum to
  ``W[:, j]`` but differ, so the replicas get different gradients. (Here the split is
  drawn per source row and the split rows are then replicated, so the copies of a unit
  stay bitwise equal at init; see ``_Builder.split_fan_in``.)
- **LayerNorm** with an indivisible width (``D_T = k D_S + r``): the stream's mean is kept
  and its variance scales by ``s = k D_S / D_T``; ``gamma' = circular(gamma) * sqrt(s)``,
  ``beta' = circular(beta)``, ``eps' = eps * s`` on the copies, and the ``r`` appended
  positions output exactly 0 (so their fan-out is arbitrary).
- **Attention** keeps ``head_dim``; heads are copied circularly and the output projection
  splits its fan-in over the head copies.
- **Depth** (at most 2x per event): the first ``2 L_S - L_T`` source blocks map one to one;
  every later one yields a copy and a new block whose residual branches output 0 (Pre-LN
  makes it the identity). ``options.new_block``: ``cancel`` (a copy of the source block
  whose ``proj``/``fc2`` fan-in copies sum to 0, biases 0) or ``zero`` (zero ``proj`` and
  ``fc2``); ``options.placement``: ``interleave`` or ``stack``.

Implemented here for all four model families, lossless on each (eval mode, and the CNN's
new blocks also in train mode): ``mlp`` (circular units, asymmetric fan-in, identity
layers after a ReLU for depth), ``cnn`` (circular channels and BatchNorm, asymmetric conv
fan-in, new BasicBlocks with a zeroed last BatchNorm), ``vit`` and ``gpt`` (the rules
above). The post-expansion learning-rate recipe (same peak LR as scratch, faster decay)
belongs to the trainer. ``options.noise`` is ignored: the random fan-in split already
breaks the symmetry and keeps the function exactly. All random draws come from a local
generator seeded with ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
from morphtune.models import CNN, GPT, MLP, CNNConfig, MLPConfig, ViT

__all__ = ["Lemon", "lemon_depth_plan"]

_F64 = torch.float64
#: The model class LEMON knows the layout of, per family.
_MODEL_TYPES: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "vit": ViT, "gpt": GPT}


def lemon_depth_plan(source: int, target: int, placement: str) -> list[tuple[int, bool]]:
    """The target's layers as ``(source_index, is_new)``, ``source <= target <= 2 source``.

    The first ``2 source - target`` source layers map one to one; each later source layer
    yields a copy and a new layer. ``interleave`` puts each new layer right after its
    source's copy, ``stack`` appends the new layers after all copies (in source order).
    """
    if not source <= target <= 2 * source:
        raise ValueError(
            f"LEMON grows depth at most 2x per event: the target depth must be in "
            f"[{source}, {2 * source}], but got {target}"
        )
    if placement not in ("interleave", "stack"):
        raise ValueError(
            f"placement must be one of ['interleave', 'stack'], but got placement={placement!r}"
        )
    one_to_one = 2 * source - target
    plan = [(index, False) for index in range(one_to_one)]
    doubled = range(one_to_one, source)
    if placement == "interleave":
        plan += [entry for index in doubled for entry in ((index, False), (index, True))]
    else:
        plan += [(index, False) for index in doubled] + [(index, True) for index in doubled]
    return plan


def _mlp_representations(source: MLPConfig, target: MLPConfig, placement: str) -> list[int]:
    """For each target hidden layer, the source hidden layer whose units it holds copies
    of: its own source layer, or (identity layers) the one of the layer before it."""
    reps: list[int] = []
    for index, new in lemon_depth_plan(source.depth, target.depth, placement):
        reps.append(reps[-1] if new else index)
    return reps


def _circular_map(source: int, target: int) -> torch.Tensor:
    """Unit ``j`` of the wide layer copies unit ``j mod source``."""
    return torch.arange(target) % source


def _layer_norm_map(source: int, target: int) -> torch.Tensor:
    """Which source position each LayerNorm output position copies; ``-1`` for the
    positions past the last full copy, which output exactly 0."""
    index = _circular_map(source, target)
    index[(target // source) * source :] = -1
    return index


def _circular(tensor: torch.Tensor, target: int, dim: int = 0) -> torch.Tensor:
    return tensor.index_select(dim, _circular_map(tensor.shape[dim], target))


def _rows_of(units: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rows (output units) copied by the index map ``units``."""
    return lambda tensor: tensor[units]


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _stream_writer(tensor: torch.Tensor, target: int, dim: int) -> torch.Tensor:
    """The residual-stream pattern along ``dim``: full circular copies, then the mean over
    the source entries (so the stream's mean is kept and its variance scales by ``s``)."""
    dim = dim % tensor.dim()
    copies, rest = divmod(target, tensor.shape[dim])
    parts = [tensor] * copies
    if rest:
        sizes = [rest if axis == dim else size for axis, size in enumerate(tensor.shape)]
        parts.append(tensor.mean(dim, keepdim=True).expand(sizes))
    return torch.cat(parts, dim)


def _scale(weight: torch.Tensor) -> float:
    """Scale of the random split ``R``: the source weight's std (its mean magnitude when
    the std is 0, e.g. a single entry; 0 keeps an all-zero weight zero)."""
    if weight.numel() == 0:
        return 0.0
    std = float(weight.std(correction=0)) if weight.numel() > 1 else 0.0
    return std if std > 0 else float(weight.abs().mean())


class _Builder:
    """Collects the grown model's state (float64 on the CPU) from the source's, and which
    grown parameter comes from which source parameter (for ``carried``)."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.source = {name: t.detach().to("cpu") for name, t in model.state_dict().items()}
        self.generator = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}
        self.origin: dict[str, str] = {}

    def get(self, name: str) -> torch.Tensor:
        return self.source[name].to(_F64)

    def put(self, name: str, tensor: torch.Tensor, origin: str | None = None) -> None:
        self.state[name] = tensor
        if origin is not None:
            self.origin[name] = origin

    def split_fan_in(
        self, weight: torch.Tensor, source_of: torch.Tensor, *, scale: float, cancel: bool = False
    ) -> torch.Tensor:
        """Spread the source ``weight`` (``(out, d_source, *kernel)``) over the wide inputs.

        ``source_of[c]`` is the source input that wide input ``c`` copies, or ``-1`` for an
        input that is exactly 0. For source input ``j`` with ``n_j`` copies, random ``R_k``
        (std ``scale``) become ``R_k - (sum_k R_k - W[:, j]) / n_j``: the copies sum to
        ``W[:, j]`` (to 0 with ``cancel``) yet differ. A single copy takes ``W[:, j]``
        exactly (0 with ``cancel``); inputs that are 0 get the raw ``R`` (any fan-out is
        exact there, and a non-zero one lets them learn).

        The split is drawn once per source row; the caller then replicates the rows. So
        the copies of a unit compute bitwise-equal values, and a cancelling block's
        residue is rounding only (per-copy splits would let the copies drift apart by
        rounding, which a narrow LayerNorm amplifies). The replicas still differ where it
        matters, in their fan-out, and so get different gradients.
        """
        d_source = weight.shape[1]
        goal = torch.zeros_like(weight) if cancel else weight
        valid = source_of >= 0
        index = source_of.clamp(min=0)
        if source_of.numel() == d_source and bool(valid.all()):
            return goal.index_select(1, index).clone()  # no copies: nothing to split
        counts = torch.bincount(source_of[valid], minlength=d_source)
        if bool((counts == 0).any()):
            raise RuntimeError("LEMON: a source input has no copy in the wide layer")
        shape = (weight.shape[0], source_of.numel(), *weight.shape[2:])
        draw = torch.randn(shape, generator=self.generator, dtype=_F64).mul_(scale)
        copies = valid.nonzero().squeeze(1)
        zeros = (~valid).nonzero().squeeze(1)
        raw = draw.index_select(1, zeros)
        # excess_j = (sum_k R_k - W[:, j]) / n_j, taken off every copy of input j.
        excess = torch.zeros_like(weight).index_add_(1, index[copies], draw.index_select(1, copies))
        excess.sub_(goal).div_(counts.to(_F64).view((1, -1) + (1,) * (weight.dim() - 2)))
        wide = draw.sub_(excess.index_select(1, index))
        single = (valid & (counts[index] == 1)).nonzero().squeeze(1)
        wide.index_copy_(1, single, goal.index_select(1, index[single]))
        wide.index_copy_(1, zeros, raw)
        return wide

    def linear(
        self,
        src: str,
        dst: str,
        rows: Callable[[torch.Tensor], torch.Tensor],
        source_of: torch.Tensor,
        *,
        has_bias: bool = True,
        output: str = "copy",
    ) -> None:
        """A wide Linear/Conv from source module ``src``: ``rows`` maps the source's output
        axis (weight rows, bias entries) to the wide one; the fan-in is split over
        ``source_of``. ``output``: ``copy``, ``cancel`` (fan-in copies sum to 0, bias 0) or
        ``zero`` (zero weight and bias)."""
        weight = self.get(f"{src}.weight")
        if output == "zero":
            wide_in = torch.zeros(
                (weight.shape[0], source_of.numel(), *weight.shape[2:]), dtype=_F64
            )
        else:
            wide_in = self.split_fan_in(
                weight, source_of, scale=_scale(weight), cancel=output == "cancel"
            )
        # Rows last: circular copies (or the stream pattern) of the split source rows.
        wide = rows(wide_in)
        self.put(f"{dst}.weight", wide, f"{src}.weight")
        if has_bias:
            bias = rows(self.get(f"{src}.bias"))
            bias = bias if output == "copy" else torch.zeros_like(bias)
            self.put(f"{dst}.bias", bias, f"{src}.bias")

    def batch_norm(self, src: str, dst: str, target: int, *, zero_affine: bool = False) -> None:
        """BatchNorm parameters and running statistics copied circularly per channel;
        ``zero_affine`` zeroes weight and bias (the branch then outputs exactly 0)."""
        for name in ("weight", "bias", "running_mean", "running_var"):
            value = _circular(self.get(f"{src}.{name}"), target)
            if zero_affine and name in ("weight", "bias"):
                value = torch.zeros_like(value)
            self.put(f"{dst}.{name}", value, f"{src}.{name}")
        self.put(f"{dst}.num_batches_tracked", self.source[f"{src}.num_batches_tracked"].clone())

    def layer_norm(self, src: str, dst: str, target: int) -> None:
        """``gamma' = circular(gamma) sqrt(s)``, ``beta' = circular(beta)`` on the full
        copies; 0 for both on the appended positions. (The reference draws a random gamma
        there; 0 makes their output exactly 0 in floating point too, not only in exact
        arithmetic. They still learn: their fan-out is random, so beta' gets gradients.)"""
        gamma, beta = self.get(f"{src}.weight"), self.get(f"{src}.bias")
        copies = target // gamma.numel()
        full = copies * gamma.numel()
        s = full / target
        wide_gamma = torch.zeros(target, dtype=_F64)
        wide_beta = torch.zeros(target, dtype=_F64)
        wide_gamma[:full] = gamma.repeat(copies) * math.sqrt(s)
        wide_beta[:full] = beta.repeat(copies)
        self.put(f"{dst}.weight", wide_gamma, f"{src}.weight")
        self.put(f"{dst}.bias", wide_beta, f"{src}.bias")


def _check_layout(model: nn.Module, family: str) -> None:
    """Refuse anything but morphtune's own module of ``family`` with its config's exact
    parameter layout (so a Post-LN variant, q/k-norm or extra modules raise)."""
    model_type = _MODEL_TYPES[family]
    if type(model) is not model_type:
        raise ValueError(
            f"LEMON grows morphtune's {model_type.__name__} for family {family!r}, "
            f"but got {type(model).__name__}"
        )
    with torch.device("meta"):
        reference = model_type(model.config)
    expected = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if expected != found:
        extra = sorted(set(found) - set(expected))
        missing = sorted(set(expected) - set(found))
        reshaped = sorted(n for n in set(found) & set(expected) if found[n] != expected[n])
        raise ValueError(
            f"LEMON knows the layout of morphtune's {family} models (Pre-LN blocks without "
            f"q/k-norm); this model differs from its config's layout: unexpected {extra}, "
            f"missing {missing}, reshaped {reshaped}"
        )


def _grow_mlp(model: MLP, target: MLPConfig, build: _Builder, options: GrowthOptions) -> MLPConfig:
    """Hidden units circular with an asymmetric fan-in split; new depth = identity layers
    (ReLU inputs are >= 0, so ``relu(I h) = h``) on the layer before, then widened."""
    source = model.config
    plan = lemon_depth_plan(source.depth, target.depth, options.placement)
    reps = _mlp_representations(source, target, options.placement)
    previous = torch.arange(source.in_features)  # the input features are not copied
    for position, ((index, new), rep) in enumerate(zip(plan, reps, strict=True)):
        width = source.hidden[rep]
        units = _circular_map(width, target.hidden[position])
        dst = f"layers.{position}"
        if new:
            # An identity layer over the copies of hidden layer ``rep``; R scaled like
            # that layer's weights.
            scale = _scale(build.get(f"layers.{rep}.weight"))
            identity = torch.eye(width, dtype=_F64)
            build.put(f"{dst}.weight", build.split_fan_in(identity, previous, scale=scale)[units])
            if source.bias:
                build.put(f"{dst}.bias", torch.zeros(len(units), dtype=_F64))
        else:
            build.linear(
                f"layers.{index}",
                dst,
                _rows_of(units),
                previous,
                has_bias=source.bias,
            )
        previous = units
    build.linear(
        f"layers.{source.depth}",
        f"layers.{target.depth}",
        _same,
        previous,
        has_bias=source.bias,
    )
    return target


def _grow_cnn(model: CNN, target: CNNConfig, build: _Builder, options: GrowthOptions) -> CNNConfig:
    """Channels circular per stage (every layer writing a stage's stream uses the same
    deterministic map), BatchNorm copied per channel, conv fan-in split over the input
    channel copies (independently per kernel position). New blocks (stride 1, no
    projection) copy their source block with a zeroed ``bn2``: the branch is exactly 0
    in train and eval mode, and ``relu(0 + x) = x`` as ``x >= 0`` after every block."""
    source = model.config
    maps = [
        _circular_map(width, wide) for width, wide in zip(source.widths, target.widths, strict=True)
    ]

    def conv(src: str, dst: str, out: torch.Tensor, inputs: torch.Tensor) -> None:
        build.linear(src, dst, _rows_of(out), inputs, has_bias=False)

    conv("stem", "stem", maps[0], torch.arange(source.in_channels))
    build.batch_norm("stem_bn", "stem_bn", len(maps[0]))
    for stage, channels in enumerate(maps):
        stage_in = maps[stage - 1] if stage > 0 else maps[0]
        width = len(channels)
        plan = lemon_depth_plan(source.blocks[stage], target.blocks[stage], options.placement)
        for position, (index, new) in enumerate(plan):
            src, dst = f"stages.{stage}.{index}", f"stages.{stage}.{position}"
            has_proj = f"{src}.proj.weight" in build.source
            if not new:
                # One-to-one or copied block (position 0 holds source block 0).
                block_in = stage_in if index == 0 else channels
                conv(f"{src}.conv1", f"{dst}.conv1", channels, block_in)
                build.batch_norm(f"{src}.bn1", f"{dst}.bn1", width)
                conv(f"{src}.conv2", f"{dst}.conv2", channels, channels)
                build.batch_norm(f"{src}.bn2", f"{dst}.bn2", width)
                if has_proj:
                    conv(f"{src}.proj", f"{dst}.proj", channels, block_in)
                    build.batch_norm(f"{src}.proj_bn", f"{dst}.proj_bn", width)
                continue
            # A new block: both new_block options zero bn2 (a cancelling conv2 would be
            # undone by bn2's normalisation).
            if has_proj:
                # The source is a stage's strided first block, whose conv1 reads the
                # previous stage: draw a fresh conv1 of the same scale instead.
                weight = build.get(f"{src}.conv1.weight")
                shape = (width, width, *weight.shape[2:])
                draw = torch.randn(shape, generator=build.generator, dtype=_F64)
                build.put(f"{dst}.conv1.weight", draw * _scale(weight))
            else:
                conv(f"{src}.conv1", f"{dst}.conv1", channels, channels)
            build.batch_norm(f"{src}.bn1", f"{dst}.bn1", width)
            conv(f"{src}.conv2", f"{dst}.conv2", channels, channels)
            build.batch_norm(f"{src}.bn2", f"{dst}.bn2", width, zero_affine=True)
    build.linear("head", "head", _same, maps[-1])
    return target


def _grow_transformer(
    model: ViT | GPT, target: Any, build: _Builder, options: GrowthOptions
) -> Any:
    """ViT/GPT: residual-stream writers average past the last full copy, LayerNorm
    rescaled (``eps' = eps s``), heads circular, fan-in split everywhere."""
    source = model.config
    dim, wide = source.dim, target.dim
    full = (wide // dim) * dim
    s = full / wide
    stream = _layer_norm_map(dim, wide)  # LayerNorm outputs: copies, then exact zeros
    heads = _circular_map(dim, wide)  # attention outputs: head h copies h mod H_S
    hidden = _circular_map(source.mlp_dim, target.mlp_dim)

    def writer(t: torch.Tensor) -> torch.Tensor:
        return _stream_writer(t, wide, 0)

    if isinstance(model, ViT):
        build.put("patch_embed.weight", writer(build.get("patch_embed.weight")))
        build.put("patch_embed.bias", writer(build.get("patch_embed.bias")))
        build.put("cls_token", _stream_writer(build.get("cls_token"), wide, -1))
        build.origin.update(
            {name: name for name in ("patch_embed.weight", "patch_embed.bias", "cls_token")}
        )
    else:
        build.put("tok_embed.weight", _stream_writer(build.get("tok_embed.weight"), wide, -1))
        build.origin["tok_embed.weight"] = "tok_embed.weight"
    build.put("pos_embed", _stream_writer(build.get("pos_embed"), wide, -1), "pos_embed")

    plan = lemon_depth_plan(source.depth, target.depth, options.placement)
    for position, (index, new) in enumerate(plan):
        src, dst = f"blocks.{index}", f"blocks.{position}"
        # The residual branches of a new block output 0: Pre-LN makes it the identity.
        output = options.new_block if new else "copy"
        build.layer_norm(f"{src}.ln1", f"{dst}.ln1", wide)
        for name in ("q", "k", "v"):
            build.linear(f"{src}.attn.{name}", f"{dst}.attn.{name}", _rows_of(heads), stream)
        build.linear(f"{src}.attn.proj", f"{dst}.attn.proj", writer, heads, output=output)
        build.layer_norm(f"{src}.ln2", f"{dst}.ln2", wide)
        build.linear(f"{src}.fc1", f"{dst}.fc1", _rows_of(hidden), stream)
        build.linear(f"{src}.fc2", f"{dst}.fc2", writer, hidden, output=output)
    build.layer_norm("norm", "norm", wide)
    build.linear("head", "head", _same, stream, has_bias=isinstance(model, ViT))
    # Variance scales by s on the wide stream; eps scales with it (exactly eps for s = 1).
    return replace(target, ln_eps=source.ln_eps * s if full != wide else source.ln_eps)


def _assemble(model: nn.Module, config: Any, build: _Builder) -> GrowthResult:
    """The grown model on ``model``'s device, dtype and mode, filled from ``build``."""
    grown = empty_like(model, config)
    expected = set(grown.state_dict())
    if expected != set(build.state):
        raise RuntimeError(
            "LEMON built the wrong set of tensors: missing "
            f"{sorted(expected - set(build.state))}, unexpected "
            f"{sorted(set(build.state) - expected)}"
        )
    grown.load_state_dict(build.state)
    return GrowthResult(grown, verbatim_copies(model, grown, build.origin))


def _too_deep(field: str, old: int, new: int) -> ValueError:
    return ValueError(
        f"LEMON grows depth at most 2x per event: new_config.{field} must be in "
        f"[{old}, {2 * old}], but got {new}"
    )


@register_growth_operator("lemon")
class Lemon(GrowthOperator):
    """LEMON (Wang et al., ICLR 2024): lossless width and depth expansion with
    asymmetric replicas, for the ``mlp``, ``cnn``, ``vit`` and ``gpt`` families.

    Options read: ``new_block`` (``cancel`` or ``zero``; the CNN zeroes the new block's
    last BatchNorm for both) and ``placement`` (``interleave`` or ``stack``). A
    transformer's result config has ``ln_eps = eps * s`` with
    ``s = floor(D_T / D_S) D_S / D_T`` (the target's ``ln_eps`` is not used).
    """

    families = ("mlp", "cnn", "vit", "gpt")
    lossless = ("mlp", "cnn", "vit", "gpt")
    max_depth_factor = 2.0

    def check_target(self, source: Any, target: Any, options: GrowthOptions) -> None:
        # The shared rules cover the rest: heads keep their size, nothing shrinks, and
        # the model's depth grows at most 2x.
        if isinstance(source, MLPConfig):
            self._check_mlp(source, target, options)
        elif isinstance(source, CNNConfig):
            for stage, (old, new) in enumerate(zip(source.blocks, target.blocks, strict=True)):
                if new > 2 * old:
                    raise _too_deep(f"blocks[{stage}]", old, new)

    @staticmethod
    def _check_mlp(source: MLPConfig, target: MLPConfig, options: GrowthOptions) -> None:
        reps = _mlp_representations(source, target, options.placement)
        plan = lemon_depth_plan(source.depth, target.depth, options.placement)
        for position, ((_, new), rep) in enumerate(zip(plan, reps, strict=True)):
            needed = source.hidden[rep]
            if target.hidden[position] < needed:
                what = (
                    f"an identity layer copying hidden layer {rep}"
                    if new
                    else f"source hidden layer {rep}"
                )
                raise ValueError(
                    f"LEMON ({options.placement} placement) puts {what} at position "
                    f"{position}, so new_config.hidden[{position}] must be >= {needed}, "
                    f"but got {target.hidden[position]}"
                )

    @torch.no_grad()
    def _expand(
        self, model: nn.Module, target: Any, *, seed: int, options: GrowthOptions
    ) -> GrowthResult:
        family = type(cast(Any, model).config).family
        _check_layout(model, family)
        build = _Builder(model, seed)
        config: Any
        if isinstance(model, MLP):
            config = _grow_mlp(model, target, build, options)
        elif isinstance(model, CNN):
            config = _grow_cnn(model, target, build, options)
        elif isinstance(model, ViT | GPT):
            config = _grow_transformer(model, target, build, options)
        else:  # unreachable: _check_layout accepted one of the four model types
            raise ValueError(f"LEMON cannot grow {type(model).__name__}")
        return _assemble(model, config, build)
