"""The growth-operator interface: one base class, options, and the result it returns."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from torch import nn

__all__ = ["GrowthOperator", "GrowthOptions", "GrowthResult"]

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


class GrowthOperator(ABC):
    """One growth method. Subclasses set the class attributes and implement :meth:`expand`.

    - ``families``: model families (registry names) the operator can grow.
    - ``lossless``: the families on which it keeps the function exactly (eval mode,
      ``noise=0``); the conformance tests hold it to that.
    - ``max_depth_factor``: largest target/source depth ratio per event (``None``: any).
    - ``mask_families``: the families whose ``*_keep_mask`` buffers it grows along with
      the weights; a masked model of any other family is refused.
    """

    families: ClassVar[tuple[str, ...]] = ()
    lossless: ClassVar[tuple[str, ...]] = ()
    max_depth_factor: ClassVar[float | None] = None
    mask_families: ClassVar[tuple[str, ...]] = ()

    def check_target(self, source: Any, target: Any, options: GrowthOptions) -> None:  # noqa: B027
        """Raise ``ValueError`` (naming the field, value and rule) if this operator cannot
        grow ``source`` into ``target``; the generic checks have already passed."""

    @abstractmethod
    def expand(
        self, model: nn.Module, target: Any, *, seed: int, options: GrowthOptions
    ) -> GrowthResult:
        """Return a new model with config ``target``; ``model`` must be left untouched,
        and the result keeps its device, dtype and train/eval mode."""
