"""The Tune trainable of one trial: it launches a Ray Train ``TorchTrainer`` run.

Ray Train V2 runs a trainer inside a Tune function trainable; worker metrics reach Tune
through ``TuneReportCallback``. The function itself only waits on the run; the Train
workers hold the real resources (``resources`` in the spec).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray.train
import ray.train.torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from morphtune.spec import SweepSpec, resolve_trial_config
from morphtune.trainables._loop import train_loop_per_worker

__all__ = ["DRIVER_RESOURCES", "TRAIN_ENV_DEFAULTS", "make_trainable"]

#: What the per-trial driver function reserves. It only waits on the Train run, so it
#: takes no CPU: even a sliver (0.01) would leave 1.98 of 2 CPUs, and then two 1-CPU
#: Train workers can never be placed side by side. A bundle must not be empty, so it
#: asks for a token amount of memory instead.
DRIVER_RESOURCES: dict[str, float] = {"cpu": 0.0, "memory": float(1 << 20)}

#: Ray Train polls workers every 2 s by default, and each ``report`` blocks until the
#: poll drains it: a 20-epoch trial would spend ~30 s waiting. A short poll keeps a
#: report under ~0.1 s. The preemption watcher is one more actor per trial for a cloud
#: feature a local or KubeRay cluster does not need by default. ``runner.init_ray`` puts
#: these into the job's runtime environment (a value the user set wins).
TRAIN_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def make_trainable(spec: SweepSpec, storage_path: str) -> Any:
    """A resource-tagged Tune trainable running each trial as a TorchTrainer job."""
    resources = spec.resources
    sweep_name = spec.name

    def run_trial(config: dict[str, Any]) -> None:
        trial = resolve_trial_config(spec, config)
        trial_id = tune.get_context().get_trial_id()
        trainer = ray.train.torch.TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"trial": trial},
            scaling_config=ray.train.ScalingConfig(
                num_workers=resources.num_workers,
                use_gpu=resources.use_gpu,
                resources_per_worker={"CPU": resources.cpus_per_worker},
            ),
            run_config=ray.train.RunConfig(
                name=f"{sweep_name}-{trial_id}",
                storage_path=storage_path,
                # Train V2's RunConfig takes Train callbacks; the static type of
                # ray.train.RunConfig is still V1's, which expects Tune callbacks
                callbacks=[TuneReportCallback()],  # type: ignore[list-item]
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
                failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            ),
        )
        trainer.fit()

    run_trial.__name__ = "morphtune_trial"
    trainable: Callable[[dict[str, Any]], None] = run_trial
    return tune.with_resources(trainable, DRIVER_RESOURCES)
