"""An exported model's validation accuracy, measured as a trial measures it.

Same split (the trial's ``dataset`` section: name, seed, val_fraction, options), same
batches (1024 samples, in order) and the same rule (top-1 over classes, per token for a
language model) as ``TrialEngine.evaluate``, in float32 on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["EVAL_BATCH_SIZE", "validation_accuracy"]

#: The trial engines' validation batch size.
EVAL_BATCH_SIZE = 1024


@torch.no_grad()
def validation_accuracy(model: nn.Module, data: Any) -> float:
    """Top-1 accuracy of ``model`` on ``data.val`` (a ``DatasetSplit``), in eval mode."""
    model.eval()
    correct, count = 0, 0
    for inputs, labels in DataLoader(data.val, batch_size=EVAL_BATCH_SIZE, shuffle=False):
        logits = model(inputs).float()
        logits = logits.reshape(-1, logits.shape[-1])
        labels = labels.reshape(-1)
        correct += int((logits.argmax(dim=1) == labels).sum())
        count += int(labels.shape[0])
    if count == 0:
        raise ValueError("the validation split is empty")
    return correct / count
