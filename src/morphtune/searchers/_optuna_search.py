"""Ray Tune's OptunaSearch with honest trial outcomes.

Ray's searcher tells Optuna COMPLETE with the last value even when the trial raised, and
when that value is NaN Optuna refuses it, the exception is only logged, and the Optuna
trial stays RUNNING for ever. Here a trial that raised or reported a non-finite objective
is told FAIL, so the sampler learns to avoid it and no trial is left running.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

__all__ = ["SafeOptunaSearch"]

log = logging.getLogger(__name__)


class SafeOptunaSearch(OptunaSearch):
    """OptunaSearch that marks errored and non-finite trials FAIL (never left RUNNING)."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        value = (result or {}).get(self.metric)
        if error:
            state, told = TrialState.FAIL, None
        elif value is None:
            state, told = TrialState.PRUNED, None
        elif not isinstance(value, int | float) or not math.isfinite(value):
            log.warning(
                "trial %s reported non-finite %s=%r: told FAIL", trial_id, self.metric, value
            )
            state, told = TrialState.FAIL, None
        else:
            state, told = TrialState.COMPLETE, float(value)
        study = self._ot_study
        if study is None:
            raise RuntimeError("SafeOptunaSearch got a trial result before it was set up")
        study.tell(ot_trial, told, state=state)
        self._completed_trials.add(trial_id)

    @property
    def study(self) -> Any:
        return self._ot_study
