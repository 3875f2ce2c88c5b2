"""P6 search-efficiency benchmark: the cached tables and the replay logic.

The committed tables must be well-formed and current with ``benchmarks/make_tables.py``;
the replay (budget counting, pruning, the cap, random search's own target) is checked on
tiny synthetic tables whose answers are known. No Ray.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


search_efficiency = _load("search_efficiency")
make_tables = _load("make_tables")


def synthetic_document(epochs: int = 4, values: int = 6) -> dict[str, Any]:
    """Knob ``a`` in 0..values-1 x knob ``b`` in {x, y}; final accuracy grows with ``a``
    (``b = y`` adds 0.01); curves rise linearly to the final value."""
    configs = []
    for index, (a, b) in enumerate((a, b) for a in range(values) for b in ("x", "y")):
        final = 0.5 + 0.05 * a + (0.01 if b == "y" else 0.0)
        curve = [round(final * (epoch + 1) / epochs, 6) for epoch in range(epochs)]
        configs.append(
            {
                "index": index,
                "values": {"a": a, "b": b},
                "seed": index,
                "val_acc": curve,
                "params": 100 + a,
                "flops": 200.0 + a,
            }
        )
    return {
        "format": 1,
        "task": "synthetic",
        "kind": "growth",
        "epochs": epochs,
        "grid": {"a": list(range(values)), "b": ["x", "y"]},
        "configs": configs,
    }


@pytest.fixture
def table() -> Any:
    return search_efficiency.table_from_document(synthetic_document())


# ---------------------------------------------------------------------- cached tables


def test_cached_tables_are_well_formed_and_current() -> None:
    paths = search_efficiency.table_paths()
    assert len(paths) >= 8
    assert sum(path.stat().st_size for path in paths) < 3 * 1024 * 1024
    kinds = set()
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            document = json.load(handle)
        table = search_efficiency.table_from_document(document)  # raises if malformed
        kinds.add(table.kind)
        assert 30 <= table.size <= 150, table.name
        assert 8 <= table.epochs <= 12
        task = make_tables.TASKS_BY_NAME[table.name]
        assert document["grid"] == {key: list(v) for key, v in task.grid.items()}
        assert document["spec"] == task.spec_text()
        assert [row["seed"] for row in document["configs"]] == list(range(table.size))
        finals = table.finals()
        assert max(finals) > 0.5, f"{table.name}: no configuration learned the task"
    assert kinds == {"growth", "sparsity", "subnet"}
    expected = {f"{name}.json.gz" for name in make_tables.TASKS_BY_NAME}
    assert {path.name for path in paths} == expected


def test_every_task_grid_is_a_valid_sweep_space() -> None:
    from morphtune.spec import parse_spec, resolve_trial_config

    for task in make_tables.TASKS:
        spec = parse_spec(task.spec_text())  # checks every growth/sparsity combination
        last = task.points()[-1]
        trial = resolve_trial_config(spec, last)
        for key, value in last.items():
            section, _, name = key.partition(".")
            assert trial[section][name] == value


# ------------------------------------------------------------------ table validation


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["configs"].pop(), "must cover all 12 grid points"),
        (lambda d: d["configs"][0]["val_acc"].pop(), r"configs\[0\]\.val_acc"),
        (lambda d: d["configs"][1]["val_acc"].__setitem__(0, 1.5), r"configs\[1\]\.val_acc"),
        (lambda d: d["configs"][2]["values"].__setitem__("a", 99), r"values\.a"),
        (lambda d: d["configs"][3].pop("seed"), r"configs\[3\]\.seed"),
        (lambda d: d.__setitem__("kind", "other"), "kind"),
        (lambda d: d["configs"].__setitem__(1, d["configs"][0]), "each grid point appears once"),
    ],
)
def test_malformed_tables_are_rejected(mutate: Any, message: str) -> None:
    document = synthetic_document()
    mutate(document)
    with pytest.raises(ValueError, match=message):
        search_efficiency.table_from_document(document)


# ------------------------------------------------------------------------- replay


def test_random_search_trains_its_trials_fully_and_reaches_its_own_result(table: Any) -> None:
    trials = 7
    budget = trials * table.epochs
    sampler = optuna.samplers.RandomSampler(seed=3)
    reference = search_efficiency.run_search(table, sampler, max_epochs=budget)
    assert reference.epochs == budget
    assert len(reference.trials) == trials
    assert all(t.state == "complete" and t.epochs == table.epochs for t in reference.trials)
    assert reference.best == max(t.final for t in reference.trials)
    first = next(i for i, t in enumerate(reference.trials) if t.final == reference.best)
    assert reference.epochs_to_best == (first + 1) * table.epochs
    # the same search, stopped at its own final value, gets there within its own budget
    again = search_efficiency.run_search(
        table, optuna.samplers.RandomSampler(seed=3), target=reference.best, max_epochs=budget
    )
    assert again.reached
    assert again.epochs == reference.epochs_to_best <= budget


def test_pruned_trials_are_charged_only_the_epochs_they_trained(table: Any) -> None:
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    run = search_efficiency.run_search(
        table, optuna.samplers.RandomSampler(seed=0), max_epochs=60, pruner=pruner
    )
    assert run.epochs == sum(t.epochs for t in run.trials) >= 60
    pruned = [t for t in run.trials if t.state == "pruned"]
    assert pruned, "ASHA stopped nothing on a table with a clear ranking"
    # rungs at 1 and 2 epochs (min_resource x 2^k below the 4-epoch budget)
    assert {t.epochs for t in pruned} <= {1, 2}
    assert all(t.epochs == table.epochs for t in run.trials if t.state == "complete")
    assert run.best == max(t.final for t in run.trials if t.final is not None)


def test_unreachable_target_stops_at_the_cap(table: Any) -> None:
    run = search_efficiency.run_search(
        table, optuna.samplers.RandomSampler(seed=0), target=2.0, max_epochs=30
    )
    assert not run.reached
    assert 30 <= run.epochs < 30 + table.epochs


def test_target_reached_by_the_trial_that_reaches_it(table: Any) -> None:
    target = sorted(table.finals())[-3]  # three configurations reach it
    run = search_efficiency.run_search(
        table, optuna.samplers.RandomSampler(seed=1), target=target, max_epochs=10_000
    )
    assert run.reached
    assert run.trials[-1].final is not None and run.trials[-1].final >= target
    assert all(t.final is None or t.final < target for t in run.trials[:-1])
    assert run.epochs == len(run.trials) * table.epochs


def test_evaluate_counts_ratios_against_random_budget(table: Any) -> None:
    outcome = search_efficiency.evaluate(table, seed=0, random_trials=5, cap_factor=3.0)
    assert outcome.random_budget == 5 * table.epochs
    assert outcome.ratio("random") == 1.0
    assert outcome.random_epochs_to_best <= outcome.random_budget
    for method in search_efficiency.METHODS[1:]:
        assert 0 < outcome.ratio(method) <= 3.0
        if not outcome.reached[method]:
            assert outcome.ratio(method) == 3.0
    assert outcome.target in table.finals()
    assert outcome.trials["random"] == 5
    # 12 configurations: the searches that ran past 12 trials must have repeated some
    for method, count in outcome.trials.items():
        assert max(0, count - table.size) <= outcome.repeats[method] < count


def test_report_ends_with_result_lines(table: Any) -> None:
    def outcome(seed: int, tpe: int, asha: int) -> Any:
        return search_efficiency.Outcome(
            "synthetic",
            seed,
            0.75,
            100,
            60,
            {
                "random": 100,
                "random+asha": 80,
                "tpe": 95,
                "tpe+asha": 90,
                "mt-tpe": tpe,
                "mt-tpe+asha": asha,
            },
            {
                "random": True,
                "random+asha": True,
                "tpe": True,
                "tpe+asha": True,
                "mt-tpe": True,
                "mt-tpe+asha": asha < 300,
            },
        )

    lines = search_efficiency.report(
        [table], [outcome(0, 40, 10), outcome(1, 50, 300), outcome(2, 70, 15)], 3.0
    )
    assert lines[-2] == "RESULT P6 tpe_budget_ratio=0.500 goal=<=0.5 PASS"
    assert lines[-1] == "RESULT P6 tpe_asha_budget_ratio=0.150 goal=<=0.2 PASS"
    row = next(line for line in lines if line.startswith("synthetic"))
    assert row.rstrip().endswith("0/0/0/0/1 of 3")
    failing = search_efficiency.report([table], [outcome(0, 90, 30)], 3.0)
    assert re.fullmatch(r"RESULT P6 tpe_budget_ratio=0\.900 goal=<=0\.5 FAIL", failing[-2])
    assert math.isclose(float(failing[-1].split("=")[1].split()[0]), 0.3)
