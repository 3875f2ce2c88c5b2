"""Balanced sparse GAN training inside a 2-worker Ray Train trial: both ranks adapt the
densities identically, weights and masks stay identical, and the density stays exact.
(RigL/SET in a 2-worker trial: tests/e2e/test_examples_run.py, on examples/sparsity-rigl.yaml.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from morphtune.runner import run_sweep
from morphtune.spec import parse_spec
from morphtune.store import SweepStore

pytestmark = pytest.mark.ray


def run_one(spec_text: str, root: Path) -> list[dict]:
    spec = parse_spec(spec_text)
    outcome = run_sweep(spec, results_root=root)
    store = SweepStore(root)
    assert outcome.trial_states.get("completed") == 1, store.trials(spec.name)
    rows = sorted(store.results(spec.name).to_pylist(), key=lambda row: row["iteration"])
    # rank 0 of the 2-worker Ray Train trial reported them, from this (only) node
    assert {row["node_id"] for row in rows} == {ray.get_runtime_context().get_node_id()}
    return [json.loads(row["metrics_json"]) for row in rows]


def test_two_worker_sparse_gan_adapts_densities_identically(
    ray_session: object, tmp_path: Path
) -> None:
    metrics = run_one(
        """
name: ddp-gan
dataset: {name: gaussian_mixture}
model: {family: gan, width: 64, depth: 2}
training: {epochs: 2, batch_size: 128, lr: 0.001}
sparsity:
  method: gan_double
  density: 0.3
  d_density: 0.3
  update_interval: 5
  d_interval: 10
search: {num_samples: 1, max_concurrent: 1, objective: {metric: fd}, scheduler: {name: fifo}}
resources: {num_workers: 2, cpus_per_worker: 1}
""",
        tmp_path,
    )
    assert all(m["rank_divergence"] == 0.0 for m in metrics)
    assert all(abs(m["density"] - 0.3) < 1e-2 for m in metrics)
    assert all(0.05 <= m["d_density"] <= 1.0 for m in metrics)
