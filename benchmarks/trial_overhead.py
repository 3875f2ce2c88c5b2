"""P0 trial overhead: the same trials through morphtune, bare Ray Tune, and plain Optuna.

Every arm trains the same fixed configurations (digits MLP, the same epochs) with the same
engine, two at a time, on one machine:

- **morphtune**: `run_sweep` (Ray Tune trial -> Ray Train TorchTrainer -> Parquet store);
- **bare Ray Tune**: a Tune function trainable that calls the engine directly
  (no Ray Train, no store), with `tune.report` each epoch;
- **plain Optuna**: `study.optimize(n_jobs=2)` calling the engine in-process.

It prints the wall time of each arm, the ratios, and one RESULT line per figure.

    .venv/bin/python benchmarks/trial_overhead.py [--trials 6] [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import optuna
import ray
from ray import tune

from morphtune.data import load_dataset
from morphtune.runner import init_ray, run_sweep
from morphtune.spec import parse_spec, resolve_trial_config
from morphtune.trainables import TrialEngine

GOAL_RATIO = 1.15  # the sweep-overhead goal the searchers issue sets for its P1 benchmark


def spec_text(trials: int, epochs: int) -> str:
    return f"""
name: bench-overhead
dataset: {{name: digits}}
model: {{width: 64, depth: 2}}
training: {{epochs: {epochs}, batch_size: 64, lr: 0.003}}
search:
  num_samples: {trials}
  max_concurrent: 2
  sampler: {{name: random, seed: 0}}
  scheduler: {{name: fifo}}
  space:
    model.width: {{type: categorical, choices: [32, 64, 128]}}
"""


def train_once(trial: dict[str, Any], report: Any = None) -> float:
    data = load_dataset("digits", seed=0)
    acc = 0.0
    for metrics in TrialEngine(trial, data).run_epochs():
        acc = metrics["val_acc"]
        if report is not None:
            report({"val_acc": acc})
    return acc


def arm_morphtune(text: str) -> float:
    spec = parse_spec(text)
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        outcome = run_sweep(spec, results_root=root)
        wall = time.perf_counter() - started
    if outcome.trial_states.get("completed") != spec.search.num_samples:
        raise RuntimeError(f"morphtune arm did not complete every trial: {outcome.trial_states}")
    return wall


def arm_bare_tune(text: str) -> float:
    spec = parse_spec(text)

    def trainable(config: dict[str, Any]) -> None:
        train_once(resolve_trial_config(spec, config), report=tune.report)

    searcher = tune.search.optuna.OptunaSearch(
        space={"model.width": tune.choice([32, 64, 128])},
        metric="val_acc",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=spec.search.num_samples,
                max_concurrent_trials=2,
            ),
            run_config=tune.RunConfig(storage_path=root, name="bare", verbose=0),
        )
        grid = tuner.fit()
        wall = time.perf_counter() - started
    if grid.num_errors:
        raise RuntimeError("bare Ray Tune arm had errors")
    return wall


def arm_optuna(text: str) -> float:
    spec = parse_spec(text)

    def objective(trial: optuna.Trial) -> float:
        width = trial.suggest_categorical("model.width", [32, 64, 128])
        return train_once(resolve_trial_config(spec, {"model.width": width}))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    started = time.perf_counter()
    study.optimize(objective, n_trials=spec.search.num_samples, n_jobs=2)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    text = spec_text(args.trials, args.epochs)

    import torch

    torch.set_num_threads(1)  # each arm runs two trials on two cores
    optuna_s = arm_optuna(text)
    init_ray(num_cpus=2)
    try:
        bare_s = arm_bare_tune(text)
        ours_s = arm_morphtune(text)
    finally:
        ray.shutdown()

    per_trial = (ours_s - optuna_s) / args.trials
    print(f"{args.trials} trials x {args.epochs} epochs, digits MLP, 2 at a time, 2 CPUs")
    print(f"  plain Optuna (n_jobs=2)      {optuna_s:8.1f} s")
    print(f"  bare Ray Tune (function)     {bare_s:8.1f} s   {bare_s / optuna_s:5.2f}x Optuna")
    print(
        f"  morphtune (Tune + Train)     {ours_s:8.1f} s   {ours_s / optuna_s:5.2f}x Optuna, "
        f"{ours_s / bare_s:5.2f}x bare Tune"
    )
    print(f"  morphtune overhead per trial {per_trial:8.1f} s over plain Optuna")
    ratio_optuna = ours_s / optuna_s
    ratio_tune = ours_s / bare_s
    for figure, value in (("ratio_vs_optuna", ratio_optuna), ("ratio_vs_bare_tune", ratio_tune)):
        verdict = "PASS" if value <= GOAL_RATIO else "FAIL"
        print(f"RESULT P0 {figure}={value:.2f} goal=<={GOAL_RATIO} {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
