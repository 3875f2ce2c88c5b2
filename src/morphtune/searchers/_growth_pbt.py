"""Growth-aware Population Based Training: explore by growing or pruning the copied model.

Population Based Training (Jaderberg et al., "Population Based Training of Neural
Networks", 2017) periodically restarts the worst trials from the best trials'
checkpoints (exploit) and perturbs the restarted trials' hyper-parameters (explore).
:class:`GrowthPBT` keeps Tune's exploit step and adds two structural explore moves:

- :class:`GrowMove` makes the copied model wider (or deeper): ``model.width`` times
  ``factor``, rounded up to a multiple of ``multiple_of``, at most ``maximum``. The
  restarted trial grows the donor's weights with a function-preserving operator
  (Net2Net, Chen et al., ICLR 2016; LEMON, Wang et al., ICLR 2024), so it resumes from
  the donor's function at the larger size.
- :class:`PruneMove` makes it sparser: ``sparsity.density`` times ``factor``, at least
  ``minimum``. The restarted trial prunes the donor's smallest-magnitude weights
  (Zhu & Gupta, 2017) and a dynamic sparse method (SET, RigL) drops and regrows from
  the new density.

The trainable carries a checkpoint into the explored config with
``morphtune.trainables._transition.restore_engine``. Each move is drawn independently
with probability ``move_probability`` at every explore step; Tune's hyper-parameter
mutations (resample with ``resample_probability``, else scale by 1.2 or 0.8, or step
to a neighbouring list value) apply as well. All draws come from one seeded generator,
so a seed fixes every explore decision; Tune's choice of the donor is its own.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search.sample import Domain, Function

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

__all__ = ["GrowMove", "GrowthPBT", "PruneMove"]

#: Tune's factors for perturbing a continuous hyper-parameter.
PERTURBATION_FACTORS = (1.2, 0.8)


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class GrowMove:
    """Grow ``key`` (an int config value, ``model.width`` or ``model.depth``) by
    ``factor``, rounded up to a multiple of ``multiple_of``, at most ``maximum`` (a value
    at or above ``maximum`` stays as it is). ``base`` is the value a config without
    ``key`` has (the spec's base trial value); ``None`` requires the key in every config.
    """

    key: str = "model.width"
    factor: float = 1.5
    maximum: int
    multiple_of: int = 1
    base: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or "." not in self.key:
            raise ValueError(
                f"GrowMove.key must be a dotted config key like 'model.width', but got "
                f"key={self.key!r}"
            )
        if not _is_number(self.factor) or not self.factor > 1:
            raise ValueError(
                f"GrowMove.factor must be a finite number > 1, but got factor={self.factor!r}"
            )
        if not _is_int(self.multiple_of) or self.multiple_of < 1:
            raise ValueError(
                f"GrowMove.multiple_of must be an int >= 1, but got "
                f"multiple_of={self.multiple_of!r}"
            )
        if not _is_int(self.maximum) or self.maximum < 1:
            raise ValueError(
                f"GrowMove.maximum must be an int >= 1, but got maximum={self.maximum!r}"
            )
        if self.maximum % self.multiple_of:
            raise ValueError(
                f"GrowMove.maximum must be a multiple of multiple_of={self.multiple_of}, but "
                f"got maximum={self.maximum}"
            )
        if self.base is not None:
            self.check_value(self.base, "GrowMove.base")

    def check_value(self, value: object, field: str) -> int:
        """``value`` after checking it is an int >= 1 (a config value of ``key``)."""
        if not _is_int(value) or value < 1:  # type: ignore[operator]
            raise ValueError(f"{field} must be an int >= 1, but got {field}={value!r}")
        return value  # type: ignore[return-value]

    def apply(self, value: int) -> int:
        """The grown value of ``value``."""
        if value >= self.maximum:
            return value
        # round() first: 10 * 1.1 is 11.000000000000002, which must not round up to 12
        units = math.ceil(round(value * self.factor / self.multiple_of, 9))
        return min(self.maximum, units * self.multiple_of)


@dataclass(frozen=True, kw_only=True)
class PruneMove:
    """Shrink ``key`` (a density in ``(0, 1]``, ``sparsity.density``) by ``factor``, at
    least ``minimum`` (a value at or below ``minimum`` stays as it is), rounded to 6
    decimals. ``base`` is the value a config without ``key`` has; ``None`` requires the
    key in every config."""

    key: str = "sparsity.density"
    factor: float = 0.7
    minimum: float = 0.05
    base: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or "." not in self.key:
            raise ValueError(
                f"PruneMove.key must be a dotted config key like 'sparsity.density', but "
                f"got key={self.key!r}"
            )
        if not _is_number(self.factor) or not 0 < self.factor < 1:
            raise ValueError(
                f"PruneMove.factor must satisfy 0 < factor < 1, but got factor={self.factor!r}"
            )
        if not _is_number(self.minimum) or not 0 < self.minimum <= 1:
            raise ValueError(
                f"PruneMove.minimum must satisfy 0 < minimum <= 1, but got minimum={self.minimum!r}"
            )
        if self.base is not None:
            self.check_value(self.base, "PruneMove.base")

    def check_value(self, value: object, field: str) -> float:
        """``value`` as a float after checking it is a density in ``(0, 1]``."""
        if not _is_number(value) or not 0 < value <= 1:  # type: ignore[operator]
            raise ValueError(f"{field} must satisfy 0 < {field} <= 1, but got {field}={value!r}")
        return float(value)  # type: ignore[arg-type]

    def apply(self, value: float) -> float:
        """The pruned value of ``value``."""
        if value <= self.minimum:
            return value
        return max(self.minimum, round(value * self.factor, 6))


def _keep_config(config: dict[str, Any]) -> dict[str, Any]:
    return config


def _check_probability(value: object, field: str) -> float:
    if not _is_number(value) or not 0 <= value <= 1:  # type: ignore[operator]
        raise ValueError(f"{field} must satisfy 0 <= {field} <= 1, but got {field}={value!r}")
    return float(value)  # type: ignore[arg-type]


def _check_mutations(mutations: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, values in mutations.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"hyperparam_mutations keys must be config keys, but got {key!r}")
        field = f"hyperparam_mutations[{key!r}]"
        if isinstance(values, list | tuple):
            if not values:
                raise ValueError(f"{field} must list at least one value, but got {values!r}")
        elif isinstance(values, Function):
            raise ValueError(
                f"{field} must not be tune.sample_from (it cannot be perturbed); use "
                "tune.uniform, tune.loguniform, tune.choice or a list"
            )
        elif not isinstance(values, Domain) and not callable(values):
            raise ValueError(
                f"{field} must be a list or tuple of values, a tune search space "
                f"(tune.uniform, ...) or a callable returning a value, but got "
                f"{type(values).__name__} (keys are flat: 'training.lr', not nested dicts)"
            )
        checked[key] = values
    return checked


class GrowthPBT(PopulationBasedTraining):
    """Population Based Training (Jaderberg et al., 2017) whose explore step can also
    grow the copied model function-preservingly (:class:`GrowMove`) or prune it by
    magnitude (:class:`PruneMove`), besides Tune's hyper-parameter mutations.

    Exploit is Tune's: at every ``perturbation_interval`` of ``time_attr`` a trial in the
    bottom ``quantile_fraction`` restarts from the checkpoint and config of one in the
    top. Explore (:meth:`explore`) then applies each configured move with probability
    ``move_probability`` and Tune's mutations of ``hyperparam_mutations`` (flat dotted
    keys). Every decision is appended to :attr:`moves` as ``{"trial_id", "donor_id",
    "time", "kind": "grow" | "prune" | "mutate", "key", "from", "to"}``.

    With ``synch`` (Tune's synchronous PBT) every trial pauses at a perturbation point until
    the whole population has reached it, so the ranking compares trials at the same time
    and every point exploits; otherwise a trial is ranked against whatever the others last
    reported, and fast trials may pass a point before the others arrive.
    """

    def __init__(
        self,
        *,
        metric: str | None,
        mode: str | None,
        time_attr: str = "training_iteration",
        perturbation_interval: int,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        hyperparam_mutations: dict[str, Any] | None = None,
        grow: GrowMove | None = None,
        prune: PruneMove | None = None,
        move_probability: float = 0.5,
        seed: int | None = None,
        synch: bool = False,
    ) -> None:
        if metric is not None and (not isinstance(metric, str) or not metric):
            raise ValueError(f"metric must be a non-empty str or None, but got metric={metric!r}")
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or None, but got mode={mode!r}")
        if not isinstance(time_attr, str) or not time_attr:
            raise ValueError(f"time_attr must be a non-empty str, but got time_attr={time_attr!r}")
        if not _is_number(perturbation_interval) or not perturbation_interval > 0:
            raise ValueError(
                "perturbation_interval must be a number > 0, but got "
                f"perturbation_interval={perturbation_interval!r}"
            )
        if not _is_number(quantile_fraction) or not 0 <= quantile_fraction <= 0.5:
            raise ValueError(
                "quantile_fraction must satisfy 0 <= quantile_fraction <= 0.5, but got "
                f"quantile_fraction={quantile_fraction!r}"
            )
        _check_probability(resample_probability, "resample_probability")
        self.move_probability = _check_probability(move_probability, "move_probability")
        if grow is not None and not isinstance(grow, GrowMove):
            raise ValueError(f"grow must be a GrowMove or None, but got {type(grow).__name__}")
        if prune is not None and not isinstance(prune, PruneMove):
            raise ValueError(f"prune must be a PruneMove or None, but got {type(prune).__name__}")
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise ValueError(f"seed must be an int >= 0 or None, but got seed={seed!r}")
        mutations = _check_mutations(hyperparam_mutations or {})
        self.grow, self.prune = grow, prune
        move_keys = [move.key for move in (grow, prune) if move is not None]
        if len(set(move_keys)) < len(move_keys):
            raise ValueError(
                f"grow and prune must move different keys, but both move {move_keys[0]!r}"
            )
        clash = sorted(set(move_keys) & set(mutations))
        if clash:
            raise ValueError(
                f"hyperparam_mutations must not also mutate the keys a move changes: {clash}"
            )
        if not mutations and not move_keys:
            raise ValueError(
                "GrowthPBT needs something to explore: give hyperparam_mutations, a grow "
                "move, a prune move, or several"
            )
        super().__init__(
            time_attr=time_attr,
            metric=metric,
            mode=mode,
            perturbation_interval=perturbation_interval,
            hyperparam_mutations=mutations,
            quantile_fraction=quantile_fraction,
            resample_probability=resample_probability,
            perturbation_factors=PERTURBATION_FACTORS,
            synch=bool(synch),
            # Tune insists on mutations or an explore function; explore() replaces both
            custom_explore_fn=None if mutations else _keep_config,
        )
        self.seed = seed
        self._rng = random.Random(seed)
        self.moves: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ Tune hooks

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        """Tune's bookkeeping, then a check that every move can read its key."""
        super().on_trial_add(tune_controller, trial)
        for move in self._moves():
            self._value(move, trial.config, f"trial {trial.trial_id}'s config")

    def _get_new_config(self, trial: Trial, trial_to_clone: Trial) -> tuple[dict, dict]:
        """Tune's explore hook: :meth:`explore` on the donor's config, at the time of
        the result that triggered the exploit (Tune has recorded it as the trial's
        ``last_train_time``; ``trial.last_result`` is still the one before)."""
        state = self._trial_state.get(trial)
        return self.explore(
            trial_to_clone.config,
            trial_id=trial.trial_id,
            donor_id=trial_to_clone.trial_id,
            time=state.last_train_time if state is not None else None,
        )

    # ------------------------------------------------------------------ explore

    def explore(
        self,
        config: Mapping[str, Any],
        *,
        trial_id: str,
        donor_id: str | None = None,
        time: Any = None,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The explored copy of the donor's ``config`` for trial ``trial_id`` and the
        operation applied per changed key (as Tune's explore returns them)."""
        new_config = copy.deepcopy(dict(config))
        operations: dict[str, str] = {}
        record = {"trial_id": trial_id, "donor_id": donor_id, "time": time}
        for move in self._moves():
            if self._rng.random() >= self.move_probability:
                continue
            old = self._value(move, config, "the donor's config")
            new = move.apply(old)  # type: ignore[arg-type]
            new_config[move.key] = new
            kind = "grow" if isinstance(move, GrowMove) else "prune"
            operations[move.key] = f"{kind} * {move.factor}" + (" (noop)" if new == old else "")
            self.moves.append({**record, "kind": kind, "key": move.key, "from": old, "to": new})
        for key, values in self._hyperparam_mutations.items():
            old = config.get(key)
            new, operations[key] = self._mutate(old, values)
            new_config[key] = new
            self.moves.append({**record, "kind": "mutate", "key": key, "from": old, "to": new})
        return new_config, operations

    def _moves(self) -> list[GrowMove | PruneMove]:
        return [move for move in (self.grow, self.prune) if move is not None]

    def _value(self, move: GrowMove | PruneMove, config: Mapping[str, Any], where: str) -> Any:
        if move.key in config:
            return move.check_value(config[move.key], f"{where}[{move.key!r}]")
        if move.base is None:
            name = type(move).__name__
            raise ValueError(
                f"{where} has no {move.key!r} and {name}.base is not set: give the move "
                "the base trial's value, or search the key"
            )
        return move.base

    def _mutate(self, value: Any, values: Any) -> tuple[Any, str]:
        """Tune's mutation of one value: resample, or perturb (neighbour in a list, or a
        factor of :data:`PERTURBATION_FACTORS`), drawn from this scheduler's generator."""
        resample = self._rng.random() < self._resample_probability
        if isinstance(values, list | tuple):
            if resample or value not in values:
                return self._rng.choice(list(values)), "resample"
            shift = self._rng.choice((-1, 1))
            index = values.index(value)
            moved = min(max(index + shift, 0), len(values) - 1)
            side = "left" if shift < 0 else "right"
            return values[moved], f"shift {side}" + (" (noop)" if moved == index else "")
        if resample:
            if isinstance(values, Domain):
                new = values.sample(None, random_state=self._rng.randrange(2**32))
            else:
                new = values()
            operation = "resample"
        else:
            factor = self._rng.choice(PERTURBATION_FACTORS)
            new, operation = value * factor, f"* {factor}"
        if isinstance(value, bool):
            return bool(new), operation
        if isinstance(value, int):
            return round(new), operation
        return new, operation

    def debug_string(self) -> str:
        grown = sum(1 for move in self.moves if move["kind"] == "grow")
        pruned = sum(1 for move in self.moves if move["kind"] == "prune")
        return (
            f"GrowthPBT: {self._num_checkpoints} checkpoints, {self._num_perturbations} "
            f"perturbs, {grown} grow and {pruned} prune moves"
        )
