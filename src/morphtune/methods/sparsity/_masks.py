"""Keep-masks stored as module buffers and applied in forward (METHODS §0)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["MASK_SUFFIX", "MaskSet", "find_masks", "masks_in_state_dict"]

#: Buffer ``<param>_keep_mask`` holds the mask of parameter ``<param>``. Not
#: ``weight_mask``: ``torch.nn.utils.prune`` treats a module owning that as pruned.
MASK_SUFFIX = "_keep_mask"


def _split(name: str) -> tuple[str, str]:
    module_name, _, leaf = name.rpartition(".")
    return module_name, leaf


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module that owns parameter ``name`` and the parameter's local name."""
    module_name, param_name = _split(name)
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        raise ValueError(f"no module {module_name!r} owns a parameter {name!r}") from None
    if param_name not in dict(module.named_parameters(recurse=False)):
        raise ValueError(f"model has no parameter {name!r} to mask")
    return module, param_name


def _mask_forward_pre_hook(module: nn.Module, args: tuple[object, ...]) -> None:
    """Make every masked parameter of ``module`` equal ``W * M`` before forward."""
    for buffer_name, mask in module.named_buffers(recurse=False):
        if buffer_name.endswith(MASK_SUFFIX):
            param = getattr(module, buffer_name[: -len(MASK_SUFFIX)])
            # ``.data`` on purpose: after apply() this multiply changes nothing, and it
            # must not bump the version counter, or a second forward before backward
            # (sandwich training, activation checkpointing) would fail autograd's check.
            param.data.mul_(mask)


def _ensure_hook(module: nn.Module) -> None:
    hooks = module._forward_pre_hooks.values()
    if not any(hook is _mask_forward_pre_hook for hook in hooks):
        module.register_forward_pre_hook(_mask_forward_pre_hook)


def _as_bool_mask(name: str, mask: torch.Tensor, param: nn.Parameter) -> torch.Tensor:
    if tuple(mask.shape) != tuple(param.shape):
        raise ValueError(
            f"mask for {name!r} must have the parameter's shape {tuple(param.shape)}, "
            f"but got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask for {name!r} must hold only 0 and 1")
        mask = mask != 0
    return mask.detach().to(device=param.device).clone()


def find_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Masks already on ``model`` (e.g. loaded from a checkpoint), by parameter name."""
    found: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name.endswith(MASK_SUFFIX):
                param_name = buffer_name[: -len(MASK_SUFFIX)]
                found[f"{module_name}.{param_name}" if module_name else param_name] = buffer
    return found


def masks_in_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks held by a ``state_dict``, keyed by the name of the parameter they mask."""
    return {
        key[: -len(MASK_SUFFIX)]: value
        for key, value in state_dict.items()
        if key.endswith(MASK_SUFFIX)
    }


class MaskSet:
    """Binary keep-masks on a model's parameters, as in static sparse training.

    Implements the mask convention shared by pruning at initialisation (SNIP, Lee et
    al., ICLR 2019; random/ER/ERK pruning, Liu et al., ICLR 2022) and dynamic sparse
    training: each masked parameter ``W`` stays a dense ``Parameter``; its owning
    module gets a persistent boolean buffer ``<param>_keep_mask`` (so masks travel in
    ``state_dict``) and a forward pre-hook that makes ``W = W * M`` before every
    forward. Call :meth:`apply` after every optimizer step: momentum and weight decay
    otherwise revive pruned entries in ``W`` between forwards.

    Constructing a MaskSet attaches (or overwrites) the buffers; it does not change the
    weights until :meth:`apply` or the next forward. The set refers to the modules of
    the model it was built on; rebuild it with :meth:`from_model` after a deep copy.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        if not masks:
            raise ValueError("masks must name at least one parameter, but got none")
        self._targets: dict[str, tuple[nn.Module, str]] = {}
        for name, mask in masks.items():
            module, param_name = _owner(model, name)
            param = getattr(module, param_name)
            module.register_buffer(param_name + MASK_SUFFIX, _as_bool_mask(name, mask, param))
            _ensure_hook(module)
            self._targets[name] = (module, param_name)

    @classmethod
    def from_model(cls, model: nn.Module) -> MaskSet:
        """Wrap the masks already on ``model`` (after ``load_state_dict``)."""
        masks = find_masks(model)
        if not masks:
            raise ValueError(f"model has no '*{MASK_SUFFIX}' buffers to wrap")
        return cls(model, masks)

    @classmethod
    def from_state_dict(cls, model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> MaskSet:
        """Attach the masks a checkpoint holds, so ``model.load_state_dict`` then fits."""
        masks = masks_in_state_dict(state_dict)
        if not masks:
            raise ValueError(f"state_dict has no '*{MASK_SUFFIX}' entries")
        return cls(model, masks)

    @property
    def names(self) -> tuple[str, ...]:
        """Qualified names of the masked parameters."""
        return tuple(self._targets)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """The live mask buffers, by parameter name."""
        return {
            name: getattr(module, param_name + MASK_SUFFIX)
            for name, (module, param_name) in self._targets.items()
        }

    def parameters(self) -> dict[str, nn.Parameter]:
        """The masked parameters, by name."""
        return {
            name: getattr(module, param_name)
            for name, (module, param_name) in self._targets.items()
        }

    @torch.no_grad()
    def apply(self) -> None:
        """Set ``W <- W * M`` in place for every masked parameter."""
        masks = self.masks
        for name, param in self.parameters().items():
            param.mul_(masks[name])

    def layer_nnz(self) -> dict[str, int]:
        """Kept entries per masked parameter."""
        return {name: int(mask.count_nonzero()) for name, mask in self.masks.items()}

    def layer_density(self) -> dict[str, float]:
        """Kept fraction per masked parameter."""
        masks = self.masks
        return {name: nnz / masks[name].numel() for name, nnz in self.layer_nnz().items()}

    def density(self) -> float:
        """Kept fraction over all masked parameters together."""
        total = sum(mask.numel() for mask in self.masks.values())
        return sum(self.layer_nnz().values()) / total

    def __repr__(self) -> str:
        return f"MaskSet(layers={len(self._targets)}, density={self.density():.4g})"
