"""P2 result throughput: trials that report 400 results per second, through morphtune and Tune.

Each trial reports ``--results`` results with a sleep of 1/400 s before each one, so it can
finish no sooner than ``results / 400`` seconds. The figure is how far over that minimum the
trial's report loop runs (measured inside the trial, from before its first sleep to after its
last report returns), in percent; ``--trials 2`` runs two such trials at once.

- **morphtune**: ``run_sweep`` with a ``trial_fn``; every result must land in the results
  store (the script checks the row count);
- **bare Ray Tune**: a function trainable with Tune's defaults.

Issue #6 goal: <= 10% over the minimum (Tune's defaults measured +145% there).

    .venv/bin/python benchmarks/result_throughput.py [--quick] [--trials 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from morphtune.runner import init_ray, run_sweep
from morphtune.spec import parse_spec
from morphtune.store import SweepStore

RATE = 400.0  # results per second
GOAL_PCT = 10.0


def spec_text(trials: int, results: int) -> str:
    return f"""
name: p2-throughput
dataset: {{name: digits}}
model: {{width: 64, depth: 2}}
training: {{epochs: {results}, batch_size: 64, lr: 0.003}}
search:
  num_samples: {trials}
  max_concurrent: {trials}
  sampler: {{name: random, seed: 0}}
  scheduler: {{name: fifo}}
  space:
    training.lr: {{type: float, low: 0.0001, high: 0.1, log: true}}
"""


def report_loop(results: int, report: Callable[[dict[str, Any]], None], log: Path) -> None:
    """Report ``results`` results at ``RATE`` per second; append the loop's wall time."""
    pause = 1.0 / RATE
    started = time.perf_counter()
    for step in range(results):
        time.sleep(pause)
        report({"val_acc": step / results})
    with log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"loop_s": time.perf_counter() - started}) + "\n")


def loop_times(log: Path) -> list[float]:
    return [json.loads(line)["loop_s"] for line in log.read_text().splitlines()]


def arm_morphtune(trials: int, results: int, work: Path) -> tuple[list[float], float]:
    log = work / "morphtune.jsonl"
    log.touch()

    def trial_fn(trial: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> None:
        report_loop(results, report, log)

    spec = parse_spec(spec_text(trials, results))
    started = time.perf_counter()
    outcome = run_sweep(spec, results_root=work / "store", trial_fn=trial_fn)
    wall = time.perf_counter() - started
    rows = SweepStore(work / "store").results(outcome.sweep_id).num_rows
    if rows != trials * results or outcome.trial_states.get("completed") != trials:
        raise RuntimeError(
            f"morphtune stored {rows} result rows ({outcome.trial_states}), expected "
            f"{trials * results} from {trials} completed trials"
        )
    return loop_times(log), wall


def arm_bare_tune(trials: int, results: int, work: Path) -> tuple[list[float], float]:
    log = work / "tune.jsonl"
    log.touch()

    def trainable(config: dict[str, Any]) -> None:
        report_loop(results, tune.report, log)

    started = time.perf_counter()
    grid = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=trials),
        run_config=tune.RunConfig(storage_path=str(work / "tune"), name="bare", verbose=0),
    ).fit()
    wall = time.perf_counter() - started
    if grid.num_errors:
        raise RuntimeError(f"bare Ray Tune had {grid.num_errors} errors")
    return loop_times(log), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=int, default=2000, help="results per trial")
    parser.add_argument("--trials", type=int, choices=(1, 2), default=1)
    parser.add_argument("--quick", action="store_true", help="400 results per trial")
    parser.add_argument("--no-tune", action="store_true", help="skip the bare Ray Tune arm")
    args = parser.parse_args()
    results = 400 if args.quick else args.results
    minimum = results / RATE
    init_ray(num_cpus=2)
    arms: dict[str, tuple[list[float], float]] = {}
    try:
        with tempfile.TemporaryDirectory() as work:
            arms["morphtune"] = arm_morphtune(args.trials, results, Path(work))
            if not args.no_tune:
                arms["bare Ray Tune"] = arm_bare_tune(args.trials, results, Path(work))
    finally:
        ray.shutdown()

    print(
        f"P2 result throughput: {args.trials} trial(s) x {results} results at {RATE:.0f}/s "
        f"(minimum {minimum:.2f} s per trial)"
    )
    print(f"{'arm':>14} {'loop s (max)':>13} {'over min':>9} {'sweep wall s':>13}")
    for name, (loops, wall) in arms.items():
        over = 100.0 * (max(loops) / minimum - 1.0)
        print(f"{name:>14} {max(loops):13.2f} {over:8.1f}% {wall:13.2f}")
    overhead = 100.0 * (max(arms["morphtune"][0]) / minimum - 1.0)
    verdict = "PASS" if overhead <= GOAL_PCT else "FAIL"
    print(f"RESULT P2 overhead_pct={overhead:.1f} goal=<={GOAL_PCT:g} {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
