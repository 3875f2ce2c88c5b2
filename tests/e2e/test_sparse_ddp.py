"""Dynamic sparse training inside 2-worker Ray Train trials: every rank computes the
same mask updates (no entry differs from rank 0's before the guard broadcast), weights
and masks stay identical, and the density stays exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from morphtune.cli import main
from morphtune.methods.sparsity import MaskSet, load_sparse
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


def test_two_worker_rigl_trial_keeps_masks_identical(ray_session: object, tmp_path: Path) -> None:
    metrics = run_one(
        """
name: ddp-rigl
dataset: {name: digits}
model: {family: mlp, width: 48}
training: {epochs: 4, batch_size: 64, lr: 0.01}
sparsity: {method: rigl, density: 0.3, distribution: erk, update_interval: 8, end_fraction: 0.75}
search: {num_samples: 1, max_concurrent: 1, scheduler: {name: fifo}}
resources: {num_workers: 2, cpus_per_worker: 1}
""",
        tmp_path,
    )
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    updates = [m["mask_updates"] for m in metrics]
    assert updates[0] > 0 and updates == sorted(updates) and updates[-1] > updates[0]
    assert all(m["mask_sync_mismatches"] == 0 for m in metrics)
    assert all(m["rank_divergence"] == 0.0 for m in metrics)  # weights and masks
    assert all(abs(m["density"] - 0.3) < 1e-3 for m in metrics)
    assert metrics[-1]["val_acc"] > max(0.6, metrics[0]["val_acc"])

    # the CLI exports the best trial's checkpoint as a sparse file that loads back exactly
    out = tmp_path / "best.msparse"
    assert main(["export", "--best", "ddp-rigl", "--results", str(tmp_path), "-o", str(out)]) == 0
    model = load_sparse(out)
    masks = MaskSet.from_model(model)
    assert abs(masks.density() - 0.3) < 1e-3
    assert (
        main(["export", "--best", "no-such-sweep", "--results", str(tmp_path), "-o", str(out)]) == 2
    )


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
