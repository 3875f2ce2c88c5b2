"""Which parameters a pruner acts on by default (METHODS §0)."""

from __future__ import annotations

from torch import nn

__all__ = ["prunable_parameters"]

_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def prunable_parameters(
    model: nn.Module, *, min_ndim: int = 2, include_embeddings: bool = False
) -> dict[str, nn.Parameter]:
    """Parameters with at least ``min_ndim`` dims, by qualified name, in model order.

    With the default ``min_ndim=2`` biases and norm affine parameters are left out;
    embedding tables are left out unless ``include_embeddings`` is set. A parameter tied
    between modules is listed once, under its first name.
    """
    if isinstance(min_ndim, bool) or not isinstance(min_ndim, int) or min_ndim < 1:
        raise ValueError(f"min_ndim must be a positive int, but got min_ndim={min_ndim!r}")
    selected: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if isinstance(module, _EMBEDDINGS) and not include_embeddings:
            continue
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen or param.ndim < min_ndim:
                continue
            seen.add(id(param))
            selected[f"{module_name}.{param_name}" if module_name else param_name] = param
    return selected
