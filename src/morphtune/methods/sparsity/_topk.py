"""The one top-k routine every mask is made with (METHODS §0)."""

from __future__ import annotations

import torch

__all__ = ["topk_mask"]


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of ``scores``' shape keeping exactly the ``k`` highest scores.

    Ties are broken by the lowest flat (row-major) index: a stable descending sort keeps
    equal scores in index order. No threshold is ever used, so the count is exact even
    when many scores are equal. NaN scores are rejected.

    Returns a ``torch.bool`` tensor on ``scores``' device.
    """
    numel = scores.numel()
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= numel:
        raise ValueError(f"k must be an int with 0 <= k <= scores.numel()={numel}, but got k={k!r}")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise ValueError("scores must not contain NaN")
    flat = scores.detach().reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros(numel, dtype=torch.bool, device=scores.device)
    mask[order[:k]] = True
    return mask.reshape(scores.shape)
