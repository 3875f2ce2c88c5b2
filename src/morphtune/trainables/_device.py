"""How a trial's tensors meet its device: autocast precision, pinned host batches, and
the Ray node every reported result names.

``resources.precision`` and ``resources.pin_memory`` (see ``spec.ResourcesSpec``) arrive
here resolved: a precision name and a bool. Each engine holds one :class:`DeviceSettings`
and runs its forward passes under :meth:`DeviceSettings.autocast` and moves its batches with
:meth:`DeviceSettings.move`.

``bf16`` needs no gradient scaler: bfloat16 keeps float32's exponent range, so gradients do
not underflow the way float16's do; parameters, gradients and optimizer state stay float32
(autocast only casts the inputs of the ops it covers).
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from morphtune.store._schema import NODE_ID_KEY

__all__ = ["NODE_ID_KEY", "PRECISIONS", "DeviceSettings", "current_node_id", "trial_device"]

#: Precision names ``resources.precision`` takes, and the autocast dtype of each.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DeviceSettings:
    """A trial's device, the autocast dtype of its forward passes and whether its loaders
    pin host memory. ``ValueError`` for an unknown precision, and for ``bf16`` on a GPU
    without bfloat16 support (it would fail, or crawl, in every step: end the trial now)."""

    device: torch.device
    precision: str = "fp32"
    pin_memory: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {sorted(PRECISIONS)}, but got {self.precision!r}"
            )
        if (
            self.precision == "bf16"
            and self.device.type == "cuda"
            and not torch.cuda.is_bf16_supported()
        ):
            name = torch.cuda.get_device_name(self.device)
            raise ValueError(
                f"precision bf16 needs a GPU with bfloat16 support (compute capability 8.0+), "
                f"but {self.device} is a {name}; use precision fp32"
            )

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (``None``: full float32)."""
        return PRECISIONS[self.precision]

    @property
    def non_blocking(self) -> bool:
        """Whether host-to-device copies may be asynchronous: only from pinned memory to a
        GPU (from pageable memory an asynchronous copy is staged synchronously anyway)."""
        return self.pin_memory and self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager[Any]:
        """The context forward passes run in: ``torch.autocast`` to the precision's dtype
        on the trial's device type, or nothing for ``fp32``."""
        dtype = self.dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def move(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on the trial's device (asynchronously from a pinned batch)."""
        return tensor.to(self.device, non_blocking=self.non_blocking)


def trial_device(gpus: float) -> torch.device:
    """The device of a single-worker trial that asked for ``gpus`` per worker: ``cuda``
    (Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPU it assigned, a shared one for a fraction,
    so it is device 0 here) or ``cpu``. A trial given a GPU that torch cannot see fails
    with the reason, rather than train on the CPU for hours unnoticed."""
    if gpus <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        import os

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RuntimeError(
            f"the trial asked for {gpus:g} GPU(s) per worker, but torch {torch.__version__} "
            f"sees no CUDA device (CUDA_VISIBLE_DEVICES={visible!r}); install a CUDA build "
            "of PyTorch on the GPU nodes, or set resources.use_gpu false"
        )
    return torch.device("cuda")


def current_node_id() -> str:
    """The hex id of the Ray node this process runs on (a Tune actor or a Train worker)."""
    import ray

    return str(ray.get_runtime_context().get_node_id())
