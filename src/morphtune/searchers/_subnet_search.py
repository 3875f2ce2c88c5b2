"""Search the subnets of a trained weight-sharing supernet: Optuna ask/tell, Ray batches.

Once a supernet is trained (METHODS §5: Once-for-All, Cai et al., ICLR 2020; BigNAS, Yu et
al., ECCV 2020), choosing a subnet is a search over its discrete choices that needs no
training: OFA runs an evolutionary search on predicted accuracy and measured latency, BigNAS
a coarse-to-fine search on inherited-weight accuracy. :class:`SubnetSearch` does this with
Optuna's samplers driven by ask/tell: NSGA-II (Deb et al., IEEE TEC 2002) for Pareto fronts
of accuracy against cost, or TPE (Bergstra et al., NeurIPS 2011; multi-objective as in
Ozaki et al., GECCO 2020).

Each round asks Optuna for a batch of subnets and scores the new ones as a few Ray tasks
(one per worker), not one Tune trial each: the supernet weights and the scoring tensors are
put into the object store once per search, and each worker rebuilds the supernet once
(:mod:`morphtune.searchers._subnet_score`).

Objectives are any of ``val_acc`` (maximise; inherited-weight accuracy after BN
re-calibration), ``params``, ``flops`` (analytic, :func:`morphtune.flops.config_cost` of
the subnet's config) and ``latency_ms`` (median forward time of the extracted subnet,
measured in the worker). Constraints are upper bounds on ``params``, ``flops`` and
``latency_ms``:

- **Analytic constraints are checked before scoring.** A subnet over a ``params`` or
  ``flops`` bound is never sent to a worker, and never appears in the outcome or the store.
  Its Optuna trial is told ``COMPLETE`` with user attribute ``scored = False``, its
  analytic objective values and the worst value (``-inf`` to maximise, ``+inf`` to
  minimise) for each objective that only scoring gives. Neither sampler compares the
  values of infeasible trials (constrained domination orders them by violation alone), so
  the placeholders never steer the search, while the violation does: told ``PRUNED``
  instead, NSGA-II would ignore the trial and keep sampling blindly under a tight bound.
- **Latency is only known after scoring.** A subnet over the ``latency_ms`` bound is told
  ``COMPLETE`` with its real values and a positive violation, and is left out of
  :attr:`SearchOutcome.scored`, the Pareto front and the store's result rows.
- Both samplers get a ``constraints_func`` reading the violations, each the relative excess
  ``value / bound - 1`` (``<= 0`` is feasible; an unmeasured latency counts as 0), so
  NSGA-II applies constrained domination and TPE ranks infeasible trials last.

A subnet asked again is answered from the search's cache (told the same values, or pruned
again), never rescored; so is one whose choices build the same model as an earlier one
(equal :meth:`Supernet.subnet_config`, e.g. widths of layers its depth drops).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import ray
import torch
from optuna.trial import FrozenTrial

from morphtune.flops import config_cost
from morphtune.methods.supernet import SubnetSpace
from morphtune.models import TaskShape
from morphtune.searchers._subnet_score import ScoringPayload, SubnetScore, score_batch
from morphtune.searchers._subnet_store import SubnetRecorder

if TYPE_CHECKING:  # not at run time: morphtune.data imports scikit-learn, which every Ray
    # worker that unpickles a scoring task would then import too (seconds of start-up)
    from morphtune.data import DatasetSplit

__all__ = [
    "SUBNET_CONSTRAINTS",
    "SUBNET_METRICS",
    "SUBNET_SAMPLERS",
    "ScoredSubnet",
    "SearchOutcome",
    "SubnetSearch",
    "pareto_front",
]

#: Metrics a subnet is scored on, each with its natural direction.
SUBNET_METRICS: Mapping[str, str] = {
    "val_acc": "max",
    "params": "min",
    "flops": "min",
    "latency_ms": "min",
}
#: Metrics that take an upper-bound constraint; the analytic ones are checked before scoring.
SUBNET_CONSTRAINTS = ("params", "flops", "latency_ms")
_ANALYTIC = ("params", "flops")
SUBNET_SAMPLERS = ("nsga2", "tpe", "random")
_CONSTRAINTS_ATTR = "constraints"
_SCORED_ATTR = "scored"


@dataclass(frozen=True)
class ScoredSubnet:
    """One subnet and its scores. ``trial`` is the number of the Optuna trial that first
    asked for it (its store trial id is ``subnet-<trial>``)."""

    subnet: dict[str, Any]
    val_acc: float
    params: int
    flops: int
    latency_ms: float
    trial: int
    worker_pid: int
    score_s: float
    scored_at: float

    def metric(self, name: str) -> float:
        if name not in SUBNET_METRICS:
            raise ValueError(f"metric must be one of {list(SUBNET_METRICS)}, but got {name!r}")
        return float(getattr(self, name))

    def metrics(self) -> dict[str, float | int]:
        """The metrics written to the store (``pareto`` is added there)."""
        return {
            "val_acc": self.val_acc,
            "params": self.params,
            "flops": self.flops,
            "latency_ms": self.latency_ms,
        }


@dataclass
class SearchOutcome:
    """What a search found.

    ``scored``: every distinct subnet scored that meets all constraints, in scoring order;
    ``pareto``: the non-dominated ones among them under the search's objectives;
    ``infeasible``: scored subnets left out for breaking a measured (latency) constraint.
    Counts: ``asked`` Optuna trials, of which ``rejected`` broke an analytic constraint
    before scoring and ``duplicates`` repeated an earlier subnet; ``tasks`` Ray tasks ran.
    """

    scored: list[ScoredSubnet]
    pareto: list[ScoredSubnet]
    infeasible: list[ScoredSubnet]
    asked: int
    rejected: int
    duplicates: int
    tasks: int
    wall_s: float
    study: optuna.Study
    sweep_id: str | None = None
    objectives: tuple[tuple[str, str], ...] = field(default=())

    @property
    def subnets_per_s(self) -> float:
        measured = len(self.scored) + len(self.infeasible)
        return measured / self.wall_s if self.wall_s > 0 else math.inf


def _key(subnet: Mapping[str, Any]) -> str:
    return json.dumps(subnet, sort_keys=True)


def pareto_front(
    items: Sequence[ScoredSubnet], objectives: Sequence[tuple[str, str]]
) -> list[ScoredSubnet]:
    """The items no other item dominates (at least as good in every objective and better in
    one), in their input order. Items with equal objective values are all kept."""
    if not items:
        return []
    signs = np.array([1.0 if mode == "max" else -1.0 for _, mode in objectives])
    values = np.array([[item.metric(name) for name, _ in objectives] for item in items]) * signs
    front = []
    for index, row in enumerate(values):
        dominated = np.any(np.all(values >= row, axis=1) & np.any(values > row, axis=1))
        if not dominated:
            front.append(items[index])
    return front


def _check_objectives(objectives: object) -> tuple[tuple[str, str], ...]:
    if isinstance(objectives, str | bytes) or not isinstance(objectives, Sequence):
        raise ValueError(
            f"objectives must be a list of (metric, mode) pairs, but got {objectives!r}"
        )
    checked: list[tuple[str, str]] = []
    for index, pair in enumerate(objectives):
        where = f"objectives[{index}]"
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"{where} must be a (metric, mode) pair, but got {pair!r}")
        metric, mode = pair
        if metric not in SUBNET_METRICS:
            raise ValueError(
                f"{where} metric must be one of {list(SUBNET_METRICS)}, but got {metric!r}"
            )
        if mode not in ("max", "min"):
            raise ValueError(f"{where} mode must be 'max' or 'min', but got {mode!r}")
        if any(metric == seen for seen, _ in checked):
            raise ValueError(f"{where} repeats metric {metric!r}; each metric at most once")
        checked.append((str(metric), str(mode)))
    if not checked:
        raise ValueError("objectives must name at least one (metric, mode) pair, but got []")
    return tuple(checked)


def _check_constraints(constraints: object) -> dict[str, float]:
    if constraints is None:
        return {}
    if not isinstance(constraints, Mapping):
        raise ValueError(f"constraints must map metric to upper bound, but got {constraints!r}")
    checked: dict[str, float] = {}
    for name in sorted(constraints):
        bound = constraints[name]
        if name not in SUBNET_CONSTRAINTS:
            raise ValueError(
                f"constraints.{name}: only {list(SUBNET_CONSTRAINTS)} take a bound, "
                f"but got {name!r}"
            )
        if (
            isinstance(bound, bool)
            or not isinstance(bound, int | float)
            or not math.isfinite(bound)
            or bound <= 0
        ):
            raise ValueError(f"constraints.{name} must be a finite number > 0, but got {bound!r}")
        checked[name] = float(bound)
    return checked


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, but got {value!r}")
    return value


def _constraint_values(trial: FrozenTrial) -> list[float]:
    return list(trial.user_attrs[_CONSTRAINTS_ATTR])


class SubnetSearch:
    """Multi-objective search over the subnets of one trained supernet.

    ``supernet_state`` is the supernet's ``state_dict``; ``family``, ``task`` and
    ``section`` rebuild it (:func:`morphtune.methods.supernet.build_supernet`). ``space``
    restricts the search to some of the supernet's choices (``None``: all of them);
    ``data`` gives the validation set and the BN re-calibration batches (its train split).
    See the module docstring for objectives, constraints and what is told to Optuna.

    ``batch_size`` new subnets are scored per round, split over ``workers`` Ray tasks
    (default: the cluster's CPUs). ``population_size`` is NSGA-II's (default
    ``batch_size``), ``n_startup_trials`` TPE's random start.
    """

    def __init__(
        self,
        supernet_state: Mapping[str, torch.Tensor],
        family: str,
        task: TaskShape,
        section: Mapping[str, Any],
        space: SubnetSpace | None,
        data: DatasetSplit,
        *,
        objectives: Sequence[tuple[str, str]] = (("val_acc", "max"), ("params", "min")),
        constraints: Mapping[str, float] | None = None,
        sampler: str = "nsga2",
        seed: int = 0,
        batch_size: int = 16,
        workers: int | None = None,
        population_size: int | None = None,
        n_startup_trials: int = 10,
        recalibration_batches: int = 4,
        recalibration_batch_size: int = 64,
        latency_batch_size: int = 64,
        latency_warmup: int = 2,
        latency_repeats: int = 5,
        eval_batch_size: int = 1024,
        val_samples: int | None = None,
    ) -> None:
        from morphtune.methods.supernet import build_supernet

        if not isinstance(supernet_state, Mapping):
            raise ValueError(
                f"supernet_state must be a state_dict mapping, but got "
                f"{type(supernet_state).__name__}"
            )
        if not isinstance(task, TaskShape):
            raise ValueError(f"task must be a TaskShape, but got {task!r}")
        if not all(hasattr(data, name) for name in ("train", "val", "task", "input_shape")):
            raise ValueError(f"data must be a DatasetSplit, but got {type(data).__name__}")
        if data.task != "classify":
            raise ValueError(
                f"data.task must be 'classify' (subnets are ranked by val_acc), "
                f"but got {data.task!r}"
            )
        if TaskShape.of(data) != task:
            raise ValueError(f"task {task} does not match the data's {TaskShape.of(data)}")
        if sampler not in SUBNET_SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SUBNET_SAMPLERS)}, but got {sampler!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, but got {seed!r}")
        self.objectives = _check_objectives(objectives)
        self.constraints = _check_constraints(constraints)
        self.sampler, self.seed = sampler, seed
        self.batch_size = _positive_int("batch_size", batch_size)
        self.workers = None if workers is None else _positive_int("workers", workers)
        self.population_size = _positive_int(
            "population_size", batch_size if population_size is None else population_size, 2
        )
        self.n_startup_trials = _positive_int("n_startup_trials", n_startup_trials, 0)
        _positive_int("recalibration_batches", recalibration_batches)
        _positive_int("recalibration_batch_size", recalibration_batch_size)
        _positive_int("latency_batch_size", latency_batch_size)
        _positive_int("latency_warmup", latency_warmup, 0)
        _positive_int("latency_repeats", latency_repeats)
        _positive_int("eval_batch_size", eval_batch_size)
        if val_samples is not None:
            _positive_int("val_samples", val_samples)

        self.family, self.task, self.section = family, task, dict(section)
        # The driver's copy: checks the state fits and gives each subnet's config (cost).
        self.supernet = build_supernet(family, task, self.section)
        try:
            self.supernet.load_state_dict(dict(supernet_state))
        except RuntimeError as error:
            raise ValueError(
                f"supernet_state does not fit build_supernet({family!r}, ...): {error}"
            ) from error
        self.space = self._check_space(space)

        generator = torch.Generator().manual_seed(seed)
        train_inputs = data.train.tensors[0]
        calibration = tuple(
            train_inputs[
                torch.randint(len(train_inputs), (recalibration_batch_size,), generator=generator)
            ]
            for _ in range(recalibration_batches)
        )
        val_inputs, val_labels = data.val.tensors[0], data.val.tensors[1]
        if val_samples is not None and val_samples < len(val_labels):
            keep = torch.randperm(len(val_labels), generator=generator)[:val_samples]
            val_inputs, val_labels = val_inputs[keep], val_labels[keep]
        self._payload = ScoringPayload(
            family=family,
            task=task,
            section=self.section,
            state={  # a snapshot: later changes to the caller's tensors do not leak in
                name: tensor.detach().to("cpu", copy=True)
                for name, tensor in supernet_state.items()
            },
            val_inputs=val_inputs.contiguous(),
            val_labels=val_labels.contiguous(),
            calibration=calibration,
            latency_inputs=data.val.tensors[0][:latency_batch_size].contiguous(),
            latency_warmup=latency_warmup,
            latency_repeats=latency_repeats,
            eval_batch_size=eval_batch_size,
        )
        self._payload_ref: tuple[str, ray.ObjectRef] | None = None
        self._costs: dict[str, tuple[int, int]] = {}
        self.tasks = 0

    @property
    def payload(self) -> ScoringPayload:
        """What the workers score with (weights, calibration, validation and latency
        tensors); put into the object store once per Ray session."""
        return self._payload

    def _check_space(self, space: SubnetSpace | None) -> SubnetSpace:
        full: SubnetSpace = self.supernet.space
        if space is None:
            return full
        if not isinstance(space, SubnetSpace):
            raise ValueError(f"space must be a SubnetSpace or None, but got {space!r}")
        for name, values in space.choices.items():
            if name not in full.choices:
                raise ValueError(
                    f"space.{name} is not a choice of the supernet; valid: {list(full.names)}"
                )
            outside = [value for value in values if value not in full.choices[name]]
            if outside:
                raise ValueError(
                    f"space.{name} has values {outside} outside the supernet's range "
                    f"{list(full.choices[name])}"
                )
        missing = [name for name in full.names if name not in space.choices]
        if missing:
            raise ValueError(f"space is missing the supernet's choices {missing}")
        return space

    # -- costs, constraints, Optuna ---------------------------------------------------------

    def cost(self, subnet: Mapping[str, Any]) -> tuple[int, int]:
        """``(params, flops)`` of ``subnet``, analytic (cached per subnet)."""
        key = _key(subnet)
        cached = self._costs.get(key)
        if cached is None:
            cost = config_cost(self.family, self.supernet.subnet_config(subnet))
            cached = self._costs[key] = (cost.params, cost.flops)
        return cached

    def _model_key(self, subnet: Mapping[str, Any]) -> str:
        return repr(self.supernet.subnet_config(subnet))

    def violations(self, values: Mapping[str, float | None]) -> list[float]:
        """Relative excess ``value / bound - 1`` per constraint, in sorted order of name;
        a value not measured yet (``None``) counts as 0 (not known to violate)."""
        out = []
        for name, bound in self.constraints.items():
            value = values.get(name)
            out.append(0.0 if value is None else float(value) / bound - 1.0)
        return out

    def _make_sampler(self) -> optuna.samplers.BaseSampler:
        constraints_func = _constraint_values if self.constraints else None
        with warnings.catch_warnings():  # constraints_func and multivariate are experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.sampler == "nsga2":
                return optuna.samplers.NSGAIISampler(
                    population_size=self.population_size,
                    seed=self.seed,
                    constraints_func=constraints_func,
                )
            if self.sampler == "tpe":
                return optuna.samplers.TPESampler(
                    seed=self.seed,
                    n_startup_trials=self.n_startup_trials,
                    multivariate=True,
                    constant_liar=True,  # a batch is asked before any of it is told
                    constraints_func=constraints_func,
                )
            return optuna.samplers.RandomSampler(seed=self.seed)  # a baseline

    def _ask(self, study: optuna.Study) -> tuple[optuna.trial.Trial, dict[str, Any]]:
        trial = study.ask()
        subnet = {
            name: trial.suggest_categorical(name, list(values))
            for name, values in self.space.choices.items()
        }
        return trial, subnet

    # -- scoring ----------------------------------------------------------------------------

    def _payload_object(self) -> ray.ObjectRef:
        """The payload's object ref, put once per Ray session."""
        context = ray.get_runtime_context()  # a restarted Ray may reuse the job id
        job = f"{context.get_node_id()}/{context.get_job_id()}"
        if self._payload_ref is None or self._payload_ref[0] != job:
            self._payload_ref = (job, ray.put(self._payload))
        return self._payload_ref[1]

    def score(self, subnets: Sequence[Mapping[str, Any]]) -> list[SubnetScore]:
        """Measure ``subnets`` (validated against the space) as Ray tasks, one per worker,
        in the given order. Needs a running Ray; constraints are not applied here."""
        checked = [self.space.validate(s, field=f"subnets[{i}]") for i, s in enumerate(subnets)]
        if not checked:
            return []
        if not ray.is_initialized():
            raise RuntimeError("SubnetSearch.score needs Ray: call morphtune.runner.init_ray()")
        ref = self._payload_object()
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        chunks = [chunk.tolist() for chunk in np.array_split(np.arange(len(checked)), workers)]
        futures = [
            score_batch.remote([ref], [checked[index] for index in chunk])
            for chunk in chunks
            if chunk
        ]
        self.tasks += len(futures)
        return [score for batch in ray.get(futures) for score in batch]

    # -- the search -------------------------------------------------------------------------

    def run(
        self,
        n_subnets: int,
        *,
        store_root: str | os.PathLike[str] | None = None,
        sweep_id: str | None = None,
        overwrite: bool = False,
        max_trials: int | None = None,
        initial: Sequence[Mapping[str, Any]] = (),
        source: Mapping[str, str] | None = None,
    ) -> SearchOutcome:
        """Score up to ``n_subnets`` distinct subnets and return the outcome.

        ``n_subnets`` counts subnets sent to workers (the compute budget); rejected and
        repeated asks are free but count towards ``max_trials`` asks (default
        ``max(20 * n_subnets, 200)``). The search also ends when every subnet of the space
        has been seen. ``initial`` subnets are asked first (``study.enqueue_trial``).
        With ``store_root``, the search is written as sweep ``sweep_id`` (default
        ``subnets-<random>``); an existing sweep of that id is an error unless
        ``overwrite``. ``source`` (``sweep_id``, ``trial_id``): the trial whose supernet
        this is, recorded in the manifest (``subnet_search.source``) so that ``morphtune
        export`` finds the weights again. Starts an embedded Ray (and stops it after) if
        none is running.
        """
        _positive_int("n_subnets", n_subnets)
        limit = _positive_int(
            "max_trials", max(20 * n_subnets, 200) if max_trials is None else max_trials
        )
        starts = [self.space.validate(s, field=f"initial[{i}]") for i, s in enumerate(initial)]
        recorder = None
        if store_root is not None:
            sweep_id = sweep_id or f"subnets-{uuid.uuid4().hex[:8]}"
            manifest = self._manifest()
            if source is not None:
                manifest["subnet_search"]["source"] = {str(k): str(v) for k, v in source.items()}
            recorder = SubnetRecorder(store_root, sweep_id, manifest, overwrite=overwrite)
        started_ray = not ray.is_initialized()
        if started_ray:
            from morphtune.runner import init_ray

            init_ray()
        try:
            outcome = self._search(n_subnets, limit, starts, recorder)
        except BaseException as error:
            if recorder is not None:
                recorder.fail(error)
            raise
        finally:
            if started_ray:
                ray.shutdown()
                self._payload_ref = None
        outcome.sweep_id = sweep_id if recorder is not None else None
        return outcome

    def _search(
        self,
        n_subnets: int,
        max_trials: int,
        initial: list[dict[str, Any]],
        recorder: SubnetRecorder | None,
    ) -> SearchOutcome:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            directions=["maximize" if mode == "max" else "minimize" for _, mode in self.objectives],
            sampler=self._make_sampler(),
        )
        for subnet in initial:
            study.enqueue_trial(subnet)
        started = time.perf_counter()
        tasks_before = self.tasks
        # Keyed by the subnet's model config: two choice dicts that build the same model
        # (say, widths of layers a shallower depth drops) are one subnet, scored once.
        measured: dict[str, tuple[ScoredSubnet, list[float]]] = {}
        rejected: dict[str, list[float]] = {}
        seen: set[str] = set()  # choice dicts asked, to stop once the space is exhausted
        scored: list[ScoredSubnet] = []
        infeasible: list[tuple[ScoredSubnet, str]] = []
        asked = duplicates = 0
        size = self.space.size()

        def tell_measured(trial: optuna.trial.Trial, item: ScoredSubnet, viol: list[float]) -> None:
            trial.set_user_attr(_CONSTRAINTS_ATTR, viol)
            trial.set_user_attr(_SCORED_ATTR, True)
            study.tell(trial, [item.metric(name) for name, _ in self.objectives])

        def tell_rejected(trial: optuna.trial.Trial, viol: list[float]) -> None:
            known = dict(zip(_ANALYTIC, self.cost(trial.params), strict=True))
            trial.set_user_attr(_CONSTRAINTS_ATTR, viol)
            trial.set_user_attr(_SCORED_ATTR, False)
            study.tell(
                trial,
                [
                    float(known[name])
                    if name in known
                    else (-math.inf if mode == "max" else math.inf)
                    for name, mode in self.objectives
                ],
            )

        while len(measured) < n_subnets and asked < max_trials:
            if len(seen) >= size:
                break  # every subnet of the space has been asked
            want = min(self.batch_size, n_subnets - len(measured))
            fresh: dict[str, tuple[dict[str, Any], list[optuna.trial.Trial]]] = {}
            while len(fresh) < want and asked < max_trials:
                if len(seen) >= size:
                    break
                trial, subnet = self._ask(study)
                asked += 1
                seen.add(_key(subnet))
                key = self._model_key(subnet)
                if key in measured:
                    duplicates += 1
                    tell_measured(trial, *measured[key])
                elif key in rejected:
                    duplicates += 1
                    tell_rejected(trial, rejected[key])
                elif key in fresh:
                    duplicates += 1
                    fresh[key][1].append(trial)
                else:
                    params, flops = self.cost(subnet)
                    viol = self.violations({"params": params, "flops": flops})
                    if any(value > 0 for value in viol):
                        rejected[key] = viol
                        tell_rejected(trial, viol)
                    else:
                        fresh[key] = (subnet, [trial])
            if not fresh:
                continue
            scores = self.score([subnet for subnet, _ in fresh.values()])
            now = time.time()
            for (key, (subnet, trials)), score in zip(fresh.items(), scores, strict=True):
                params, flops = self.cost(subnet)
                item = ScoredSubnet(
                    subnet=subnet,
                    val_acc=score.val_acc,
                    params=params,
                    flops=flops,
                    latency_ms=score.latency_ms,
                    trial=trials[0].number,
                    worker_pid=score.worker_pid,
                    score_s=score.score_s,
                    scored_at=now,
                )
                viol = self.violations(item.metrics())
                measured[key] = (item, viol)
                for trial in trials:
                    tell_measured(trial, item, viol)
                broken = [
                    f"{name}={item.metric(name):.6g} > {bound:.6g}"
                    for (name, bound), excess in zip(self.constraints.items(), viol, strict=True)
                    if excess > 0
                ]
                if broken:
                    infeasible.append((item, "infeasible: " + ", ".join(broken)))
                else:
                    scored.append(item)
            if recorder is not None:
                recorder.progress(
                    {
                        "asked": asked,
                        "scored": len(scored),
                        "infeasible": len(infeasible),
                        "rejected": len(rejected),
                        "duplicates": duplicates,
                    }
                )
        pareto = pareto_front(scored, self.objectives)
        outcome = SearchOutcome(
            scored=scored,
            pareto=pareto,
            infeasible=[item for item, _ in infeasible],
            asked=asked,
            rejected=len(rejected),
            duplicates=duplicates,
            tasks=self.tasks - tasks_before,
            wall_s=time.perf_counter() - started,
            study=study,
            objectives=self.objectives,
        )
        if recorder is not None:
            recorder.finish(
                scored,
                pareto,
                infeasible,
                {
                    "counts": {
                        "asked": asked,
                        "scored": len(scored),
                        "infeasible": len(infeasible),
                        "rejected": len(rejected),
                        "duplicates": duplicates,
                        "tasks": outcome.tasks,
                    },
                    "wall_s": outcome.wall_s,
                },
            )
        return outcome

    def _manifest(self) -> dict[str, Any]:
        metric, mode = self.objectives[0]
        return {
            "kind": "subnet_search",
            "objective": {"metric": metric, "mode": mode},
            "subnet_search": {
                "family": self.family,
                "task": {
                    "input_shape": list(self.task.input_shape),
                    "num_classes": self.task.num_classes,
                    "task": self.task.task,
                },
                "section": self.section,
                "space": self.space.to_dict(),
                "objectives": [list(pair) for pair in self.objectives],
                "constraints": self.constraints,
                "sampler": self.sampler,
                "seed": self.seed,
                "batch_size": self.batch_size,
            },
        }
