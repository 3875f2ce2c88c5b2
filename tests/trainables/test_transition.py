"""Carrying a donor's checkpoint into an explored trial config (growth-aware PBT): real
training on digits, function-preserving growth, magnitude prune and gradient regrow."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from morphtune.data import DatasetSplit, load_dataset
from morphtune.methods.sparsity import layer_counts, layer_densities
from morphtune.spec import parse_spec, resolve_trial_config
from morphtune.trainables import TrialEngine
from morphtune.trainables._transition import (
    growth_operator_for,
    restore_engine,
    transition_engine,
)

BASE = "name: t\ntraining: {epochs: 3, lr: 0.003, batch_size: 64}\n"


@pytest.fixture(scope="module")
def digits() -> DatasetSplit:
    return load_dataset("digits", seed=0)


def trial_of(overrides: dict[str, Any], model: str = "{width: 32, depth: 2}") -> dict[str, Any]:
    return resolve_trial_config(parse_spec(f"{BASE}model: {model}\n"), overrides)


def donor_state(
    data: DatasetSplit, overrides: dict[str, Any], model: str = "{width: 32, depth: 2}"
) -> tuple[TrialEngine, dict[str, Any]]:
    donor = TrialEngine(trial_of(overrides, model), data)
    donor.train_epoch()
    return donor, copy.deepcopy(donor.state_dict())


def explored(
    data: DatasetSplit,
    state: dict[str, Any],
    overrides: dict[str, Any],
    model: str = "{width: 32, depth: 2}",
) -> tuple[TrialEngine, list[dict[str, Any]]]:
    trial = trial_of(overrides, model)
    engine = TrialEngine(trial, data)
    return engine, restore_engine(engine, state, trial)


def outputs(engine: TrialEngine, data: DatasetSplit) -> torch.Tensor:
    engine.model.eval()
    with torch.no_grad():
        return engine.model(data.val.tensors[0][:256])


# ---- growth ---------------------------------------------------------------------------

GROWTH_CASES = [
    # family, model section, explored overrides, operator, (width, depth) after
    ("mlp", "{width: 16, depth: 1}", {"model.width": 24}, "net2net", (24, 1)),
    ("mlp", "{width: 16, depth: 1}", {"model.width": 24, "model.depth": 2}, "net2net", (24, 2)),
    ("cnn", "{family: cnn, width: 4, depth: 1}", {"model.width": 6}, "net2net", (6, 1)),
    (
        "vit",
        "{family: vit, width: 16, depth: 1, head_dim: 8}",
        {"model.width": 24},
        "lemon",
        (24, 1),
    ),
]


@pytest.mark.parametrize(("family", "model", "overrides", "operator", "size"), GROWTH_CASES)
def test_growth_keeps_the_donor_function_and_training_continues(
    digits: DatasetSplit,
    family: str,
    model: str,
    overrides: dict[str, Any],
    operator: str,
    size: tuple[int, int],
) -> None:
    donor, state = donor_state(digits, {}, model)
    engine, events = explored(digits, state, overrides, model)
    old = donor.model_config
    assert events == [
        {
            "kind": "grow",
            "operator": operator,
            "step": donor.step,
            "from": {"width": old.width, "depth": old.depth},
            "to": {"width": size[0], "depth": size[1]},
        }
    ]
    assert (engine.model_config.width, engine.model_config.depth) == size
    assert engine.metrics()["width"] == size[0]
    assert torch.allclose(outputs(engine, digits), outputs(donor, digits), atol=1e-5)
    # every parameter lives in the rebuilt optimizer, with Adam state carried for the
    # verbatim copies (at least the output bias of an mlp/cnn/vit is one)
    params = {id(p) for group in engine.optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in engine.model.parameters()}
    assert any(engine.optimizer.state.get(p) for p in engine.model.parameters())
    # training goes on from there: finite loss, validation loss falls
    before, _ = engine.evaluate()
    assert math.isfinite(engine.train_epoch())
    after, _ = engine.evaluate()
    assert after < before
    assert engine.epoch == donor.epoch + 1


def test_growth_follows_the_plan_stage_of_the_checkpoint(digits: DatasetSplit) -> None:
    """A donor past a planned growth (16 -> 32) explored to model.width 24: the trial's
    schedule says 48 at that stage, so the model grows 32 -> 48, and no further."""
    plan = {"growth.operator": "net2net", "growth.at_fraction": 0.2, "growth.factor": 2.0}
    donor, state = donor_state(digits, plan, "{width: 16, depth: 1}")
    assert donor.stage == 1 and donor.model_config.width == 32
    engine, events = explored(digits, state, {**plan, "model.width": 24}, "{width: 16, depth: 1}")
    assert [(e["from"]["width"], e["to"]["width"]) for e in events] == [(32, 48)]
    assert engine.stage == 1 and engine.grow_step is None
    assert torch.allclose(outputs(engine, digits), outputs(donor, digits), atol=1e-5)


def test_a_smaller_model_is_an_error_naming_the_field(digits: DatasetSplit) -> None:
    _, state = donor_state(digits, {})
    with pytest.raises(ValueError, match=r"model\.width.*width=32.*model\.width=16"):
        explored(digits, state, {"model.width": 16})
    with pytest.raises(ValueError, match=r"model\.depth"):
        explored(digits, state, {"model.width": 48, "model.depth": 1})


def test_an_unchanged_config_restores_exactly(digits: DatasetSplit) -> None:
    """A plain resume (same config) changes nothing."""
    overrides = {"sparsity.method": "magnitude", "sparsity.density": 0.5}
    donor, state = donor_state(digits, overrides)
    engine, events = explored(digits, state, overrides)
    assert events == []
    assert torch.equal(outputs(engine, digits), outputs(donor, digits))
    assert engine.metrics()["density"] == donor.metrics()["density"]


def test_transition_takes_only_the_engines_own_trial(digits: DatasetSplit) -> None:
    _, state = donor_state(digits, {})
    engine, _ = explored(digits, state, {})
    with pytest.raises(ValueError, match="config the engine was built from"):
        transition_engine(engine, trial_of({"model.width": 48}))


def test_operator_choice_keeps_the_function() -> None:
    assert growth_operator_for("mlp", "net2net", masked=True) == "net2net"
    assert growth_operator_for("mlp", "random", masked=False) == "net2net"  # not lossless
    assert growth_operator_for("vit", "stack", masked=False) == "lemon"
    assert growth_operator_for("gpt", "none", masked=False) == "lemon"
    assert growth_operator_for("cnn", "lemon", masked=False) == "lemon"
    assert growth_operator_for("mlp", "lemon", masked=True) == "net2net"  # lemon grows no masks
    with pytest.raises(ValueError, match="mixture"):
        growth_operator_for("mixture", "mixturegrowth", masked=False)


# ---- sparsity -------------------------------------------------------------------------


def rule_count(engine: TrialEngine, density: float, distribution: str = "uniform") -> int:
    assert engine.masks is not None
    shapes = {name: tuple(mask.shape) for name, mask in engine.masks.masks.items()}
    return sum(layer_counts(shapes, layer_densities(shapes, density, distribution)).values())


def check_magnitude_prune(donor: TrialEngine, engine: TrialEngine) -> None:
    """Each layer's survivors are a subset of the donor's kept entries, and none of
    the dropped ones is larger in magnitude than a survivor; dropped weights are zero,
    and so is their Adam state."""
    assert donor.masks is not None and engine.masks is not None
    donor_weights = donor.masks.parameters()
    weights = engine.masks.parameters()
    for name, mask in engine.masks.masks.items():
        before = donor.masks.masks[name]
        assert bool((mask & ~before).sum() == 0)
        dropped = before & ~mask
        assert int(dropped.sum()) > 0
        magnitude = donor_weights[name].detach().abs()
        assert float(magnitude[mask].min()) >= float(magnitude[dropped].max())
        assert bool((weights[name][~mask] == 0).all())
        assert torch.equal(weights[name][mask], donor_weights[name].detach()[mask])
        state = engine.optimizer.state[weights[name]]
        assert bool((state["exp_avg"][dropped] == 0).all())
        assert bool((state["exp_avg_sq"][dropped] == 0).all())


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_magnitude_prune_to_a_lower_density(digits: DatasetSplit, distribution: str) -> None:
    sparse = {
        "sparsity.method": "magnitude",
        "sparsity.density": 0.5,
        "sparsity.distribution": distribution,
    }
    donor, state = donor_state(digits, sparse)
    engine, events = explored(digits, state, {**sparse, "sparsity.density": 0.3})
    assert engine.masks is not None
    assert [(e["kind"], e["from"]) for e in events] == [("prune", pytest.approx(0.5, abs=1e-3))]
    # the trial's own rule at 0.3: largest-remainder counts, within one entry per layer
    # of 0.3 exactly (here 0.3 * 3392 = 1017.6 -> 1018 kept)
    nnz = sum(engine.masks.layer_nnz().values())
    assert nnz == rule_count(engine, 0.3, distribution)
    total = sum(mask.numel() for mask in engine.masks.masks.values())
    assert abs(nnz - 0.3 * total) <= len(engine.masks.masks)
    assert events[0]["to"] == engine.metrics()["density"] == pytest.approx(0.3, abs=1e-3)
    check_magnitude_prune(donor, engine)


def test_the_two_call_sequence_prunes_the_same(digits: DatasetSplit) -> None:
    """engine.load_state_dict + transition_engine (no previous config) finds the density
    change from the masks' counts and gives restore_engine's masks."""
    sparse = {"sparsity.method": "magnitude", "sparsity.density": 0.5}
    _, state = donor_state(digits, sparse)
    via_restore, _ = explored(digits, state, {**sparse, "sparsity.density": 0.3})
    trial = trial_of({**sparse, "sparsity.density": 0.3})
    engine = TrialEngine(trial, digits)
    engine.load_state_dict(state)
    assert [e["kind"] for e in transition_engine(engine, trial)] == ["prune"]
    assert engine.masks is not None and via_restore.masks is not None
    for name, mask in engine.masks.masks.items():
        assert torch.equal(mask, via_restore.masks.masks[name])


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_dynamic_sparse_training_goes_on_from_the_new_density(
    digits: DatasetSplit, method: str
) -> None:
    sparse = {"sparsity.method": method, "sparsity.density": 0.5, "sparsity.update_interval": 10}
    donor, state = donor_state(digits, sparse)
    engine, events = explored(digits, state, {**sparse, "sparsity.density": 0.3})
    assert [e["kind"] for e in events] == ["prune"]
    assert engine.updater is not None and engine.updater.masks is engine.masks
    check_magnitude_prune(donor, engine)
    counts = engine.masks.layer_nnz()
    masks_before = {name: mask.clone() for name, mask in engine.masks.masks.items()}
    engine.train_epoch()
    # the updater dropped and regrew (masks moved) at the new per-layer counts
    assert engine.mask_updates > 0
    assert engine.masks.layer_nnz() == counts
    assert any(not torch.equal(m, masks_before[n]) for n, m in engine.masks.masks.items())


def test_gmp_moves_onto_the_new_schedule_and_ends_at_the_new_density(
    digits: DatasetSplit,
) -> None:
    sparse = {"sparsity.method": "gmp", "sparsity.density": 0.5, "sparsity.update_interval": 5}
    donor, state = donor_state(digits, sparse)
    engine, events = explored(digits, state, {**sparse, "sparsity.density": 0.3})
    assert [e["kind"] for e in events] == ["prune"]
    updater = engine.updater
    assert updater is not None and updater.masks is engine.masks
    assert updater.config()["density"] == 0.3
    # the masks are what GMP targets at this step on the 0.3 schedule
    expected = updater.layer_targets(updater.sparsity_at(engine.step))  # type: ignore[attr-defined]
    assert engine.masks.layer_nnz() == expected
    check_magnitude_prune(donor, engine)
    while engine.epoch < engine.epochs:
        engine.train_epoch()
    final = updater.layer_targets(updater.final_sparsity)  # type: ignore[attr-defined]
    assert engine.masks.layer_nnz() == final
    assert engine.metrics()["density"] == pytest.approx(0.3, abs=1e-3)


def test_regrow_adds_zero_weights_by_gradient_and_keeps_the_function(
    digits: DatasetSplit,
) -> None:
    sparse = {"sparsity.method": "magnitude", "sparsity.density": 0.3}
    donor, state = donor_state(digits, sparse)
    engine, events = explored(digits, state, {**sparse, "sparsity.density": 0.5})
    assert [e["kind"] for e in events] == ["regrow"]
    assert engine.masks is not None and donor.masks is not None
    assert sum(engine.masks.layer_nnz().values()) == rule_count(engine, 0.5)
    weights = engine.masks.parameters()
    for name, mask in engine.masks.masks.items():
        new = mask & ~donor.masks.masks[name]
        assert bool((donor.masks.masks[name] & ~mask).sum() == 0)  # nothing dropped
        assert int(new.sum()) > 0
        assert bool((weights[name][new] == 0).all())
    # zero-valued new entries leave the function as it was
    assert torch.allclose(outputs(engine, digits), outputs(donor, digits), atol=1e-6)
    engine.train_epoch()
    moved = [
        bool((weights[n][m & ~donor.masks.masks[n]] != 0).any())
        for n, m in engine.masks.masks.items()
    ]
    assert all(moved)  # the regrown entries train


def test_a_dense_checkpoint_into_a_sparse_trial_is_pruned(digits: DatasetSplit) -> None:
    _, state = donor_state(digits, {})
    sparse = {"sparsity.method": "set", "sparsity.density": 0.5, "sparsity.update_interval": 10}
    engine, events = explored(digits, state, sparse)
    assert [(e["kind"], e["from"], e["to"]) for e in events] == [("prune", 1.0, 0.5)]
    assert engine.updater is not None and engine.updater.masks is engine.masks
    assert engine.masks is not None and engine.masks.density() == 0.5
    engine.train_epoch()
    assert engine.mask_updates > 0 and engine.masks.density() == 0.5


def test_growing_a_sparse_model_keeps_its_function_and_masks(digits: DatasetSplit) -> None:
    sparse = {"sparsity.method": "magnitude", "sparsity.density": 0.5}
    donor, state = donor_state(digits, sparse)
    engine, events = explored(digits, state, {**sparse, "model.width": 48})
    assert [e["kind"] for e in events] == ["grow"]
    assert engine.masks is not None
    assert engine.masks.density() == pytest.approx(0.5, abs=0.02)
    assert torch.allclose(outputs(engine, digits), outputs(donor, digits), atol=1e-5)


@pytest.mark.parametrize("method", ["set", "gmp"])
def test_grow_then_prune_in_one_restore(digits: DatasetSplit, method: str) -> None:
    """The updater is rebound to the grown masks before pruning: GMP's targets are
    those of the grown shapes, and training ends at the new density."""
    sparse = {"sparsity.method": method, "sparsity.density": 0.5, "sparsity.update_interval": 5}
    _, state = donor_state(digits, sparse)
    engine, events = explored(digits, state, {**sparse, "model.width": 48, "sparsity.density": 0.3})
    assert [e["kind"] for e in events] == ["grow", "prune"]
    updater = engine.updater
    assert updater is not None and engine.masks is not None and updater.masks is engine.masks
    nnz = engine.masks.layer_nnz()
    if method == "gmp":
        assert nnz == updater.layer_targets(updater.sparsity_at(engine.step))  # type: ignore[attr-defined]
    else:
        assert sum(nnz.values()) == rule_count(engine, 0.3)
    while engine.epoch < engine.epochs:
        engine.train_epoch()
    assert engine.metrics()["density"] == pytest.approx(0.3, abs=1e-3)
