"""P1 sweep overhead: short sleep-based trials through morphtune, plain Optuna and bare Ray Tune.

Every arm runs the same objective (sleep for the trial's duration, then return the sampled
learning rate) two trials at a time on one machine:

- **plain Optuna**: ``study.optimize(n_jobs=2)``, TPE, in-memory storage;
- **morphtune**: ``run_sweep`` with a ``trial_fn`` (Tune function executor, TPE through the
  NaN-safe Optuna searcher, the SQLite study, the Parquet results store);
- **bare Ray Tune**: a function trainable with ``OptunaSearch`` and Tune's defaults.

Ray starts once before the Ray arms (``init_ray(num_cpus=2)``), so its startup counts in no
arm; everything after it (Tune's trial actors included) does. The figure is each sweep's wall
time over plain Optuna's for the same trials (issue #6: <= 1.15x at 100 ms, <= 1.03x at 1 s).

    .venv/bin/python benchmarks/sweep_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from morphtune.runner import init_ray, run_sweep
from morphtune.spec import parse_spec
from morphtune.store import SweepStore

LOW_LR, HIGH_LR = 1e-4, 1e-1


@dataclass(frozen=True)
class Case:
    """One row of the benchmark: ``trials`` trials of ``seconds`` each, and its goal."""

    label: str
    trials: int
    seconds: float
    goal: float


def spec_text(name: str, trials: int) -> str:
    return f"""
name: {name}
dataset: {{name: digits}}
model: {{width: 64, depth: 2}}
training: {{epochs: 1, batch_size: 64, lr: 0.003}}
search:
  num_samples: {trials}
  max_concurrent: 2
  sampler: {{name: tpe, seed: 0}}
  scheduler: {{name: fifo}}
  space:
    training.lr: {{type: float, low: {LOW_LR}, high: {HIGH_LR}, log: true}}
"""


def arm_optuna(case: Case) -> float:
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("training.lr", LOW_LR, HIGH_LR, log=True)
        time.sleep(case.seconds)
        return lr

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    started = time.perf_counter()
    study.optimize(objective, n_trials=case.trials, n_jobs=2)
    wall = time.perf_counter() - started
    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    if done != case.trials:
        raise RuntimeError(f"plain Optuna completed {done} of {case.trials} trials")
    return wall


def sleeper(seconds: float) -> Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None]:
    def trial_fn(trial: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> None:
        time.sleep(seconds)
        report({"val_acc": float(trial["training"]["lr"])})

    return trial_fn


def arm_morphtune(case: Case) -> float:
    spec = parse_spec(spec_text(f"p1-{case.label}", case.trials))
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        outcome = run_sweep(spec, results_root=root, trial_fn=sleeper(case.seconds))
        wall = time.perf_counter() - started
        rows = SweepStore(root).results(outcome.sweep_id).num_rows
    if outcome.trial_states.get("completed") != case.trials or rows != case.trials:
        raise RuntimeError(
            f"morphtune completed {outcome.trial_states} with {rows} result rows, "
            f"expected {case.trials} of each"
        )
    return wall


def arm_bare_tune(case: Case) -> float:
    seconds = case.seconds

    def trainable(config: dict[str, Any]) -> None:
        time.sleep(seconds)
        tune.report({"val_acc": float(config["lr"])})

    searcher = OptunaSearch(
        space={"lr": optuna.distributions.FloatDistribution(LOW_LR, HIGH_LR, log=True)},
        metric="val_acc",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        grid = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=case.trials, max_concurrent_trials=2
            ),
            run_config=tune.RunConfig(storage_path=root, name="bare", verbose=0),
        ).fit()
        wall = time.perf_counter() - started
    if grid.num_errors or len(grid) != case.trials:
        raise RuntimeError(f"bare Ray Tune ran {len(grid)} trials with {grid.num_errors} errors")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 x 100 ms and 10 x 1 s trials")
    parser.add_argument("--no-tune", action="store_true", help="skip the bare Ray Tune arm")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scale = 5 if args.quick else 1
    cases = [
        Case("100ms", 200 // scale, 0.1, 1.15),
        Case("1s", 50 // scale, 1.0, 1.03),
    ]
    walls: dict[str, dict[str, float]] = {}
    for case in cases:
        walls[case.label] = {"optuna": arm_optuna(case)}
    init_ray(num_cpus=2)
    try:
        for case in cases:
            walls[case.label]["morphtune"] = arm_morphtune(case)
            if not args.no_tune:
                walls[case.label]["tune"] = arm_bare_tune(case)
    finally:
        ray.shutdown()

    print("P1 sweep overhead, 2 trials at a time, 2 CPUs (Ray startup excluded)")
    print(f"{'trials':>14} {'ideal s':>8} {'Optuna s':>9} {'morphtune s':>12} {'ratio':>6}", end="")
    print(f" {'bare Tune s':>12} {'ratio':>6}" if not args.no_tune else "")
    for case in cases:
        row = walls[case.label]
        ideal = case.trials * case.seconds / 2
        line = (
            f"{case.trials:>5} x {case.label:>6} {ideal:8.1f} {row['optuna']:9.2f} "
            f"{row['morphtune']:12.2f} {row['morphtune'] / row['optuna']:5.2f}x"
        )
        if "tune" in row:
            line += f" {row['tune']:12.2f} {row['tune'] / row['optuna']:5.2f}x"
        print(line)
    for case in cases:
        ratio = walls[case.label]["morphtune"] / walls[case.label]["optuna"]
        verdict = "PASS" if ratio <= case.goal else "FAIL"
        print(f"RESULT P1 ratio_{case.label}={ratio:.2f} goal=<={case.goal} {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
