"""The Tune trainable of one trial, on one of two executors.

- ``train``: the trial launches a Ray Train ``TorchTrainer`` run (DDP over
  ``resources.num_workers`` workers). Ray Train V2 runs a trainer inside a Tune function
  trainable; worker metrics reach Tune through ``TuneReportCallback``; the function itself
  only waits on the run, the Train workers hold the real resources.
- ``function``: a single-worker trial trains inside its Tune actor (no controller, no
  worker group to start), reports a Tune checkpoint every epoch and restores from one.
  Tune's PBT (and growth-aware PBT) needs this: its exploit step restores a trial from a
  donor's Tune checkpoint, after which :func:`transition_engine` grows or prunes the copy
  into the explored configuration.

Either way, a trial that fails for a reason a retry would meet again (a bad config, a
non-finite objective, an exception in our own code) reports ``trial_error`` once and ends:
the searcher tells Optuna FAIL, the store records it failed, and no retry is spent on
it. Retries (``resources.max_failures``) are kept for crashes: a killed worker or actor.
"""

from __future__ import annotations

import math
import os
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray import tune

from morphtune._keys import ERROR_KEY
from morphtune.spec import ResourcesSpec, SweepSpec, resolve_trial_config
from morphtune.store._schema import NODE_ID_KEY

# Ray Train, torch and the engines are imported where a trial needs them: this module is
# what every trial actor unpickles first, and a user trial function needs none of them.

__all__ = [
    "DRIVER_RESOURCES",
    "TRAIN_ENV_DEFAULTS",
    "NonFiniteObjectiveError",
    "TrialFunction",
    "make_torch_trainer",
    "make_trainable",
    "scaling_config",
    "train_loop_config",
]

#: What the per-trial driver function of a ``train`` trial reserves. It only waits on
#: the Train run, so it takes no CPU: even a sliver (0.01) would leave 1.98 of 2 CPUs,
#: and then two 1-CPU Train workers can never be placed side by side. A bundle must not
#: be empty, so it asks for a token amount of memory instead.
DRIVER_RESOURCES: dict[str, float] = {"cpu": 0.0, "memory": float(1 << 20)}

#: Ray Train polls workers every 2 s by default, and each ``report`` blocks until the
#: poll drains it: a 20-epoch trial would spend ~30 s waiting. A short poll keeps a
#: report under ~0.1 s. The preemption watcher is one more actor per trial for a cloud
#: feature a local or KubeRay cluster does not need by default. ``runner.init_ray`` puts
#: these into the job's runtime environment (a value the user set wins).
TRAIN_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # in-process trials checkpoint every epoch, and with CheckpointConfig(num_to_keep)
    # Tune snapshots the experiment then (what resume needs); it warns each time
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}

#: A user trial function: ``fn(trial, report)`` trains the resolved nested ``trial``
#: config and calls ``report(metrics)`` once per iteration.
TrialFunction = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None]


class NonFiniteObjectiveError(ValueError):
    """A trial reported a NaN or infinite objective: training has diverged."""


def _check_objectives(metrics: Mapping[str, Any], names: list[str]) -> None:
    for name in names:
        value = metrics.get(name)
        if isinstance(value, int | float) and not math.isfinite(value):
            raise NonFiniteObjectiveError(f"objective {name} is {value!r}: training diverged")


def _error_message(exc: BaseException) -> str:
    frames = traceback.format_exception(exc)
    return f"{type(exc).__name__}: {exc}\n{''.join(frames[-6:])}"[:4000]


def _end_with_error(
    exc: BaseException, iteration_metrics: Mapping[str, Any], objectives: list[str]
) -> None:
    """Report the failure once: the last metrics, the objectives as NaN (Tune insists
    that every result names them; nothing ranks a NaN), and ``trial_error``."""
    failed = {**dict(iteration_metrics), **dict.fromkeys(objectives, math.nan)}
    tune.report({**failed, ERROR_KEY: _error_message(exc)})


def _run_in_process(spec: SweepSpec, config: dict[str, Any]) -> None:
    """The ``function`` executor: train one trial inside this Tune actor."""
    import torch

    from morphtune.data import load_dataset
    from morphtune.trainables._device import current_node_id, trial_device
    from morphtune.trainables._loop import CHECKPOINT_FILE, make_engine

    names = [goal.metric for goal in spec.search.goals]
    last: dict[str, Any] = {}
    resources = spec.resources
    node_id = current_node_id()
    try:
        trial = resolve_trial_config(spec, config)
        dataset = trial["dataset"]
        data = load_dataset(
            dataset["name"],
            seed=dataset["seed"],
            val_fraction=dataset["val_fraction"],
            **dataset["options"],
        )
        engine = make_engine(
            trial,
            data,
            rank=0,
            world_size=1,
            device=trial_device(resources.gpus),
            precision=resources.precision,
            pin_memory=resources.resolved_pin_memory,
        )
        checkpoint = tune.get_checkpoint()
        events: list[dict[str, Any]] = []
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=False)
            events = _restore(engine, state, trial)
        latency = _LatencyProbe(spec) if "latency_ms" in names else None
        for metrics in engine.run_epochs():
            if latency is not None:
                metrics["latency_ms"] = latency(engine)
            if events:
                metrics["pbt_moves"] = len(events)
            metrics[NODE_ID_KEY] = node_id
            last = {k: v for k, v in metrics.items() if k not in names}
            _check_objectives(metrics, names)
            with tempfile.TemporaryDirectory(prefix="morphtune-ckpt-") as directory:
                torch.save(engine.state_dict(), os.path.join(directory, CHECKPOINT_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
    except Exception as exc:  # deterministic for a given config: end once, no retry
        _end_with_error(exc, last, names)


def _restore(engine: Any, state: Mapping[str, Any], trial: Mapping[str, Any]) -> list[Any]:
    """Load a checkpoint; for the plain engine also grow or prune the restored model into
    ``trial`` (after a PBT exploit the checkpoint is the donor's, and the explore step may
    have asked for a larger or sparser model). Returns the transition events."""
    from morphtune.trainables._engine import TrialEngine
    from morphtune.trainables._transition import restore_engine

    if isinstance(engine, TrialEngine):
        return restore_engine(engine, state, trial)
    engine.load_state_dict(state)
    return []


class _LatencyProbe:
    """Inference latency of the trial's current model, re-measured when its size changes."""

    def __init__(self, spec: SweepSpec) -> None:
        self.batch_size = spec.search.constraints.latency_batch_size
        self._cache: dict[int, float] = {}

    def __call__(self, engine: Any) -> float:
        from morphtune.searchers._constraints import measure_model_latency

        model = getattr(engine.model, "module", engine.model)
        size = sum(p.numel() for p in model.parameters())
        if size not in self._cache:
            self._cache[size] = measure_model_latency(model, engine.task, self.batch_size)
        return self._cache[size]


def _run_user_function(spec: SweepSpec, fn: TrialFunction, config: dict[str, Any]) -> None:
    """A user's trial function on the ``function`` executor."""
    from morphtune.trainables._device import current_node_id

    names = [goal.metric for goal in spec.search.goals]
    last: dict[str, Any] = {}
    node_id = current_node_id()

    def report(metrics: dict[str, Any]) -> None:
        nonlocal last
        last = {k: v for k, v in metrics.items() if k not in names}
        _check_objectives(metrics, names)
        tune.report({**metrics, NODE_ID_KEY: node_id})

    try:
        fn(resolve_trial_config(spec, config), report)
    except Exception as exc:
        _end_with_error(exc, last, names)


def _run_train(spec: SweepSpec, storage_path: str, config: dict[str, Any]) -> None:
    """The ``train`` executor: one Ray Train TorchTrainer run per trial."""
    import ray.train
    from ray.tune.integration.ray_train import TuneReportCallback

    try:
        trial = resolve_trial_config(spec, config)
    except ValueError as exc:
        _end_with_error(exc, {}, [goal.metric for goal in spec.search.goals])
        return
    trial_id = tune.get_context().get_trial_id()
    run_config = ray.train.RunConfig(
        name=f"{spec.name}-{trial_id}",
        storage_path=storage_path,
        # Train V2's RunConfig takes Train callbacks; the static type of
        # ray.train.RunConfig is still V1's, which expects Tune callbacks
        callbacks=[TuneReportCallback()],  # type: ignore[list-item]
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        failure_config=ray.train.FailureConfig(max_failures=spec.resources.max_failures),
    )
    make_torch_trainer(spec, trial, run_config).fit()


def make_torch_trainer(spec: SweepSpec, trial: dict[str, Any], run_config: Any) -> Any:
    """The Ray Train ``TorchTrainer`` of one trial (not started): the resolved ``trial``
    and the spec's resources turned into Ray Train's configs (see :func:`scaling_config`,
    :func:`train_loop_config`; the process group backend is ``resources.backend``)."""
    import ray.train.torch

    from morphtune.trainables._loop import train_loop_per_worker

    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config=train_loop_config(spec, trial),
        scaling_config=scaling_config(spec.resources),
        torch_config=ray.train.torch.TorchConfig(backend=spec.resources.resolved_backend),
        run_config=run_config,
    )


def train_loop_config(spec: SweepSpec, trial: dict[str, Any]) -> dict[str, Any]:
    """What every Train worker of a trial gets: the resolved trial, the objectives, and the
    resolved precision and pinned-memory settings."""
    resources = spec.resources
    return {
        "trial": trial,
        "objectives": [goal.metric for goal in spec.search.goals],
        "precision": resources.precision,
        "pin_memory": resources.resolved_pin_memory,
    }


def scaling_config(resources: ResourcesSpec) -> Any:
    """The Train worker group of a trial: ``num_workers`` workers of ``cpus_per_worker``
    CPUs and, on a GPU trial, ``use_gpu`` with ``gpus_per_worker`` GPUs each (a fraction
    lets several workers or trials share one GPU)."""
    import ray.train

    worker: dict[str, float] = {"CPU": resources.cpus_per_worker}
    if resources.gpus:
        worker["GPU"] = resources.gpus
    return ray.train.ScalingConfig(
        num_workers=resources.num_workers,
        use_gpu=resources.gpus > 0,
        resources_per_worker=worker,
    )


def make_trainable(
    spec: SweepSpec, storage_path: str, trial_fn: TrialFunction | None = None
) -> Any:
    """A resource-tagged Tune trainable for the spec's executor (``trial_fn`` replaces
    the built-in engine with the user's own training function; it runs in-process)."""
    resources = spec.resources
    if trial_fn is not None or resources.in_process:

        def run_in_process(config: dict[str, Any]) -> None:
            if trial_fn is not None:
                _run_user_function(spec, trial_fn, config)
            else:
                _run_in_process(spec, config)

        run_in_process.__name__ = "morphtune_trial"
        bundle: dict[str, float] = {"cpu": resources.cpus_per_worker}
        if resources.gpus:
            bundle["gpu"] = resources.gpus
        return tune.with_resources(run_in_process, bundle)

    def run_trial(config: dict[str, Any]) -> None:
        _run_train(spec, storage_path, config)

    run_trial.__name__ = "morphtune_trial"
    return tune.with_resources(run_trial, DRIVER_RESOURCES)
