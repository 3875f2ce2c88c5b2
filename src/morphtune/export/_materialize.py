"""A trial checkpoint turned into the standalone model it holds.

- A plain trial (``TrialEngine``, ``GanEngine``): the family's model at the checkpoint's
  (possibly grown) ``model_config``, keep-masks re-attached when it is sparse.
- A supernet trial (``SupernetEngine``): the supernet rebuilt from its section and weights,
  then one subnet copied out as a plain model of its family (``Supernet.extract``): by
  default the largest, whose accuracy the trial reports as ``val_acc`` (``smallest`` is
  ``val_acc_smallest``).

A subnet with BatchNorm needs statistics estimated for it (Once-for-All's re-calibration):
they are re-estimated on batches drawn exactly as the subnet search draws them
(``searchers._subnet_search``: ``recalibration_batches`` batches of 64 training samples,
indices from ``torch.randint`` on a generator seeded with the search's seed), so a
subnet exported from a subnet-search sweep scores what the search stored. A supernet
trial's own epoch-end calibration batches are not recorded, so for a BatchNorm family its
exported subnet's accuracy is close to, not equal to, the reported one
(``Materialized.exact`` is False then).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from morphtune.export._errors import ExportError
from morphtune.methods.sparsity import MaskSet, find_masks, masks_in_state_dict
from morphtune.models import TaskShape, build_model, config_from_dict, config_to_dict

__all__ = [
    "CALIBRATION_BATCH_SIZE",
    "Materialized",
    "build_subnet",
    "build_trial_model",
    "load_trial_data",
    "parse_subnet",
]

#: The subnet search's re-calibration batch size (``SubnetSearch``'s default, which the
#: runner keeps).
CALIBRATION_BATCH_SIZE = 64


@dataclass
class Materialized:
    """The model an export writes, and what to record about it.

    ``reported_metric`` names the stored metric that scored exactly this model
    (``val_acc``, ``val_acc_smallest``; ``None`` for a subnet no row scored), and
    ``exact`` whether re-evaluating the model reproduces it exactly.
    """

    model: nn.Module
    family: str
    config: dict[str, Any]
    grown: bool = False
    growth_stage: int = 0
    subnet: dict[str, Any] | None = None
    reported_metric: str | None = "val_acc"
    exact: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def sparse(self) -> bool:
        return bool(find_masks(self.model))

    @property
    def density(self) -> float:
        masks = find_masks(self.model)
        total = sum(mask.numel() for mask in masks.values())
        return sum(int(mask.sum()) for mask in masks.values()) / total if total else 1.0

    @property
    def kind(self) -> str:
        """``subnet``, ``grown``, ``sparse``, ``grown+sparse`` or ``dense``."""
        if self.subnet is not None:
            return "subnet"
        parts = [name for name, on in (("grown", self.grown), ("sparse", self.sparse)) if on]
        return "+".join(parts) or "dense"


def build_trial_model(state: Mapping[str, Any], where: str) -> Materialized:
    """The model of a plain (non-supernet) trial checkpoint, masks re-attached."""
    family = state["family"]
    if "model_config" not in state:
        raise ExportError(f"{where} is not a trial checkpoint: it lacks 'model_config'")
    weights = state["model"]
    try:
        config = config_from_dict(family, state["model_config"])
        model = build_model(family, config)
    except ValueError as exc:
        raise ExportError(f"{where}: cannot rebuild its {family} model: {exc}") from None
    if masks_in_state_dict(weights):
        MaskSet.from_state_dict(model, weights)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ExportError(
            f"{where}: the weights do not fit its {family} model_config: {exc}"
        ) from None
    stage = int(state.get("stage", 0) or 0)
    return Materialized(
        model=model.eval(),
        family=family,
        config=config_to_dict(config),
        grown=stage > 0,
        growth_stage=stage,
    )


def load_trial_data(trial: Mapping[str, Any]) -> Any:
    """The trial's dataset split (``trial["dataset"]``), as the trial loaded it."""
    from morphtune.data import load_dataset

    dataset = trial["dataset"]
    return load_dataset(
        dataset["name"],
        seed=dataset["seed"],
        val_fraction=dataset["val_fraction"],
        **dataset.get("options", {}),
    )


def parse_subnet(text: str) -> str | dict[str, Any]:
    """A subnet named on the command line: ``largest``, ``smallest``, a JSON object
    (``{"width": 32, "depth": 1}``) or ``name=value`` pairs (``width=32,depth=1``)."""
    text = text.strip()
    if text in ("largest", "smallest"):
        return text
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ExportError(f"--subnet: not a JSON object ({exc}): {text!r}") from None
        if not isinstance(value, dict):
            raise ExportError(f"--subnet must be a JSON object of choices, but got {text!r}")
        return value
    choices: dict[str, Any] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip() or not raw.strip():
            raise ExportError(
                f"--subnet must be largest, smallest, a JSON object or name=value pairs "
                f"(width=32,depth=1), but got {text!r}"
            )
        choices[name.strip()] = _scalar(raw.strip())
    if not choices:
        raise ExportError("--subnet names no choice")
    return choices


def _scalar(raw: str) -> Any:
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return raw


def _calibration(train_inputs: torch.Tensor, batches: int, seed: int) -> list[torch.Tensor]:
    """Re-calibration batches drawn as ``SubnetSearch`` draws them (see the module doc)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        train_inputs[
            torch.randint(len(train_inputs), (CALIBRATION_BATCH_SIZE,), generator=generator)
        ]
        for _ in range(batches)
    ]


def build_subnet(
    state: Mapping[str, Any],
    subnet: str | Mapping[str, Any],
    data: Any,
    *,
    calibration_seed: int,
    from_search: bool,
    where: str,
) -> Materialized:
    """One subnet of a supernet trial checkpoint as a standalone model.

    ``subnet`` is ``largest``, ``smallest`` or a mapping of choices (checked against the
    supernet's space). ``data`` is the trial's dataset split (its task shape rebuilds the
    supernet; its training inputs re-calibrate BatchNorm). ``from_search``: the subnet was
    scored by a subnet search seeded with ``calibration_seed``, so its score is reproduced
    exactly.
    """
    from morphtune.methods.supernet import build_supernet, recalibrate_bn

    trial = state.get("trial", {})
    try:
        supernet = build_supernet(state["family"], TaskShape.of(data), state["supernet"])
        supernet.load_state_dict(state["model"])
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{where}: cannot rebuild its supernet: {exc}") from None
    space = supernet.space
    if subnet == "largest":
        chosen, reported = space.largest(), "val_acc"
    elif subnet == "smallest":
        chosen, reported = space.smallest(), "val_acc_smallest"
    elif isinstance(subnet, str):
        raise ExportError(f"--subnet must be largest, smallest or choices, but got {subnet!r}")
    else:
        try:
            chosen = space.validate(subnet)
        except ValueError as exc:
            raise ExportError(f"--subnet: {exc}") from None
        reported = None
        if chosen == space.largest():
            reported = "val_acc"
        elif chosen == space.smallest():
            reported = "val_acc_smallest"
    if from_search:
        reported = "val_acc"  # the subnet-search row of this subnet
    has_bn = any(isinstance(module, _BatchNorm) for module in supernet.modules())
    notes: list[str] = []
    exact = True
    if has_bn:
        batches = int(trial.get("supernet", {}).get("recalibration_batches", 4))
        supernet.set_active(chosen)
        with torch.no_grad():
            recalibrate_bn(supernet, _calibration(data.train.tensors[0], batches, calibration_seed))
        if not from_search:
            exact = False
            notes.append(
                "BatchNorm statistics re-estimated for the subnet; the trial's own "
                "calibration batches are not recorded, so its accuracy may differ slightly "
                "from the reported one"
            )
    model = supernet.extract(chosen).eval()
    config = config_to_dict(supernet.subnet_config(chosen))
    return Materialized(
        model=model,
        family=state["family"],
        config=config,
        subnet=dict(chosen),
        reported_metric=reported,
        exact=exact,
        notes=notes,
    )
