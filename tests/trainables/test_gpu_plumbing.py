"""The GPU path's configuration, checked on the CPU: the spec's GPU knobs (``use_gpu``,
``gpus_per_worker``, ``precision``, ``pin_memory``, ``backend``) are validated and reach
Ray Train's configs and every engine; ``bf16`` really autocasts forward passes (here the
CPU's autocast) and still trains; and a real sweep's rows name the Ray node of each trial.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray.train
import torch
from torch import nn

from morphtune.data import load_dataset
from morphtune.runner import run_sweep
from morphtune.spec import SpecError, parse_spec, resolve_trial_config
from morphtune.store import SweepStore
from morphtune.trainables._device import DeviceSettings, trial_device
from morphtune.trainables._driver import make_torch_trainer
from morphtune.trainables._gan_engine import GanEngine
from morphtune.trainables._loop import make_engine
from morphtune.trainables._supernet_engine import SupernetEngine

SYNTHETIC = (
    "name: g\ndataset: {name: synthetic}\nmodel: {width: 16, depth: 1}\n"
    "training: {epochs: 3, lr: 0.01, batch_size: 32}\n"
)
SUPERNET = (
    "name: s\ndataset: {name: digits}\nmodel: {family: mlp, width: 32, depth: 2}\n"
    "training: {epochs: 2, batch_size: 64, lr: 0.005}\n"
    "supernet: {enabled: true, width_choices: [0.5, 1.0], depth_choices: [1, 2]}\n"
)
GAN = (
    "name: gan\ndataset: {name: gaussian_mixture}\nmodel: {family: gan, width: 32, depth: 2}\n"
    "training: {epochs: 2, batch_size: 64, lr: 0.001}\n"
    "sparsity: {method: gan_single, density: 0.5, update_interval: 10}\n"
    "search: {objective: {metric: fd, mode: min}}\n"
)


def resources(text: str) -> Any:
    return parse_spec(f"name: r\nresources: {text}\n").resources


def first_linear(module: nn.Module) -> nn.Linear:
    return next(layer for layer in module.modules() if isinstance(layer, nn.Linear))


def record_dtypes(module: nn.Module, *, layer: bool = True) -> list[torch.dtype]:
    """The dtype of every output of ``module``'s first linear layer (``layer=False``: of
    ``module`` itself) from now on."""
    seen: list[torch.dtype] = []

    def hook(_: nn.Module, __: Any, output: torch.Tensor) -> None:
        seen.append(output.dtype)

    (first_linear(module) if layer else module).register_forward_hook(hook)
    return seen


def trial_of(text: str) -> tuple[dict[str, Any], Any]:
    trial = resolve_trial_config(parse_spec(text), {})
    dataset = trial["dataset"]
    return trial, load_dataset(dataset["name"], seed=dataset["seed"])


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("text", "gpus", "backend", "pin_memory", "precision"),
    [
        ("{}", 0.0, "gloo", False, "fp32"),
        ("{precision: bf16}", 0.0, "gloo", False, "bf16"),
        ("{use_gpu: true}", 1.0, "nccl", True, "fp32"),
        ("{gpus_per_worker: 0.25, precision: bf16}", 0.25, "nccl", True, "bf16"),
        ("{gpus_per_worker: 2, backend: gloo, pin_memory: false}", 2.0, "gloo", False, "fp32"),
        ("{use_gpu: true, backend: nccl, pin_memory: true}", 1.0, "nccl", True, "fp32"),
        # two workers on fractions of GPUs may share one, where NCCL cannot run
        ("{num_workers: 2, gpus_per_worker: 0.5}", 0.5, "gloo", True, "fp32"),
        ("{num_workers: 2, gpus_per_worker: 1}", 1.0, "nccl", True, "fp32"),
    ],
)
def test_gpu_knobs_resolve(
    text: str, gpus: float, backend: str, pin_memory: bool, precision: str
) -> None:
    spec = resources(text)
    assert spec.gpus == gpus
    assert spec.resolved_backend == backend
    assert spec.resolved_pin_memory is pin_memory
    assert spec.precision == precision


@pytest.mark.parametrize(
    ("text", "field", "rule"),
    [
        ("{backend: nccl}", "resources.backend", "backend nccl runs collectives on CUDA"),
        ("{backend: nccl, use_gpu: false}", "resources.backend", "or use backend auto or gloo"),
        ("{backend: mpi}", "resources.backend", "'auto', 'nccl' or 'gloo'"),
        (
            "{num_workers: 2, gpus_per_worker: 0.5, backend: nccl}",
            "resources.backend",
            "nccl refuses two ranks on one GPU",
        ),
        ("{pin_memory: true}", "resources.pin_memory", "but the trial has no GPU"),
        ("{pin_memory: sometimes}", "resources.pin_memory", "must be auto, true or false"),
        ("{pin_memory: 1}", "resources.pin_memory", "must be auto, true or false"),
        ("{precision: fp16}", "resources.precision", "'fp32' or 'bf16'"),
    ],
)
def test_bad_gpu_knobs_are_spec_errors_naming_the_field(text: str, field: str, rule: str) -> None:
    with pytest.raises(SpecError) as caught:
        resources(text)
    issues = caught.value.issues
    assert [issue.path for issue in issues] == [field]
    assert rule in issues[0].rule
    assert issues[0].line == 2


def test_a_broken_gpu_field_is_reported_once() -> None:
    with pytest.raises(SpecError) as caught:
        resources("{use_gpu: maybe, backend: nccl}")
    assert [issue.path for issue in caught.value.issues] == ["resources.use_gpu"]


# ----------------------------------------------------------------- Ray Train's configs


@pytest.mark.parametrize(
    ("workers", "gpus", "backend"),
    [(1, 0.5, "nccl"), (2, 1, "nccl"), (2, 0.5, "gloo"), (1, 2, "nccl")],
)
def test_a_gpu_trial_becomes_a_torch_trainer_with_its_gpus_backend_and_bf16(
    tmp_path: Path, workers: int, gpus: float, backend: str
) -> None:
    spec = parse_spec(
        SYNTHETIC + f"resources: {{executor: train, num_workers: {workers}, cpus_per_worker: 2, "
        f"gpus_per_worker: {gpus}, precision: bf16}}\n"
    )
    trial = resolve_trial_config(spec, {})
    trainer = make_torch_trainer(spec, trial, ray.train.RunConfig(storage_path=str(tmp_path)))
    scaling = trainer.scaling_config
    assert scaling.num_workers == workers and scaling.use_gpu is True
    assert scaling.resources_per_worker == {"CPU": 2.0, "GPU": gpus}
    assert trainer.backend_config.backend == backend
    assert trainer.train_loop_config["precision"] == "bf16"
    assert trainer.train_loop_config["pin_memory"] is True
    assert trainer.train_loop_config["trial"] == trial


def test_a_cpu_trial_becomes_a_gloo_torch_trainer_without_gpus(tmp_path: Path) -> None:
    spec = parse_spec(SYNTHETIC + "resources: {num_workers: 2}\n")
    trainer = make_torch_trainer(
        spec, resolve_trial_config(spec, {}), ray.train.RunConfig(storage_path=str(tmp_path))
    )
    assert trainer.scaling_config.use_gpu is False
    assert trainer.scaling_config.resources_per_worker == {"CPU": 1.0}
    assert trainer.backend_config.backend == "gloo"
    assert trainer.train_loop_config["precision"] == "fp32"
    assert trainer.train_loop_config["pin_memory"] is False


# ------------------------------------------------------------------------ the engines


@pytest.mark.parametrize("text", [SYNTHETIC, SUPERNET, GAN], ids=["plain", "supernet", "gan"])
def test_every_engine_takes_precision_and_pinned_loaders(text: str) -> None:
    trial, data = trial_of(text)
    engine = make_engine(trial, data, device="cpu", precision="bf16", pin_memory=True)
    assert engine.compute == DeviceSettings(torch.device("cpu"), "bf16", True)
    assert engine.loader.pin_memory is True
    if not isinstance(engine, GanEngine):
        assert engine.val_loader.pin_memory is True
    assert not engine.compute.non_blocking  # pinned batches copy asynchronously to a GPU only
    plain = make_engine(trial, data, device="cpu")
    assert plain.compute.precision == "fp32" and plain.loader.pin_memory is False


def test_bf16_training_runs_in_bfloat16_and_reduces_the_loss() -> None:
    trial, data = trial_of(SYNTHETIC)
    engine = make_engine(trial, data, device="cpu", precision="bf16")
    dtypes = record_dtypes(engine.model)
    val_before, _ = engine.evaluate()
    losses = [engine.train_epoch() for _ in range(engine.epochs)]
    val_after, accuracy = engine.evaluate()
    assert set(dtypes) == {torch.bfloat16}  # training and validation forward passes
    assert all(p.dtype == torch.float32 for p in engine.model.parameters())
    assert losses[-1] < 0.5 * losses[0] and val_after < 0.5 * val_before
    assert accuracy > 0.9
    fp32 = make_engine(trial, data, device="cpu")
    fp32_dtypes = record_dtypes(fp32.model)
    fp32.train_epoch()
    assert set(fp32_dtypes) == {torch.float32}


def test_bf16_gan_steps_autocast_but_its_scored_samples_are_float32() -> None:
    trial, data = trial_of(GAN)
    engine = make_engine(trial, data, device="cpu", precision="bf16")
    assert isinstance(engine, GanEngine)
    d_dtypes = record_dtypes(engine.model.discriminator)
    g_dtypes = record_dtypes(engine.model.generator)
    batch = data.train.tensors[0][:64]
    g_losses = [engine.train_step(batch)[0] for _ in range(3)]
    assert set(d_dtypes) == {torch.bfloat16} and set(g_dtypes) == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(g_losses)))
    g_dtypes.clear()
    assert engine.generate(16).dtype == torch.float32
    assert set(g_dtypes) == {torch.float32}


def test_bf16_supernet_step_autocasts_and_its_in_autocast_backward_is_exact() -> None:
    trial, data = trial_of(SUPERNET)
    engine = make_engine(trial, data, device="cpu", precision="bf16")
    assert isinstance(engine, SupernetEngine)
    inputs, labels = data.train.tensors[0][:64], data.train.tensors[1][:64]

    def gradients(backward_inside: bool) -> list[torch.Tensor]:
        engine.model.zero_grad(set_to_none=True)
        with engine.compute.autocast():
            loss = nn.functional.cross_entropy(engine.model(inputs), labels)
            if backward_inside:  # as sandwich_step does under the engine's autocast
                loss.backward()
        if not backward_inside:
            loss.backward()
        return [p.grad.clone() for p in engine.model.parameters() if p.grad is not None]

    outside, inside = gradients(False), gradients(True)
    assert outside and all(g.dtype == torch.float32 for g in inside)
    assert all(torch.equal(a, b) for a, b in zip(outside, inside, strict=True))
    # a supernet runs a template module on sliced weights: its own output is what shows
    dtypes = record_dtypes(engine.model, layer=False)
    first = engine.train_epoch()
    assert set(dtypes) == {torch.bfloat16}
    assert engine.train_epoch() < first


def test_device_settings_and_trial_device_refuse_what_cannot_run() -> None:
    with pytest.raises(ValueError, match=r"precision must be one of \['bf16', 'fp32'\]"):
        DeviceSettings(torch.device("cpu"), "fp16")
    assert trial_device(0) == torch.device("cpu")
    if torch.cuda.is_available():
        assert trial_device(0.5) == torch.device("cuda")
    else:
        with pytest.raises(RuntimeError, match=r"asked for 0\.5 GPU\(s\) per worker"):
            trial_device(0.5)


# ---------------------------------------------------------------- node ids, for real

NODE_SWEEP = """
name: {name}
dataset: {{name: synthetic}}
model: {{width: 8, depth: 1}}
training: {{epochs: 2, batch_size: 64}}
search:
  num_samples: {samples}
  max_concurrent: 2
  sampler: {{name: random, seed: 0}}
  scheduler: {{name: fifo}}
  space:
    training.lr: {{type: float, low: 0.005, high: 0.05, log: true}}
resources: {{executor: {executor}, precision: bf16}}
"""


def _user_trial(trial: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> None:
    for epoch in range(1, trial["training"]["epochs"] + 1):
        report({"val_acc": 0.5 + 0.1 * epoch, "epoch": epoch})


@pytest.mark.ray
@pytest.mark.parametrize(
    ("executor", "samples"),
    # ("train", 1) passes too, but costs ~26 s (a Train controller and worker group to
    # start); the 2-worker Ray Train sweep of tests/e2e/test_sparse_ddp.py can check the
    # rank-0 path at no extra cost. Set MORPHTUNE_NODE_ID_TRAIN=1 to run it here.
    [("function", 2), ("user-function", 2)]
    + ([("train", 1)] if os.environ.get("MORPHTUNE_NODE_ID_TRAIN") == "1" else []),
)
def test_every_row_of_a_sweep_names_the_ray_node_of_its_trial(
    ray_session: Any, tmp_path: Path, executor: str, samples: int
) -> None:
    name = f"nodes-{executor}"
    spec = parse_spec(
        NODE_SWEEP.format(
            name=name, samples=samples, executor="function" if "function" in executor else executor
        )
    )
    trial_fn = _user_trial if executor == "user-function" else None
    outcome = run_sweep(spec, results_root=tmp_path, trial_fn=trial_fn)
    assert outcome.trial_states["completed"] == samples
    rows = SweepStore(tmp_path).results(name).to_pylist()
    assert len(rows) == samples * 2  # epochs
    local = ray_session.get_runtime_context().get_node_id()
    assert {row["node_id"] for row in rows} == {local}
    for row in rows:  # a row attribute, not a metric
        assert "node_id" not in json.loads(row["metrics_json"])
        assert "metrics.node_id" not in row
