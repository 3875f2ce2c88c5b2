"""A multi-objective sweep written through the real writer, for the API and query tests.

Sweep ``mo``: 24 trials x 3 iterations (some trials stop early), objectives ``acc`` (max) and
``params`` (min), plus ``loss``, ``density`` (a signal column) and config ``lr``,
``model.width`` and ``model.family`` (text). Trial ``t05`` failed, ``t07`` reports NaN accuracy
at its last iteration, ``t09`` has no status record. Values are seeded, so every test sees the
same rows; tests compare answers with brute force over ``SweepStore.results``.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from morphtune.store import ResultWriter

SWEEP = "mo"
TRIALS = [f"t{index:02d}" for index in range(24)]
FAILED = "t05"
NAN_LAST = "t07"
NO_RECORD = "t09"


def trial_config(index: int) -> dict[str, Any]:
    return {
        "lr": round(0.001 * (1 + index % 5), 4),
        "model": {"family": "mlp" if index % 3 else "cnn", "width": 16 * (1 + index % 4)},
    }


def trial_rows(index: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(index)
    trial_id = TRIALS[index]
    iterations = 2 if index % 4 == 3 else 3
    rows = []
    for iteration in range(1, iterations + 1):
        acc = float(np.round(rng.uniform(0.5, 0.99), 3))
        if trial_id == NAN_LAST and iteration == iterations:
            acc = math.nan
        rows.append(
            {
                "trial_id": trial_id,
                "iteration": iteration,
                "status": "running",
                "config": trial_config(index),
                "metrics": {
                    "acc": acc,
                    "loss": float(np.round(rng.uniform(0.1, 2.0), 3)),
                    "params": float(1000 * (1 + index % 6) * iteration),
                    "density": float(np.round(1.0 - 0.1 * (index % 7), 2)),
                },
            }
        )
    return rows


def write_mo_sweep(root: str | os.PathLike[str], sweep_id: str = SWEEP) -> ResultWriter:
    writer = ResultWriter(root, sweep_id)
    writer.write_manifest(
        {
            "name": "multi-objective test sweep",
            "objective": {"metric": "acc", "mode": "max"},
            "objectives": [{"metric": "acc", "mode": "max"}, {"metric": "params", "mode": "min"}],
            "status": "running",
        }
    )
    all_rows = [trial_rows(index) for index in range(len(TRIALS))]
    for iteration in (1, 2, 3):  # one batch per iteration, as a driver would write them
        batch = [rows[iteration - 1] for rows in all_rows if len(rows) >= iteration]
        writer.write_results(batch)
    for index, trial_id in enumerate(TRIALS):
        if trial_id == NO_RECORD:
            continue
        state = "failed" if trial_id == FAILED else "completed"
        writer.write_trial(
            trial_id,
            state,
            config=trial_config(index),
            error="diverged" if state == "failed" else None,
            last_iteration=len(all_rows[index]),
        )
    return writer
