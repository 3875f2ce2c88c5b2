"""End to end through every layer: YAML -> Ray Tune + Train -> Parquet -> gRPC -> client.

One Ray runtime for the session (``ray_session``); a real gRPC server on a free loopback
port, in-process; real Parquet files under tmp_path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest

from morphtune.runner import SweepExistsError, run_sweep
from morphtune.service import SweepClient, make_server
from morphtune.spec import parse_spec
from morphtune.store import SweepStore

pytestmark = pytest.mark.ray

SWEEP = """
name: e2e
dataset: {name: synthetic}
model: {width: 16, depth: 1}
training: {epochs: 3, batch_size: 64, lr: 0.02}
search:
  objective: {metric: val_acc, mode: max}
  num_samples: 5
  max_concurrent: 2
  sampler: {name: random, seed: 6}  # draws synthetic and mnist (which fails)
  scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
  space:
    training.lr: {type: float, low: 0.005, high: 0.05, log: true}
    dataset.name: {type: categorical, choices: [synthetic, mnist]}
    sparsity.method: {type: categorical, choices: [none, magnitude]}
    sparsity.density: {type: float, low: 0.3, high: 0.8, when: {sparsity.method: [magnitude]}}
"""


@pytest.fixture(scope="module")
def sweep(ray_session: object, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("results")
    # 'mnist' without its files raises inside the trial: those trials must be recorded as
    # failed with their error while the sweep goes on
    outcome = run_sweep(parse_spec(SWEEP), results_root=root)
    return root, outcome


def test_sweep_runs_all_trials_and_records_failures(sweep: tuple[Path, object]) -> None:
    root, outcome = sweep
    store = SweepStore(root)
    states = store.trial_states("e2e")
    assert len(states) == 5
    assert set(states.values()) <= {"completed", "stopped", "failed"}
    failed = [t for t in store.trials("e2e") if t.status == "failed"]
    ok = [t for t in store.trials("e2e") if t.status != "failed"]
    assert failed, "the seeded space draws mnist at least once"
    assert ok, "and synthetic at least once"
    for trial in failed:
        assert trial.config["dataset.name"] == "mnist"
        assert (trial.error or "").startswith("ValueError: dataset 'mnist' needs the option root")
    for trial in ok:
        assert trial.config["dataset.name"] == "synthetic"
    assert outcome.trial_states == store.trial_counts("e2e")


def test_parquet_rows_are_unique_and_complete(sweep: tuple[Path, object]) -> None:
    root, _ = sweep
    parts = sorted((root / "e2e" / "results").glob("part-*.parquet"))
    assert parts
    table = pq.ParquetDataset([str(p) for p in parts]).read()
    keys = list(zip(table["trial_id"].to_pylist(), table["iteration"].to_pylist(), strict=True))
    assert len(keys) == len(set(keys))
    store = SweepStore(root)
    for trial in store.trials("e2e"):
        if trial.status == "completed":
            iterations = sorted(i for t, i in keys if t == trial.trial_id)
            assert iterations == [1, 2, 3]
    manifest = store.manifest("e2e")
    assert manifest["status"] == "completed"
    assert manifest["objective"] == {"metric": "val_acc", "mode": "max"}
    assert manifest["spec"]["search"]["num_samples"] == 5
    assert not list((root / "e2e").rglob("*.tmp"))


def test_reported_metrics_are_real(sweep: tuple[Path, object]) -> None:
    root, _ = sweep
    table = SweepStore(root).results("e2e")
    rows = table.to_pylist()
    for row in rows:
        metrics = json.loads(row["metrics_json"])
        for key in ("val_acc", "val_loss", "params", "flops", "density", "width", "train_flops"):
            assert key in metrics
        assert 0.0 <= metrics["val_acc"] <= 1.0
        config = json.loads(row["config_json"])
        if config["sparsity.method"] == "magnitude":
            assert abs(metrics["density"] - config["sparsity.density"]) < 0.02
        else:
            assert metrics["density"] == 1.0
    best_acc = max(json.loads(r["metrics_json"])["val_acc"] for r in rows)
    assert best_acc > 0.8  # training really learned the synthetic task


def test_best_config_over_grpc_matches_the_store(sweep: tuple[Path, object]) -> None:
    root, outcome = sweep
    expected = SweepStore(root).best("e2e")
    server, port = make_server(root, port=0)
    server.start()
    try:
        with SweepClient(f"127.0.0.1:{port}", timeout=10) as client:
            assert client.health() == "SERVING"
            best = client.best("e2e")
            assert best["trial_id"] == expected.trial_id
            assert math.isclose(best["value"], expected.value)
            assert best["config"] == expected.config
            assert best["config"]["dataset.name"] == "synthetic"
            with pytest.raises(grpc.RpcError) as info:
                client.best("no-such-sweep")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "no-such-sweep" in info.value.details()
            assert client.best("e2e")["trial_id"] == expected.trial_id  # still serving
    finally:
        server.stop(grace=None)
    assert outcome.best is not None and outcome.best["trial_id"] == expected.trial_id


def test_existing_sweep_is_not_overwritten_silently(sweep: tuple[Path, object]) -> None:
    root, _ = sweep
    with pytest.raises(SweepExistsError, match="e2e"):
        run_sweep(parse_spec(SWEEP), results_root=root)


def test_two_worker_ddp_trial_grows_and_keeps_ranks_identical(
    ray_session: object, tmp_path: Path
) -> None:
    spec = parse_spec(
        """
name: ddp
dataset: {name: synthetic}
model: {width: 8, depth: 2}
training: {epochs: 3, batch_size: 64, lr: 0.02}
growth: {operator: net2net, at_fraction: 0.5, factor: 2.0}
sparsity: {method: magnitude, density: 0.5}
search: {num_samples: 1, max_concurrent: 1, scheduler: {name: fifo}}
resources: {num_workers: 2, cpus_per_worker: 1}
"""
    )
    outcome = run_sweep(spec, results_root=tmp_path)
    store = SweepStore(tmp_path)
    assert outcome.trial_states.get("completed") == 1, store.trials("ddp")
    rows = sorted(store.results("ddp").to_pylist(), key=lambda row: row["iteration"])
    metrics = [json.loads(row["metrics_json"]) for row in rows]
    assert [m["width"] for m in metrics] == [8, 16, 16]  # grown in epoch 2 (step 50%)
    assert all(m["rank_divergence"] == 0.0 for m in metrics)
    assert all(abs(m["density"] - 0.5) < 0.02 for m in metrics)
    assert metrics[-1]["checkpoint_path"]


def test_two_worker_lemon_vit_grows_wider_and_deeper_and_resumes_from_its_checkpoint(
    ray_session: object, tmp_path: Path
) -> None:
    """LEMON on a ViT inside a 2-worker DDP trial: the optimizer is rebuilt, DDP re-wrapped,
    the ranks stay identical, and the checkpoint written after growth rebuilds the grown
    model exactly (a resumed trial continues from the same function)."""
    import torch

    from morphtune.data import load_dataset
    from morphtune.spec import resolve_trial_config
    from morphtune.trainables import TrialEngine
    from morphtune.trainables._loop import CHECKPOINT_FILE

    spec = parse_spec(
        """
name: ddp-lemon
dataset: {name: digits}
model: {family: vit, width: 16, depth: 1, head_dim: 8}
training: {epochs: 3, batch_size: 64, lr: 0.003}
growth: {operator: lemon, at_fraction: 0.5, factor: 1.5, depth_factor: 2.0, lr_after: lemon}
search: {num_samples: 1, max_concurrent: 1, scheduler: {name: fifo}}
resources: {num_workers: 2, cpus_per_worker: 1}
"""
    )
    outcome = run_sweep(spec, results_root=tmp_path)
    store = SweepStore(tmp_path)
    assert outcome.trial_states.get("completed") == 1, store.trials("ddp-lemon")
    rows = sorted(store.results("ddp-lemon").to_pylist(), key=lambda row: row["iteration"])
    metrics = [json.loads(row["metrics_json"]) for row in rows]
    assert [(m["width"], m["depth"]) for m in metrics] == [(16, 1), (24, 2), (24, 2)]
    assert [m["growth_stage"] for m in metrics] == [0, 1, 1]
    assert all(m["rank_divergence"] == 0.0 for m in metrics)
    flops = [m["train_flops"] for m in metrics]
    assert flops == sorted(flops) and flops[2] - flops[1] > flops[0]  # bigger model, more FLOPs

    checkpoint = Path(metrics[-1]["checkpoint_path"]) / CHECKPOINT_FILE
    state = torch.load(checkpoint, weights_only=False)
    trial = resolve_trial_config(spec, {})
    fresh = TrialEngine(trial, load_dataset("digits"))
    assert fresh.model_config.width == 16
    fresh.load_state_dict(state)
    assert (fresh.model_config.width, fresh.model_config.depth) == (24, 2)
    val_loss, val_acc = fresh.evaluate()
    assert val_loss == pytest.approx(metrics[-1]["val_loss"], rel=1e-6)
    assert val_acc == metrics[-1]["val_acc"]
