"""Reports of sweeps written through the real store writer (no Ray): the ranking rules on a
sweep with NaN, inf, failed and running trials, and the GAN signals (balance ratio)."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from morphtune.report import build_report, gather, render_report
from morphtune.store import ResultWriter, SweepStore
from tests.report.pages import parse_page, png_of, png_size, write_gan_like_sweep
from tests.store.sweeps import ACC, STATES, write_demo_sweep


def test_ranking_follows_the_store_rules(tmp_path: Path) -> None:
    """t0 (last 0.8) beats t1 (last 0.6); t2's last report is NaN, t4's inf (running) and
    t3 failed, so none of them is ranked, as ``SweepStore.best`` decides."""
    write_demo_sweep(tmp_path)
    store = SweepStore(tmp_path)
    data = gather(store, "demo")
    best = store.best("demo")
    assert (data.best.trial.trial_id, data.best.values[0]) == (best.trial_id, best.value)
    assert [t.trial_id for t in data.ranked()] == ["t0", "t1"]
    assert [t.trial_id for t in data.finished()] == ["t0", "t1"]
    assert {t.trial_id: t.state for t in data.trials} == {**STATES, "t4": "running"}
    for trial in data.trials:  # every stored row is there, in iteration order
        assert trial.iterations.tolist() == list(range(1, len(ACC[trial.trial_id]) + 1))
        np.testing.assert_array_equal(trial.series["acc"], ACC[trial.trial_id])
    assert data.pareto is None
    assert data.importances.note is not None and "no Optuna study" in data.importances.note


def test_a_sweep_without_search_space_or_signals_says_so(tmp_path: Path) -> None:
    """No declared space: the config keys that vary across trials stand in for it; no
    second objective, signals, compute or study: the page says why instead of a figure."""
    write_demo_sweep(tmp_path)
    data = build_report(tmp_path, "demo", tmp_path / "demo.html")
    page = parse_page((tmp_path / "demo.html").read_text("utf-8"))
    assert data.signals == () and data.compute_axes == ()
    assert [(p.key, p.kind) for p in data.searched] == [("lr", "float"), ("model.width", "float")]
    assert len(page.images) == 2  # the history and the parallel coordinates
    joined = " ".join(page.notes)
    for reason in ("single-objective", "no width", "no compute", "no Optuna study"):
        assert reason in joined, (reason, page.notes)
    assert [row[1] for row in page.rows] == ["t0", "t1"]  # the top table, by rank
    assert [row[-2:] for row in page.rows] == [["0.01", "32"], ["0.02", "64"]]


def test_gan_signals_get_timelines_and_compute(tmp_path: Path) -> None:
    ratios = write_gan_like_sweep(tmp_path)
    data = gather(SweepStore(tmp_path), "gan-like")
    assert data.primary.mode == "min"
    assert data.best.trial.trial_id == "g1"  # the lowest final fd (0.9)
    assert data.signals == ("density", "d_density", "balance_ratio")
    assert data.timeline_x == "iteration"  # these rows name no optimizer step
    assert data.compute_axes == ("train_flops", "wall_s")
    for trial in data.trials:
        np.testing.assert_allclose(trial.series["balance_ratio"], ratios[trial.trial_id])
    assert [p.key for p in data.searched] == ["sparsity.d_density", "sparsity.method"]
    page = parse_page(render_report(data, generated=0.0))
    # history, parallel coordinates, timelines, quality against compute
    assert len(page.images) == 4
    for image in page.images:
        png = png_of(image)
        width, height = png_size(png)
        assert (str(width), str(height)) == (image["width"], image["height"])
        assert width >= 600 and height >= 200
        assert imread(io.BytesIO(png)).shape[:2] == (height, width)  # decodes whole


def test_the_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    """Text from the store (trial ids, config values) is shown as text, never as markup."""
    hostile = '<script>alert("x")</script>&amp;'
    writer = ResultWriter(tmp_path, "hostile")
    writer.write_manifest(
        {
            "objective": {"metric": "acc", "mode": "max"},
            "spec": {"search": {"space": {"opt": {"type": "categorical", "choices": [hostile]}}}},
        }
    )
    config = {"opt": hostile}
    writer.write_results(
        [
            {
                "trial_id": "<i>t</i>",
                "iteration": 1,
                "status": "running",
                "config": config,
                "metrics": {"acc": 0.5},
            }
        ]
    )
    writer.write_trial("<i>t</i>", "completed", config=config, last_iteration=1)
    text = render_report(gather(SweepStore(tmp_path), "hostile"), generated=0.0)
    page = parse_page(text)
    assert page.scripts == 0 and "<i>" not in text
    assert page.rows[0][1:3] == ["<i>t</i>", "completed"]
    assert hostile in page.rows[0]
    assert all(ref.startswith(("data:image/png;base64,", "#")) for ref in page.references)


def test_the_command_needs_neither_torch_nor_ray(tmp_path: Path) -> None:
    """A report reads files only: the whole command runs without importing torch or Ray."""
    write_gan_like_sweep(tmp_path)
    output = tmp_path / "r.html"
    code = (
        "import sys; from morphtune.cli import main; "
        f"status = main(['report', 'gan-like', '--results', {str(tmp_path)!r}, "
        f"'-o', {str(output)!r}]); "
        "print(status, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 []"
    assert output.is_file()


def _two_objective_sweep(root: Path, points: dict[str, tuple[float, float]]) -> None:
    writer = ResultWriter(root, "two")
    writer.write_manifest(
        {
            "objective": {"metric": "acc", "mode": "max"},
            "objectives": [{"metric": "acc", "mode": "max"}, {"metric": "params", "mode": "min"}],
        }
    )
    for trial_id, (acc, params) in points.items():
        config = {"width": params}
        writer.write_results(
            [
                {
                    "trial_id": trial_id,
                    "iteration": 1,
                    "status": "running",
                    "config": config,
                    "metrics": {"acc": acc, "params": params},
                }
            ]
        )
        writer.write_trial(trial_id, "completed", config=config, last_iteration=1)


def test_the_front_leaves_dominated_trials_out(tmp_path: Path) -> None:
    _two_objective_sweep(tmp_path, {"a": (0.9, 100.0), "b": (0.8, 200.0), "c": (0.7, 50.0)})
    data = gather(SweepStore(tmp_path), "two")
    assert data.pareto is not None
    assert sorted(point.trial_id for point in data.pareto.points) == ["a", "c"]
    assert [(row.trial.trial_id, row.on_front) for row in data.top] == [
        ("a", True),
        ("b", False),
        ("c", True),
    ]
    page = parse_page(render_report(data, generated=0.0))
    assert [row[6] for row in page.rows] == ["yes", "no", "yes"]  # the "on front" column
    assert len(page.images) == 3  # history, Pareto front, parallel coordinates
    assert "no Optuna study" in " ".join(page.notes)


def test_no_front_when_a_second_objective_is_never_finite(tmp_path: Path) -> None:
    _two_objective_sweep(tmp_path, {"a": (0.9, math.nan), "b": (0.8, math.nan)})
    data = gather(SweepStore(tmp_path), "two")
    assert data.pareto is None and data.best.trial.trial_id == "a"
    page = parse_page(render_report(data, generated=0.0))
    assert "No trial reported a finite value for every objective." in page.notes
