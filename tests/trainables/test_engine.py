"""The training engine of one trial, without Ray: real training, growth and sparsity."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from morphtune.data import load_dataset
from morphtune.methods.sparsity import find_masks
from morphtune.spec import parse_spec, resolve_trial_config
from morphtune.trainables import TrialEngine

BASE = "name: e\ndataset: {name: synthetic}\ntraining: {epochs: 6, lr: 0.01, batch_size: 32}\n"


def engine(overrides: dict | None = None, text: str = BASE) -> TrialEngine:
    spec = parse_spec(text)
    trial = resolve_trial_config(spec, overrides or {})
    dataset = trial["dataset"]
    data = load_dataset(
        dataset["name"],
        seed=dataset["seed"],
        val_fraction=dataset["val_fraction"],
        **dataset["options"],
    )
    return TrialEngine(trial, data)


def test_training_improves_validation_accuracy() -> None:
    run = engine()
    _, before = run.evaluate()
    for _ in range(run.epochs):
        run.train_epoch()
    metrics = run.metrics()
    assert metrics["val_acc"] > max(0.9, before + 0.3)
    assert metrics["epoch"] == run.epochs
    assert math.isfinite(metrics["val_loss"])


def test_digits_mlp_reaches_high_accuracy() -> None:
    text = "name: d\ntraining: {epochs: 10, lr: 0.005, batch_size: 64}\nmodel: {width: 64}\n"
    run = engine(text=text)
    for _ in range(run.epochs):
        run.train_epoch()
    assert run.metrics()["val_acc"] >= 0.93


def test_growth_happens_once_at_the_planned_step_and_keeps_the_function() -> None:
    run = engine({"growth.operator": "net2net", "growth.at_fraction": 0.5, "growth.factor": 2.0})
    assert run.grow_step == math.ceil(0.5 * run.total_steps)
    inputs = run.data.val.tensors[0][:64]
    run.model.eval()
    before = run.model(inputs).detach()
    old_width = max(run.model.config.hidden)
    run.grow_now()
    run.model.eval()
    after = run.model(inputs).detach()
    assert max(run.model.config.hidden) == 2 * old_width
    assert torch.max(torch.abs(after - before)) <= 1e-5


def test_growth_noise_breaks_replica_symmetry() -> None:
    """growth.noise reaches the operator: Net2Net replicas (new hidden units copying an
    old one) have identical fan-in rows without noise and distinct rows with it."""

    def replica_rows_identical(noise: float) -> bool:
        run = engine({"growth.operator": "net2net", "growth.factor": 2.0, "growth.noise": noise})
        old_width = run.model_config.hidden[0]
        run.grow_now()
        weight = run.model.layers[0].weight.detach()
        new_rows = weight[old_width:]
        # every new row equals some old row exactly iff no noise was added
        return all(any(torch.equal(row, old) for old in weight[:old_width]) for row in new_rows)

    assert replica_rows_identical(0.0)
    assert not replica_rows_identical(0.05)


def test_growth_inside_training_and_flops_accounting() -> None:
    run = engine({"growth.operator": "net2net", "growth.at_fraction": 0.5})
    small_flops = run.metrics()["flops"]
    widths = []
    for _ in range(run.epochs):
        run.train_epoch()
        widths.append(run.metrics()["width"])
    assert widths[0] == 64 and widths[-1] == 128  # grew from the base width, once
    assert widths == sorted(widths)
    metrics = run.metrics()
    assert metrics["grown"] == 1
    assert metrics["flops"] > small_flops
    samples = len(run.data.train) * run.epochs
    # cumulative training FLOPs lie between "all small" and "all big"
    assert 3 * small_flops * samples < metrics["train_flops"] < 3 * metrics["flops"] * samples


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_pruned_training_keeps_exact_density(distribution: str) -> None:
    run = engine(
        {
            "sparsity.method": "magnitude",
            "sparsity.density": 0.25,
            "sparsity.distribution": distribution,
        }
    )
    kept_before = {name: int(mask.sum()) for name, mask in find_masks(run.model).items()}
    for _ in range(2):
        run.train_epoch()
    for name, param in run.model.named_parameters():
        if name in kept_before:
            assert int((param != 0).sum()) <= kept_before[name]
            mask = find_masks(run.model)[name]
            assert torch.all(param[~mask] == 0)
    total = sum(p.numel() for n, p in run.model.named_parameters() if n in kept_before)
    assert abs(sum(kept_before.values()) - round(0.25 * total)) <= 1
    assert abs(run.metrics()["density"] - 0.25) < 0.01


def test_checkpoint_round_trip_restores_a_grown_sparse_model() -> None:
    overrides = {
        "growth.operator": "net2net",
        "growth.at_fraction": 0.3,
        "sparsity.method": "random",
        "sparsity.density": 0.5,
    }
    run = engine(overrides)
    for _ in range(3):
        run.train_epoch()
    assert run.grown
    state = copy.deepcopy(run.state_dict())
    fresh = engine(overrides)
    assert max(fresh.model.config.hidden) < max(run.model.config.hidden)
    fresh.load_state_dict(state)
    assert fresh.model.config == run.model.config
    assert (fresh.step, fresh.epoch, fresh.grown) == (run.step, run.epoch, True)
    inputs = run.data.val.tensors[0][:32]
    run.model.eval()
    fresh.model.eval()
    assert torch.equal(run.model(inputs), fresh.model(inputs))
    # both continue identically (same data order, optimizer state restored)
    run.train_epoch()
    fresh.train_epoch()
    for a, b in zip(run.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_cosine_schedule_decays_to_zero() -> None:
    run = engine()
    assert run.learning_rate(0) == pytest.approx(0.01)
    assert run.learning_rate(run.total_steps // 2) == pytest.approx(0.005, rel=0.05)
    assert run.learning_rate(run.total_steps) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------ model families

DIGITS = "name: f\ndataset: {name: digits}\ntraining: {epochs: 3, lr: 0.003, batch_size: 64}\n"
TEXT = (
    "name: t\ndataset: {name: text, options: {context: 32, max_bytes: 60000}}\n"
    "model: {family: gpt, width: 32, depth: 2}\n"
    "training: {epochs: 2, lr: 0.003, batch_size: 32}\n"
)


@pytest.mark.parametrize(
    ("text", "overrides"),
    [
        (DIGITS, {"model.family": "cnn", "model.width": 8, "model.depth": 1}),
        (DIGITS, {"model.family": "vit", "model.width": 32, "training.epochs": 5}),
        (DIGITS, {"model.family": "mixture", "model.width": 32, "model.depth": 1}),
        (TEXT, {}),
    ],
    ids=["cnn", "vit", "mixture", "gpt"],
)
def test_every_family_trains_and_improves(text: str, overrides: dict) -> None:
    run = engine(overrides, text=text)
    loss_before, _ = run.evaluate()
    for _ in range(run.epochs):
        run.train_epoch()
    metrics = run.metrics()
    assert metrics["val_loss"] < 0.8 * loss_before
    assert metrics["flops"] > 0 and metrics["params"] == sum(
        p.numel() for p in run.model.parameters()
    )


def grow_and_compare(run: TrialEngine) -> float:
    """Max |output change| across the next growth event, in eval mode."""
    inputs = run.data.val.tensors[0][:16]
    run.model.eval()
    before = run.model(inputs).detach()
    run.grow_now()
    run.model.eval()
    return float((run.model(inputs).detach() - before).abs().max())


@pytest.mark.parametrize(
    ("text", "overrides"),
    [
        (DIGITS, {"model.family": "vit", "model.width": 32, "growth.factor": 1.5}),
        (DIGITS, {"model.family": "cnn", "model.width": 8, "growth.depth_factor": 2.0}),
        (TEXT, {"growth.depth_factor": 2.0}),
    ],
    ids=["vit", "cnn", "gpt"],
)
def test_lemon_growth_in_the_engine_keeps_the_function(text: str, overrides: dict) -> None:
    run = engine({"growth.operator": "lemon", **overrides}, text=text)
    old = (run.model_config.width, run.model_config.depth)
    assert grow_and_compare(run) <= 1e-4  # float32
    new = (run.model_config.width, run.model_config.depth)
    assert new != old and new[0] >= old[0] and new[1] >= old[1]
    assert run.metrics()["growth_stage"] == 1


def test_multi_stage_plan_grows_at_each_planned_step() -> None:
    run = engine(
        {
            "model.family": "vit",
            "model.width": 16,
            "growth.operator": "lemon",
            "growth.stages": 2,
            "growth.at_fraction": 0.6,
            "growth.factor": 1.5,
        },
        text=DIGITS.replace("epochs: 3", "epochs: 4"),
    )
    steps = [event.step for event in run.events]
    assert steps == [math.ceil(0.3 * run.total_steps), math.ceil(0.6 * run.total_steps)]
    seen = []
    for _ in range(run.epochs):
        run.train_epoch()
        seen.append((run.metrics()["growth_stage"], run.metrics()["width"]))
    # 16 -> 24 rounds to 32 (a multiple of head_dim 16) -> 48
    assert seen[-1] == (2, 48)
    assert [stage for stage, _ in seen] == sorted(stage for stage, _ in seen)


def test_optimizer_state_is_carried_for_verbatim_copies() -> None:
    """G_stack copies every parameter verbatim, so every grown parameter starts with the
    Adam moments of the source parameter it copies (step counts included)."""
    run = engine(
        {"growth.operator": "stack", "growth.depth_factor": 2.0, "growth.factor": 1.0}, text=TEXT
    )
    run.train_epoch()  # the event is due at the first step of the second epoch
    assert not run.grown and run.step == run.grow_step
    source_state = {
        name: run.optimizer.state[param] for name, param in run.model.named_parameters()
    }
    run.grow_now()
    grown = dict(run.model.named_parameters())
    for name, param in grown.items():
        layer_source = name
        if name.startswith("blocks."):
            index = int(name.split(".")[1])
            rest = name.split(".", 2)[2]
            layer_source = f"blocks.{index % 2}.{rest}"
        state = run.optimizer.state[param]
        assert torch.equal(state["exp_avg"], source_state[layer_source]["exp_avg"])
        assert torch.equal(state["step"], source_state[layer_source]["step"])


def test_resume_across_lemon_growth_rebuilds_the_grown_transformer() -> None:
    overrides = {
        "model.family": "vit",
        "model.width": 16,
        "growth.operator": "lemon",
        "growth.at_fraction": 0.3,
        "growth.depth_factor": 2.0,
        "growth.lr_after": "lemon",
    }
    run = engine(overrides, text=DIGITS)
    run.train_epoch()
    assert run.grown
    state = copy.deepcopy(run.state_dict())
    fresh = engine(overrides, text=DIGITS)
    assert fresh.model_config.depth < run.model_config.depth
    fresh.load_state_dict(state)
    assert fresh.model_config == run.model_config
    assert fresh.learning_rate(fresh.step) == run.learning_rate(run.step)
    run.train_epoch()
    fresh.train_epoch()
    for a, b in zip(run.model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_gstack_timing_places_growth_by_the_formula() -> None:
    """For a model this small G_stack's formula asks for far more tokens than the budget
    holds, so the event lands at the clamp (half the budget), not at ``at_fraction``."""
    from morphtune.flops import config_cost
    from morphtune.methods.growth import gstack_growth_fraction

    run = engine(
        {
            "growth.operator": "stack",
            "growth.timing": "gstack",
            "growth.at_fraction": 0.1,
            "growth.factor": 1.0,
            "growth.depth_factor": 2.0,
        },
        text=TEXT,
    )
    target = run.events[0].target
    tokens = run.total_steps * run.batch_size * 32  # context 32
    timing = gstack_growth_fraction(config_cost("gpt", target).params, tokens)
    assert timing.clamped and timing.raw_fraction > 1
    assert run.events[0].step == math.ceil(timing.fraction * run.total_steps)
    assert run.events[0].step != math.ceil(0.1 * run.total_steps)
