"""Answer a re-proposed configuration from the study instead of training it again.

On a finite space a model-based sampler keeps proposing its current best: on the P6
tables, 22 % of TPE's trials repeated a configuration the same search had already trained
(47 % with successive halving), each one trained and charged again. A trial is a
deterministic function of its configuration (the training seed is part of it), so a
repeat is told to Optuna with the outcome the first one had (the same objective values,
or PRUNED at the same last intermediate value) and never becomes a trial. Repeats are not
put into early-stopping rungs (they never report), so they cannot crowd a rung either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

__all__ = ["FinishedConfigs", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """How a configuration's first trial ended."""

    state: TrialState  # COMPLETE or PRUNED
    values: tuple[float, ...] | None  # COMPLETE: the objective values
    last_step: int | None = None  # PRUNED: its last intermediate value, if any
    last_value: float | None = None


class FinishedConfigs:
    """Finished configurations by their parameters (picklable: Tune saves the searcher)."""

    def __init__(self) -> None:
        self._outcomes: dict[str, Outcome] = {}
        self.answered = 0  # repeats answered without training

    @staticmethod
    def key(params: Mapping[str, Any]) -> str:
        return json.dumps(sorted(params.items()), default=str)

    def __len__(self) -> int:
        return len(self._outcomes)

    def record(
        self,
        params: Mapping[str, Any],
        state: TrialState,
        values: Sequence[float] | None = None,
        intermediate: Mapping[int, float] | None = None,
    ) -> None:
        """Remember a finished trial (the first outcome of a configuration is kept).
        Failed or non-finite outcomes are not remembered: a repeat of them trains."""
        key = self.key(params)
        if key in self._outcomes:
            return
        if state == TrialState.COMPLETE and values is not None:
            if all(math.isfinite(v) for v in values):
                self._outcomes[key] = Outcome(state, tuple(float(v) for v in values))
        elif state == TrialState.PRUNED:
            steps = sorted(intermediate or {})
            if steps:
                last = float((intermediate or {})[steps[-1]])
                if math.isfinite(last):
                    self._outcomes[key] = Outcome(state, None, steps[-1], last)

    def lookup(self, params: Mapping[str, Any]) -> Outcome | None:
        return self._outcomes.get(self.key(params))

    def answer(self, study: Any, ot_trial: Any, outcome: Outcome) -> None:
        """Tell ``ot_trial`` (a repeat) the outcome its configuration had."""
        ot_trial.set_user_attr("repeat_of_finished_config", True)
        if outcome.state == TrialState.COMPLETE and outcome.values is not None:
            values = list(outcome.values)
            study.tell(ot_trial, values if len(values) > 1 else values[0])
        else:
            if outcome.last_step is not None and outcome.last_value is not None:
                ot_trial.report(outcome.last_value, outcome.last_step)
            study.tell(ot_trial, None, state=TrialState.PRUNED)
        self.answered += 1
