"""A Ray Train worker killed after a growth event: the trial restarts its worker group from
the last checkpoint, rebuilds the grown model and finishes (Ray Train ``max_failures``)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from morphtune.runner import run_sweep
from morphtune.spec import parse_spec
from morphtune.store import StoreError, SweepStore

pytestmark = pytest.mark.ray

SPEC = """
name: resume-growth
dataset: {name: digits}
model: {family: vit, width: 16, depth: 1, head_dim: 8}
training: {epochs: 10, batch_size: 64, lr: 0.003}
growth: {operator: lemon, at_fraction: 0.15, factor: 1.5, depth_factor: 2.0, lr_after: lemon}
search: {num_samples: 1, max_concurrent: 1, scheduler: {name: fifo}}
resources: {num_workers: 2, cpus_per_worker: 1, max_failures: 2}
"""


def reported(root: Path) -> list[dict[str, Any]]:
    try:
        rows = SweepStore(root).results("resume-growth").to_pylist()
    except (StoreError, FileNotFoundError):
        return []
    return sorted((json.loads(row["metrics_json"]) for row in rows), key=lambda m: m["epoch"])


def train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], detail=True
    )
    return [int(actor.pid) for actor in actors]


def test_killed_worker_resumes_the_grown_model_from_its_checkpoint(
    ray_session: object, tmp_path: Path
) -> None:
    outcome: list[Any] = []
    runner = threading.Thread(
        target=lambda: outcome.append(run_sweep(parse_spec(SPEC), results_root=tmp_path))
    )
    runner.start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        metrics = reported(tmp_path)
        if metrics and metrics[-1]["growth_stage"] == 1 and metrics[-1]["epoch"] >= 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the trial never reported a grown epoch: {reported(tmp_path)}")
    killed_at = reported(tmp_path)[-1]["epoch"]
    assert killed_at < 10, "the trial finished before a worker could be killed"
    pids = train_worker_pids()
    assert len(pids) == 2
    os.kill(pids[-1], signal.SIGKILL)
    # Ray Train starts a new worker group (new processes) from the last checkpoint.
    restarted: set[int] = set()
    while runner.is_alive() and not restarted:
        restarted = set(train_worker_pids()) - set(pids)
        time.sleep(0.1)
    runner.join(timeout=300)
    assert not runner.is_alive()
    assert restarted, "no new worker process was started after the kill"

    assert outcome[0].trial_states.get("completed") == 1, SweepStore(tmp_path).trials(
        "resume-growth"
    )
    metrics = reported(tmp_path)
    assert [m["epoch"] for m in metrics] == list(range(1, 11))  # nothing lost, nothing twice
    after = [m for m in metrics if m["epoch"] > killed_at]
    # the restarted workers rebuilt the grown shape from the checkpoint and did not grow again
    assert all((m["width"], m["depth"], m["growth_stage"]) == (24, 2, 1) for m in after)
    assert all(m["rank_divergence"] == 0.0 for m in metrics)
    flops = [m["train_flops"] for m in metrics]
    assert flops == sorted(flops)
