"""Growth plans: events from knobs or an explicit list, scheduling, LR after growth."""

from __future__ import annotations

import itertools
import math

import pytest

from morphtune.methods.growth import GrowthEvent, GrowthPlan
from morphtune.models import MLPConfig, ViTConfig

MLP = MLPConfig(16, 10, (32, 32))
VIT = ViTConfig(8, 2, 1, 10, dim=32, depth=2, heads=2, mlp_dim=64)


def test_generated_plan_spaces_stages_evenly_up_to_the_last_event() -> None:
    plan = GrowthPlan.from_section(
        {"operator": "net2net", "stages": 3, "at_fraction": 0.6, "factor": 1.5}
    )
    assert [event.at_fraction for event in plan.events] == pytest.approx([0.2, 0.4, 0.6])
    scheduled = plan.schedule(MLP, total_steps=100)
    assert [item.step for item in scheduled] == [20, 40, 60]
    assert [item.target.hidden for item in scheduled] == [(48, 48), (72, 72), (108, 108)]
    # each event starts from the previous event's target
    assert all(a.target == b.source for a, b in itertools.pairwise(scheduled))


def test_no_operator_means_no_events() -> None:
    assert GrowthPlan.from_section({"operator": "none"}).schedule(MLP, 100) == []


def test_explicit_plan_with_targets_and_steps() -> None:
    plan = GrowthPlan.from_section(
        {
            "operator": "lemon",
            "plan": [
                {"at_step": 10, "width": 48},
                {"at_fraction": 0.5, "width": 64, "depth": 4, "operator": "lemon"},
            ],
        }
    )
    scheduled = plan.schedule(VIT, total_steps=100)
    assert [item.step for item in scheduled] == [10, 50]
    assert (scheduled[0].target.dim, scheduled[0].target.heads) == (48, 3)
    assert (scheduled[1].target.dim, scheduled[1].target.depth) == (64, 4)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"operator": "net2net", "plan": [{"at_step": 50}, {"at_step": 40}]},
            r"growth event 1 falls at step 40, but must come after step 50",
        ),
        ({"operator": "net2net", "plan": [{"at_step": 100}]}, r"before the last step \(100\)"),
        (
            {"operator": "net2net", "plan": [{"at_step": 5, "width": 16}]},
            r"growth event 0 \(net2net\): growth cannot shrink a model",
        ),
        (
            {"operator": "stack", "depth_factor": 2.0, "factor": 1.0},
            r"cannot grow model family 'mlp'",
        ),
    ],
)
def test_schedule_rejects_plans_that_cannot_run(section: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GrowthPlan.from_section(section).schedule(MLP, total_steps=100)


def test_lemon_depth_limit_is_checked_per_event() -> None:
    plan = GrowthPlan.from_section({"operator": "lemon", "factor": 1.0, "depth_factor": 3.0})
    with pytest.raises(ValueError, match=r"at most 2x per event"):
        plan.schedule(VIT, total_steps=100)
    two_stages = GrowthPlan.from_section(
        {"operator": "lemon", "factor": 1.0, "depth_factor": 2.0, "stages": 2}
    )
    assert [s.target.depth for s in two_stages.schedule(VIT, 100)] == [4, 8]


def cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / total))


def test_continue_keeps_the_global_cosine() -> None:
    plan = GrowthPlan(lr_after="continue")
    for step in (0, 30, 60, 99):
        lr = plan.learning_rate(step, peak=0.1, total_steps=100, schedule="cosine", grow_steps=[30])
        assert lr == pytest.approx(0.1 * cosine(step, 100))


def test_lemon_schedule_returns_to_the_peak_and_decays_faster() -> None:
    plan = GrowthPlan(lr_after="lemon")

    def lr(step: int) -> float:
        return plan.learning_rate(
            step, peak=0.1, total_steps=100, schedule="cosine", grow_steps=[40]
        )

    assert lr(39) == pytest.approx(0.1 * cosine(39, 100))  # before growth: the base schedule
    assert lr(40) == pytest.approx(0.1)  # same peak as training from scratch
    assert lr(70) == pytest.approx(0.05)  # half way through the shorter decay
    assert lr(100) == pytest.approx(0.0, abs=1e-12)
    # faster decay: the post-growth curve falls over 60 steps instead of 100
    assert lr(70) - lr(80) > 0.1 * (cosine(30, 100) - cosine(40, 100))


def test_rewarm_climbs_linearly_back_to_the_peak() -> None:
    plan = GrowthPlan(lr_after="rewarm", warmup_fraction=0.1)
    values = [
        plan.learning_rate(s, peak=0.1, total_steps=100, schedule="cosine", grow_steps=[50])
        for s in range(50, 55)  # warmup: ceil(0.1 * 50) = 5 steps
    ]
    assert values == sorted(values)
    assert values[-1] == pytest.approx(0.1)
    assert values[0] > 0.1 * cosine(50, 100)
    after = plan.learning_rate(99, peak=0.1, total_steps=100, schedule="cosine", grow_steps=[50])
    assert after < 0.01


def test_constant_schedule_stays_constant() -> None:
    plan = GrowthPlan(lr_after="lemon")
    assert (
        plan.learning_rate(70, peak=0.1, total_steps=100, schedule="constant", grow_steps=[40])
        == 0.1
    )


def test_bad_lr_after_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"lr_after must be one of \['continue', 'lemon', 'rewarm'\]"
    ):
        GrowthPlan(lr_after="warm")


def test_event_step_rounds_up_and_is_at_least_one() -> None:
    assert GrowthEvent("net2net", at_fraction=0.001).step(100) == 1
    assert GrowthEvent("net2net", at_fraction=0.301).step(100) == 31
    assert GrowthEvent("net2net", at_step=7).step(100) == 7
