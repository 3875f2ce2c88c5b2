"""P5 results store: ingest rate, and the best-of-1M query against a pandas full scan.

Builds one sweep of ``--trials`` x ``--iterations`` result rows (default 2000 x 500 = 1M):
each trial has a config of four values (``lr``, ``model.family``, ``model.width``,
``optimizer``) and reports six metrics per iteration (``val_acc``, ``val_loss``, ``params``,
``flops``, ``density``, ``wall_s``; the store adds the ``cost.*``/``signal.*`` copies).
Batches are what a busy sweep's callback flushes: one report from every trial
(``--batch-rows``, default one iteration of all trials). Trials get a ``running`` record at
the start and a ``completed`` (2% ``failed``) one at the end, as the Tune callback writes.

Figures:

(a) ingest rows/s through ``ResultWriter.write_columns`` (the bulk path; every part
    written, fsynced and renamed), and for reference the row-dict ``write_results`` path on
    a slice of the same data;
(b) ``SweepStore.best(sweep, "val_acc", "max", scope)`` for scope ``all`` and ``last`` on
    the compacted sweep, against the peer in the same run: ``pd.read_parquet`` of the results
    (and trials) directory, failed trials dropped, ``idxmax`` (answers must agree):

    * **cold**: a new ``SweepStore`` (nothing cached), the honest first-query figure:
      ``scope=all`` reads the parts' row-group statistics, ``scope=last`` the side index
      that compaction wrote (``last_rows.parquet``), then the trial records and the
      winner's row group;
    * **warm**: the same store asked again while nothing changed (fingerprint check, i.e. a
      directory listing, then the cached answer);
    * **after append**: one more batch written, then asked (reads only the new part).

Goals (issue #7): best query >= 25x faster than the pandas scan, ingest >= 100,000 rows/s.
The query goal is judged three ways, one RESULT line each: warm (the slower of the two
scopes; what a service answering repeated queries sees), cold ``scope=all`` and cold
``scope=last`` (a fresh reader's first query).

    .venv/bin/python benchmarks/store_query.py [--quick] [--root DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from morphtune.store import BestResult, ResultWriter, SweepStore

SWEEP = "p5"
SPEEDUP_GOAL = 25.0
INGEST_GOAL = 100_000.0


def timed(function: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """(median seconds over ``repeat`` calls, last result)."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


class Data:
    """Deterministic sweep data, generated column-wise per iteration."""

    def __init__(self, trials: int, iterations: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.trials, self.iterations = trials, iterations
        self.trial_ids = pa.array([f"trial-{index:05d}" for index in range(trials)])
        self.config = {
            "lr": pa.array(10 ** rng.uniform(-4, -1, trials)),
            "model.family": pa.array(rng.choice(["mlp", "cnn", "vit"], trials)),
            "model.width": pa.array(rng.choice([32, 64, 128, 256], trials).astype(np.float64)),
            "optimizer": pa.array(rng.choice(["adamw", "sgd"], trials)),
        }
        self.ceiling = rng.uniform(0.5, 0.95, trials)  # each trial's final accuracy
        self.params = rng.integers(10_000, 5_000_000, trials).astype(np.float64)
        self.noise = np.random.default_rng(seed + 1)

    def metrics(self, iteration: int) -> dict[str, np.ndarray]:
        progress = 1.0 - np.exp(-(iteration + 1) / (0.2 * self.iterations))
        accuracy = self.ceiling * progress + self.noise.normal(0, 0.01, self.trials)
        return {
            "val_acc": accuracy,
            "val_loss": 2.5 * (1.0 - accuracy) + self.noise.normal(0, 0.01, self.trials),
            "params": self.params,
            "flops": 2.0 * self.params,
            "density": np.full(self.trials, 1.0 - 0.5 * iteration / self.iterations),
            "wall_s": np.full(self.trials, 1.5 * (iteration + 1)),
        }

    def rows(self, iteration: int) -> list[dict[str, Any]]:
        metrics = self.metrics(iteration)
        configs = [
            {
                "lr": self.config["lr"][index].as_py(),
                "model": {
                    "family": self.config["model.family"][index].as_py(),
                    "width": int(self.config["model.width"][index].as_py()),
                },
                "optimizer": self.config["optimizer"][index].as_py(),
            }
            for index in range(self.trials)
        ]
        return [
            {
                "trial_id": self.trial_ids[index].as_py(),
                "iteration": iteration,
                "status": "running",
                "config": configs[index],
                "metrics": {name: float(values[index]) for name, values in metrics.items()},
            }
            for index in range(self.trials)
        ]


def ingest(root: Path, data: Data, batch_rows: int) -> tuple[float, float, list[str]]:
    """Write the sweep; return (seconds in write_columns, rows written, failed trials)."""
    writer = ResultWriter(root, SWEEP)
    writer.write_manifest(
        {"objective": {"metric": "val_acc", "mode": "max"}, "spec": {"benchmark": "P5"}}
    )
    trial_ids = data.trial_ids.to_pylist()
    for trial_id in trial_ids:
        writer.write_trial(trial_id, "running", config={})
    per_batch = max(1, batch_rows // data.trials)
    seconds, rows = 0.0, 0
    for first in range(0, data.iterations, per_batch):
        steps = range(first, min(first + per_batch, data.iterations))
        metrics = [data.metrics(step) for step in steps]
        columns = {name: np.concatenate([m[name] for m in metrics]) for name in metrics[0]}
        trial_column = pa.concat_arrays([data.trial_ids] * len(steps))
        config = {
            name: pa.concat_arrays([array] * len(steps)) for name, array in data.config.items()
        }
        iterations = np.repeat(np.asarray(steps, dtype=np.int64), data.trials)
        started = time.perf_counter()
        rows += writer.write_columns(trial_column, iterations, metrics=columns, config=config)
        seconds += time.perf_counter() - started
    failed = trial_ids[::50]
    for trial_id in trial_ids:
        if trial_id in failed:
            writer.write_trial(trial_id, "failed", config={}, error="diverged")
        else:
            writer.write_trial(trial_id, "completed", config={}, last_iteration=data.iterations)
    return seconds, rows, failed


def row_path_rate(data: Data, iterations: int) -> float:
    """Rows/s of ``write_results`` (row dicts) on the first ``iterations`` of the data."""
    with tempfile.TemporaryDirectory() as directory:
        writer = ResultWriter(directory, SWEEP)
        batches = [data.rows(step) for step in range(iterations)]
        started = time.perf_counter()
        rows = sum(writer.write_results(batch) for batch in batches)
        return rows / (time.perf_counter() - started)


def pandas_best(root: Path, scope: str) -> tuple[str, int, float]:
    results = pd.read_parquet(root / SWEEP / "results")
    records = pd.read_parquet(root / SWEEP / "trials")
    latest = records.groupby("trial_id", sort=False)["status"].last()
    failed = set(latest.index[latest == "failed"])
    frame = results[~results["trial_id"].isin(failed)]
    if scope == "last":
        frame = frame.loc[frame.groupby("trial_id")["iteration"].idxmax()]
    row = frame.loc[frame["metrics.val_acc"].idxmax()]
    return str(row["trial_id"]), int(row["iteration"]), float(row["metrics.val_acc"])


def key(best: BestResult) -> tuple[str, int, float]:
    return best.trial_id, best.iteration, best.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 trials x 100 iterations")
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--batch-rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--root", type=Path, default=None, help="store root (default: a temp dir)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.iterations, args.repeat = 200, 100, 3
    data = Data(args.trials, args.iterations)
    total = args.trials * args.iterations

    with tempfile.TemporaryDirectory() as scratch:
        root = args.root or Path(scratch)
        print(f"P5 store: {args.trials} trials x {args.iterations} iterations = {total:,} rows")
        seconds, rows, failed = ingest(root, data, args.batch_rows)
        if rows != total:
            raise SystemExit(f"ingest wrote {rows} rows, expected {total}")
        ingest_rate = rows / seconds
        parts = len(list((root / SWEEP / "results").glob("part-*.parquet")))
        print(f"    {len(failed)} of {args.trials} trials failed (skipped by both queries)")
        slice_iterations = max(1, min(args.iterations, 50_000 // args.trials))
        rows_rate = row_path_rate(data, slice_iterations)
        print(
            f"(a) ingest write_columns: {ingest_rate:,.0f} rows/s ({rows:,} rows in {parts} "
            f"parts, {seconds:.2f} s); row-dict write_results: {rows_rate:,.0f} rows/s "
            f"({rows_rate / ingest_rate:.2f}x) on {slice_iterations * args.trials:,} rows"
        )
        uncompacted_cold, _ = timed(lambda: SweepStore(root).best(SWEEP, scope="all"))
        compact_s, removed = timed(lambda: ResultWriter(root, SWEEP).compact())
        size = sum(path.stat().st_size for path in (root / SWEEP).rglob("part-*.parquet"))
        print(
            f"    cold best over {parts} uncompacted parts: {uncompacted_cold * 1e3:.0f} ms; "
            f"compact: {compact_s:.2f} s ({removed} parts merged, {size / 2**20:.1f} MiB)"
        )

        speedups: dict[str, float] = {}
        cold_speedups: dict[str, float] = {}
        for scope in ("all", "last"):
            pandas_s, expected = timed(lambda s=scope: pandas_best(root, s), args.repeat)
            cold_s, cold = timed(lambda s=scope: SweepStore(root).best(SWEEP, scope=s), 3)
            store = SweepStore(root)
            store.best(SWEEP, scope=scope)
            warm_s, warm = timed(lambda s=scope, st=store: st.best(SWEEP, scope=s), 50)
            if key(cold) != expected or key(warm) != expected:
                raise SystemExit(f"answers differ: pandas {expected}, store {key(cold)}")
            speedups[scope] = pandas_s / warm_s
            cold_speedups[scope] = pandas_s / cold_s
            print(
                f"(b) best scope={scope}: pandas full scan {pandas_s * 1e3:.0f} ms | store "
                f"cold {cold_s * 1e3:.1f} ms ({pandas_s / cold_s:.1f}x), warm "
                f"{warm_s * 1e3:.2f} ms ({pandas_s / warm_s:.0f}x); answer {expected[0]} "
                f"it {expected[1]} val_acc {expected[2]:.4f}"
            )
        appended = ResultWriter(root, SWEEP)
        store = SweepStore(root)
        store.best(SWEEP, scope="all")
        extra = data.metrics(args.iterations)

        def append_then_query() -> BestResult:
            appended.write_columns(
                data.trial_ids,
                np.full(args.trials, args.iterations, dtype=np.int64),
                metrics=extra,
                config=data.config,
            )
            return store.best(SWEEP, scope="all")

        after_s, _ = timed(append_then_query)
        print(f"    after appending one batch (write + incremental query): {after_s * 1e3:.1f} ms")

    figures = {"best_query_speedup_warm": min(speedups.values())}
    figures.update({f"best_query_speedup_cold_{s}": v for s, v in cold_speedups.items()})
    for name, speedup in figures.items():
        print(
            f"RESULT P5 {name}={speedup:.1f} goal=>={SPEEDUP_GOAL:.0f} "
            f"{'PASS' if speedup >= SPEEDUP_GOAL else 'FAIL'}"
        )
    print(
        f"RESULT P5 ingest_rows_per_s={ingest_rate:.0f} goal=>={INGEST_GOAL:.0f} "
        f"{'PASS' if ingest_rate >= INGEST_GOAL else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
