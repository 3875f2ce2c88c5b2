"""``export_trial``: a sweep's trial (default: the best) to a standalone model file.

The steps: check the output can be written (before any work); find the trial's
checkpointed iteration in the store; rebuild its model (grown, sparse, or a supernet's
subnet); write the file beside the output under a hidden temporary name; load that file
back with :func:`~morphtune.export.load_exported` and check every tensor equals the
model's (and, with ``verify``, that its validation accuracy equals the stored one); only
then rename it onto the output. A failure at any step leaves no file behind.

A sweep written by a subnet search (``<sweep>-subnets``, manifest ``kind:
subnet_search``) holds subnets, not checkpoints: its trial names a subnet of the
supernet that the search scored, the supernet being the best trial of the sweep the
search ran on (``source`` in the manifest's ``subnet_search`` section when recorded,
else the sweep named without the ``-subnets`` suffix, as ``morphtune run`` names it).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import morphtune
from morphtune._atomic import fsync_directory
from morphtune.export._errors import ExportError
from morphtune.export._evaluate import validation_accuracy
from morphtune.export._file import ExportedModel, load_exported, resolve_format, write_model
from morphtune.export._locate import (
    TrialCheckpoint,
    load_checkpoint_state,
    locate_checkpoint,
    trial_rows,
)
from morphtune.export._materialize import (
    Materialized,
    build_subnet,
    build_trial_model,
    load_trial_data,
    parse_subnet,
)
from morphtune.store import SweepStore

__all__ = ["ExportMismatch", "ExportResult", "check_output", "export_trial"]

SUBNETS_SUFFIX = "-subnets"
SUBNET_PREFIX = "subnet."
#: How far a re-measured accuracy may lie from the stored one and still be "equal"
#: (float rounding only: both are counts over the same samples).
ACCURACY_TOLERANCE = 1e-9


class ExportMismatch(RuntimeError):
    """The exported model does not reproduce what the trial stored (a bug, not bad input)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_trial` wrote. ``reported`` is the stored accuracy of exactly
    this model (``None`` when no row scored it), ``measured`` the re-measured one (with
    ``verify``)."""

    path: Path
    fmt: str
    kind: str
    family: str
    sweep_id: str
    trial_id: str
    iteration: int
    params: int
    density: float
    file_bytes: int
    reported_metric: str | None
    reported: float | None
    measured: float | None = None
    exact: bool = True
    subnet: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """One line: file, container, what the model is, where it came from, accuracy."""
        what = f"{self.family} {self.kind}"
        if self.subnet is not None:
            what += " " + ",".join(f"{key}={value}" for key, value in self.subnet.items())
        if self.kind.endswith("sparse"):
            what += f", density {self.density:.4f}"
        line = (
            f"wrote {self.path} ({self.fmt}; {what}; {self.params:,} params; "
            f"{self.file_bytes:,} B) from sweep {self.sweep_id} trial {self.trial_id} "
            f"iteration {self.iteration}"
        )
        if self.reported is not None:
            line += f": stored {self.reported_metric} {self.reported:.6g}"
            if self.measured is not None:
                line += f", measured {self.measured:.6g}"
        return line


def check_output(path: str | os.PathLike[str]) -> Path:
    """``path`` if a file can be written there: its directory exists and is writable,
    and it is not a directory itself. Raises :class:`ExportError` otherwise."""
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise ExportError(f"output {target} is a directory; name a file to write")
    if not parent.exists():
        raise ExportError(f"output {target}: directory {parent} does not exist")
    if not parent.is_dir():
        raise ExportError(f"output {target}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"output {target}: directory {parent} is not writable")
    return target


# ------------------------------------------------------------------------ rebuilding


@dataclass(frozen=True)
class _Choice:
    """Which trial, iteration and subnet to export (the command's options)."""

    trial_id: str | None
    iteration: int | None
    metric: str | None
    mode: str | None
    subnet: str | None


@dataclass
class _Source:
    located: TrialCheckpoint
    state: dict[str, Any]
    built: Materialized
    data: Any = None  # the trial's dataset split, when it was loaded
    search: dict[str, Any] | None = None  # the subnet-search trial exported


def _from_trial(store: SweepStore, sweep_id: str, choice: _Choice) -> _Source:
    located = locate_checkpoint(
        store,
        sweep_id,
        trial_id=choice.trial_id,
        iteration=choice.iteration,
        metric=choice.metric,
        mode=choice.mode,
    )
    subnet = choice.subnet
    state = load_checkpoint_state(store, located.path)
    if "supernet" not in state:
        if subnet is not None:
            raise ExportError(
                f"--subnet: trial {located.trial_id!r} of sweep {sweep_id!r} trained a "
                "single model, not a supernet"
            )
        return _Source(located, state, build_trial_model(state, located.path))
    trial = state.get("trial")
    if not isinstance(trial, Mapping):
        raise ExportError(f"{located.path}: a supernet checkpoint without its 'trial' config")
    data = load_trial_data(trial)
    built = build_subnet(
        state,
        parse_subnet(subnet) if subnet is not None else "largest",
        data,
        calibration_seed=int(trial["training"]["seed"]),
        from_search=False,
        where=located.path,
    )
    return _Source(located, state, built, data)


def _supernet_source(
    store: SweepStore, sweep_id: str, manifest: Mapping[str, Any]
) -> tuple[str, str | None]:
    """The sweep (and trial, when recorded) whose supernet a subnet search searched."""
    section = manifest.get("subnet_search") or {}
    source = section.get("source") if isinstance(section, Mapping) else None
    if isinstance(source, Mapping) and isinstance(source.get("sweep_id"), str):
        trial = source.get("trial_id")
        return str(source["sweep_id"]), trial if isinstance(trial, str) else None
    if not sweep_id.endswith(SUBNETS_SUFFIX) or sweep_id == SUBNETS_SUFFIX:
        raise ExportError(
            f"subnet-search sweep {sweep_id!r} names no supernet sweep (no "
            f"'subnet_search.source' in its manifest, no '{SUBNETS_SUFFIX}' suffix)"
        )
    return sweep_id.removesuffix(SUBNETS_SUFFIX), None


def _from_subnet_search(
    store: SweepStore, sweep_id: str, manifest: Mapping[str, Any], choice: _Choice
) -> _Source:
    trial_id, iteration = choice.trial_id, choice.iteration
    if choice.subnet is not None:
        raise ExportError(
            f"--subnet: sweep {sweep_id!r} is a subnet search, whose trials are subnets; "
            "pick one with --trial"
        )
    if trial_id is None:
        trial_id = store.best(sweep_id, metric=choice.metric, mode=choice.mode).trial_id
    elif choice.metric is not None or choice.mode is not None:
        raise ExportError("--metric/--mode choose the best trial; they do not go with --trial")
    rows = trial_rows(store, sweep_id, trial_id)
    if iteration is not None and all(int(row["iteration"]) != iteration for row in rows):
        raise ExportError(f"subnet trial {trial_id!r} has no iteration {iteration} (it has 1)")
    row = rows[0]
    config = json.loads(row["config_json"])
    metrics = json.loads(row["metrics_json"])
    choices = {
        key.removeprefix(SUBNET_PREFIX): value
        for key, value in config.items()
        if key.startswith(SUBNET_PREFIX)
    }
    if not choices:
        raise ExportError(f"trial {trial_id!r} of sweep {sweep_id!r} names no subnet choices")
    section = manifest.get("subnet_search") or {}
    seed = section.get("seed") if isinstance(section, Mapping) else None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ExportError(f"subnet-search sweep {sweep_id!r}: its manifest records no seed")
    base, supernet_trial = _supernet_source(store, sweep_id, manifest)
    if not store.has_sweep(base):
        raise ExportError(
            f"subnet-search sweep {sweep_id!r} searched the supernet of sweep {base!r}, "
            f"which is not under {store.root}"
        )
    # without a recorded trial: the best one, as the runner chose it for the search
    located = locate_checkpoint(store, base, trial_id=supernet_trial)
    state = load_checkpoint_state(store, located.path)
    if "supernet" not in state or not isinstance(state.get("trial"), Mapping):
        raise ExportError(f"{located.path}: the best trial of {base!r} is not a supernet")
    data = load_trial_data(state["trial"])
    built = build_subnet(
        state, choices, data, calibration_seed=seed, from_search=True, where=located.path
    )
    search = {
        "sweep_id": sweep_id,
        "trial_id": trial_id,
        "iteration": int(row["iteration"]),
        "metrics": metrics,
    }
    return _Source(located, state, built, data, search)


# --------------------------------------------------------------------------- writing


def _inexact_compute(manifest: Mapping[str, Any]) -> str | None:
    """Why the trial's accuracy need not reproduce bit for bit on this CPU in float32
    (it was measured under bf16 autocast, or on a GPU), or ``None``."""
    spec = manifest.get("spec")
    resources = spec.get("resources") if isinstance(spec, Mapping) else None
    if not isinstance(resources, Mapping):
        return None
    if resources.get("precision") == "bf16":
        return "the trial measured its accuracy under bf16 autocast; the export is float32"
    if resources.get("use_gpu") or resources.get("gpus_per_worker"):
        return "the trial measured its accuracy on a GPU; GPU and CPU round differently"
    return None


def _metadata(source: _Source, manifest: Mapping[str, Any]) -> dict[str, Any]:
    located, built = source.located, source.built
    metrics = dict(source.search["metrics"] if source.search else located.metrics)
    metrics.pop("checkpoint_path", None)
    origin = source.search or {}
    return {
        "morphtune_version": morphtune.__version__,
        "sweep_id": origin.get("sweep_id", located.sweep_id),
        "trial_id": origin.get("trial_id", located.trial_id),
        "iteration": origin.get("iteration", located.iteration),
        "status": "completed" if source.search else located.status,
        "checkpoint": {
            "sweep_id": located.sweep_id,
            "trial_id": located.trial_id,
            "iteration": located.iteration,
            "path": located.path,
            "step": source.state.get("step"),
            "epoch": source.state.get("epoch"),
        },
        "kind": built.kind,
        "grown": built.grown,
        "growth_stage": built.growth_stage,
        "sparse": built.sparse,
        "density": built.density,
        "subnet": built.subnet,
        "reported_metric": built.reported_metric,
        "reported": metrics.get(built.reported_metric) if built.reported_metric else None,
        "exact": built.exact,
        "notes": list(built.notes),
        "objective": manifest.get("objective"),
        "trial": source.state.get("trial"),
        "metrics": metrics,
    }


def _same_tensors(model: nn.Module, loaded: ExportedModel, where: Path) -> None:
    """The file's model must hold exactly the exported model's tensors."""
    expected, actual = model.state_dict(), loaded.model.state_dict()
    if list(expected) != list(actual):
        raise ExportMismatch(f"{where}: the written model has other tensors than the trial's")
    for key, tensor in expected.items():
        other = actual[key]
        if other.dtype != tensor.dtype or not torch.equal(other, tensor.detach().cpu()):
            raise ExportMismatch(f"{where}: tensor {key!r} changed on the way to the file")


def _reported(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def export_trial(
    results: str | os.PathLike[str],
    sweep_id: str,
    output: str | os.PathLike[str],
    *,
    trial_id: str | None = None,
    iteration: int | None = None,
    metric: str | None = None,
    mode: str | None = None,
    subnet: str | None = None,
    fmt: str = "auto",
    verify: bool = False,
) -> ExportResult:
    """Write the model of trial ``trial_id`` (default: the best for ``metric``/``mode``,
    else the sweep's objective) of sweep ``sweep_id`` under ``results`` to ``output``.

    ``iteration`` picks a checkpointed iteration (default: the latest still on disk);
    ``subnet`` (``largest``, ``smallest``, JSON or ``name=value`` pairs) picks the subnet
    of a supernet trial; ``fmt`` is ``auto`` (sparse ``csr`` for a masked model, else
    ``torch``), ``torch``, ``csr`` or ``bitmask``. ``verify`` re-measures the written
    model's validation accuracy on the trial's split and requires it to equal the stored
    one (where the stored one is exact).

    Raises :class:`~morphtune.export.ExportError` or a ``LookupError``
    (:class:`~morphtune.store.SweepNotFound`, :class:`~morphtune.store.NoResults`) for bad
    input, :class:`ExportMismatch` when the written model does not reproduce the trial,
    ``OSError`` when writing fails; no file is left at ``output`` (or beside it) then.
    """
    target = check_output(output)
    resolve_format(fmt, {})  # an unknown format fails before any work
    if iteration is not None and iteration < 1:
        raise ExportError(f"--iteration must be >= 1, but got {iteration}")
    store = SweepStore(results)
    manifest = store.manifest(sweep_id)
    choice = _Choice(trial_id, iteration, metric, mode, subnet)
    if manifest.get("kind") == "subnet_search":
        source = _from_subnet_search(store, sweep_id, manifest, choice)
    else:
        source = _from_trial(store, sweep_id, choice)
    built = source.built
    inexact = _inexact_compute(manifest)
    if inexact is not None and built.exact:
        built.exact = False
        built.notes.append(inexact + ", so its accuracy may differ slightly")
    metadata = _metadata(source, manifest)
    reported = _reported(metadata["reported"])
    stage = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.export.tmp")
    try:
        container = write_model(
            built.model,
            stage,
            family=built.family,
            config=built.config,
            fmt=fmt,
            metadata=metadata,
        )
        loaded = load_exported(stage)
        _same_tensors(built.model, loaded, target)
        measured = None
        trial = metadata["trial"]
        if verify and reported is not None and (source.data is not None or trial):
            data = source.data if source.data is not None else load_trial_data(trial)
            measured = validation_accuracy(loaded.model, data)
            if built.exact and abs(measured - reported) > ACCURACY_TOLERANCE:
                raise ExportMismatch(
                    f"the exported model scores {built.reported_metric} {measured} on the "
                    f"trial's validation split, but the trial stored {reported}"
                )
        file_bytes = stage.stat().st_size
        os.replace(stage, target)
    except BaseException:
        stage.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
    if verify and measured is None:
        built.notes.append(
            "--verify: nothing to compare (no stored accuracy for this model, or no trial "
            "config in its checkpoint)"
        )
    return ExportResult(
        path=target,
        fmt=container,
        kind=built.kind,
        family=built.family,
        sweep_id=str(metadata["sweep_id"]),
        trial_id=str(metadata["trial_id"]),
        iteration=int(metadata["iteration"]),
        params=sum(param.numel() for param in built.model.parameters()),
        density=built.density,
        file_bytes=file_bytes,
        reported_metric=built.reported_metric,
        reported=reported,
        measured=measured,
        exact=built.exact,
        subnet=built.subnet,
        notes=tuple(built.notes),
    )
