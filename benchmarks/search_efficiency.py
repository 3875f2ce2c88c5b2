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
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import TrialState

from morphtune.searchers import make_sampler
from morphtune.searchers._duplicates import FinishedConfigs
from morphtune.spec import SamplerSpec, SchedulerSpec

TABLE_DIR = Path(__file__).resolve().parent / "tables"
TABLE_FORMAT = 1
RANDOM_TRIALS = 40
CAP_FACTOR = 3.0
#: (figure, method, goal): the budget ratio each method must reach (median, <=)
GOALS: tuple[tuple[str, str, float], ...] = (
    ("tpe_budget_ratio", "mt-tpe", 0.5),
    ("tpe_asha_budget_ratio", "mt-tpe+asha", 0.2),
)
#: ``mt-``: morphtune's searcher, which answers a re-proposed configuration from the study
#: instead of training it again (``morphtune.searchers._duplicates``); the others are the
#: plain Optuna samplers (and Optuna's ASHA pruner) as they come.
METHODS = ("random", "random+asha", "tpe", "tpe+asha", "mt-tpe", "mt-tpe+asha")
#: proposals in a row that are all answered repeats: the searcher stops (as the sweep's does)
MAX_REPEATS_IN_A_ROW = 200

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

    def distributions(self) -> dict[str, BaseDistribution]:
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
    answer_repeats: bool = False,
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
    finished = FinishedConfigs()
    in_a_row = 0
    while run.epochs < max_epochs and not run.reached:
        trial = study.ask(fixed_distributions=distributions)
        params = dict(trial.params)
        repeat = finished.lookup(params) if answer_repeats else None
        if repeat is not None:
            finished.answer(study, trial, repeat)  # told, not trained: no epochs charged
            in_a_row += 1
            if in_a_row >= MAX_REPEATS_IN_A_ROW:
                break
            continue
        in_a_row = 0
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
            finished.record(params, TrialState.PRUNED, None, dict(enumerate(curve[:trained], 1)))
            run.trials.append(TrialRecord(params, trained, "pruned", None))
            continue
        final = curve[-1]
        study.tell(trial, final)
        finished.record(params, TrialState.COMPLETE, [final])
        run.trials.append(TrialRecord(params, trained, "complete", final))
        if final > run.best:
            run.best, run.epochs_to_best = final, run.epochs
        # a search must reach the target within its cap: a trial that ends past it is late
        run.reached = final >= target and run.epochs <= max_epochs
    return run


def make_search_sampler(method: str, seed: int) -> optuna.samplers.BaseSampler:
    name = "tpe" if "tpe" in method else "random"
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
    """One (task, seed): random's target and budget, each method's budget to reach it,
    and how many of each method's trials repeated a configuration it had already tried."""

    task: str
    seed: int
    target: float
    random_budget: int
    random_epochs_to_best: int
    budgets: dict[str, int]
    reached: dict[str, bool]
    trials: dict[str, int] = field(default_factory=dict)
    repeats: dict[str, int] = field(default_factory=dict)

    def ratio(self, method: str) -> float:
        return self.budgets[method] / self.random_budget


def repeated(table: Table, run: SearchRun) -> int:
    """Trials of ``run`` whose configuration an earlier trial of the same run had."""
    keys = [table.key(trial.params) for trial in run.trials]
    return len(keys) - len(set(keys))


def evaluate(table: Table, seed: int, random_trials: int, cap_factor: float) -> Outcome:
    """Random search's final result on ``table`` with ``seed``, and each method's epochs to
    reach it (capped at ``cap_factor`` times random's budget)."""
    random_budget = random_trials * table.epochs
    reference = run_search(table, make_search_sampler("random", seed), max_epochs=random_budget)
    cap = int(cap_factor * random_budget)
    budgets: dict[str, int] = {"random": random_budget}
    reached: dict[str, bool] = {"random": True}
    trials: dict[str, int] = {"random": len(reference.trials)}
    repeats: dict[str, int] = {"random": repeated(table, reference)}
    for method in METHODS[1:]:
        run = run_search(
            table,
            make_search_sampler(method, seed),
            target=reference.best,
            max_epochs=cap,
            pruner=make_asha() if method.endswith("asha") else None,
            answer_repeats=method.startswith("mt-"),
        )
        budgets[method] = run.epochs if run.reached else cap
        reached[method] = run.reached
        trials[method] = len(run.trials)
        repeats[method] = repeated(table, run)
    return Outcome(
        table.name,
        seed,
        reference.best,
        random_budget,
        reference.epochs_to_best,
        budgets,
        reached,
        trials,
        repeats,
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
    searched = METHODS[1:]
    lines: list[str] = []
    header = f"{'task':<12} {'kind':<9} {'configs':>7} {'target':>7} {'top%':>5} {'rnd->best':>9}"
    header += "".join(f" {method:>11}" for method in searched) + "  unreached"
    rule = "-" * (len(header) + 16)
    lines += [header, rule]

    def row(name: str, kind: str, size: str, rows: Sequence[Outcome], target: str) -> str:
        own = _median([o.random_epochs_to_best / o.random_budget for o in rows])
        cells = "".join(f" {_median([o.ratio(m) for o in rows]):>10.2f}x" for m in searched)
        missing = "/".join(str(sum(not o.reached[m] for o in rows)) for m in searched)
        return (
            f"{name:<12} {kind:<9} {size:>7} {target} {own:>8.2f}x{cells}  {missing} of {len(rows)}"
        )

    for table in tables:
        rows = [o for o in outcomes if o.task == table.name]
        finals = table.finals()
        target = _median([o.target for o in rows])
        share = 100.0 * sum(f >= target for f in finals) / len(finals)
        lines.append(
            row(table.name, table.kind, str(table.size), rows, f"{target:>7.4f} {share:>5.1f}")
        )
    lines.append(rule)
    lines.append(row("all", "", "", outcomes, " " * 13))
    lines.append("")
    lines += [
        "ratios: epochs to reach random search's final accuracy / random's budget (median over",
        "  seeds; 'all': over every task x seed). target: random's final accuracy (median over",
        "  seeds); top%: share of the grid at or above it; rnd->best: when random itself first",
        "  found it (for reference). mt-: morphtune's searcher (re-proposed configurations",
        "  answered from the study, not retrained); the goals are on it. Others: plain Optuna.",
        f"unreached ({'/'.join(searched)}): searches short of the target after {cap_factor:g}x "
        f"random's budget, counted at {cap_factor:g}x in the medians.",
    ]
    shares = []
    for method in METHODS:
        trials = sum(o.trials.get(method, 0) for o in outcomes)
        repeats = sum(o.repeats.get(method, 0) for o in outcomes)
        shares.append(f"{method} {100.0 * repeats / max(trials, 1):.0f}% of {trials}")
    lines.append(
        "repeated proposals trained and charged again (mt-: none; they are answered): "
        + ", ".join(shares)
    )
    overall = {method: _median([o.ratio(method) for o in outcomes]) for method in METHODS}
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
