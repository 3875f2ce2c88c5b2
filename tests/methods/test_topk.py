"""The single top-k routine: exact counts, lowest-index tie breaking."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from morphtune.methods.sparsity import topk_mask


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    data=st.data(),
)
def test_keeps_exactly_k_of_the_highest(shape: list[int], data: st.DataObject) -> None:
    numel = int(torch.tensor(shape).prod())
    values = data.draw(st.lists(st.integers(-3, 3), min_size=numel, max_size=numel))
    scores = torch.tensor(values, dtype=torch.float32).reshape(shape)
    k = data.draw(st.integers(0, numel))
    mask = topk_mask(scores, k)
    assert mask.dtype == torch.bool
    assert mask.shape == scores.shape
    assert int(mask.sum()) == k
    if 0 < k < numel:
        assert scores[mask].min() >= scores[~mask].max()
        # Among the scores equal to the cut-off value, the kept ones come first.
        cutoff = scores[mask].min()
        flat_mask, flat_scores = mask.reshape(-1), scores.reshape(-1)
        tied = torch.nonzero(flat_scores == cutoff).reshape(-1)
        kept_tied = flat_mask[tied]
        assert torch.equal(kept_tied, torch.sort(kept_tied, descending=True, stable=True).values)


def test_all_equal_scores_keep_the_lowest_flat_indices() -> None:
    mask = topk_mask(torch.zeros(3, 4), 5)
    expected = torch.zeros(12, dtype=torch.bool)
    expected[:5] = True
    assert torch.equal(mask.reshape(-1), expected)


def test_partial_ties_go_to_the_lowest_index() -> None:
    scores = torch.tensor([1.0, 3.0, 2.0, 3.0, 3.0])
    assert topk_mask(scores, 2).tolist() == [False, True, False, True, False]


@pytest.mark.parametrize("k", [-1, 7, 2.0, True])
def test_invalid_k_is_rejected(k: object) -> None:
    with pytest.raises(ValueError, match=r"k must be an int with 0 <= k <= scores\.numel\(\)=6"):
        topk_mask(torch.zeros(2, 3), k)  # type: ignore[arg-type]


def test_nan_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        topk_mask(torch.tensor([1.0, float("nan")]), 1)
