"""Find the trial to export in a sweep's results store, and the checkpoint it left.

Every stored result row of a trial names the checkpoint saved with it
(``metrics.checkpoint_path``); Tune and Ray Train keep only the latest few, so the
checkpoint exported is that of the trial's highest iteration whose checkpoint is still on
disk (or the ``iteration`` asked for). The row's metrics are what the checkpointed model
scored, so an export carries them and can be checked against them.

Checkpoint paths are recorded as absolute paths. A sweep directory that was moved or
copied elsewhere still resolves: a path that no longer exists is looked up again under
the store's ``<root>/<sweep_id>/`` by the part of it after ``/<sweep_id>/``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from morphtune.export._errors import ExportError
from morphtune.store import SweepStore

__all__ = [
    "CHECKPOINT_FILE",
    "TrialCheckpoint",
    "load_checkpoint_state",
    "locate_checkpoint",
    "trial_rows",
]

#: The file a trial engine checkpoints to (``trainables._loop``; not imported: no Ray).
CHECKPOINT_FILE = "trial_state.pt"
_LISTED = 10


@dataclass(frozen=True)
class TrialCheckpoint:
    """One stored result row of a trial and the checkpoint saved with it.

    ``metrics`` and ``config`` are the row's (flat, as stored); ``path`` is the checkpoint
    file (``trial_state.pt``) as found, ``recorded`` the directory the row names.
    """

    sweep_id: str
    trial_id: str
    iteration: int
    status: str
    metrics: dict[str, Any]
    config: dict[str, Any]
    path: str
    recorded: str


def _listing(values: list[str]) -> str:
    shown = ", ".join(values[:_LISTED])
    return shown + (f", ... ({len(values)} in all)" if len(values) > _LISTED else "")


def trial_rows(store: SweepStore, sweep_id: str, trial_id: str) -> list[dict[str, Any]]:
    """The trial's stored rows (iteration, metrics, config), highest iteration first."""
    table = store.results(
        sweep_id, columns=["trial_id", "iteration", "metrics_json", "config_json"]
    )
    rows = [row for row in table.to_pylist() if row["trial_id"] == trial_id]
    if not rows:
        states = store.trial_states(sweep_id)
        if trial_id not in states:
            raise ExportError(
                f"trial {trial_id!r} not in sweep {sweep_id!r}; its trials: "
                f"{_listing(sorted(states)) or 'none'}"
            )
        raise ExportError(
            f"trial {trial_id!r} of sweep {sweep_id!r} ({states[trial_id]}) reported no "
            "results, so it left no checkpoint to export"
        )
    rows.sort(key=lambda row: int(row["iteration"]), reverse=True)
    return rows


def _candidates(store: SweepStore, sweep_id: str, recorded: str) -> list[str]:
    """Where the checkpoint file of a recorded checkpoint directory may be: as recorded,
    then relocated under this store's sweep directory (a moved or copied sweep)."""
    found = [str(PurePosixPath(recorded) / CHECKPOINT_FILE)]
    marker = f"/{sweep_id}/"
    if marker in recorded:
        tail = recorded.rsplit(marker, 1)[1]
        found.append(store.location.join(sweep_id, tail, CHECKPOINT_FILE))
    return found


def _existing(store: SweepStore, candidates: list[str]) -> str | None:
    location = store.location
    for candidate in candidates:
        if isinstance(store.root, Path):
            if Path(candidate).is_file():
                return candidate
        elif location.stat(candidate) is not None:
            return candidate
    return None


def locate_checkpoint(
    store: SweepStore,
    sweep_id: str,
    *,
    trial_id: str | None = None,
    iteration: int | None = None,
    metric: str | None = None,
    mode: str | None = None,
) -> TrialCheckpoint:
    """The checkpoint to export from sweep ``sweep_id``.

    ``trial_id`` names the trial; without it, the best trial for ``metric``/``mode``
    (default: the sweep's objective; failed trials skipped). ``iteration`` picks a stored
    iteration; without it, the highest one whose checkpoint still exists. Raises
    :class:`~morphtune.store.SweepNotFound` / :class:`~morphtune.store.NoResults` (a
    ``LookupError``) for an unknown sweep or one without a finished result, and
    :class:`ExportError` for an unknown trial or iteration or a missing checkpoint.
    """
    if trial_id is None:
        trial_id = store.best(sweep_id, metric=metric, mode=mode).trial_id
    elif metric is not None or mode is not None:
        raise ExportError("--metric/--mode choose the best trial; they do not go with --trial")
    rows = trial_rows(store, sweep_id, trial_id)
    if iteration is not None:
        picked = [row for row in rows if int(row["iteration"]) == iteration]
        if not picked:
            stored = sorted(int(row["iteration"]) for row in rows)
            raise ExportError(
                f"trial {trial_id!r} of sweep {sweep_id!r} has no iteration {iteration}; "
                f"stored iterations: {stored[0]}..{stored[-1]}"
            )
        rows = picked
    status = store.trial_states(sweep_id).get(trial_id, "running")
    recorded_paths: list[str] = []
    for row in rows:
        metrics = json.loads(row["metrics_json"])
        recorded = metrics.get("checkpoint_path")
        if not isinstance(recorded, str) or not recorded:
            continue
        recorded_paths.append(recorded)
        found = _existing(store, _candidates(store, sweep_id, recorded))
        if found is not None:
            return TrialCheckpoint(
                sweep_id=sweep_id,
                trial_id=trial_id,
                iteration=int(row["iteration"]),
                status=status,
                metrics=metrics,
                config=json.loads(row["config_json"]),
                path=found,
                recorded=recorded,
            )
    which = f"iteration {iteration}" if iteration is not None else "any stored iteration"
    if not recorded_paths:
        raise ExportError(
            f"trial {trial_id!r} of sweep {sweep_id!r} has no checkpoint: no result row of "
            f"{which} names a checkpoint_path"
        )
    raise ExportError(
        f"trial {trial_id!r} of sweep {sweep_id!r} has no checkpoint on disk for {which}: "
        f"none of the {len(recorded_paths)} recorded checkpoints holds {CHECKPOINT_FILE} "
        f"any more (Tune keeps only the latest; newest recorded: {recorded_paths[0]})"
    )


def load_checkpoint_state(store: SweepStore, path: str) -> dict[str, Any]:
    """A trial checkpoint's contents, read with ``torch.load(weights_only=True)``
    (tensors and plain values only, no arbitrary objects)."""
    try:
        if isinstance(store.root, Path):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            data = store.location.read_bytes(path)
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportError(f"the checkpoint {path} vanished while it was read") from None
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ExportError(
            f"{path} is not a readable trial checkpoint ({type(exc).__name__}: {first})"
        ) from None
    if not isinstance(state, Mapping):
        raise ExportError(f"{path} is not a trial checkpoint (not a mapping)")
    missing = [key for key in ("family", "model") if key not in state]
    if missing:
        raise ExportError(f"{path} is not a trial checkpoint: it lacks the keys {missing}")
    return dict(state)
