"""A small sweep written through the real writer, shared by store, service and metrics tests.

Objective: ``acc``, max. Per trial (iterations 1, 2):

======  ==========  =========  ==========================================
trial   acc         status     why it is there
======  ==========  =========  ==========================================
t0      0.5, 0.8    completed  best by last report (0.8); min over all
t1      0.9, 0.6    completed  best over all iterations; min by last
t2      0.7, NaN    stopped    NaN last report disqualifies it for "last"
t3      0.99        failed     would win, but failed trials are skipped
t4      0.75, inf   running    inf ignored; no status record at all
======  ==========  =========  ==========================================
"""

from __future__ import annotations

import math
import os
from typing import Any

from morphtune.store import ResultWriter
from morphtune.store._location import Location

SWEEP = "demo"
ACC = {
    "t0": [0.5, 0.8],
    "t1": [0.9, 0.6],
    "t2": [0.7, math.nan],
    "t3": [0.99],
    "t4": [0.75, math.inf],
}
STATES = {"t0": "completed", "t1": "completed", "t2": "stopped", "t3": "failed"}
COUNTS = {"running": 1, "completed": 2, "failed": 1, "stopped": 1}


def config_of(trial_id: str) -> dict[str, Any]:
    index = int(trial_id[1:]) if trial_id[1:].isdigit() else 0
    return {"lr": 0.01 * (index + 1), "model": {"family": "mlp", "width": 32 * (index + 1)}}


def row(
    trial_id: str,
    iteration: int,
    metrics: dict[str, Any],
    config: dict[str, Any] | None = None,
    status: str = "running",
) -> dict[str, Any]:
    return {
        "trial_id": trial_id,
        "iteration": iteration,
        "status": status,
        "config": config_of(trial_id) if config is None else config,
        "metrics": metrics,
    }


def write_demo_sweep(
    root: str | os.PathLike[str] | Location, sweep_id: str = SWEEP
) -> ResultWriter:
    writer = ResultWriter(root, sweep_id)
    writer.write_manifest(
        {
            "name": "demo sweep",
            "objective": {"metric": "acc", "mode": "max"},
            "spec": {"model": "mlp", "budget": {"iterations": 2}},
            "status": "running",
        }
    )
    for iteration in (1, 2):
        writer.write_results(
            [
                row(trial_id, iteration, {"acc": values[iteration - 1], "loss": 1.0 / iteration})
                for trial_id, values in ACC.items()
                if len(values) >= iteration
            ]
        )
    for trial_id, state in STATES.items():
        writer.write_trial(
            trial_id,
            state,
            config=config_of(trial_id),
            error="diverged" if state == "failed" else None,
            last_iteration=len(ACC[trial_id]),
        )
    return writer
