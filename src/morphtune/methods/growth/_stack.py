"""G_stack depth-wise stacking and its growth-timing formula (METHODS §4.4).

Du, Luo, Zheng, et al., "Stacking Your Transformers: A Closer Look at Model Growth for
Efficient LLM Pre-Training", NeurIPS 2024 (reference code: tongxuluo/prts, lit-gpt based).

The paper trains a small ``L``-layer transformer for ``d`` tokens, then builds a
``g·L``-layer model whose layer ``i`` is a copy of small layer ``i mod L`` (6→24 gives
layers ``[0..5] x 4``), copies the embeddings, final norm and head, and continues training.
It recommends ``g = 4`` and fits the growth time as
``log10 d = 0.88·log10 N + 163.27/log10 C - 5.74`` (``N`` the target model's parameters,
``C`` the training FLOPs). Growth is **not** function-preserving.

Only the transformer families ``vit`` and ``gpt`` are supported. The ``cnn`` family has no
clean exact mapping: the first block of every stage after the first is a stride-2
transition block with a projection shortcut whose ``conv1`` reads the previous stage's
channels, so it cannot be copied into a stride-1 same-shape slot; with ``b`` blocks per
stage, the ``g·b`` grown blocks cannot each be a verbatim copy while every source block is
used exactly ``g`` times (a one-block stage has no same-shape block to copy at all). Any
CNN rule would copy some blocks more often than others or invent new blocks, which is no
longer G_stack, so the operator refuses that family.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, cast

import torch
from torch import nn

from morphtune.methods.growth._base import GrowthOperator, GrowthOptions, GrowthResult
from morphtune.methods.growth._registry import register_growth_operator
from morphtune.models import GPTConfig, ViTConfig

__all__ = [
    "GStack",
    "GStackTiming",
    "gstack_growth_fraction",
    "gstack_growth_tokens",
    "gstack_layer_map",
]

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _factor(source_depth: int, target_depth: int) -> int:
    """The integer growth factor ``g = target_depth / source_depth`` (``ValueError`` if none)."""
    if target_depth < source_depth or target_depth % source_depth:
        raise ValueError(
            "stack (G_stack) grows depth by an integer factor g = target depth / source depth "
            f"(g >= 2, or g = 1 for no growth): new_config.depth must be a multiple of the "
            f"model's depth {source_depth}, but got {target_depth} "
            f"(g = {target_depth / source_depth:g})"
        )
    return target_depth // source_depth


def gstack_layer_map(source_depth: int, factor: int, pattern: str = "repeat") -> list[int]:
    """The source layer each of the ``factor * source_depth`` grown layers copies.

    ``repeat`` (the paper's whole-model stacking): grown layer ``i`` copies source layer
    ``i mod L``, so 6 layers with ``factor = 4`` give ``[0..5] x 4``. ``interleave``: grown
    layer ``i`` copies ``i // factor``, so each source layer appears ``factor`` times in a
    row (``[0, 0, 0, 0, 1, 1, ...]``).
    """
    for name, value in (("source_depth", source_depth), ("factor", factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, but got {name}={value!r}")
    total = factor * source_depth
    if pattern == "repeat":
        return [i % source_depth for i in range(total)]
    if pattern == "interleave":
        return [i // factor for i in range(total)]
    raise ValueError(f"pattern must be one of ['repeat', 'interleave'], but got {pattern!r}")


def _source_name(name: str, layer_map: list[int]) -> str:
    """The source tensor a grown tensor copies: ``blocks.<i>.*`` from its mapped layer,
    everything else (embeddings, final norm, head) from the tensor of the same name."""
    match = _BLOCK.match(name)
    if match is None:
        return name
    return f"blocks.{layer_map[int(match.group(1))]}.{match.group(2)}"


@register_growth_operator("stack")
class GStack(GrowthOperator):
    """G_stack (Du et al., NeurIPS 2024): grow a ``vit`` or ``gpt`` from ``L`` to ``g·L``
    blocks by copying whole blocks (METHODS §4.4).

    ``g = target.depth / source.depth`` must be an integer (``g = 1`` returns a copy);
    every other config field, the width included, must stay the same (G_stack grows depth
    only). ``options.pattern`` picks the layer order: ``repeat`` (the paper's; grown layer
    ``i`` copies ``i mod L``) or ``interleave`` (``i // g``). The patch/token embeddings,
    class token, position embedding, final LayerNorm and head are copied bitwise. Every
    grown parameter is a verbatim copy, so ``carried`` maps all of them to their sources
    (e.g. ``blocks.7.fc1.weight -> blocks.1.fc1.weight`` for ``L = 6``, ``repeat``).
    Not function-preserving (``lossless = ()``); no randomness (``seed`` is unused).
    """

    families = ("vit", "gpt")
    lossless = ()

    def check_target(self, source: Any, target: Any, options: GrowthOptions) -> None:
        if target.width != source.width:
            raise ValueError(
                "stack (G_stack) grows depth only: the target's width must equal the model's "
                f"width {source.width}, but got {target.width}"
            )
        for f in fields(source):
            if f.name == "depth":
                continue
            old, new = getattr(source, f.name), getattr(target, f.name)
            if old != new:
                raise ValueError(
                    f"stack (G_stack) grows depth only and copies blocks verbatim: "
                    f"new_config.{f.name} must equal the model's {old!r}, but got {new!r}"
                )
        _factor(source.depth, target.depth)

    @torch.no_grad()
    def _expand(
        self, model: nn.Module, target: Any, *, seed: int, options: GrowthOptions
    ) -> GrowthResult:
        source_config: ViTConfig | GPTConfig = cast(Any, model).config
        layer_map = gstack_layer_map(
            source_config.depth, _factor(source_config.depth, target.depth), options.pattern
        )
        with torch.device("meta"):
            grown = type(model)(target)
        source_state = model.state_dict(keep_vars=True)
        grown_state = {}
        for name in grown.state_dict(keep_vars=True):
            # A fresh copy per grown tensor: repeated layers must not share storage.
            grown_state[name] = source_state[_source_name(name, layer_map)].detach().clone()
        grown.load_state_dict(grown_state, strict=True, assign=True)
        source_params = dict(model.named_parameters())
        carried: dict[str, str] = {}
        for name, param in grown.named_parameters():
            source_name = _source_name(name, layer_map)
            param.requires_grad_(source_params[source_name].requires_grad)
            carried[name] = source_name
        grown.train(model.training)
        return GrowthResult(grown, carried)


def _check_positive_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a positive finite number, but got {name}={value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, but got {name}={value!r}")
    return float(value)


def _log10_growth_tokens(target_params: float, compute_flops: float) -> float:
    n = _check_positive_finite("target_params", target_params)
    c = _check_positive_finite("compute_flops", compute_flops)
    if c <= 10:
        raise ValueError(
            "the G_stack formula divides by log10 C, so compute_flops must be > 10 "
            f"(log10 C > 1), but got compute_flops={compute_flops!r}"
        )
    return 0.88 * math.log10(n) + 163.27 / math.log10(c) - 5.74


def gstack_growth_tokens(target_params: float, compute_flops: float) -> float:
    """G_stack's growth time: tokens ``d`` to train the small model before stacking.

    Du et al. (NeurIPS 2024) fit ``log10 d = 0.88·log10 N + 163.27/log10 C - 5.74`` with
    ``N`` the target (grown) model's parameter count and ``C`` the total training FLOPs.
    With ``C = 6·N·D`` it gives the paper's table: Llama3-8B at 15T tokens → 6.58B,
    Llama2-7B / 13B / 70B at 2T tokens → 11.11B / 15.84B / 42.48B.

    The fit is for billion-parameter LLMs. For tiny models the ``163.27/log10 C`` term
    dominates (it grows as ``C`` shrinks), and ``d`` comes out many orders of magnitude
    beyond any realistic budget (e.g. ``N = 1e5``, ``D = 1e7`` tokens gives
    ``d ≈ 2.7e11``); see :func:`gstack_growth_fraction` for the clamped fraction.

    Both inputs must be positive and finite, and ``compute_flops > 10`` (``log10 C > 1``).
    Returns ``math.inf`` if ``d`` overflows a float (only for absurd inputs such as
    ``N = 1e300``).
    """
    log_d = _log10_growth_tokens(target_params, compute_flops)
    try:
        return math.pow(10.0, log_d)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class GStackTiming:
    """G_stack's growth time for a training budget.

    - ``tokens``: ``d`` from :func:`gstack_growth_tokens` (may be ``inf``).
    - ``raw_fraction``: ``d / D``, unclamped (may be far above 1 for small models).
    - ``fraction``: ``raw_fraction`` clamped into ``[min_fraction, max_fraction]``,
      a subset of ``(0, 1)``: the growth time as a fraction of the budget.
    - ``clamped``: whether the clamp changed the value.
    """

    tokens: float
    raw_fraction: float
    fraction: float
    clamped: bool


def gstack_growth_fraction(
    target_params: float,
    total_tokens: float,
    flops_per_token: float | None = None,
    *,
    min_fraction: float = 1e-6,
    max_fraction: float = 0.5,
) -> GStackTiming:
    """G_stack's growth time as a fraction of a training budget of ``total_tokens``.

    ``C = flops_per_token · D`` with ``D = total_tokens``; when ``flops_per_token`` is
    ``None`` it is ``6·N`` (``C = 6·N·D``, as in the paper's table). ``d`` comes from
    :func:`gstack_growth_tokens` and the raw fraction is ``d / D``.

    The fraction is clamped into ``[min_fraction, max_fraction]`` (defaults ``1e-6`` and
    ``0.5``; both must lie in ``(0, 1)``) so that growth happens during training with
    budget left for the grown model. The bounds are this library's choice, not the paper's.
    The upper one matters in practice: for small models the formula asks for ``d`` far
    beyond the budget (often ``d / D > 1e3``), so the clamped value is ``max_fraction``
    and ``clamped`` is ``True``; ``raw_fraction`` keeps the formula's value.
    """
    n = _check_positive_finite("target_params", target_params)
    total = _check_positive_finite("total_tokens", total_tokens)
    per_token = (
        6.0 * n
        if flops_per_token is None
        else _check_positive_finite("flops_per_token", flops_per_token)
    )
    for name, value in (("min_fraction", min_fraction), ("max_fraction", max_fraction)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ValueError(f"{name} must lie in (0, 1), but got {name}={value!r}")
    if min_fraction > max_fraction:
        raise ValueError(
            "min_fraction must be <= max_fraction, but got "
            f"min_fraction={min_fraction!r}, max_fraction={max_fraction!r}"
        )
    compute = per_token * total
    if not math.isfinite(compute):
        raise ValueError(
            "compute_flops = flops_per_token * total_tokens must be finite, but got "
            f"{per_token!r} * {total!r}"
        )
    log_d = _log10_growth_tokens(n, compute)
    tokens = gstack_growth_tokens(n, compute)
    try:
        raw = math.pow(10.0, log_d - math.log10(total))
    except OverflowError:
        raw = math.inf
    fraction = min(max(raw, float(min_fraction)), float(max_fraction))
    return GStackTiming(tokens, raw, fraction, fraction != raw)
