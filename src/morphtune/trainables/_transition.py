"""Carry a checkpoint into a trial that asks for a bigger or sparser model.

Growth-aware Population Based Training (``searchers.GrowthPBT``; PBT: Jaderberg et al.,
"Population Based Training of Neural Networks", 2017) exploits by restarting a weak
trial from a strong trial's checkpoint, and explores by changing the restarted trial's
config. When the explored config asks for a wider or deeper model, or for a different
density, the checkpoint no longer fits it: :func:`transition_engine` changes the
restored engine in place so that it does.

- **Grow** (``model.width`` / ``model.depth`` above the checkpoint's): a
  function-preserving operator grows the model to the config the trial's own schedule
  has at the checkpoint's growth stage (``model.*`` before any planned growth, else the
  target of the last applied plan event), so later plan events still grow from the
  shape they expect. The operator is the trial's ``growth.operator`` when it keeps the
  function of the family exactly (and grows the masks of a sparse model), else the
  default of :data:`FUNCTION_PRESERVING_OPERATORS`: Net2Net (Chen et al., ICLR 2016)
  for mlp and cnn, LEMON (Wang et al., ICLR 2024) for vit and gpt; always with
  ``noise=0``, so the grown model computes the same outputs in eval mode. The optimizer
  is rebuilt carrying the state of every parameter the operator copied verbatim
  (``TrialEngine.grow_to``). A smaller width or depth is an error naming the field.
- **Prune** (a lower ``sparsity.density`` than the masks hold, or a sparse method on a
  dense checkpoint): the smallest-magnitude kept weights are masked until the trial's
  rule for the density holds (its layer distribution, scope and structure for pruning
  at init; the layer distribution for SET/RigL; GMP's own targets at this step on its
  new schedule), the way magnitude pruning and DST's drop step rank weights.
- **Regrow** (a higher density than the masks hold): inactive entries with the largest
  dense-gradient magnitude are re-admitted at value zero with zero optimizer state, as
  RigL's grow step does (Evci et al., ICML 2020), until the rule's counts hold. The
  gradient is taken on the trial's prune set (samples drawn from the whole training
  split with the trial's seed), so every DDP rank picks the same entries. Only
  unstructured masks regrow; a structured one is an error.

A dynamic sparse updater (SET, RigL, GMP) keeps working on the changed masks: they are
changed in place (or the updater is rebound to a grown model's masks), and SET/RigL keep
the per-layer counts they find, so they drop and regrow from the new density.

Call :func:`restore_engine` instead of ``engine.load_state_dict`` when a trial restores
from a checkpoint; it loads the checkpoint and calls :func:`transition_engine` with the
config the checkpoint was trained under, so an unchanged density is never re-pruned
(growing a sparse model moves per-layer counts slightly; that is kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import torch
import torch.nn.functional as F

from morphtune.methods.growth import GROWTH_OPERATORS
from morphtune.methods.growth._base import ADJUSTABLE_FIELDS
from morphtune.methods.sparsity import (
    GMPUpdater,
    MaskSet,
    global_topk_masks,
    masks_from_scores,
    prunable_parameters,
    reset_optimizer_state,
    sparsity_method_kind,
    topk_mask,
)
from morphtune.models import config_from_spec
from morphtune.trainables._engine import TrialEngine
from morphtune.trainables._sparse import prune_set

__all__ = ["FUNCTION_PRESERVING_OPERATORS", "restore_engine", "transition_engine"]

#: The growth operator used when the trial's own does not keep the function exactly.
FUNCTION_PRESERVING_OPERATORS = {"mlp": "net2net", "cnn": "net2net", "vit": "lemon", "gpt": "lemon"}

#: Sections of the trial config a transition reads; they must be the engine's own.
_SECTIONS = ("model", "growth", "sparsity", "training")

#: The sparsity fields whose change can move the masks.
_SPARSITY_FIELDS = ("method", "density", "distribution", "erk_power", "scope", "structure")

_SEED_STRIDE = 104_729  # a prime: growth seeds of different steps never coincide


def restore_engine(
    engine: TrialEngine, state: Mapping[str, Any], trial: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Load checkpoint ``state`` into ``engine`` (built for ``trial``) and carry it into
    ``trial``'s model and density (:func:`transition_engine`); returns the changes.

    After a PBT exploit ``state`` is the donor's checkpoint and ``trial`` the explored
    config. GMP's updater state names its final density; when the trial changed it, the
    checkpoint's updater is loaded under the trial's density (its generator and counter
    carry over) and the masks are then moved to the new schedule.
    """
    engine.load_state_dict(_loadable(state, trial))
    previous = state.get("trial")
    return transition_engine(engine, trial, previous=previous)


def transition_engine(
    engine: TrialEngine,
    trial: Mapping[str, Any],
    *,
    previous: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Grow and re-sparsify a restored ``engine`` in place so it fits ``trial``.

    ``trial`` is the nested config the engine was built from; ``previous`` the config
    the checkpoint was trained under (``state["trial"]``). With ``previous`` an
    unchanged sparsity request leaves the masks alone; without it the masks' per-layer
    counts are compared with the trial's rule. Returns one event per change:
    ``{"kind": "grow", "operator", "step", "from": {"width", "depth"}, "to": {...}}``
    and ``{"kind": "prune" | "regrow", "method", "step", "from": density, "to":
    density}``. Raises ``ValueError`` naming the field when the trial asks for a smaller
    model, or for a change no operator can make function-preservingly.
    """
    _check_same_trial(engine, trial)
    events: list[dict[str, Any]] = []
    grown = _grow(engine, trial)
    if grown is not None:
        events.append(grown)
    changed = _resparsify(engine, trial, previous)
    if changed is not None:
        events.append(changed)
    if events:
        engine.recount_cost()
    return events


# ------------------------------------------------------------------------- growth


def growth_operator_for(family: str, requested: str, *, masked: bool) -> str:
    """``requested`` if it keeps the function of ``family`` exactly (and grows the masks
    of a masked model), else the family's entry in :data:`FUNCTION_PRESERVING_OPERATORS`."""
    if requested in GROWTH_OPERATORS:
        operator = GROWTH_OPERATORS.get(requested)
        if family in operator.lossless and (not masked or family in operator.mask_families):
            return requested
    default = FUNCTION_PRESERVING_OPERATORS.get(family)
    if default is None:
        raise ValueError(
            f"model.family {family!r} has no function-preserving growth operator, so its "
            "model.width and model.depth cannot change when a trial restores a checkpoint"
        )
    return default


def _check_same_trial(engine: TrialEngine, trial: Mapping[str, Any]) -> None:
    for section in _SECTIONS:
        if dict(trial.get(section, {})) != engine.trial.get(section):
            raise ValueError(
                f"trial must be the config the engine was built from, but its {section!r} "
                f"section differs: {dict(trial.get(section, {}))} != {engine.trial.get(section)}"
            )


def _expected_config(engine: TrialEngine, trial: Mapping[str, Any]) -> Any:
    """The config the trial's own schedule has at the checkpoint's growth stage."""
    if engine.stage == 0:
        return config_from_spec(engine.family, engine.task, trial["model"])
    if engine.stage > len(engine.events):
        raise ValueError(
            f"growth.plan: the checkpoint has applied {engine.stage} growth events, but the "
            f"trial's plan has {len(engine.events)}; a restored trial's plan must not lose "
            "events it has passed"
        )
    return engine.events[engine.stage - 1].target


def _same_shape(current: Any, target: Any) -> bool:
    """Equal configs, ignoring fields an operator sets itself (LEMON's ``ln_eps``)."""
    return type(current) is type(target) and all(
        getattr(current, f.name) == getattr(target, f.name)
        for f in fields(current)
        if f.name not in ADJUSTABLE_FIELDS
    )


def _size(config: Any) -> dict[str, int]:
    return {"width": int(config.width), "depth": int(config.depth)}


def _grow(engine: TrialEngine, trial: Mapping[str, Any]) -> dict[str, Any] | None:
    current = engine.model_config
    target = _expected_config(engine, trial)
    if _same_shape(current, target):
        return None
    for field in ("width", "depth"):
        old, new = getattr(current, field), getattr(target, field)
        if new < old:
            raise ValueError(
                f"model.{field} can only grow when a trial restores a checkpoint: the "
                f"checkpoint's model has {field}={old}, but the trial asks for "
                f"model.{field}={new} (it must be >= {old})"
            )
    operator = growth_operator_for(
        engine.family, trial["growth"]["operator"], masked=engine.masks is not None
    )
    seed = int(trial["training"]["seed"]) + _SEED_STRIDE * (engine.step + 1)
    # noise breaks the function; a PBT move must not
    options = replace(engine.plan.options, noise=0.0)
    engine.grow_to(target, operator, seed=seed, options=options)
    return {
        "kind": "grow",
        "operator": operator,
        "step": engine.step,
        "from": _size(current),
        "to": _size(engine.model_config),
    }


# ------------------------------------------------------------------------- sparsity


def _sparsity_request(trial: Mapping[str, Any]) -> tuple[Any, ...]:
    section = trial["sparsity"]
    return tuple(section.get(name) for name in _SPARSITY_FIELDS)


def _resparsify(
    engine: TrialEngine, trial: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    section = trial["sparsity"]
    method = section["method"]
    kind = None if method == "none" else sparsity_method_kind(method)
    if kind == "gan":
        raise ValueError(f"sparsity.method {method!r} trains a GAN, not a TrialEngine model")
    created = engine.masks is None and kind is not None
    if created:
        # a dense checkpoint for a sparse trial: start from all-ones masks
        engine.masks = MaskSet(
            engine.model,
            {
                name: torch.ones_like(param, dtype=torch.bool)
                for name, param in prunable_parameters(engine.model).items()
            },
        )
    # the updater must see the masks it will move (GMP's targets read their shapes)
    _bind_updater(engine)
    masks = engine.masks
    if masks is None:
        return None
    unchanged = previous is not None and _sparsity_request(previous) == _sparsity_request(trial)
    if unchanged and not created:
        return None
    wanted = _wanted_counts(engine, section, kind, masks)
    current = masks.layer_nnz()
    before = masks.density()
    if sum(wanted.values()) < sum(current.values()):
        new_masks = _pruned(engine, section, kind, masks, wanted)
        change = "prune"
    elif sum(wanted.values()) > sum(current.values()):
        new_masks = _regrown(engine, section, kind, masks, wanted)
        change = "regrow"
    else:
        return None
    _write_masks(engine, masks, new_masks)
    return {
        "kind": change,
        "method": method,
        "step": engine.step,
        "from": before,
        "to": masks.density(),
    }


def _rule(section: Mapping[str, Any], kind: str | None) -> tuple[str, str, str]:
    """(scope, distribution, structure) the trial's method makes masks with."""
    if kind == "init":
        scope = section["scope"]
        distribution = "uniform" if scope == "global" else section["distribution"]
        return scope, distribution, section["structure"]
    return "local", section["distribution"], "unstructured"


def _gmp(engine: TrialEngine) -> GMPUpdater:
    if not isinstance(engine.updater, GMPUpdater):
        raise ValueError("sparsity.method 'gmp' needs the engine's GMP updater, but it has none")
    return engine.updater


def _wanted_counts(
    engine: TrialEngine, section: Mapping[str, Any], kind: str | None, masks: MaskSet
) -> dict[str, int]:
    """Kept entries per layer that the trial's rule gives for its density at this step
    (a global scope's layer split is the one magnitude ranking gives)."""
    params = masks.parameters()
    if kind is None:
        return {name: param.numel() for name, param in params.items()}
    if section["method"] == "gmp":
        updater = _gmp(engine)
        sparsity = updater.sparsity_at(engine.step)
        if updater.options.scope == "global":
            total = sum(param.numel() for param in params.values())
            keep = global_topk_masks(_magnitudes(masks), total - math.floor(sparsity * total + 0.5))
            return {name: int(mask.count_nonzero()) for name, mask in keep.items()}
        return updater.layer_targets(sparsity)
    scope, distribution, structure = _rule(section, kind)
    keep = masks_from_scores(
        _magnitudes(masks),
        float(section["density"]),
        scope=scope,
        distribution=distribution,
        erk_power=section["erk_power"],
        structure=structure,
    )
    return {name: int(mask.count_nonzero()) for name, mask in keep.items()}


def _magnitudes(masks: MaskSet) -> dict[str, torch.Tensor]:
    return {name: param.detach().abs() for name, param in masks.parameters().items()}


def _pruned(
    engine: TrialEngine,
    section: Mapping[str, Any],
    kind: str | None,
    masks: MaskSet,
    wanted: Mapping[str, int],
) -> dict[str, torch.Tensor]:
    """The current masks with their smallest-magnitude kept entries dropped."""
    current = masks.masks
    if section["method"] == "gmp":
        ranked = {
            name: torch.where(current[name], score, -math.inf)
            for name, score in _magnitudes(masks).items()
        }
        if _gmp(engine).options.scope == "global":
            kept = min(sum(wanted.values()), sum(masks.layer_nnz().values()))
            return global_topk_masks(ranked, kept)
        nnz = masks.layer_nnz()
        return {name: topk_mask(ranked[name], min(wanted[name], nnz[name])) for name in ranked}
    scope, distribution, structure = _rule(section, kind)
    return masks_from_scores(
        _magnitudes(masks),
        float(section["density"]),
        scope=scope,
        distribution=distribution,
        erk_power=section["erk_power"],
        structure=structure,
        current=current,
    )


def _regrown(
    engine: TrialEngine,
    section: Mapping[str, Any],
    kind: str | None,
    masks: MaskSet,
    wanted: Mapping[str, int],
) -> dict[str, torch.Tensor]:
    """The current masks plus the inactive entries with the largest gradient magnitude."""
    scope, _, structure = _rule(section, kind)
    if structure != "unstructured":
        raise ValueError(
            f"sparsity.density can only rise across a restore for unstructured masks, but "
            f"sparsity.structure is {structure!r}"
        )
    current = masks.masks
    gradients = _dense_gradients(engine, section, masks)
    ranked = {
        name: torch.where(current[name], -math.inf, gradient.abs().to(torch.float64))
        for name, gradient in gradients.items()
    }
    nnz = masks.layer_nnz()
    global_scope = scope == "global" or (
        section["method"] == "gmp" and _gmp(engine).options.scope == "global"
    )
    if global_scope:
        added = global_topk_masks(ranked, sum(wanted.values()) - sum(nnz.values()))
    else:
        added = {name: topk_mask(ranked[name], max(0, wanted[name] - nnz[name])) for name in ranked}
    return {name: current[name] | added[name].to(current[name].device) for name in current}


def _dense_gradients(
    engine: TrialEngine, section: Mapping[str, Any], masks: MaskSet
) -> dict[str, torch.Tensor]:
    """Summed gradient of the loss on the trial's prune set with respect to each masked
    weight, taken in eval mode (no running statistics move). The mask pre-hook makes
    ``W = W * M`` in forward, so inactive entries get their dense gradient."""
    model = engine.model
    params = masks.parameters()
    batches = prune_set(
        engine.data.train,
        engine.task,
        int(section["samples_per_class"]),
        int(engine.trial["training"]["seed"]),
    )
    totals = {name: torch.zeros_like(param) for name, param in params.items()}
    was_training = model.training
    model.eval()
    try:
        for inputs, labels in batches:
            model.zero_grad(set_to_none=True)
            logits = model(inputs.to(engine.device))
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.to(engine.device).reshape(-1)
            )
            loss.backward()
            for name, param in params.items():
                if param.grad is not None:
                    totals[name] += param.grad.detach()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return totals


@torch.no_grad()
def _write_masks(
    engine: TrialEngine, masks: MaskSet, new_masks: Mapping[str, torch.Tensor]
) -> None:
    """Write ``new_masks`` into the mask buffers in place (an updater holding them sees
    the change), zero the weights and optimizer state of every entry that changed."""
    params = masks.parameters()
    for name, mask in masks.masks.items():
        new = new_masks[name].to(mask.device)
        changed = new != mask
        mask.copy_(new)
        params[name].masked_fill_(changed, 0)
        reset_optimizer_state(engine.optimizer, params[name], changed)
    masks.apply()


def _bind_updater(engine: TrialEngine) -> None:
    """Point the engine's sparse updater at the engine's current masks (after growth
    replaced them, after masks were created on a dense checkpoint, or when the
    checkpoint's masks came without an updater)."""
    updater = engine.updater
    if updater is None or updater.masks is engine.masks:
        return
    if engine.masks is None:
        raise ValueError(
            f"sparsity.method {updater.name!r} needs masks, but the restored model has none"
        )
    updater.masks = engine.masks
    if isinstance(updater, GMPUpdater):
        updater.shapes = {name: tuple(mask.shape) for name, mask in engine.masks.masks.items()}


def _loadable(state: Mapping[str, Any], trial: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` with a GMP updater's final density set to the trial's, so the engine's
    updater (built for the trial) accepts it; any other state as it is."""
    updater = state.get("sparse_updater")
    section = trial["sparsity"]
    if not updater or updater.get("method") != "gmp" or section["method"] != "gmp":
        return state
    config = {**updater["config"], "density": float(section["density"])}
    return {**state, "sparse_updater": {**updater, "config": config}}
