"""Growth-aware PBT: the explore moves (factor, rounding, clipping, seeding, pickling),
argument checks, and one real Tune run whose exploited trials grow the donor's model."""

from __future__ import annotations

import json
import math
import pickle
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray import tune
from ray.tune.experiment import Trial

from morphtune.searchers._growth_pbt import GrowMove, GrowthPBT, PruneMove

# ---- the moves ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("move", "value", "grown"),
    [
        (GrowMove(maximum=64), 16, 24),
        (GrowMove(maximum=64, factor=1.1), 10, 11),  # 11.000000000000002 is 11
        (GrowMove(maximum=64, factor=1.1), 11, 13),  # 12.1 rounds up
        (GrowMove(maximum=64, multiple_of=8), 16, 24),
        (GrowMove(maximum=64, multiple_of=8), 20, 32),  # 30 up to a multiple of 8
        (GrowMove(maximum=64, multiple_of=16), 3, 16),
        (GrowMove(maximum=64), 48, 64),  # 72 clipped
        (GrowMove(maximum=64), 64, 64),  # at the maximum: no-op
        (GrowMove(maximum=64), 80, 80),  # above it: never shrinks
        (GrowMove(key="model.depth", factor=2.0, maximum=6), 2, 4),
    ],
)
def test_grow_move(move: GrowMove, value: int, grown: int) -> None:
    assert move.apply(value) == grown


@pytest.mark.parametrize(
    ("move", "value", "pruned"),
    [
        (PruneMove(), 0.5, 0.35),
        (PruneMove(), 1.0, 0.7),
        (PruneMove(factor=0.5), 0.3, 0.15),
        (PruneMove(), 0.06, 0.05),  # 0.042 clipped at the minimum
        (PruneMove(), 0.05, 0.05),  # at the minimum: no-op
        (PruneMove(), 0.04, 0.04),  # below it: never rises
        (PruneMove(factor=0.9, minimum=0.1), 0.333333, 0.3),
    ],
)
def test_prune_move(move: PruneMove, value: float, pruned: float) -> None:
    assert move.apply(value) == pytest.approx(pruned, abs=1e-12)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GrowMove(maximum=64, factor=1.0), "GrowMove.factor must be a finite number > 1"),
        (lambda: GrowMove(maximum=64, factor=math.inf), "factor=inf"),
        (lambda: GrowMove(maximum=0), "GrowMove.maximum must be an int >= 1"),
        (lambda: GrowMove(maximum=64.0), "maximum=64.0"),  # type: ignore[arg-type]
        (lambda: GrowMove(maximum=60, multiple_of=8), "multiple of multiple_of=8"),
        (lambda: GrowMove(maximum=64, multiple_of=0), "GrowMove.multiple_of must be an int >= 1"),
        (lambda: GrowMove(maximum=64, key="width"), "dotted config key"),
        (lambda: GrowMove(maximum=64, base=0), "GrowMove.base must be an int >= 1"),
        (lambda: PruneMove(factor=1.0), "0 < factor < 1"),
        (lambda: PruneMove(factor=True), "factor=True"),  # type: ignore[arg-type]
        (lambda: PruneMove(minimum=0.0), "0 < minimum <= 1"),
        (lambda: PruneMove(base=1.5), "PruneMove.base <= 1"),
    ],
)
def test_bad_moves_raise_naming_the_field(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def scheduler(**overrides: Any) -> GrowthPBT:
    arguments: dict[str, Any] = {
        "metric": "val_loss",
        "mode": "min",
        "perturbation_interval": 2,
        "grow": GrowMove(maximum=64, multiple_of=8),
        "prune": PruneMove(),
        "move_probability": 1.0,
        "seed": 0,
        **overrides,
    }
    return GrowthPBT(**arguments)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "minimize"}, "mode must be 'min', 'max' or None, but got mode='minimize'"),
        ({"metric": ""}, "metric must be a non-empty str"),
        ({"perturbation_interval": 0}, "perturbation_interval=0"),
        ({"quantile_fraction": 0.6}, "0 <= quantile_fraction <= 0.5"),
        ({"resample_probability": -0.1}, "resample_probability=-0.1"),
        ({"move_probability": 1.5}, "0 <= move_probability <= 1"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"grow": 2.0}, "grow must be a GrowMove"),
        ({"prune": GrowMove(maximum=8)}, "prune must be a PruneMove"),
        ({"grow": None, "prune": None}, "needs something to explore"),
        ({"hyperparam_mutations": {"training.lr": 0.1}}, "hyperparam_mutations['training.lr']"),
        ({"hyperparam_mutations": {"training.lr": []}}, "at least one value"),
        ({"hyperparam_mutations": {"model.width": [8, 16]}}, "must not also mutate"),
        ({"hyperparam_mutations": {"training": {"lr": [0.1]}}}, "keys are flat"),
        (
            {"prune": PruneMove(key="model.width")},
            "grow and prune must move different keys",
        ),
    ],
)
def test_bad_arguments_raise_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        scheduler(**overrides)


# ---- explore --------------------------------------------------------------------------


def test_explore_applies_both_moves_and_records_them() -> None:
    made = scheduler()
    config = {"model.width": 16, "sparsity.density": 0.5, "training.lr": 0.01}
    new, operations = made.explore(config, trial_id="a", donor_id="b", time=4)
    assert new == {"model.width": 24, "sparsity.density": 0.35, "training.lr": 0.01}
    assert config["model.width"] == 16  # the donor's config is left alone
    assert operations == {"model.width": "grow * 1.5", "sparsity.density": "prune * 0.7"}
    assert made.moves == [
        {"trial_id": "a", "donor_id": "b", "time": 4, "kind": "grow", "key": "model.width",
         "from": 16, "to": 24},
        {"trial_id": "a", "donor_id": "b", "time": 4, "kind": "prune",
         "key": "sparsity.density", "from": 0.5, "to": 0.35},
    ]  # fmt: skip
    # at the limits the moves are recorded no-ops
    capped = {"model.width": 64, "sparsity.density": 0.05}
    again, operations = made.explore(capped, trial_id="a")
    assert again == capped
    assert operations["model.width"].endswith("(noop)")
    assert [(m["from"], m["to"]) for m in made.moves[2:]] == [(64, 64), (0.05, 0.05)]


def test_absent_keys_read_the_moves_base() -> None:
    made = scheduler(grow=GrowMove(maximum=64, base=32), prune=PruneMove(base=1.0))
    new, _ = made.explore({"training.lr": 0.01}, trial_id="a")
    assert new == {"training.lr": 0.01, "model.width": 48, "sparsity.density": 0.7}
    bare = scheduler()
    with pytest.raises(ValueError, match=r"no 'model\.width' and GrowMove\.base is not set"):
        bare.explore({"training.lr": 0.01}, trial_id="a")
    with pytest.raises(ValueError, match=r"\['model\.width'\] must be an int >= 1"):
        bare.explore({"model.width": 16.5, "sparsity.density": 0.5}, trial_id="a")


def test_move_probability_zero_leaves_only_the_mutations() -> None:
    made = scheduler(
        move_probability=0.0,
        resample_probability=0.0,
        hyperparam_mutations={"training.lr": tune.loguniform(1e-4, 1e-1), "model.depth": [1, 2, 3]},
    )
    config = {"model.width": 16, "sparsity.density": 0.5, "training.lr": 0.01, "model.depth": 2}
    for _ in range(20):
        new, operations = made.explore(config, trial_id="a")
        assert (new["model.width"], new["sparsity.density"]) == (16, 0.5)
        assert new["training.lr"] in (pytest.approx(0.012), pytest.approx(0.008))
        assert new["model.depth"] in (1, 3)
        assert set(operations) == {"training.lr", "model.depth"}
    assert {m["kind"] for m in made.moves} == {"mutate"}


def test_half_the_moves_at_probability_one_half() -> None:
    made = scheduler(move_probability=0.5, prune=None)
    for _ in range(400):
        made.explore({"model.width": 16}, trial_id="a")
    assert 150 < len(made.moves) < 250


def explore_sequence(made: GrowthPBT, count: int = 30) -> list[tuple[Any, ...]]:
    config = {"model.width": 16, "sparsity.density": 0.5, "training.lr": 0.01}
    out = []
    for _ in range(count):
        new, _ = made.explore(config, trial_id="a")
        out.append(tuple(sorted(new.items())))
    return out


def seeded(seed: int) -> GrowthPBT:
    return scheduler(
        seed=seed,
        move_probability=0.5,
        hyperparam_mutations={"training.lr": tune.loguniform(1e-4, 1e-1)},
    )


def test_a_seed_fixes_every_explore_decision() -> None:
    assert explore_sequence(seeded(3)) == explore_sequence(seeded(3))
    assert explore_sequence(seeded(3)) != explore_sequence(seeded(4))


def test_scheduler_pickles_and_the_copy_explores_the_same() -> None:
    made = seeded(5)
    explore_sequence(made, 5)
    copy = pickle.loads(pickle.dumps(made))
    assert copy.moves == made.moves
    assert explore_sequence(copy) == explore_sequence(made)
    assert copy.grow == made.grow and copy.move_probability == 0.5


def test_tune_hooks_check_keys_and_explore_the_donors_config() -> None:
    made = scheduler(prune=None)
    controller = SimpleNamespace(search_alg=None)
    donor = Trial("__fake", config={"model.width": 16, "training.lr": 0.01}, stub=True)
    weak = Trial("__fake", config={"model.width": 8, "training.lr": 0.1}, stub=True)
    made.on_trial_add(controller, donor)
    made.on_trial_add(controller, weak)
    # Tune records the time of the result that triggers an exploit, then explores
    made._trial_state[weak].last_train_time = 4
    new, _ = made._get_new_config(weak, donor)
    assert new == {"model.width": 24, "training.lr": 0.01}
    assert made.moves[-1] == {
        "trial_id": weak.trial_id, "donor_id": donor.trial_id, "time": 4,
        "kind": "grow", "key": "model.width", "from": 16, "to": 24,
    }  # fmt: skip
    missing = Trial("__fake", config={"training.lr": 0.1}, stub=True)
    with pytest.raises(ValueError, match=r"has no 'model\.width'"):
        made.on_trial_add(controller, missing)


# ---- one real Tune run ----------------------------------------------------------------

PBT_SPEC = (
    "name: pbt\ntraining: {epochs: 8, lr: 0.003, batch_size: 64}\nmodel: {width: 16, depth: 1}\n"
)
CHECKPOINT = "trial_state.pt"
POPULATION = 4
REPORTED = "reported.json"
ROWS = "test.rows"  # a directory where each trial appends what it reports (JSON lines)


def growing_trial(config: dict[str, Any]) -> None:
    """A Tune function trainable running TrialEngine in-process, as the function
    executor does: restore (load + transition) from Tune's checkpoint, then report
    each epoch with a checkpoint. The first report after a restore also carries the
    donor's last metrics and the validation loss right after the transition. Each
    report is also appended to the trial's file under ``config[ROWS]``: Tune's own
    result.json starts over when a paused trial resumes."""
    import torch

    from morphtune.data import load_dataset
    from morphtune.spec import parse_spec, resolve_trial_config
    from morphtune.trainables import TrialEngine
    from morphtune.trainables._transition import restore_engine

    torch.set_num_threads(1)
    config = dict(config)
    rows = Path(config.pop(ROWS)) / f"{tune.get_context().get_trial_id()}.jsonl"
    trial = resolve_trial_config(parse_spec(PBT_SPEC), config)
    engine = TrialEngine(trial, load_dataset("digits", seed=0))
    extra: dict[str, Any] = {}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / CHECKPOINT, weights_only=False)
            donor = json.loads((Path(directory) / REPORTED).read_text())
        events = restore_engine(engine, state, trial)
        extra = {
            "grown_at_restore": sum(1 for event in events if event["kind"] == "grow"),
            "donor_width": donor["width"],
            "donor_val_loss": donor["val_loss"],
            "val_loss_at_restore": engine.evaluate()[0],
        }
    for metrics in engine.run_epochs():
        metrics.update(extra)
        extra = {}
        with tempfile.TemporaryDirectory(prefix="growth-pbt-") as directory:
            torch.save(engine.state_dict(), Path(directory) / CHECKPOINT)
            reported = {"width": metrics["width"], "val_loss": metrics["val_loss"]}
            (Path(directory) / REPORTED).write_text(json.dumps(reported))
            with rows.open("a") as file:
                file.write(json.dumps(metrics) + "\n")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


@pytest.mark.ray
def test_tune_run_exploits_and_grows_the_donor_model(ray_session: Any, tmp_path: Path) -> None:
    pbt = GrowthPBT(
        metric="val_loss",
        mode="min",
        perturbation_interval=2,
        quantile_fraction=0.25,
        grow=GrowMove(maximum=48, multiple_of=8, base=16),
        move_probability=1.0,
        seed=0,
        synch=True,
    )
    rows_dir = tmp_path / "rows"
    rows_dir.mkdir()
    # A trial's start-up (seconds) dwarfs an epoch on digits (milliseconds): asynchronous
    # PBT would rank a trial against whichever others happened to have reported, and
    # might exploit only at the last point, after which nothing is left to train. The
    # synchronous population (all four side by side, half a CPU each) pauses at every
    # perturbation point until all four reached it, so each point exploits.
    tuner = tune.Tuner(
        tune.with_resources(growing_trial, {"cpu": 0.5}),
        param_space={
            "training.lr": tune.grid_search([3e-4, 1e-3, 3e-3, 1e-2]),
            ROWS: str(rows_dir),
        },
        tune_config=tune.TuneConfig(
            scheduler=pbt, max_concurrent_trials=POPULATION, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="growth_pbt", verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    assert len(grid) == 4
    grows = [move for move in pbt.moves if move["kind"] == "grow"]
    assert all(move["to"] >= move["from"] for move in grows)  # equal: the donor at maximum
    grows = [move for move in grows if move["to"] > move["from"]]
    assert grows
    rows = [
        json.loads(line) for path in rows_dir.iterdir() for line in path.read_text().splitlines()
    ]
    assert len(list(rows_dir.iterdir())) == POPULATION  # every trial reported
    restores = [row for row in rows if row.get("grown_at_restore", 0) >= 1]
    assert restores, "no exploited trial grew its donor's model"
    for row in restores:
        # the grown model computes the donor's function ...
        assert row["val_loss_at_restore"] == pytest.approx(row["donor_val_loss"], abs=1e-4)
        # ... reports the larger width, and one epoch on it is not worse than the donor
        assert row["width"] > row["donor_width"]
        assert row["val_loss"] <= row["donor_val_loss"] + 0.05
    assert max(row["width"] for row in rows) > 16
    # exploits before the last point: a restored trial trained on after growing
    assert {move["time"] for move in grows} & {2, 4, 6}
    assert all(result.metrics["training_iteration"] == 8 for result in grid)
