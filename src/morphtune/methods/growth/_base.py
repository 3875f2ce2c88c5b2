"""The growth-operator interface: one base class, options, and the result it returns."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from morphtune.methods.sparsity import find_masks
from morphtune.models import CNNConfig
from morphtune.models._transformer import TransformerShape

__all__ = [
    "ADJUSTABLE_FIELDS",
    "GrowthOperator",
    "GrowthOptions",
    "GrowthResult",
    "empty_like",
    "family_of",
    "verbatim_copies",
]

NewBlockInit = Literal["cancel", "zero"]
DepthPlacement = Literal["interleave", "stack"]
CoefficientInit = Literal["orthogonal", "copy", "zero", "random"]
StackPattern = Literal["repeat", "interleave"]


@dataclass(frozen=True)
class GrowthOptions:
    """Operator knobs; each operator reads the ones it documents and ignores the rest.

    - ``noise``: relative symmetry-breaking noise on new units (Net2Net; MixtureGrowth's
      coefficient scale). ``0`` keeps a function-preserving operator exact.
    - ``new_block``: LEMON's init of new depth blocks, ``cancel`` (copies of a source
      block whose residual outputs cancel) or ``zero`` (zero output weights).
    - ``placement``: LEMON's depth layout, ``interleave`` (each source block followed by
      its new block) or ``stack`` (new blocks after the copied ones).
    - ``coefficients``: MixtureGrowth's init of new coefficient vectors.
    - ``pattern``: G_stack's layer order, ``repeat`` (layer ``i`` copies ``i mod L``) or
      ``interleave`` (layer ``i`` copies ``i // g``).
    """

    noise: float = 0.0
    new_block: NewBlockInit = "cancel"
    placement: DepthPlacement = "interleave"
    coefficients: CoefficientInit = "orthogonal"
    pattern: StackPattern = "repeat"

    def __post_init__(self) -> None:
        noise = self.noise
        if isinstance(noise, bool) or not isinstance(noise, int | float):
            raise ValueError(f"noise must be a number >= 0, but got noise={noise!r}")
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be finite and >= 0, but got noise={noise!r}")
        choices: dict[str, tuple[str, ...]] = {
            "new_block": ("cancel", "zero"),
            "placement": ("interleave", "stack"),
            "coefficients": ("orthogonal", "copy", "zero", "random"),
            "pattern": ("repeat", "interleave"),
        }
        for name, valid in choices.items():
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"{name} must be one of {list(valid)}, but got {name}={value!r}")


@dataclass
class GrowthResult:
    """The grown model, and which of its parameters are verbatim copies of a source
    parameter (same shape and values): ``carried[new_name] = source_name``. The trainer
    carries optimizer state over for exactly those."""

    model: nn.Module
    carried: dict[str, str] = field(default_factory=dict)


#: Config fields an operator may set itself (LEMON rescales LayerNorm's eps).
ADJUSTABLE_FIELDS = ("ln_eps",)


def family_of(config: Any) -> str:
    """The registered family name of a model config."""
    family = getattr(type(config), "family", None)
    if not isinstance(family, str):
        raise ValueError(f"not a model config of a registered family: {type(config).__name__}")
    return family


def _check_parts_grow(source: Any, target: Any) -> None:
    """Rules every operator shares, per family: no part of the model shrinks."""
    if isinstance(source, CNNConfig):
        stages = len(source.widths)
        if len(target.widths) != stages:
            raise ValueError(
                f"growth keeps the number of cnn stages: new_config.widths must have {stages} "
                f"entries, but got widths={target.widths}"
            )
        for name in ("widths", "blocks"):
            old, new = getattr(source, name), getattr(target, name)
            for stage in range(stages):
                if new[stage] < old[stage]:
                    raise ValueError(
                        f"stage {stage} can only grow: new_config.{name}[{stage}] must be "
                        f">= {old[stage]}, but got {new[stage]}"
                    )
    elif isinstance(source, TransformerShape):
        if target.head_dim != source.head_dim:
            raise ValueError(
                f"heads keep their size: new_config.dim / heads must equal {source.head_dim}, "
                f"but got {target.dim} / {target.heads} = {target.dim / target.heads:g}"
            )
        if target.mlp_dim < source.mlp_dim:
            raise ValueError(
                f"mlp_dim can only grow: new_config.mlp_dim must be >= {source.mlp_dim}, "
                f"but got {target.mlp_dim}"
            )


def empty_like(model: nn.Module, config: Any) -> nn.Module:
    """An uninitialised ``type(model)(config)`` on ``model``'s device and dtype, in its
    train/eval mode, built without touching the global RNG (on the meta device)."""
    reference = next(model.parameters())
    with torch.device("meta"):
        grown = type(model)(config)
    grown = grown.to_empty(device=reference.device).to(dtype=reference.dtype)
    grown.train(model.training)
    return grown


def verbatim_copies(
    source: nn.Module, grown: nn.Module, origins: Mapping[str, str]
) -> dict[str, str]:
    """``origins[new] = old`` restricted to the grown parameters that are exact copies
    (same shape and values) of their source parameter: the ``carried`` map."""
    old_params = dict(source.named_parameters())
    new_params = dict(grown.named_parameters())
    carried = {}
    for new_name, old_name in origins.items():
        new, old = new_params.get(new_name), old_params.get(old_name)
        if new is not None and old is not None and new.shape == old.shape:
            if torch.equal(new.detach(), old.detach()):
                carried[new_name] = old_name
    return carried


class GrowthOperator(ABC):
    """One growth method. Subclasses set the class attributes, may add rules in
    :meth:`check_target`, and implement :meth:`_expand`; :meth:`check` and :meth:`expand`
    apply the rules every operator shares around them.

    - ``name``: the registry name (set by ``register_growth_operator``).
    - ``families``: model families (registry names) the operator can grow.
    - ``lossless``: the families on which it keeps the function exactly (eval mode,
      ``noise=0``); the conformance tests hold it to that.
    - ``max_depth_factor``: largest target/source depth ratio per event (``None``: any).
    - ``mask_families``: the families whose ``*_keep_mask`` buffers it grows along with
      the weights; a masked model of any other family is refused.
    """

    name: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ()
    lossless: ClassVar[tuple[str, ...]] = ()
    max_depth_factor: ClassVar[float | None] = None
    mask_families: ClassVar[tuple[str, ...]] = ()

    def check(self, source: Any, target: Any, options: GrowthOptions | None = None) -> None:
        """Raise ``ValueError`` unless this operator can grow config ``source`` into
        ``target``: the family is supported, the task (``TASK_FIELDS``) is kept, no part
        shrinks, the depth limit holds, and :meth:`check_target`'s own rules pass. Works
        on configs alone, so a spec can be checked before any model is built."""
        family = family_of(source)
        if family not in self.families:
            raise ValueError(
                f"growth operator {self.name!r} cannot grow model family {family!r}; "
                f"it grows {list(self.families)}"
            )
        if type(target) is not type(source):
            raise ValueError(
                f"growth keeps the model family: the target must be a {type(source).__name__}, "
                f"but got {type(target).__name__}"
            )
        for name in source.TASK_FIELDS:
            old, new = getattr(source, name), getattr(target, name)
            if old != new:
                raise ValueError(
                    f"growth keeps {name}: new_config.{name} must equal the model's {old}, "
                    f"but got {new}"
                )
        if target.width < source.width or target.depth < source.depth:
            raise ValueError(
                "growth cannot shrink a model: the target's width and depth must be >= the "
                f"model's ({source.width}, {source.depth}), but got "
                f"({target.width}, {target.depth})"
            )
        limit = self.max_depth_factor
        if limit is not None and target.depth > limit * source.depth:
            raise ValueError(
                f"growth operator {self.name!r} grows depth at most {limit:g}x per event: "
                f"target depth must be <= {int(limit * source.depth)}, but got {target.depth}"
            )
        _check_parts_grow(source, target)
        self.check_target(source, target, options or GrowthOptions())

    def check_target(self, source: Any, target: Any, options: GrowthOptions) -> None:  # noqa: B027
        """Raise ``ValueError`` (naming the field, value and rule) if this operator cannot
        grow ``source`` into ``target``; the shared rules of :meth:`check` have passed."""

    def expand(
        self,
        model: nn.Module,
        target: Any,
        *,
        seed: int = 0,
        options: GrowthOptions | None = None,
    ) -> GrowthResult:
        """Grow ``model`` into config ``target`` after :meth:`check`; ``model`` is left
        untouched and the result keeps its device, dtype and train/eval mode."""
        options = options or GrowthOptions()
        source = getattr(model, "config", None)
        self.check(source, target, options)
        family = family_of(source)
        if find_masks(model) and family not in self.mask_families:
            raise ValueError(
                f"growth operator {self.name!r} does not grow the sparsity masks of a "
                f"{family!r} model (it grows masks for {list(self.mask_families)}); "
                "prune after growth or use net2net on an mlp"
            )
        result = self._expand(model, target, seed=seed, options=options)
        grown = getattr(result.model, "config", None)
        mismatched = [
            f.name
            for f in fields(target)
            if f.name not in ADJUSTABLE_FIELDS and getattr(grown, f.name) != getattr(target, f.name)
        ]
        if mismatched:
            raise RuntimeError(f"growth operator {self.name!r} built fields {mismatched} wrongly")
        return result

    @abstractmethod
    def _expand(
        self, model: nn.Module, target: Any, *, seed: int, options: GrowthOptions
    ) -> GrowthResult:
        """Build the grown model; ``target`` has passed :meth:`check`."""
