"""Samplers, schedulers and the Optuna searcher as the spec compiles them (no Ray runtime:
Tune searchers and schedulers are plain objects until a Tuner drives them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState
from ray import cloudpickle
from ray.tune.search import Searcher

from morphtune.runner import make_searcher
from morphtune.searchers import SAMPLERS, SCHEDULERS, make_sampler, make_scheduler
from morphtune.searchers._samplers import CONSTRAINT_ATTR, grid_of
from morphtune.searchers._schedulers import pbt_mutations
from morphtune.searchers._study import fail_orphans, optuna_storage, warm_start_trials
from morphtune.spec import SamplerSpec, parse_spec
from morphtune.store import ResultWriter, SweepStore

SPACE = """
  space:
    model.width: {type: categorical, choices: [16, 32, 64, 128]}
    training.lr: {type: float, low: 0.001, high: 0.01, step: 0.001}
"""


def spec_with(search: str, extra: str = "") -> Any:
    return parse_spec(f"name: t\ntraining: {{epochs: 8}}\n{extra}search:\n{search}{SPACE}")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_builds_and_proposes_inside_the_space(name: str) -> None:
    spec = spec_with(f"  sampler: {{name: {name}, seed: 3}}\n")
    searcher = make_searcher(spec)
    for index in range(3):
        config = searcher.suggest(f"t{index}")
        assert config is not None
        assert config["model.width"] in (16, 32, 64, 128)
        assert 0.001 <= config["training.lr"] <= 0.01
        searcher.on_trial_complete(f"t{index}", {"val_acc": 0.1 * index})
    states = [t.state for t in searcher.study.get_trials()]
    assert states == [TrialState.COMPLETE] * 3


def test_sampler_knobs_reach_optuna() -> None:
    nsga = make_sampler(SamplerSpec(name="nsga2", population_size=12, mutation_prob=0.2))
    assert isinstance(nsga, optuna.samplers.NSGAIISampler)
    assert nsga._population_size == 12
    tpe = make_sampler(SamplerSpec(name="tpe", n_startup_trials=7))
    assert tpe._n_startup_trials == 7


def test_grid_enumerates_every_value() -> None:
    spec = spec_with("  sampler: {name: grid}\n")
    grid = grid_of(spec.search.space)
    assert grid["model.width"] == [16, 32, 64, 128]
    assert len(grid["training.lr"]) == 10
    assert grid["training.lr"][0] == pytest.approx(0.001)
    assert grid["training.lr"][-1] == pytest.approx(0.01)


def test_a_used_up_grid_finishes_instead_of_repeating() -> None:
    """Optuna's grid sampler stops the study once every point was tried, which raises in an
    ask-and-tell searcher: every point is trained once, outcomes are all told, and then the
    searcher says FINISHED (while the last point runs, it waits)."""
    spec = parse_spec(
        "name: g\ntraining: {epochs: 2}\nsearch:\n  num_samples: 6\n  sampler: {name: grid}\n"
        "  space:\n    training.lr: {type: categorical, choices: [0.05, 0.01]}\n"
    )
    searcher = make_searcher(spec)
    first = searcher.suggest("t0")
    second = searcher.suggest("t1")
    assert isinstance(first, dict) and isinstance(second, dict)
    assert {first["training.lr"], second["training.lr"]} == {0.05, 0.01}
    assert searcher.suggest("t2") is None  # both points running: wait, do not repeat one
    searcher.on_trial_complete("t0", {"val_acc": 0.5})
    assert searcher.suggest("t3") is None
    searcher.on_trial_complete("t1", {"val_acc": 0.7})
    assert searcher.suggest("t4") == Searcher.FINISHED
    assert searcher.suggest("t5") == Searcher.FINISHED
    states = [t.state for t in searcher.study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert sorted(t.value for t in searcher.study.get_trials()) == [0.5, 0.7]


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_builds_from_a_spec(name: str) -> None:
    extra = {
        "growth-pbt": "    grow: {maximum: 256}\n",
    }.get(name, "")
    search = f"  scheduler:\n    name: {name}\n{extra}"
    if name == "mo-asha":
        search += "  objectives: [{metric: val_acc}, {metric: params}]\n"
    scheduler = make_scheduler(spec_with(search))
    cloudpickle.loads(cloudpickle.dumps(scheduler))  # Tune checkpoints schedulers


@pytest.mark.parametrize("name", ["pbt", "growth-pbt"])
def test_population_schedulers_take_synch_from_the_spec(name: str) -> None:
    extra = "    grow: {maximum: 256}\n" if name == "growth-pbt" else ""
    base = f"  num_samples: 4\n  max_concurrent: 4\n  scheduler:\n    name: {name}\n{extra}"
    assert make_scheduler(spec_with(base))._synch is False
    assert make_scheduler(spec_with(base + "    synch: true\n"))._synch is True


def test_pbt_mutations_follow_the_space() -> None:
    spec = spec_with("  scheduler: {name: pbt, mutations: [training.lr]}\n")
    mutations = pbt_mutations(spec)
    assert list(mutations) == ["training.lr"]
    every = pbt_mutations(spec_with("  scheduler: {name: pbt}\n"))
    assert every["model.width"] == [16, 32, 64, 128]


def test_multi_objective_searcher_tells_every_value_and_fails_non_finite() -> None:
    spec = spec_with(
        "  sampler: {name: nsga2, seed: 0}\n  scheduler: {name: mo-asha}\n"
        "  objectives: [{metric: val_acc}, {metric: params}]\n"
    )
    searcher = make_searcher(spec)
    assert searcher.metrics == ["val_acc", "params"]
    for index in range(4):
        searcher.suggest(f"t{index}")
    searcher.on_trial_complete("t0", {"val_acc": 0.9, "params": 1000})
    searcher.on_trial_complete("t1", {"val_acc": math.nan, "params": 1000})
    searcher.on_trial_complete("t2", {"val_acc": 0.5, "params": 10, "trial_error": "boom"})
    searcher.on_trial_complete("t3", None, error=True)
    trials = searcher.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 3
    assert trials[0].values == [0.9, 1000.0]
    assert searcher.study.directions[1] == optuna.study.StudyDirection.MINIMIZE


@settings(max_examples=12, deadline=None)
@given(limit=st.integers(min_value=3000, max_value=60000), seed=st.integers(0, 1000))
def test_no_infeasible_config_is_ever_proposed(limit: int, seed: int) -> None:
    """Every config the searcher returns meets max_params; each rejected one is told to
    Optuna as PRUNED with its positive constraint value (so the sampler learns)."""
    from morphtune.searchers import ConstraintChecker

    spec = spec_with(
        f"  sampler: {{name: tpe, seed: {seed}}}\n  constraints: {{max_params: {limit}}}\n"
    )
    checker = ConstraintChecker(spec, {"params": float(limit)})
    searcher = make_searcher(spec)
    for index in range(6):
        config = searcher.suggest(f"t{index}")
        if not isinstance(config, dict):  # every proposal infeasible: the searcher stops
            assert searcher.exhausted
            break
        assert checker.cost(config).params <= limit
        searcher.on_trial_complete(f"t{index}", {"val_acc": 0.5})
    checked = [
        t for t in searcher.study.get_trials() if "repeat_of_finished_config" not in t.user_attrs
    ]
    for trial in checked:
        (value,) = trial.user_attrs[CONSTRAINT_ATTR]
        assert (trial.state == TrialState.PRUNED) == (value > 0)
    assert searcher.infeasible == sum(t.state == TrialState.PRUNED for t in checked)


def test_a_repeated_configuration_is_answered_not_trained() -> None:
    """Grid-sized space: once every config is finished, TPE's proposals are repeats; they
    are told the first outcome and never returned for training."""
    spec = parse_spec(
        "name: t\nsearch:\n  sampler: {name: tpe, seed: 0, n_startup_trials: 2}\n"
        "  space:\n    model.width: {type: categorical, choices: [16, 32]}\n"
    )
    searcher = make_searcher(spec)
    searcher.max_infeasible = 30
    trained: list[int] = []
    for index in range(8):
        config = searcher.suggest(f"t{index}")
        if not isinstance(config, dict):
            break
        trained.append(config["model.width"])
        searcher.on_trial_complete(f"t{index}", {"val_acc": config["model.width"] / 100})
    assert sorted(trained) == [16, 32]  # each configuration trained once
    assert searcher.exhausted and "repeats" in searcher.exhausted
    repeats = [
        t for t in searcher.study.get_trials() if t.user_attrs.get("repeat_of_finished_config")
    ]
    assert len(repeats) == searcher.finished.answered == 30
    for trial in repeats:
        assert trial.state == TrialState.COMPLETE
        assert trial.value == trial.params["model.width"] / 100


def test_analytic_cost_counts_the_grown_model() -> None:
    from morphtune.searchers import ConstraintChecker

    spec = parse_spec(
        "name: t\nmodel: {width: 16, depth: 1}\ntraining: {epochs: 4}\n"
        "growth: {operator: net2net, factor: 4.0}\n"
    )
    checker = ConstraintChecker(spec, {"params": 1.0})
    grown = checker.cost({}).params
    plain = ConstraintChecker(parse_spec("name: t\nmodel: {width: 64, depth: 1}\n"), {}).cost({})
    assert grown == plain.params  # 16 grown x4 = the 64-wide model


def test_fail_orphans_leaves_known_trials_running(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=optuna_storage(url))
    known, orphan = study.ask(), study.ask()
    assert fail_orphans(study, [known.number], "test") == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {known.number: TrialState.RUNNING, orphan.number: TrialState.FAIL}


def test_warm_start_takes_finite_in_space_trials_best_first(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "old")
    writer.write_manifest({"sweep_id": "old", "objective": {"metric": "val_acc", "mode": "max"}})
    rows = [
        ("a", {"model.width": 32, "training.lr": 0.002}, 0.7),
        ("b", {"model.width": 64, "training.lr": 0.003}, 0.9),
        ("c", {"model.width": 999, "training.lr": 0.5}, 0.95),  # outside this space
        ("d", {"model.width": 16, "training.lr": 0.004}, math.nan),
    ]
    for trial_id, config, value in rows:
        writer.write_results(
            [
                {
                    "trial_id": trial_id,
                    "iteration": 1,
                    "status": "running",
                    "config": config,
                    "metrics": {"val_acc": value},
                }
            ]
        )
        writer.write_trial(trial_id, "completed", config=config, last_iteration=1)
    spec = spec_with("  warm_start: {sweep: old}\n")
    trials = warm_start_trials(spec, SweepStore(tmp_path).trials("old"))
    assert [t.values for t in trials] == [[0.9], [0.7]]  # c has no in-space key, d is NaN
    assert trials[0].params == {"model.width": 64, "training.lr": 0.003}
    top = warm_start_trials(spec, SweepStore(tmp_path).trials("old"), top_k=1)
    assert len(top) == 1
