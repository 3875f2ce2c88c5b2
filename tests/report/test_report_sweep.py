"""The report of a real multi-objective sweep (growth, pruning, a conditional knob) against
what the store and the Optuna study hold."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from matplotlib.image import imread

from morphtune.report import gather
from morphtune.store import SweepStore
from tests.report.conftest import SWEEP_ID, Reported
from tests.report.pages import parse_page, png_of, png_size

pytestmark = pytest.mark.ray

OBJECTIVES = (("val_acc", "max"), ("nonzero_params", "min"))


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` dominates ``b`` for (val_acc max, nonzero_params min)."""
    no_worse = a[0] >= b[0] and a[1] <= b[1]
    return no_worse and a != b


def test_top_configurations_and_front_follow_the_store(mo_report: Reported) -> None:
    store = SweepStore(mo_report.root)
    data = gather(store, SWEEP_ID)
    best = store.best(SWEEP_ID)
    assert (data.best.trial.trial_id, data.best.values[0]) == (best.trial_id, best.value)
    assert f"best val_acc = {best.value:.6g} (trial {best.trial_id})" in mo_report.stdout
    summaries = {t.trial_id: t for t in store.trials(SWEEP_ID) if t.status != "failed"}
    finals = {
        trial_id: (s.metrics["val_acc"], s.metrics["nonzero_params"])
        for trial_id, s in summaries.items()
    }
    assert [row.trial.trial_id for row in data.top] == sorted(
        finals, key=lambda trial_id: (-finals[trial_id][0], trial_id)
    )
    for row in data.top:
        assert row.values == finals[row.trial.trial_id]
    # the front, by brute force over the trials' last reports
    front = {
        trial_id
        for trial_id, point in finals.items()
        if not any(_dominates(other, point) for other in finals.values())
    }
    assert data.pareto is not None
    assert {point.trial_id for point in data.pareto.points} == front
    assert {row.trial.trial_id for row in data.top if row.on_front} == front
    # and the page shows the same table, in the same order; a conditional knob shows only
    # where its condition held (sparsity.density only for magnitude pruning)
    page = parse_page(mo_report.text)
    assert [row[:2] for row in page.rows] == [
        [str(row.rank), row.trial.trial_id] for row in data.top
    ]
    keys = [param.key for param in data.searched]
    method, density = 7 + keys.index("sparsity.method"), 7 + keys.index("sparsity.density")
    for cells, row in zip(page.rows, data.top, strict=True):
        assert cells[method] == row.trial.config["sparsity.method"]
        pruned = row.trial.config["sparsity.method"] == "magnitude"
        assert (cells[density] != "\u2013") == pruned, cells


def test_timelines_are_the_stored_rows(mo_report: Reported) -> None:
    store = SweepStore(mo_report.root)
    data = gather(store, SWEEP_ID)
    table = store.results(
        SWEEP_ID, ["trial_id", "iteration", "metrics.width", "metrics.density", "metrics.step"]
    )
    assert data.signals == ("width", "depth", "density")
    assert data.timeline_x == "step"  # drawn against the optimizer step every trial reported
    assert set(data.compute_axes) >= {"train_flops", "wall_s"}
    for trial in data.trials:
        mine = table.filter(pc.equal(table.column("trial_id"), trial.trial_id)).sort_by("iteration")
        assert trial.iterations.tolist() == mine.column("iteration").to_pylist()
        np.testing.assert_array_equal(trial.series["width"], mine.column("metrics.width"))
        np.testing.assert_array_equal(trial.series["density"], mine.column("metrics.density"))
        steps = trial.series["step"]
        np.testing.assert_array_equal(steps, mine.column("metrics.step"))
        assert steps[0] > 0 and (np.diff(steps) > 0).all()  # steps taken in every epoch
    # the fixture's sweep really varies what the timelines show
    assert any(t.series["width"][-1] > t.series["width"][0] for t in data.trials), "a grown trial"
    assert any(t.series["density"][-1] < 1.0 for t in data.trials), "a pruned trial"
    starts = [t.started for t in data.trials]
    assert starts == sorted(starts)  # the history's x axis: the order trials first reported


def test_importances_come_from_the_study(mo_report: Reported) -> None:
    store = SweepStore(mo_report.root)
    data = gather(store, SWEEP_ID)
    searched = {param.key for param in data.searched}
    found = data.importances.by_objective
    assert set(found) == {metric for metric, _ in OBJECTIVES}, data.importances.note
    for importances in found.values():
        assert importances and set(importances) <= searched
        assert all(value >= 0 for value in importances.values())
        assert math.isclose(sum(importances.values()), 1.0, rel_tol=1e-6)
    ran = sum(1 for t in store.trials(SWEEP_ID) if t.status != "failed")
    assert data.importances.study_trials.get("COMPLETE") == ran


def test_the_page_embeds_every_figure(mo_report: Reported) -> None:
    page = parse_page(mo_report.text)
    assert page.sections == [
        "summary",
        "top",
        "history",
        "pareto",
        "parallel",
        "importances",
        "timelines",
        "compute",
    ]
    assert page.notes == []  # every figure could be drawn for this sweep
    assert len(page.images) == 6
    for image in page.images:
        png = png_of(image)
        width, height = png_size(png)
        assert (str(width), str(height)) == (image["width"], image["height"])
        pixels = imread(io.BytesIO(png))  # decodes the whole image: a cut PNG raises
        assert pixels.shape[:2] == (height, width) and pixels.std() > 0.05
        assert image["alt"]
    assert all(ref.startswith(("data:image/png;base64,", "#")) for ref in page.references)
    assert page.scripts == 0


def test_a_study_named_by_url(mo_report: Reported, tmp_path: Path) -> None:
    """``--optuna URL`` reads a study stored elsewhere (here: a copy of the sweep's)."""
    copy = tmp_path / "elsewhere.db"
    shutil.copyfile(mo_report.root / SWEEP_ID / "optuna.db", copy)
    store = SweepStore(mo_report.root)
    default = gather(store, SWEEP_ID).importances
    named = gather(store, SWEEP_ID, optuna_url=f"sqlite:///{copy}").importances
    assert named.by_objective == default.by_objective and named.by_objective
    assert named.study_trials == default.study_trials
