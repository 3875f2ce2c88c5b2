"""P6 search efficiency: epochs TPE (and TPE with ASHA) need to match random search.

Replays searches on tabulated tasks (``benchmarks/tables/*.json.gz``, made by
``benchmarks/make_tables.py``: growth, sparsity and subnet grids on digits in which every
configuration was really trained once, keeping its learning curve), the way tabular NAS
and HPO benchmarks do (NAS-Bench-201, Dong & Yang, ICLR 2020; HPOBench, Eggensperger et
al., 2021). For each task and seed:

- **random search** (the peer, Optuna's ``RandomSampler``) trains ``--random-trials``
  configurations to the full ``E`` epochs; its best final validation accuracy is the
  *target* and its budget is ``trials x E`` epochs;
- **TPE** (morphtune's sampler, ``make_sampler(SamplerSpec(name="tpe", seed=s))``: the
  Tree-structured Parzen Estimator, Bergstra et al., NeurIPS 2011, multivariate) trains
  configurations to the full ``E`` epochs until a final accuracy reaches the target;
- **TPE + ASHA** does the same with Optuna's ``SuccessiveHalvingPruner`` (asynchronous
  successive halving, Li et al., MLSys 2020) reading the learning curve epoch by epoch,
  with morphtune's default ASHA settings (``SchedulerSpec()``: grace period, reduction
  factor); a stopped configuration is charged only the epochs it trained.

Budgets are counted in training epochs; a configuration proposed twice is trained (and
charged) twice, as a sweep would. A search that has not reached the target after
``--cap`` times random search's budget stops there and its ratio is the cap (reported as
unreached, never hidden). The figure is the median of ``budget / random's budget`` over
every (task, seed) pair; per-task medians are printed too.

    .venv/bin/python benchmarks/search_efficiency.py [--seeds 10] [--regenerate]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import statistics
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from morphtune.searchers import make_sampler
from morphtune.spec import SamplerSpec, SchedulerSpec

TABLE_DIR = Path(__file__).resolve().parent / "tables"
TABLE_FORMAT = 1
RANDOM_TRIALS = 40
CAP_FACTOR = 3.0
#: (figure, method, goal): the budget ratio each method must reach (median, <=)
GOALS: tuple[tuple[str, str, float], ...] = (
    ("tpe_budget_ratio", "tpe", 0.5),
    ("tpe_asha_budget_ratio", "tpe+asha", 0.2),
)
METHODS = ("random", "random+asha", "tpe", "tpe+asha")

Scalar = bool | int | float | str


# ------------------------------------------------------------------------------ tables


@dataclass(frozen=True)
class Table:
    """A tabulated task: a grid of categorical knobs and every point's learning curve."""

    name: str
    kind: str
    epochs: int
    grid: dict[str, tuple[Scalar, ...]]
    curves: dict[tuple[Scalar, ...], tuple[float, ...]]

    @property
    def size(self) -> int:
        return len(self.curves)

    def key(self, params: Mapping[str, Any]) -> tuple[Scalar, ...]:
        return tuple(params[name] for name in self.grid)

    def curve(self, params: Mapping[str, Any]) -> tuple[float, ...]:
        """Validation accuracy after each epoch of the configuration ``params``."""
        return self.curves[self.key(params)]

    def distributions(self) -> dict[str, CategoricalDistribution]:
        return {name: CategoricalDistribution(list(values)) for name, values in self.grid.items()}

    def finals(self) -> list[float]:
        return [curve[-1] for curve in self.curves.values()]


def _require(condition: bool, where: str, value: Any, rule: str) -> None:
    if not condition:
        raise ValueError(f"table {where}: {rule}, but got {value!r}")


def table_from_document(document: Mapping[str, Any]) -> Table:
    """Check a table document (as ``make_tables.py`` writes it) and build a :class:`Table`.

    Every grid point appears exactly once, with ``epochs`` accuracies in [0, 1], its
    training seed and its cost; errors name the field, the value and the rule.
    """
    name = document.get("task")
    _require(isinstance(name, str) and bool(name), "task", name, "must be a non-empty string")
    where = str(name)
    fmt = document.get("format")
    _require(fmt == TABLE_FORMAT, f"{where}.format", fmt, f"must be {TABLE_FORMAT}")
    epochs = document.get("epochs")
    _require(
        isinstance(epochs, int) and epochs >= 1, f"{where}.epochs", epochs, "must be an int >= 1"
    )
    epochs = int(str(epochs))
    kind = document.get("kind")
    _require(
        kind in ("growth", "sparsity", "subnet"),
        f"{where}.kind",
        kind,
        "must be growth, sparsity or subnet",
    )
    raw_grid = document.get("grid")
    _require(isinstance(raw_grid, dict) and bool(raw_grid), f"{where}.grid", raw_grid, "non-empty")
    grid: dict[str, tuple[Scalar, ...]] = {}
    for knob, values in dict(raw_grid or {}).items():
        _require(
            isinstance(values, list) and len(values) == len(set(values)) and len(values) >= 2,
            f"{where}.grid.{knob}",
            values,
            "must list at least two distinct values",
        )
        grid[knob] = tuple(values)
    expected = math.prod(len(values) for values in grid.values())
    curves: dict[tuple[Scalar, ...], tuple[float, ...]] = {}
    configs = document.get("configs")
    _require(isinstance(configs, list), f"{where}.configs", type(configs).__name__, "a list")
    for index, row in enumerate(configs or []):
        at = f"{where}.configs[{index}]"
        values = row.get("values", {})
        _require(
            isinstance(values, dict) and set(values) == set(grid),
            f"{at}.values",
            values,
            f"must set exactly the grid's knobs {sorted(grid)}",
        )
        key = tuple(values[knob] for knob in grid)
        for knob, value in zip(grid, key, strict=True):
            _require(value in grid[knob], f"{at}.values.{knob}", value, f"must be in {grid[knob]}")
        _require(key not in curves, f"{at}.values", values, "each grid point appears once")
        acc = row.get("val_acc")
        _require(
            isinstance(acc, list)
            and len(acc) == epochs
            and all(isinstance(v, float | int) and 0.0 <= v <= 1.0 for v in acc),
            f"{at}.val_acc",
            acc,
            f"must hold {epochs} accuracies in [0, 1]",
        )
        for cost in ("seed", "params", "flops"):
            _require(
                isinstance(row.get(cost), int | float) and row[cost] >= 0,
                f"{at}.{cost}",
                row.get(cost),
                "must be a number >= 0",
            )
        curves[key] = tuple(float(v) for v in acc)
    _require(
        len(curves) == expected,
        f"{where}.configs",
        len(curves),
        f"must cover all {expected} grid points",
    )
    return Table(str(name), str(kind), epochs, grid, curves)


def load_table(path: Path) -> Table:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return table_from_document(json.load(handle))


def table_paths(directory: Path = TABLE_DIR) -> list[Path]:
    return sorted([*directory.glob("*.json.gz"), *directory.glob("*.json")])


# -------------------------------------------------------------------------- searches


@dataclass(frozen=True)
class TrialRecord:
    params: dict[str, Scalar]
    epochs: int  # epochs trained (and charged)
    state: str  # "complete" | "pruned"
    final: float | None  # final accuracy of a complete trial


@dataclass
class SearchRun:
    """One replayed search: epochs charged, whether it reached the target, its trials."""

    epochs: int = 0
    reached: bool = False
    best: float = -math.inf
    epochs_to_best: int = 0  # epochs charged when ``best`` was first found
    trials: list[TrialRecord] = field(default_factory=list)


def run_search(
    table: Table,
    sampler: optuna.samplers.BaseSampler,
    *,
    target: float = math.inf,
    max_epochs: int,
    pruner: optuna.pruners.BasePruner | None = None,
) -> SearchRun:
    """Ask ``sampler`` for configurations of ``table`` and train them (read their curves)
    until a complete trial's final accuracy reaches ``target`` or ``max_epochs`` epochs
    have been charged. With ``pruner``, each epoch's accuracy is reported and the trial
    stops when the pruner says so, charged only the epochs it trained.
    """
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, but got {max_epochs}")
    study = optuna.create_study(
        direction="maximize", sampler=sampler, pruner=pruner or optuna.pruners.NopPruner()
    )
    distributions = table.distributions()
    run = SearchRun()
    while run.epochs < max_epochs and not run.reached:
        trial = study.ask(fixed_distributions=distributions)
        params = dict(trial.params)
        curve = table.curve(params)
        trained = 0
        pruned = False
        for epoch, accuracy in enumerate(curve, start=1):
            trained = epoch
            if pruner is not None:
                trial.report(accuracy, step=epoch)
                if epoch < len(curve) and trial.should_prune():
                    pruned = True
                    break
        run.epochs += trained
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
            run.trials.append(TrialRecord(params, trained, "pruned", None))
            continue
        final = curve[-1]
        study.tell(trial, final)
        run.trials.append(TrialRecord(params, trained, "complete", final))
        if final > run.best:
            run.best, run.epochs_to_best = final, run.epochs
        # a search must reach the target within its cap: a trial that ends past it is late
        run.reached = final >= target and run.epochs <= max_epochs
    return run


def make_search_sampler(method: str, seed: int) -> optuna.samplers.BaseSampler:
    name = "tpe" if method.startswith("tpe") else "random"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return make_sampler(SamplerSpec(name=name, seed=seed))


def make_asha() -> optuna.pruners.BasePruner:
    """Optuna's ASHA with morphtune's default ASHA settings (grace period, reduction)."""
    scheduler = SchedulerSpec(name="asha")
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=scheduler.grace, reduction_factor=int(scheduler.eta)
    )


@dataclass(frozen=True)
class Outcome:
    """One (task, seed): random's target and budget, each method's budget to reach it."""

    task: str
    seed: int
    target: float
    random_budget: int
    random_epochs_to_best: int
    budgets: dict[str, int]
    reached: dict[str, bool]

    def ratio(self, method: str) -> float:
        return self.budgets[method] / self.random_budget


def evaluate(table: Table, seed: int, random_trials: int, cap_factor: float) -> Outcome:
    """Random search's final result on ``table`` with ``seed``, and each method's epochs to
    reach it (capped at ``cap_factor`` times random's budget)."""
    random_budget = random_trials * table.epochs
    reference = run_search(table, make_search_sampler("random", seed), max_epochs=random_budget)
    cap = int(cap_factor * random_budget)
    budgets: dict[str, int] = {"random": random_budget}
    reached: dict[str, bool] = {"random": True}
    for method in METHODS[1:]:
        run = run_search(
            table,
            make_search_sampler(method, seed),
            target=reference.best,
            max_epochs=cap,
            pruner=make_asha() if method.endswith("asha") else None,
        )
        budgets[method] = run.epochs if run.reached else cap
        reached[method] = run.reached
    return Outcome(
        table.name,
        seed,
        reference.best,
        random_budget,
        reference.epochs_to_best,
        budgets,
        reached,
    )


def _evaluate_unit(unit: tuple[Path, int, int, float]) -> Outcome:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path, seed, random_trials, cap_factor = unit
    return evaluate(load_table(path), seed, random_trials, cap_factor)


# --------------------------------------------------------------------------- report


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def report(tables: Sequence[Table], outcomes: Sequence[Outcome], cap_factor: float) -> list[str]:
    """The per-task table, the overall medians and the RESULT lines."""
    lines: list[str] = []
    header = (
        f"{'task':<12} {'kind':<9} {'configs':>7} {'target':>7} {'top%':>5} "
        f"{'rnd->best':>9} {'rnd+asha':>9} {'tpe':>6} {'tpe+asha':>9}  unreached (tpe, tpe+asha)"
    )
    lines += [header, "-" * len(header)]
    by_task = {table.name: table for table in tables}
    for name, table in by_task.items():
        rows = [o for o in outcomes if o.task == name]
        finals = table.finals()
        target = _median([o.target for o in rows])
        share = 100.0 * sum(f >= target for f in finals) / len(finals)
        own = _median([o.random_epochs_to_best / o.random_budget for o in rows])
        cells = [_median([o.ratio(m) for o in rows]) for m in METHODS[1:]]
        missing = [sum(not o.reached[m] for o in rows) for m in ("tpe", "tpe+asha")]
        lines.append(
            f"{name:<12} {table.kind:<9} {table.size:>7} {target:>7.4f} {share:>5.1f} "
            f"{own:>8.2f}x {cells[0]:>8.2f}x {cells[1]:>5.2f}x {cells[2]:>8.2f}x  "
            f"{missing[0]}/{len(rows)}, {missing[1]}/{len(rows)}"
        )
    lines.append("-" * len(header))
    overall = {m: _median([o.ratio(m) for o in outcomes]) for m in METHODS}
    own = _median([o.random_epochs_to_best / o.random_budget for o in outcomes])
    missing = {m: sum(not o.reached[m] for o in outcomes) for m in METHODS}
    lines.append(
        f"{'all':<12} {'':<9} {'':>7} {'':>7} {'':>5} {own:>8.2f}x "
        f"{overall['random+asha']:>8.2f}x {overall['tpe']:>5.2f}x {overall['tpe+asha']:>8.2f}x  "
        f"{missing['tpe']}/{len(outcomes)}, {missing['tpe+asha']}/{len(outcomes)}"
    )
    lines.append("")
    lines.append(
        "budget ratios = epochs to reach random search's final accuracy / random's budget "
        "(median over seeds; 'all': over every task x seed)"
    )
    lines.append(
        "target: random's final accuracy (median over seeds); top%: share of the grid at or "
        "above it; rnd->best: when random itself first found it"
    )
    lines.append(
        f"unreached: searches that did not reach the target within {cap_factor:g}x random's "
        f"budget, counted at the cap ratio {cap_factor:g}x in the medians; random+asha: no goal"
    )
    for figure, method, goal in GOALS:
        value = overall[method]
        verdict = "PASS" if value <= goal else "FAIL"
        lines.append(f"RESULT P6 {figure}={value:.3f} goal=<={goal} {verdict}")
    return lines


def regenerate(processes: int) -> None:
    """Train every table again (``make_tables.py``, next to this script)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_tables

    make_tables.main(["--processes", str(processes)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--random-trials", type=int, default=RANDOM_TRIALS)
    parser.add_argument("--cap", type=float, default=CAP_FACTOR, help="x random's budget")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--tables", type=Path, default=TABLE_DIR)
    parser.add_argument("--regenerate", action="store_true", help="train the tables again")
    args = parser.parse_args(argv)
    for flag, value, low in (
        ("--seeds", args.seeds, 1),
        ("--random-trials", args.random_trials, 1),
        ("--processes", args.processes, 1),
        ("--cap", args.cap, 1.0),
    ):
        if value < low:
            parser.error(f"{flag} must be >= {low}, but got {value}")
    if args.regenerate:
        regenerate(args.processes)
    paths = table_paths(args.tables)
    if not paths:
        parser.error(f"no tables in {args.tables}: run benchmarks/make_tables.py or --regenerate")
    tables = [load_table(path) for path in paths]
    scheduler = SchedulerSpec(name="asha")
    print(
        f"P6 search efficiency: {len(tables)} tabulated tasks, {args.seeds} seeds; peer: random "
        f"search, {args.random_trials} trials x full epochs; ASHA: grace {scheduler.grace}, "
        f"reduction {scheduler.eta:g} (SchedulerSpec defaults); cap {args.cap:g}x"
    )
    units = [
        (path, seed, args.random_trials, args.cap) for path in paths for seed in range(args.seeds)
    ]
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.processes) as pool:
        outcomes = pool.map(_evaluate_unit, units, chunksize=1)
    print(f"simulated {len(units)} task x seed pairs in {time.perf_counter() - started:.0f} s\n")
    for line in report(tables, outcomes, args.cap):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
