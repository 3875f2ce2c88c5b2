"""Whole sweeps through run_sweep with the searchers issue's machinery: several objectives
with NSGA-II + MO-ASHA under a parameter budget, and growth-aware PBT on the real engine."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from morphtune.runner import run_sweep
from morphtune.searchers import ConstraintChecker
from morphtune.searchers._study import optuna_storage
from morphtune.spec import parse_spec
from morphtune.store import SweepStore

pytestmark = pytest.mark.ray

MO_SPEC = """
name: mo
dataset: {name: digits}
model: {family: mlp, width: 32, depth: 1}
training: {epochs: 4, batch_size: 64, lr: 0.005}
seed: 0
search:
  objectives: [{metric: val_acc}, {metric: params}]
  constraints: {max_params: 9000}
  num_samples: 6
  max_concurrent: 2
  sampler: {name: nsga2, population_size: 4}
  scheduler: {name: mo-asha, grace_period: 1, reduction_factor: 2}
  space:
    model.width: {type: categorical, choices: [8, 16, 32, 64, 256]}
    training.lr: {type: categorical, choices: [0.003, 0.005, 0.01]}
"""


def test_multi_objective_sweep_respects_the_budget_and_returns_a_front(
    ray_session: object, tmp_path: Path
) -> None:
    spec = parse_spec(MO_SPEC)
    outcome = run_sweep(spec, results_root=tmp_path)
    store = SweepStore(tmp_path)
    manifest = store.manifest("mo")
    assert manifest["objectives"] == [
        {"metric": "val_acc", "mode": "max"},
        {"metric": "params", "mode": "min"},
    ]
    checker = ConstraintChecker(spec, {"params": 9000.0})
    trials = store.trials("mo")
    assert len(trials) == 6
    for trial in trials:  # no trial over the budget ever ran (width 256 is ~85k params)
        assert trial.config["model.width"] != 256
        assert trial.metrics["params"] <= 9000
        assert (
            checker.cost({"model.width": trial.config["model.width"]}).params
            == (trial.metrics["params"])
        )
    assert outcome.pareto, "a front of finished trials"
    front = {(p["values"]["val_acc"], p["values"]["params"]) for p in outcome.pareto}
    for acc, params in front:  # nothing on the front is dominated by a finished trial
        for trial in trials:
            other = (trial.metrics["val_acc"], trial.metrics["params"])
            assert not (other[0] >= acc and other[1] <= params and other != (acc, params))
    study = optuna.load_study(
        study_name="mo", storage=optuna_storage(f"sqlite:///{tmp_path / 'mo' / 'optuna.db'}")
    )
    trained = [t for t in study.get_trials() if "repeat_of_finished_config" not in t.user_attrs]
    states = [t.state.name for t in trained]
    assert states.count("COMPLETE") == 6 and "RUNNING" not in states
    assert states.count("PRUNED") == manifest["search"]["infeasible"]
    repeats = len(study.get_trials()) - len(trained)  # answered from the study, not trained
    assert repeats == manifest["search"].get("repeats_answered", 0)
    timing = manifest["search"]["suggestion_seconds"]  # every suggest Tune made was timed
    assert timing["count"] >= 6 and timing["buckets"]["+Inf"] == timing["count"]


PBT_SPEC = """
name: gpbt
dataset: {name: digits}
model: {family: mlp, width: 16, depth: 1}
training: {epochs: 6, batch_size: 64, lr: 0.003, schedule: constant}
seed: 1
search:
  num_samples: 4
  max_concurrent: 2
  sampler: {name: random}
  scheduler:
    name: growth-pbt
    perturbation_interval: 2
    quantile_fraction: 0.5
    grow: {key: model.width, factor: 2.0, maximum: 64}
    move_probability: 1.0
  space:
    training.lr: {type: float, low: 0.001, high: 0.01, log: true}
"""


def test_growth_pbt_sweep_grows_copied_models(ray_session: object, tmp_path: Path) -> None:
    run_sweep(parse_spec(PBT_SPEC), results_root=tmp_path)
    store = SweepStore(tmp_path)
    manifest = store.manifest("gpbt")
    assert manifest["search"]["pbt_moves"] >= 1
    rows = [json.loads(r["metrics_json"]) for r in store.results("gpbt").to_pylist()]
    widths = {m["width"] for m in rows}
    assert widths > {16}, "some exploited trial continued as a grown (wider) model"
    assert all(m["width"] in (16, 32, 64) for m in rows)
    # the first epoch after an explore step that grew the copy reports the move
    assert any(m.get("pbt_moves", 0) >= 1 and m["width"] > 16 for m in rows)
    assert max(m["val_acc"] for m in rows) > 0.8
