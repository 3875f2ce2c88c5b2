"""The exported model file: write one, and load it back in plain PyTorch.

Two containers, told apart by their content (not their name):

- the **sparse export format** (``morphtune.methods.sparsity._export``, a zip holding
  ``header.json`` and ``data.bin``): masked weights stored as CSR or a bitmask, so the
  file shrinks with density; the default for a model with keep-masks;
- a **torch checkpoint** (``torch.save`` of plain values and tensors, readable with
  ``torch.load(weights_only=True)``)::

      {"format": "morphtune-model", "version": 1, "family": "mlp",
       "config": {...the family's config fields...}, "state_dict": {...},
       "metadata": {...JSON values: sweep, trial, iteration, trial config, metrics...}}

  the default for a dense model (a grown one, an extracted subnet).

Both record the family and config, so :func:`load_model` rebuilds the model from the file
alone: no Ray, no results store, no dataset. Keep-masks, in either container, come back
as masks (:class:`~morphtune.methods.sparsity.MaskSet`): the loaded model computes what
the masked model did and can go on training sparse.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from morphtune._atomic import atomic_write
from morphtune.methods.sparsity import MaskSet, masks_in_state_dict
from morphtune.methods.sparsity._export import (
    SPARSE_FORMATS,
    SparseFormatError,
    export_sparse,
    read_sparse,
)
from morphtune.models import MODEL_FAMILIES, build_model, config_from_dict

__all__ = [
    "EXPORT_FORMATS",
    "TORCH_FORMAT",
    "ExportFormatError",
    "ExportedModel",
    "load_exported",
    "load_model",
    "write_model",
]

#: The ``format`` tag of a torch-container export.
TORCH_FORMAT = "morphtune-model"
TORCH_VERSION = 1
#: ``--format`` choices: ``auto`` (sparse ``csr`` for a masked model, else ``torch``).
EXPORT_FORMATS = ("auto", "torch", *SPARSE_FORMATS)
_SPARSE_HEADER = "header.json"


class ExportFormatError(ValueError):
    """A file that is not a readable morphtune model export."""


@dataclass(frozen=True)
class ExportedModel:
    """A loaded export: the model (CPU, eval mode), its family and config fields, the
    container (``torch``, ``csr`` or ``bitmask``) and the metadata written with it."""

    model: nn.Module
    family: str
    config: dict[str, Any]
    fmt: str
    metadata: dict[str, Any] = field(default_factory=dict)


def resolve_format(fmt: str, state: Mapping[str, torch.Tensor]) -> str:
    """The container for ``fmt``: ``auto`` is ``csr`` when ``state`` holds keep-masks,
    ``torch`` otherwise."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {list(EXPORT_FORMATS)}, but got {fmt!r}")
    if fmt != "auto":
        return fmt
    return "csr" if masks_in_state_dict(state) else "torch"


def write_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    family: str,
    config: Mapping[str, Any],
    fmt: str = "auto",
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Write ``model`` (its ``state_dict``, masks included) to ``path`` atomically in
    container ``fmt`` (see :data:`EXPORT_FORMATS`); returns the container used.

    ``config`` is the family's config as a mapping of its fields; ``metadata`` must be
    JSON-serialisable (it is stored as JSON in either container).
    """
    state = model.state_dict()
    container = resolve_format(fmt, state)
    meta = dict(metadata or {})
    try:
        meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable, but {exc}") from None
    target = Path(path)
    if container in SPARSE_FORMATS:
        export_sparse(
            model, target, fmt=container, family=family, config=dict(config), metadata=meta
        )
        return container
    payload = {
        "format": TORCH_FORMAT,
        "version": TORCH_VERSION,
        "family": family,
        "config": dict(config),
        "state_dict": {key: tensor.detach().cpu() for key, tensor in state.items()},
        "metadata": meta,
    }
    atomic_write(target, lambda handle: torch.save(payload, handle))
    return container


def _is_sparse_export(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return _SPARSE_HEADER in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _rebuild(
    family: str, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str
) -> nn.Module:
    """``build_model(family, config)`` holding ``state`` (masks re-attached, the stored
    dtypes kept)."""
    try:
        model = build_model(family, config_from_dict(family, config))
    except (ValueError, TypeError) as exc:
        raise ExportFormatError(f"{where}: cannot rebuild the model: {exc}") from None
    if masks_in_state_dict(state):
        MaskSet.from_state_dict(model, state)
    for key, tensor in model.state_dict(keep_vars=True).items():
        stored = state.get(key)
        if isinstance(stored, torch.Tensor) and stored.dtype != tensor.dtype:
            tensor.data = tensor.data.to(stored.dtype)
    try:
        model.load_state_dict(dict(state))
    except RuntimeError as exc:
        raise ExportFormatError(
            f"{where}: the stored tensors do not fit a {family} model of the stored config: {exc}"
        ) from None
    return model


def _field(payload: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind):
        raise ExportFormatError(
            f"{where}: field {name!r} must be a {kind.__name__}, but got {type(value).__name__}"
        )
    return value


def _load_torch(path: Path) -> ExportedModel:
    where = str(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or corrupt file
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ExportFormatError(
            f"{where} is not a morphtune model export ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != TORCH_FORMAT:
        hint = ""
        if isinstance(payload, dict) and {"family", "model_config", "model"} <= set(payload):
            hint = " (it is a trial checkpoint: write a model file with `morphtune export`)"
        raise ExportFormatError(f"{where} is not a morphtune model export{hint}")
    if payload.get("version") != TORCH_VERSION:
        raise ExportFormatError(
            f"{where}: format version {payload.get('version')!r}; this morphtune reads "
            f"version {TORCH_VERSION}"
        )
    family = _field(payload, "family", str, where)
    if family not in MODEL_FAMILIES:
        raise ExportFormatError(
            f"{where}: unknown model family {family!r}; known: {list(MODEL_FAMILIES)}"
        )
    config = _field(payload, "config", dict, where)
    state = _field(payload, "state_dict", dict, where)
    if not all(isinstance(tensor, torch.Tensor) for tensor in state.values()):
        raise ExportFormatError(f"{where}: state_dict must map names to tensors")
    metadata = payload.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ExportFormatError(f"{where}: field 'metadata' must be a dict")
    model = _rebuild(family, config, state, where)
    return ExportedModel(model.eval(), family, dict(config), "torch", metadata)


def _load_sparse(path: Path) -> ExportedModel:
    try:
        checkpoint = read_sparse(path)
    except SparseFormatError as exc:
        raise ExportFormatError(str(exc)) from None
    model = _rebuild(checkpoint.family, checkpoint.config, checkpoint.state_dict, str(path))
    return ExportedModel(
        model.eval(),
        checkpoint.family,
        dict(checkpoint.config),
        checkpoint.fmt,
        checkpoint.metadata,
    )


def load_exported(path: str | os.PathLike[str]) -> ExportedModel:
    """Load a model file written by ``morphtune export`` (either container), with its
    family, config and metadata. Raises ``FileNotFoundError`` for a missing file and
    :class:`ExportFormatError` (a ``ValueError``) for anything that is not a readable
    export."""
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"no model file at {source}")
    if source.is_dir():
        raise ExportFormatError(f"{source} is a directory, not a model file")
    if _is_sparse_export(source):
        return _load_sparse(source)
    return _load_torch(source)


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """The model in a file written by ``morphtune export``, rebuilt in plain PyTorch.

    The model is the family's own module (``morphtune.models``) on the CPU in eval mode;
    a sparse model carries its keep-masks (``MaskSet.from_model`` wraps them again).
    Nothing but torch is needed: no Ray, no results store. For the recorded config and
    metadata (sweep, trial, iteration, metrics) use :func:`load_exported`.
    """
    return load_exported(path).model
