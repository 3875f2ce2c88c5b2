"""The spec's space as an Optuna define-by-run space, and honest trial outcomes."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest
from optuna.trial import TrialState

from morphtune.searchers import SafeOptunaSearch, active, define_by_run, make_sampler
from morphtune.spec import SamplerSpec, parse_spec

SPACE_SPEC = """
name: s
search:
  space:
    training.lr: {type: float, low: 0.001, high: 0.1, log: true}
    model.width: {type: categorical, choices: [16, 32, 64]}
    model.depth: {type: int, low: 1, high: 3}
    growth.operator: {type: categorical, choices: [none, net2net]}
    growth.at_fraction: {type: float, low: 0.2, high: 0.7, when: {growth.operator: [net2net]}}
    growth.factor: {type: float, low: 1.5, high: 3.0, step: 0.5, when: {growth.operator: [net2net]}}
    sparsity.method: {type: categorical, choices: [none, random, magnitude]}
    sparsity.density:
      {type: float, low: 0.05, high: 0.9, when: {sparsity.method: [random, magnitude]}}
"""


def sampled(n: int = 60, seed: int = 0) -> list[dict]:
    spec = parse_spec(SPACE_SPEC)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    fn = define_by_run(spec.search.space)
    out = []
    for _ in range(n):
        trial = study.ask()
        fn(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def test_values_stay_in_their_distributions() -> None:
    for params in sampled():
        assert 0.001 <= params["training.lr"] <= 0.1
        assert params["model.width"] in (16, 32, 64)
        assert params["model.depth"] in (1, 2, 3)
        if "growth.factor" in params:
            assert params["growth.factor"] in (1.5, 2.0, 2.5, 3.0)


def test_conditional_knobs_exist_only_when_their_parent_allows() -> None:
    seen_growth = seen_plain = seen_sparse = seen_dense = False
    for params in sampled():
        grows = params["growth.operator"] == "net2net"
        assert ("growth.at_fraction" in params) == grows
        assert ("growth.factor" in params) == grows
        sparse = params["sparsity.method"] != "none"
        assert ("sparsity.density" in params) == sparse
        seen_growth |= grows
        seen_plain |= not grows
        seen_sparse |= sparse
        seen_dense |= not sparse
    assert seen_growth and seen_plain and seen_sparse and seen_dense


def test_log_scale_reaches_both_decades() -> None:
    lrs = [params["training.lr"] for params in sampled(200)]
    assert min(lrs) < 0.003 and max(lrs) > 0.03
    assert sum(lr < 0.01 for lr in lrs) > 50  # log-uniform: about half below the midpoint


def test_define_by_run_is_picklable_for_resume() -> None:
    fn = define_by_run(parse_spec(SPACE_SPEC).search.space)
    again = pickle.loads(pickle.dumps(fn))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    again(trial)
    assert "training.lr" in trial.params


def test_active_requires_all_conditions() -> None:
    param = parse_spec(SPACE_SPEC).search.space["growth.factor"]
    assert active(param, {"growth.operator": "net2net"})
    assert not active(param, {"growth.operator": "none"})
    assert not active(param, {})


def test_sampler_factory_seeds() -> None:
    a = make_sampler(SamplerSpec(name="random", seed=3))
    b = make_sampler(SamplerSpec(name="random", seed=3))
    sa = optuna.create_study(sampler=a)
    sb = optuna.create_study(sampler=b)
    ta, tb = sa.ask(), sb.ask()
    assert ta.suggest_float("x", 0, 1) == tb.suggest_float("x", 0, 1)
    assert isinstance(make_sampler(SamplerSpec(name="tpe")), optuna.samplers.TPESampler)


@pytest.fixture
def searcher() -> SafeOptunaSearch:
    spec = parse_spec(SPACE_SPEC)
    return SafeOptunaSearch(
        space=define_by_run(spec.search.space),
        metric="val_acc",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )


@pytest.mark.parametrize(
    ("result", "error", "state"),
    [
        ({"val_acc": 0.9}, False, TrialState.COMPLETE),
        ({"val_acc": math.nan}, False, TrialState.FAIL),
        ({"val_acc": math.inf}, False, TrialState.FAIL),
        ({"val_acc": 0.9}, True, TrialState.FAIL),
        (None, True, TrialState.FAIL),
        ({"other": 1.0}, False, TrialState.PRUNED),
    ],
)
def test_outcomes_are_told_honestly(
    searcher: SafeOptunaSearch, result: dict | None, error: bool, state: TrialState
) -> None:
    config = searcher.suggest("t1")
    assert config is not None and "training.lr" in config
    searcher.on_trial_complete("t1", result=result, error=error)
    trials = searcher.study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [state]
    assert not any(t.state == TrialState.RUNNING for t in trials)
    searcher.on_trial_complete("t1", result={"val_acc": 0.5})  # a second delivery is ignored
    assert [t.state for t in searcher.study.get_trials(deepcopy=False)] == [state]
