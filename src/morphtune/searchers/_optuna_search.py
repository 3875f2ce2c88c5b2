"""Ray Tune's OptunaSearch with honest trial outcomes, several objectives and pre-launch
constraints.

Ray's searcher tells Optuna COMPLETE with the last value even when the trial raised, and
when that value is NaN Optuna refuses it, the exception is only logged, and the Optuna
trial stays RUNNING for ever. Here a trial that raised, reported a ``trial_error``, or
reported a non-finite objective is told FAIL, so the sampler learns to avoid it and no
trial is left running.

With constraints, every proposed configuration is costed before it launches (see
:mod:`._constraints`); one over a limit is told to Optuna as PRUNED with its constraint
values (so constraint-aware samplers learn the infeasible region) and the sampler is
asked again: it never becomes a Ray trial.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from morphtune._keys import ERROR_KEY
from morphtune.searchers._duplicates import FinishedConfigs
from morphtune.searchers._latency import LatencyHistogram
from morphtune.searchers._samplers import CONSTRAINT_ATTR, SweepGridSampler

__all__ = ["ERROR_KEY", "SafeOptunaSearch"]

log = logging.getLogger(__name__)


ConstraintCheck = Callable[[dict[str, Any]], tuple[list[float], Any]]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class SafeOptunaSearch(OptunaSearch):
    """OptunaSearch that marks errored and non-finite trials FAIL (never left RUNNING),
    takes one or several objectives, and keeps infeasible configurations from launching."""

    def __init__(
        self,
        *args: Any,
        constraints: ConstraintCheck | None = None,
        max_infeasible: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.constraints = constraints
        self.max_infeasible = max_infeasible
        self.infeasible = 0  # configurations rejected before launch
        self.finished = FinishedConfigs()  # repeats are answered from here, not trained
        self._latest: dict[str, tuple[int, float]] = {}  # trial -> (step, last finite value)
        self.exhausted: str | None = None  # why the searcher stopped proposing, if it did
        self.suggest_seconds = LatencyHistogram()  # time Tune waits on each suggest

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fill_new_fields()

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._fill_new_fields()

    def _fill_new_fields(self) -> None:
        # a searcher saved by an older morphtune (resume after an upgrade) lacks these
        defaults: dict[str, Callable[[], Any]] = {
            "constraints": lambda: None,
            "max_infeasible": lambda: 200,
            "infeasible": lambda: 0,
            "finished": FinishedConfigs,
            "_latest": dict,
            "exhausted": lambda: None,
            "suggest_seconds": LatencyHistogram,
        }
        for name, default in defaults.items():
            if name not in self.__dict__:
                self.__dict__[name] = default()

    @property
    def metrics(self) -> list[str]:
        metric = self.metric
        return list(metric) if isinstance(metric, list) else [metric]

    @property
    def study(self) -> Any:
        return self._ot_study

    # ----------------------------------------------------------------- proposing

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        start = time.perf_counter()
        try:
            return self._propose(trial_id)
        finally:
            self.suggest_seconds.observe(time.perf_counter() - start)

    def _propose(self, trial_id: str) -> dict[str, Any] | None:
        if self.exhausted:
            return Searcher.FINISHED  # type: ignore[return-value]
        sampler = getattr(self._ot_study, "sampler", None)
        if isinstance(sampler, SweepGridSampler):
            never_started, running = sampler.points_left(self.study)
            if never_started == 0 and running == 0:
                self.exhausted = "every point of the grid was tried"
                log.info("searcher stops: %s", self.exhausted)
                return Searcher.FINISHED  # type: ignore[return-value]
            if never_started == 0:
                return None  # the last points are running: a new trial waits for them
        rejected = 0
        while True:
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            ot_trial = self._ot_trials[trial_id]
            repeat = self.finished.lookup(ot_trial.params)
            if repeat is not None:
                # trained before: Optuna hears the same outcome again, Ray never does
                self._ot_trials.pop(trial_id)
                self.finished.answer(self.study, ot_trial, repeat)
                reason = "repeats of finished configurations"
            elif self.constraints is not None and not self._feasible(config, ot_trial):
                # over a limit: the sampler hears of it, Ray never does
                self._ot_trials.pop(trial_id)
                self.study.tell(ot_trial, None, state=TrialState.PRUNED)
                self.infeasible += 1
                reason = "proposals that broke the constraints"
            else:
                return config
            rejected += 1
            if rejected >= self.max_infeasible:
                self.exhausted = (
                    f"{rejected} proposals in a row were {reason} (none left to train); "
                    "the sampler may have converged or the space holds nothing feasible"
                )
                log.error("searcher stops: %s", self.exhausted)
                return Searcher.FINISHED  # type: ignore[return-value]

    def _feasible(self, config: dict[str, Any], ot_trial: Any) -> bool:
        if self.constraints is None:
            return True
        values, _cost = self.constraints(config)
        ot_trial.set_user_attr(CONSTRAINT_ATTR, [float(v) for v in values])
        return all(value <= 0 for value in values)

    # ------------------------------------------------------------------ learning

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        # Only the latest finite value is kept here and written to the study once, when
        # the trial ends (TPE ranks an early-stopped trial by its last step): a write per
        # result to an SQL storage would cost more than a fast trial's result itself.
        if len(self.metrics) != 1 or trial_id in self._completed_trials:
            return
        value = result.get(self.metrics[0])
        if trial_id not in self._ot_trials or not _finite(value) or result.get(ERROR_KEY):
            return
        self._latest[trial_id] = (int(result.get("training_iteration", 0)), float(value))  # type: ignore[arg-type]

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        result = result or {}
        values = [result.get(metric) for metric in self.metrics]
        told: float | list[float] | None = None
        if error or result.get(ERROR_KEY):
            state = TrialState.FAIL
        elif any(value is None for value in values):
            state = TrialState.PRUNED
        elif not all(_finite(value) for value in values):
            log.warning(
                "trial %s reported non-finite %s=%r: told FAIL", trial_id, self.metric, values
            )
            state = TrialState.FAIL
        else:
            state = TrialState.COMPLETE
            numbers = [float(value) for value in values]  # type: ignore[arg-type]
            told = numbers if len(numbers) > 1 else numbers[0]
        study = self._ot_study
        if study is None:
            raise RuntimeError("SafeOptunaSearch got a trial result before it was set up")
        latest = self._latest.pop(trial_id, None)
        self._completed_trials.add(trial_id)
        recorded = self._recorded_state(ot_trial)
        if recorded is not None and recorded.is_finished():
            # a resumed sweep finished a trial that a crashed driver had already told
            # (Optuna refuses a second tell: ValueError "Cannot tell a COMPLETE trial.")
            log.info("trial %s: Optuna keeps its earlier outcome %s", trial_id, recorded.name)
            return
        try:
            if latest is not None:
                ot_trial.report(latest[1], latest[0])
            study.tell(ot_trial, told, state=state)
            self._remember(ot_trial, state, told)
        except (RuntimeError, ValueError) as exc:  # Optuna 4.9 raises ValueError
            # told in between by another process sharing the study: its outcome stands
            log.warning("trial %s: Optuna kept its earlier outcome (%s)", trial_id, exc)

    def _recorded_state(self, ot_trial: Any) -> TrialState | None:
        """The trial's state in the study's storage (None if it cannot be read)."""
        try:
            state: TrialState = self.study._storage.get_trial(ot_trial._trial_id).state
            return state
        except (AttributeError, KeyError, RuntimeError):
            return None

    def _remember(self, ot_trial: Any, state: TrialState, told: Any) -> None:
        if state == TrialState.COMPLETE:
            values = told if isinstance(told, list) else [told]
            self.finished.record(ot_trial.params, state, values)
        elif state == TrialState.PRUNED:
            frozen = self.study._storage.get_trial(ot_trial._trial_id)
            self.finished.record(ot_trial.params, state, None, frozen.intermediate_values)
