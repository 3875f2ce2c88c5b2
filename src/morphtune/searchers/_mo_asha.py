"""Multi-objective asynchronous successive halving (MO-ASHA) as a Ray Tune scheduler.

Schmucker, Donini, Zafar, Salinas and Archambeau (2021), "Multi-objective Asynchronous
Successive Halving" (arXiv:2106.12639): ASHA (Li et al. 2020, arXiv:1810.05934) whose
promotion rule ranks the trials recorded at a rung by non-dominated sorting (Deb et al.
2002, NSGA-II) instead of by one scalar metric. Neither Ray Tune nor Optuna ships it.

Rungs sit at ``grace_period * reduction_factor**k`` for every ``k`` with a milestone below
``max_t``. A trial reaching a rung records its objective vector there (maximised
objectives negated, so everything is minimised) and is judged at once, asynchronously,
against the trials already recorded at that rung: with ``n`` recorded (itself included)
it continues if it ranks among the first ``ceil(n / reduction_factor)``, else it stops.
With fewer than ``reduction_factor`` recorded trials it always continues (too few to rank).

Ranking at a rung: by front index of the non-dominated sort, then, inside a front, by
NSGA-II crowding distance, larger first (the spread-preserving tie break of the paper's
NSGA-II variant; no hypervolume is computed), then by arrival order at the rung, earlier
first (so equal candidates never depend on dict or hash order).

This is the stopping flavour of ASHA (as Ray's ``ASHAScheduler``): a trial not promoted
at a rung is stopped for good, rather than paused to be promoted later once the rung has
filled up (the paper's promotion-based scheduling needs a scheduler that resumes paused
trials, which Tune's ``FIFOScheduler`` base does not decide).
"""

from __future__ import annotations

import math
import numbers
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

__all__ = [
    "MOASHAScheduler",
    "MOASHAStateCallback",
    "crowding_distance",
    "non_dominated_sort",
]


def _as_matrix(points: Sequence[Sequence[float]], name: str) -> np.ndarray:
    """``points`` as an (n, m) float array; ValueError unless rectangular, m >= 1, finite."""
    rows = [tuple(row) for row in points]
    if not rows:
        return np.zeros((0, 0))
    width = len(rows[0])
    if width < 1 or any(len(row) != width for row in rows):
        raise ValueError(
            f"{name}: every point must have the same number (>= 1) of objectives, "
            f"got lengths {sorted({len(row) for row in rows})}"
        )
    matrix = np.asarray(rows, dtype=float)
    if not np.isfinite(matrix).all():
        bad = rows[int(np.argwhere(~np.isfinite(matrix))[0][0])]
        raise ValueError(f"{name}: objective values must be finite, got point {bad}")
    return matrix


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Deb et al.'s fast non-dominated sort, all objectives minimised.

    ``a`` dominates ``b`` when ``a <= b`` everywhere and ``a < b`` somewhere (equal points
    never dominate each other, so they share a front). Returns the fronts, best first, as
    lists of indices into ``points`` in ascending order; together they partition
    ``range(len(points))``. O(m n^2) with numpy; ValueError on ragged or non-finite input.
    """
    matrix = _as_matrix(points, "points")
    count = len(matrix)
    if count == 0:
        return []
    # dominates[i, j]: point i dominates point j
    weakly = (matrix[:, None, :] <= matrix[None, :, :]).all(axis=2)
    strictly = (matrix[:, None, :] < matrix[None, :, :]).any(axis=2)
    dominates = np.logical_and(weakly, strictly)
    dominated_by: np.ndarray = dominates.sum(axis=0)  # how many points dominate j
    fronts: list[list[int]] = []
    current = [int(i) for i in np.flatnonzero(dominated_by == 0)]
    while current:
        fronts.append(current)
        for i in current:
            dominated_by[dominates[i]] -= 1
            dominated_by[i] = -1  # placed: never selected again
        current = [int(i) for i in np.flatnonzero(dominated_by == 0)]
    return fronts


def crowding_distance(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point of one front (Deb et al. 2002, sec. III-B).

    Per objective with a spread (max > min), a point holding the minimum or the maximum
    gets ``inf``; any other point adds ``(upper - lower) / (max - min)``, where ``lower``
    and ``upper`` are the nearest values of the *other* points at or below and at or above
    its own. Without duplicates that is the textbook sorted-neighbour gap; with duplicates
    it is 0 for each copy, so the result never depends on input order (the textbook sort
    gives the first copy the gap and the second none). An objective without spread adds
    nothing. One or two points: all ``inf``. ValueError on ragged or non-finite input.
    """
    matrix = _as_matrix(points, "points")
    count = len(matrix)
    if count <= 2:
        return [math.inf] * count
    distance = np.zeros(count)
    for column in matrix.T:
        low, high = float(column.min()), float(column.max())
        if high == low:
            continue
        values, counts = np.unique(column, return_counts=True)
        slot = np.searchsorted(values, column)
        for i, value in enumerate(column):
            if value in (low, high):
                distance[i] = math.inf
                continue
            k = int(slot[i])
            if counts[k] > 1:
                continue  # a copy at the same value is the neighbour on both sides
            distance[i] += (values[k + 1] - values[k - 1]) / (high - low)
    return [float(d) for d in distance]


def _positive_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"MOASHAScheduler {name}={value!r}: must be an integer >= {minimum}")
    return int(value)


class MOASHAScheduler(FIFOScheduler):
    """MO-ASHA (Schmucker et al. 2021): asynchronous successive halving with promotion by
    non-dominated sorting and crowding distance at each rung (see the module docstring).

    Args:
        metrics: the result keys of the objectives (at least one, distinct).
        modes: ``"min"`` or ``"max"`` for each metric, in the same order.
        time_attr: the monotone progress key rungs are measured in.
        max_t: a trial is stopped once ``time_attr`` reaches it (as Ray's ASHA does).
        grace_period: the first rung; no trial is stopped before it.
        reduction_factor: ``rf``; rungs are ``rf`` apart and about ``1/rf`` of a rung's
            trials are promoted.

    Results:
        A result lacking any of ``metrics``, or with a value that is not a finite real
        number, stops the trial at once and is never recorded at a rung, so NaN or inf
        can not poison the fronts later arrivals are judged against. A result lacking
        ``time_attr`` is let through (nothing to place it by). When one result jumps past
        several unrecorded milestones, the trial is recorded and judged at the highest of
        them only (as Ray's ASHA does), so it is never compared with trials that had
        less budget than it. Trials told to stop are told to stop again on any result
        that was already in flight.

    Tune's ``metric``/``mode`` (from ``TuneConfig``) are accepted and ignored: the
    objectives are ``metrics``/``modes``. ``metric`` stays ``None`` so Tune's strict
    metric check does not fail a trial this scheduler would rather stop.

    State (rung records, stopped trials) is plain data: the scheduler pickles, and
    ``save``/``restore`` write and read it as a file. Ray Tune (2.x) does *not* save a
    scheduler with the experiment state: ``Tuner.restore`` brings back the scheduler
    pickled in ``tuner.pkl`` when the run was created, with empty rungs. To resume with
    the rungs intact, pass ``scheduler.state_callback()`` in ``RunConfig.callbacks``:
    Tune saves a callback's state with every experiment checkpoint and hands it back on
    restore, and the callback carries the scheduler's rungs (the two are pickled together
    in ``tuner.pkl``, so the restored callback still refers to the restored scheduler).
    """

    def __init__(
        self,
        *,
        metrics: Sequence[str],
        modes: Sequence[str],
        time_attr: str = "training_iteration",
        max_t: int,
        grace_period: int = 1,
        reduction_factor: float = 3.0,
    ) -> None:
        if isinstance(metrics, str) or not all(isinstance(m, str) and m for m in metrics):
            raise ValueError(
                f"MOASHAScheduler metrics={metrics!r}: must be a sequence of non-empty names"
            )
        if isinstance(modes, str):
            raise ValueError(f"MOASHAScheduler modes={modes!r}: must be a sequence of modes")
        metrics, modes = list(metrics), list(modes)
        if not metrics:
            raise ValueError("MOASHAScheduler metrics=[]: at least one metric is required")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"MOASHAScheduler metrics={metrics!r}: names must be distinct")
        if len(modes) != len(metrics):
            raise ValueError(
                f"MOASHAScheduler modes={modes!r}: needs one mode per metric "
                f"({len(metrics)}), got {len(modes)}"
            )
        for mode in modes:
            if mode not in ("min", "max"):
                raise ValueError(f"MOASHAScheduler modes: {mode!r} must be 'min' or 'max'")
        if not isinstance(time_attr, str) or not time_attr:
            raise ValueError(f"MOASHAScheduler time_attr={time_attr!r}: must be a result key")
        grace = _positive_int("grace_period", grace_period, 1)
        limit = _positive_int("max_t", max_t, 1)
        if limit <= grace:
            raise ValueError(
                f"MOASHAScheduler max_t={limit}: must be greater than grace_period={grace}"
            )
        if (
            isinstance(reduction_factor, bool)
            or not isinstance(reduction_factor, numbers.Real)
            or not math.isfinite(reduction_factor)
            or reduction_factor <= 1
        ):
            raise ValueError(
                f"MOASHAScheduler reduction_factor={reduction_factor!r}: must be a number > 1"
            )
        super().__init__()
        self.metrics: list[str] = metrics
        self.modes: list[str] = modes
        self.time_attr: str = time_attr
        self.max_t: int = limit
        self.grace_period: int = grace
        self.reduction_factor: float = float(reduction_factor)
        self._signs: list[float] = [1.0 if mode == "min" else -1.0 for mode in modes]
        milestones: list[float] = []
        k = 0
        while grace * self.reduction_factor**k < limit:
            milestones.append(grace * self.reduction_factor**k)
            k += 1
        self.milestones: list[float] = milestones
        # milestone index -> trial_id -> minimised objective vector, in arrival order
        self._rungs: list[dict[str, tuple[float, ...]]] = [{} for _ in milestones]
        self._stopped: set[str] = set()
        self._num_invalid: int = 0
        self._tune_metric: str | None = None
        self._tune_mode: str | None = None

    # ---- Tune hooks ----------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Accept whatever ``TuneConfig`` carries (possibly None): the objectives are
        ``metrics``/``modes``; the single metric is only shown in ``debug_string``."""
        self._tune_metric, self._tune_mode = metric, mode
        return True

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        trial_id = trial.trial_id
        if trial_id in self._stopped:
            return TrialScheduler.STOP
        vector = self._objectives(result)
        if vector is None:
            self._num_invalid += 1
            return self._stop(trial_id)
        now = _finite(result.get(self.time_attr))
        if now is None:
            return TrialScheduler.CONTINUE
        if now >= self.max_t:
            return self._stop(trial_id)
        rung = self._rung_to_record(trial_id, now)
        if rung is None:
            return TrialScheduler.CONTINUE
        self._rungs[rung][trial_id] = vector
        if self._promoted(rung, trial_id):
            return TrialScheduler.CONTINUE
        return self._stop(trial_id)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        """Record a final result that crossed an unrecorded milestone (no decision is
        due), so later arrivals at that rung are judged against it too."""
        if not result:
            return
        vector, now = self._objectives(result), _finite(result.get(self.time_attr))
        if vector is None or now is None:
            return
        rung = self._rung_to_record(trial.trial_id, now)
        if rung is not None:
            self._rungs[rung][trial.trial_id] = vector

    # on_trial_add / on_trial_error / on_trial_remove / choose_trial_to_run: FIFO's.
    # Rung records outlive their trials: they are what later arrivals are judged against.

    def debug_string(self) -> str:
        objectives = ", ".join(f"{m} ({d})" for m, d in zip(self.metrics, self.modes, strict=True))
        lines = [
            f"Using MO-ASHA on {objectives}: {len(self._stopped)} stopped "
            f"({self._num_invalid} for missing or non-finite metrics)"
        ]
        for milestone, recorded in zip(self.milestones, self._rungs, strict=True):
            n = len(recorded)
            front = non_dominated_sort(list(recorded.values()))[:1]
            lines.append(
                f"  rung {self.time_attr}={milestone:g}: {n} recorded, "
                f"{self._quota(n)} promotable, {len(front[0]) if front else 0} on the front"
            )
        return "\n".join(lines)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))

    # ---- state -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The decisions so far (rung records, stopped trials), as plain data."""
        return {
            "milestones": list(self.milestones),
            "rungs": [dict(recorded) for recorded in self._rungs],
            "stopped": sorted(self._stopped),
            "num_invalid": self._num_invalid,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Replace the decisions so far with ``state`` from :meth:`get_state`; ValueError
        if it was taken on other rungs (a scheduler configured differently)."""
        milestones = [float(m) for m in state["milestones"]]
        if milestones != [float(m) for m in self.milestones]:
            raise ValueError(
                f"MOASHAScheduler state: rungs {milestones} do not match this "
                f"scheduler's {self.milestones} (different grace_period, max_t or "
                "reduction_factor)"
            )
        self._rungs = [
            {str(k): tuple(float(x) for x in v) for k, v in recorded.items()}
            for recorded in state["rungs"]
        ]
        self._stopped = {str(trial_id) for trial_id in state["stopped"]}
        self._num_invalid = int(state["num_invalid"])

    def state_callback(self) -> Callback:
        """A Tune callback that checkpoints this scheduler's state with the experiment
        and puts it back on ``Tuner.restore`` (see the class docstring)."""
        return MOASHAStateCallback(self)

    # ---- inspection ----------------------------------------------------------------

    def recorded(self, rung: int) -> dict[str, tuple[float, ...]]:
        """A copy of the minimised objective vectors recorded at rung index ``rung``."""
        return dict(self._rungs[rung])

    def promotable(self, rung: int) -> list[str]:
        """The trial ids at rung index ``rung`` that the promotion rule would let go on if
        they all arrived now, best first: the top ``ceil(n / rf)`` (all when n < rf)."""
        recorded = self._rungs[rung]
        ids = list(recorded)
        return [ids[i] for i in _rank(list(recorded.values()))[: self._quota(len(ids))]]

    # ---- internals -----------------------------------------------------------------

    def _objectives(self, result: Mapping[str, Any]) -> tuple[float, ...] | None:
        vector = []
        for metric, sign in zip(self.metrics, self._signs, strict=True):
            value = _finite(result.get(metric))
            if value is None:
                return None
            vector.append(sign * value)
        return tuple(vector)

    def _rung_to_record(self, trial_id: str, now: float) -> int | None:
        """The highest milestone ``now`` has reached, unless the trial is recorded there
        (then nothing is due: lower rungs were passed before)."""
        for index in reversed(range(len(self.milestones))):
            if now >= self.milestones[index]:
                return None if trial_id in self._rungs[index] else index
        return None

    def _quota(self, n: int) -> int:
        """How many of ``n`` trials recorded at a rung may continue."""
        return n if n < self.reduction_factor else math.ceil(n / self.reduction_factor)

    def _promoted(self, rung: int, trial_id: str) -> bool:
        if self._quota(len(self._rungs[rung])) >= len(self._rungs[rung]):
            return True
        return trial_id in self.promotable(rung)

    def _stop(self, trial_id: str) -> str:
        self._stopped.add(trial_id)
        return TrialScheduler.STOP


class MOASHAStateCallback(Callback):
    """Carries a :class:`MOASHAScheduler`'s rungs through Tune's experiment checkpoints
    (``get_state``/``set_state`` are the hooks Tune saves and restores callbacks by)."""

    def __init__(self, scheduler: MOASHAScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        return {"mo_asha": self.scheduler.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.set_state(state["mo_asha"])


def _rank(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of ``points`` best first: by front, then larger crowding distance within
    the front, then lower index (earlier arrival)."""
    keys: dict[int, tuple[int, float, int]] = {}
    for depth, front in enumerate(non_dominated_sort(points)):
        spread = crowding_distance([points[i] for i in front])
        for i, distance in zip(front, spread, strict=True):
            keys[i] = (depth, -distance, i)
    return sorted(keys, key=keys.__getitem__)


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
