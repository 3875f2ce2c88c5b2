"""MO-ASHA: non-dominated sorting and crowding distance properties, the scheduler's
promotion decisions on Tune trials fed by hand, pickling, and one real Tune run."""

from __future__ import annotations

import math
import pickle
import re
import time
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from morphtune.searchers._mo_asha import MOASHAScheduler, crowding_distance, non_dominated_sort

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP

# small integer grids make ties, duplicates and dominance common
coordinate = st.integers(min_value=-4, max_value=4).map(float)


@st.composite
def point_sets(draw: st.DrawFn, max_size: int = 14) -> list[tuple[float, ...]]:
    width = draw(st.integers(min_value=1, max_value=3))
    row = st.tuples(*[coordinate] * width)
    return draw(st.lists(row, min_size=0, max_size=max_size))


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


# ---- non-dominated sort ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(point_sets())
def test_fronts_partition_and_are_ordered_by_dominance(points: list[tuple[float, ...]]) -> None:
    fronts = non_dominated_sort(points)
    flat = [i for front in fronts for i in front]
    assert sorted(flat) == list(range(len(points)))
    assert all(front for front in fronts)
    for k, front in enumerate(fronts):
        later = [i for f in fronts[k:] for i in f]
        for i in front:
            # nothing in this or a later front dominates a point of front k
            assert not any(dominates(points[j], points[i]) for j in later)
            if k > 0:
                # and something in the front just before does
                assert any(dominates(points[j], points[i]) for j in fronts[k - 1])


@settings(max_examples=200, deadline=None)
@given(point_sets(), st.randoms(use_true_random=False))
def test_sort_and_crowding_are_permutation_invariant(
    points: list[tuple[float, ...]], rng: Any
) -> None:
    order = list(range(len(points)))
    rng.shuffle(order)
    shuffled = [points[i] for i in order]  # shuffled[p] is points[order[p]]
    fronts = [{order[p] for p in front} for front in non_dominated_sort(shuffled)]
    assert fronts == [set(front) for front in non_dominated_sort(points)]
    distance = crowding_distance(points)
    assert crowding_distance(shuffled) == [distance[i] for i in order]


@settings(max_examples=300, deadline=None)
@given(point_sets())
def test_crowding_boundary_points_are_infinite(points: list[tuple[float, ...]]) -> None:
    distance = crowding_distance(points)
    assert len(distance) == len(points)
    assert all(d >= 0 for d in distance)
    if len(points) <= 2:
        assert all(d == math.inf for d in distance)
        return
    for m in range(len(points[0])):
        column = [p[m] for p in points]
        low, high = min(column), max(column)
        if low < high:
            for i, value in enumerate(column):
                if value in (low, high):
                    assert distance[i] == math.inf
    # an interior point's distance is finite and bounded by 1 per objective
    for d in distance:
        assert d == math.inf or d <= len(points[0])


def test_crowding_distance_textbook_values() -> None:
    # a 2-D front: boundaries infinite, interior the normalised neighbour gaps, summed
    points = [(0.0, 4.0), (1.0, 2.0), (3.0, 1.0), (4.0, 0.0)]
    distance = crowding_distance(points)
    assert distance[0] == distance[3] == math.inf
    assert distance[1] == pytest.approx(3 / 4 + 3 / 4)
    assert distance[2] == pytest.approx(3 / 4 + 2 / 4)
    # duplicates: each copy is the other's neighbour on both sides, so adds no gap
    twins = crowding_distance([(0.0, 4.0), (2.0, 2.0), (2.0, 2.0), (4.0, 0.0)])
    assert twins == [math.inf, 0.0, 0.0, math.inf]
    assert non_dominated_sort([(1.0, 1.0), (0.0, 0.0), (2.0, 0.0), (1.0, 1.0)]) == [[1], [0, 2, 3]]


@pytest.mark.parametrize(
    "points",
    [[(1.0, 2.0), (1.0,)], [(1.0, math.nan)], [(math.inf, 0.0)], [()]],
)
def test_ragged_or_non_finite_points_are_rejected(points: list[tuple[float, ...]]) -> None:
    with pytest.raises(ValueError, match="points"):
        non_dominated_sort(points)
    with pytest.raises(ValueError, match="points"):
        crowding_distance(points)


# ---- argument validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"metrics": [], "modes": []}, "at least one metric"),
        ({"metrics": ["a", "b"], "modes": ["min"]}, "one mode per metric"),
        ({"metrics": "loss", "modes": ["min"]}, "metrics='loss'"),
        ({"metrics": ["a", "a"], "modes": ["min", "min"]}, "distinct"),
        ({"metrics": ["a"], "modes": ["minimize"]}, "'minimize' must be 'min' or 'max'"),
        ({"metrics": ["a"], "modes": ["min"], "max_t": 1}, "max_t=1: must be greater"),
        ({"metrics": ["a"], "modes": ["min"], "grace_period": 0}, "grace_period=0"),
        ({"metrics": ["a"], "modes": ["min"], "reduction_factor": 1}, "reduction_factor=1"),
        ({"metrics": ["a"], "modes": ["min"], "max_t": 2.5}, "max_t=2.5"),
    ],
)
def test_bad_arguments_raise_naming_the_field(arguments: dict[str, Any], message: str) -> None:
    arguments = {"max_t": 9, **arguments}
    with pytest.raises(ValueError, match=re.escape(message)):
        MOASHAScheduler(**arguments)


def test_rungs_lie_below_max_t() -> None:
    assert MOASHAScheduler(metrics=["a"], modes=["min"], max_t=9).milestones == [1, 3]
    assert MOASHAScheduler(
        metrics=["a"], modes=["min"], max_t=81, grace_period=2, reduction_factor=2.5
    ).milestones == pytest.approx([2, 5, 12.5, 31.25, 78.125])


# ---- decisions on Tune trials ---------------------------------------------------------


def trials(count: int) -> list[Trial]:
    return [Trial("__fake", stub=True) for _ in range(count)]


def scheduler(**overrides: Any) -> MOASHAScheduler:
    arguments: dict[str, Any] = {
        "metrics": ["loss", "accuracy"],
        "modes": ["min", "max"],
        "max_t": 9,
        "reduction_factor": 3,
        **overrides,
    }
    made = MOASHAScheduler(**arguments)
    assert made.set_search_properties(None, None) is True
    assert made.set_search_properties("loss", "min") is True
    assert made.metric is None  # Tune's strict metric check must not preempt a STOP
    return made


def report(made: MOASHAScheduler, trial: Trial, step: float, loss: float, accuracy: float) -> str:
    return made.on_trial_result(
        None, trial, {"training_iteration": step, "loss": loss, "accuracy": accuracy}
    )


def test_dominated_trial_at_a_full_rung_stops_and_a_non_dominated_one_continues() -> None:
    made = scheduler()
    a, b, c, d, e = trials(5)
    for trial in (a, b, c, d, e):
        made.on_trial_add(None, trial)
    # two trials: fewer than rf recorded, both continue whatever they report
    assert report(made, a, 1, 1.0, 0.9) == CONTINUE
    assert report(made, b, 1, 5.0, 0.1) == CONTINUE
    # third: dominated by a (higher loss, lower accuracy), quota ceil(3/3) = 1
    assert report(made, c, 1, 2.0, 0.5) == STOP
    # fourth: dominates everything recorded, quota 2: on the first front alone
    assert report(made, d, 1, 0.5, 0.95) == CONTINUE
    # fifth: trades off against d (lower loss, lower accuracy): on the first front with
    # d, both boundary points (inf crowding), quota ceil(5/3) = 2: it continues
    assert report(made, e, 1, 0.1, 0.5) == CONTINUE
    assert len(made.recorded(0)) == 5
    # accuracy is maximised: it is recorded negated
    assert made.recorded(0)[a.trial_id] == (1.0, -0.9)
    # results between rungs are let through; a stopped trial stays stopped
    assert report(made, a, 2, 9.0, 0.0) == CONTINUE
    assert report(made, c, 2, 0.0, 1.0) == STOP
    # max_t ends every trial
    assert report(made, d, 9, 0.5, 0.95) == STOP
    text = made.debug_string()
    assert "MO-ASHA" in text and "5 recorded" in text and "loss (min)" in text


def test_crowding_distance_breaks_ties_within_the_admitted_front() -> None:
    # rf = 2, one front of three: with two recorded the quota is one and the crowding
    # distances are all infinite, so arrival order decides; with three the quota is two
    # and the two extremes (infinite distance) go before the crowded middle point
    made = scheduler(reduction_factor=2.0, max_t=100, modes=["min", "min"])
    middle, left, right = trials(3)
    assert report(made, middle, 1, 2.0, 2.0) == CONTINUE
    assert report(made, left, 1, 0.0, 4.0) == STOP
    assert report(made, right, 1, 4.0, 0.0) == CONTINUE
    assert made.promotable(0) == [left.trial_id, right.trial_id]


def test_promoted_count_is_ceil_n_over_rf_when_all_arrive_in_order() -> None:
    for rf in (2.0, 3.0, 4.0):
        # arriving worst-first along a dominance chain, each newcomer dominates the rung
        # and continues; once all n are in, ceil(n / rf) of them are promotable: the best
        made = scheduler(reduction_factor=rf, max_t=100)
        chain = trials(12)
        decisions = [report(made, t, 1, -float(k), float(k)) for k, t in enumerate(chain)]
        assert decisions == [CONTINUE] * 12
        quota = math.ceil(12 / rf)
        assert made.promotable(0) == [t.trial_id for t in reversed(chain)][:quota]
        # arriving best-first, a newcomer ranks last: only the first rf - 1 continue (too
        # few to rank), and the count told to continue never exceeds ceil(n / rf) after
        made = scheduler(reduction_factor=rf, max_t=100)
        chain = trials(12)
        decisions = [report(made, t, 1, float(k), -float(k)) for k, t in enumerate(chain)]
        assert decisions.count(CONTINUE) == math.ceil(rf - 1)
        assert made.promotable(0) == [t.trial_id for t in chain][:quota]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=15),
    st.sampled_from([2.0, 3.0, 4.5]),
)
def test_each_decision_is_the_promotion_rule_on_the_rung_so_far(
    points: list[tuple[float, float]], rf: float
) -> None:
    made = scheduler(reduction_factor=rf, max_t=100)
    arrivals = zip(trials(len(points)), points, strict=True)
    for n, (trial, (loss, accuracy)) in enumerate(arrivals, start=1):
        decision = report(made, trial, 1, loss, accuracy)
        top = made.promotable(0)
        assert len(top) == (n if n < rf else math.ceil(n / rf))
        assert (decision == CONTINUE) == (trial.trial_id in top)
        # promotable trials are never dominated by a trial left out
        recorded = made.recorded(0)
        for kept in top:
            assert not any(
                dominates(recorded[other], recorded[kept]) for other in recorded if other not in top
            )


def test_skipped_milestones_record_the_highest_rung_reached() -> None:
    made = scheduler(max_t=27)  # rungs 1, 3, 9
    a, b = trials(2)
    assert report(made, a, 4, 1.0, 0.5) == CONTINUE  # jumped past 1 and 3
    assert a.trial_id in made.recorded(1) and a.trial_id not in made.recorded(0)
    assert report(made, a, 5, 1.0, 0.5) == CONTINUE  # nothing new reached
    assert a.trial_id not in made.recorded(0)  # a skipped rung is never back-filled
    assert report(made, a, 12.5, 1.0, 0.5) == CONTINUE
    assert a.trial_id in made.recorded(2)
    # on_trial_complete records a final result that crossed a milestone, without deciding
    made.on_trial_complete(None, b, {"training_iteration": 3, "loss": 2.0, "accuracy": 0.1})
    assert made.recorded(1)[b.trial_id] == (2.0, -0.1)


@pytest.mark.parametrize(
    "bad", [{"loss": math.nan}, {"loss": math.inf}, {"accuracy": None}, {"loss": "1.0"}, {}]
)
def test_missing_or_non_finite_metrics_stop_and_are_not_recorded(bad: dict[str, Any]) -> None:
    made = scheduler()
    good, broken, late = trials(3)
    assert report(made, good, 1, 1.0, 0.5) == CONTINUE
    result = {"training_iteration": 1, "loss": 0.1, "accuracy": 0.99}
    result.update(bad)
    if not bad:
        del result["accuracy"]
    assert made.on_trial_result(None, broken, result) == STOP
    assert list(made.recorded(0)) == [good.trial_id]
    made.on_trial_complete(None, broken, result)
    assert list(made.recorded(0)) == [good.trial_id]
    # the rung still works: the next trial is the second recorded, so it continues
    assert report(made, late, 1, 2.0, 0.1) == CONTINUE
    assert "1 for missing or non-finite metrics" in made.debug_string()


def test_scheduler_pickles_and_save_restore_keep_rung_records(tmp_path: Path) -> None:
    made = scheduler()
    first = trials(4)
    for k, trial in enumerate(first[:3]):
        report(made, trial, 1, float(k), 0.0)
    copy = pickle.loads(pickle.dumps(made))
    assert copy.recorded(0) == made.recorded(0)
    # the same next arrival gets the same decision from both
    late = first[3]
    assert report(copy, late, 1, 0.5, 0.0) == report(made, late, 1, 0.5, 0.0) == CONTINUE
    path = tmp_path / "scheduler.pkl"
    made.save(str(path))
    fresh = scheduler()
    fresh.restore(str(path))
    assert fresh.recorded(0) == made.recorded(0)
    assert report(fresh, first[2], 2, 0.0, 1.0) == STOP  # stopped before the save


# ---- one real Tune run ----------------------------------------------------------------

# two objectives, both minimised, that improve as 1/t towards a fixed (f1, f2) per config,
# so every rung ranks configs as their final values do. Trials run one at a time in this
# order: the first two reach every rung with fewer than rf recorded and so always go on
# (asynchronous halving never stops its first arrivals); then four configs dominated by
# both, the dominant config, and one more dominated config.
TARGETS = [
    (1.0, 4.0),  # early, runs through
    (4.0, 1.0),  # early, runs through
    (5.0, 5.0),
    (6.0, 6.0),
    (7.0, 7.0),
    (8.0, 8.0),
    (0.5, 0.5),  # late, dominates all: promoted at every rung
    (9.0, 9.0),
]
MAX_T = 9


def curve(config: dict[str, Any]) -> None:
    from ray import tune

    if config.get("crash_while") and Path(config["crash_while"]).exists() and config["index"] == 7:
        raise RuntimeError("crash before the first report")
    f1, f2 = TARGETS[config["index"]]
    for step in range(1, MAX_T + 1):
        tune.report({"f1": f1 + 1.0 / step, "f2": f2 + 1.0 / step})


@pytest.mark.ray
def test_tune_run_stops_dominated_configs_and_runs_the_pareto_front_to_max_t(
    ray_session: Any, tmp_path: Path
) -> None:
    from ray import tune

    started = time.monotonic()
    tuner = tune.Tuner(
        curve,
        param_space={"index": tune.grid_search(list(range(len(TARGETS))))},
        tune_config=tune.TuneConfig(
            scheduler=MOASHAScheduler(
                metrics=["f1", "f2"], modes=["min", "min"], max_t=MAX_T, reduction_factor=3
            ),
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="mo_asha", verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    iterations = {r.config["index"]: r.metrics["training_iteration"] for r in grid}
    # Pareto-optimal by the values each config's curve ends at
    pareto = {i for i, point in enumerate(TARGETS) if not any(dominates(p, point) for p in TARGETS)}
    assert pareto == {6}
    assert all(iterations[i] == MAX_T for i in pareto)
    # the dominated configs judged at a full rung stopped at the first one
    assert {i: iterations[i] for i in (2, 3, 4, 5, 7)} == dict.fromkeys((2, 3, 4, 5, 7), 1)
    assert iterations[0] == iterations[1] == MAX_T
    assert time.monotonic() - started < 60


@pytest.mark.ray
def test_restored_run_keeps_the_rungs_through_the_state_callback(
    ray_session: Any, tmp_path: Path
) -> None:
    from ray import tune

    # run 1: config 7 (dominated by all) fails before reporting; the other seven fill the
    # rungs (it comes last, so only the restored run starts a fresh trial actor)
    marker = tmp_path / "crash"
    marker.touch()
    made = MOASHAScheduler(metrics=["f1", "f2"], modes=["min", "min"], max_t=MAX_T)
    tuner = tune.Tuner(
        curve,
        param_space={
            "index": tune.grid_search(list(range(len(TARGETS)))),
            "crash_while": str(marker),
        },
        tune_config=tune.TuneConfig(scheduler=made, max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="resume", verbose=0, callbacks=[made.state_callback()]
        ),
    )
    first = tuner.fit()
    assert [r.config["index"] for r in first if r.error] == [7]
    # run 2: Tuner.restore re-creates the scheduler from tuner.pkl (empty rungs); the
    # callback's checkpointed state refills them, so the re-run of config 7 is judged
    # against the seven (ranked 8th of 8 with a quota of 3: stopped at the first rung).
    # A fresh scheduler would let it run to max_t (first arrival at every rung).
    marker.unlink()
    restored = tune.Tuner.restore(str(tmp_path / "resume"), trainable=curve, restart_errored=True)
    second = restored.fit()
    assert not second.errors
    iterations = {r.config["index"]: r.metrics["training_iteration"] for r in second}
    assert iterations == {0: MAX_T, 1: MAX_T, 2: 1, 3: 1, 4: 1, 5: 1, 6: MAX_T, 7: 1}
