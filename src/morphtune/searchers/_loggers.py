"""Ray Tune logger callbacks for the spec's ``logging`` section: TensorBoard and MLflow.

Both run on the sweep's driver and see every result Tune receives. They record what the
results store records: a result that carries a trial's deterministic error (its
objectives are NaN placeholders) is not a measurement, so it is left out of the logs,
and the trial it ends is marked failed in MLflow, as in the store.
"""

from __future__ import annotations

import os
import time
from numbers import Real
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from morphtune._keys import ERROR_KEY
from morphtune.spec import MLflowSpec, SpecError, SpecIssue, SweepSpec
from morphtune.store._schema import NODE_ID_KEY
from morphtune.store.callback import _TUNE_KEYS

__all__ = [
    "SWEEP_TAG",
    "TRIAL_TAG",
    "MLflowCallback",
    "TensorBoardCallback",
    "logger_callbacks",
    "mlflow_tracking_uri",
]

#: MLflow run tags naming the morphtune sweep and trial (the store's ``trial_id``).
SWEEP_TAG = "morphtune.sweep_id"
TRIAL_TAG = "morphtune.trial_id"

#: MLflow takes at most this many metrics in one ``log_batch`` call.
_MLFLOW_BATCH = 1000


def logger_callbacks(spec: SweepSpec, directory: Path) -> list[Callback]:
    """The Tune callbacks the spec's ``logging`` section asks for (none by default).

    ``directory`` is the sweep's results directory (the default MLflow store lives there).
    Raises :class:`SpecError` naming the field when a logger's package is missing here.
    """
    settings = spec.logging
    problems = settings.package_issues()
    if problems:
        issues = [SpecIssue(field, None, value, rule) for field, value, rule in problems]
        raise SpecError(spec.name, issues)
    callbacks: list[Callback] = []
    if settings.tensorboard:
        callbacks.append(TensorBoardCallback())
    if settings.mlflow is not None:
        callbacks.append(
            MLflowCallback(
                mlflow_tracking_uri(settings.mlflow, directory),
                experiment_name=settings.mlflow.experiment or spec.name,
                tags={**settings.mlflow.tags, SWEEP_TAG: spec.name},
            )
        )
    return callbacks


def mlflow_tracking_uri(settings: MLflowSpec, directory: Path) -> str:
    """The spec's tracking URI, else ``$MLFLOW_TRACKING_URI``, else an SQLite file
    ``mlflow.db`` in the sweep's directory (MLflow no longer takes new runs into a
    plain directory store without being told to)."""
    if settings.tracking_uri:
        return settings.tracking_uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{(directory / 'mlflow.db').resolve()}"


class TensorBoardCallback(TBXLoggerCallback):
    """Ray Tune's tensorboardX logger (scalars ``ray/tune/<metric>`` per iteration in
    event files in each trial's Tune directory), without the result that carries a
    trial's error: its objectives are NaN placeholders and its other values repeat the
    last real iteration."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if result.get(ERROR_KEY):
            return
        super().log_trial_result(iteration, trial, result)


class MLflowCallback(MLflowLoggerCallback):
    """Ray Tune's MLflow logger, one run per trial, with these differences.

    It talks to MLflow through its own client for ``tracking_uri``: Ray's setup sets the
    process-wide tracking URI, and MLflow copies that into ``$MLFLOW_TRACKING_URI``, so a
    later sweep in the same process would log into this sweep's store. The run carries
    the store's trial id (tag :data:`TRIAL_TAG`) and the sweep id (:data:`SWEEP_TAG`).
    Each result is written in one ``log_batch`` call, only the reported metrics (not
    Tune's bookkeeping nor the config), at the store's step (``training_iteration``). A
    trial that ended with a deterministic error is FAILED, as in the store (Tune sees
    such a trial finish normally). A trial keeps one run: a restarted or exploited (PBT)
    trial, and a trial a resumed sweep continues (found by its tags), log into the run
    it has, whose params were logged when it was created (MLflow refuses to change one).
    """

    def __init__(self, tracking_uri: str, *, experiment_name: str, tags: dict[str, str]) -> None:
        super().__init__(tracking_uri, experiment_name=experiment_name, tags=tags)
        self._tags = dict(tags)
        self._client: Any = None
        self._experiment_id: str | None = None
        self._failed: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment; a client holds connections
        return {**self.__dict__, "_client": None}

    def setup(self, *args: Any, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self._experiment_id = self._experiment(str(self.experiment_name))
        self._trial_runs: dict[Any, str] = {}

    def _experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(name)
        if found is None:
            try:
                return str(self._client.create_experiment(name))
            except MlflowException:  # another driver created it meanwhile
                found = self._client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise ValueError(
                f"logging.mlflow.experiment: the MLflow experiment {name!r} at "
                f"{self.tracking_uri} is deleted; restore it or name another experiment"
            )
        return str(found.experiment_id)

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_runs:
            return
        from mlflow.entities import Param

        earlier = self._earlier_run(str(trial.trial_id))
        if earlier is not None:  # a resumed sweep continues the trial's run
            self._client.update_run(earlier, status="RUNNING")
            self._trial_runs[trial] = earlier
            return
        tags = {**self._tags, "trial_name": str(trial), TRIAL_TAG: str(trial.trial_id)}
        run = self._client.create_run(self._experiment_id, run_name=str(trial), tags=tags)
        self._trial_runs[trial] = run.info.run_id
        params = [Param(str(key), str(value)) for key, value in (trial.config or {}).items()]
        if params:
            self._client.log_batch(run.info.run_id, params=params)

    def _earlier_run(self, trial_id: str) -> str | None:
        """The run an earlier driver of this sweep made for the trial, if any."""
        sweep = self._tags.get(SWEEP_TAG)
        if sweep is None:
            return None
        query = f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.`{TRIAL_TAG}` = '{trial_id}'"
        runs = self._client.search_runs([self._experiment_id], filter_string=query, max_results=1)
        return str(runs[0].info.run_id) if runs else None

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        if result.get(ERROR_KEY):
            self._failed.add(str(trial.trial_id))
            return
        from mlflow.entities import Metric

        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        step = int(result.get("training_iteration", iteration))
        stamp = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), stamp, step)
            for key, value in result.items()
            if key not in _TUNE_KEYS and key != NODE_ID_KEY and isinstance(value, Real)
        ]
        run_id = self._trial_runs[trial]
        for start in range(0, len(metrics), _MLFLOW_BATCH):
            self._client.log_batch(run_id, metrics=metrics[start : start + _MLFLOW_BATCH])

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        run_id = self._trial_runs.get(trial)
        if run_id is None:
            return
        failed = failed or str(trial.trial_id) in self._failed
        self._client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
