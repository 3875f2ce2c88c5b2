"""Run a sweep on Ray: an embedded local Ray by default, or an existing cluster.

``run_sweep`` validates nothing itself (the spec arrives validated), writes the sweep
manifest, compiles the search (Optuna define-by-run space, sampler, Tune scheduler), runs
every trial as a Ray Train job, and records every result in the Parquet store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import socket
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator

from morphtune._sweep_paths import SweepExistsError, SweepPaths, sweep_paths
from morphtune.progress import Progress, ProgressDisplay, read_store_progress, track_progress
from morphtune.searchers import (
    ConstraintChecker,
    ProxyFilteredSearch,
    SafeOptunaSearch,
    define_by_run,
    make_proxy_scorer,
    make_sampler,
    make_scheduler,
)
from morphtune.searchers._loggers import logger_callbacks
from morphtune.searchers._resume_repair import (
    KEPT_SNAPSHOT_DIR,
    SnapshotFormatError,
    SnapshotKeeper,
    SnapshotRepair,
    install_kept_snapshot,
    repair_snapshot,
)
from morphtune.searchers._schedulers import POPULATION_SCHEDULERS, tune_space
from morphtune.searchers._study import (
    fail_orphans,
    optuna_storage,
    storage_url,
    warm_start_trials,
)
from morphtune.spec import SweepSpec
from morphtune.store import ResultWriter, SweepStore, validate_sweep_id
from morphtune.store.callback import StoreCallback
from morphtune.trainables import make_trainable
from morphtune.trainables._driver import TRAIN_ENV_DEFAULTS, TrialFunction

__all__ = [
    "SweepExistsError",
    "SweepOutcome",
    "init_ray",
    "make_searcher",
    "resume_sweep",
    "run_sweep",
    "store_pareto",
]

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    sweep_id: str
    results_dir: str | Path  # an object-store URI (without its query) or a local directory
    wall_s: float
    trial_states: dict[str, int] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    pareto: list[dict[str, Any]] | None = None  # multi-objective sweeps
    subnets: dict[str, Any] | None = None  # the subnet search after a supernet sweep


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = False
) -> None:
    """Connect to ``address``; else to the cluster ``RAY_ADDRESS`` names (as it is for a
    driver submitted as a Ray Job); else start an embedded local Ray.

    Trials rely on the Ray Train settings in ``TRAIN_ENV_DEFAULTS`` (user values win).
    An embedded Ray must also tell its workers where its own State API is: Ray Train's
    PlacementGroupCleaner looks the trial controller up there, and without an address it
    falls back to the cluster a past ``ray start`` recorded in /tmp/ray, which may be
    gone (the lookups time out) or be another cluster (the controller is never found).
    Either way the cleaner fails, every trial that Tune ends leaks its workers'
    placement group, and the sweep stalls. So the dashboard (which serves the State
    API) gets a port chosen here, and every worker is told its URL.
    """
    for key, value in TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    env_vars = {key: os.environ[key] for key in TRAIN_ENV_DEFAULTS}
    embedded = not address and not os.environ.get("RAY_ADDRESS")
    dashboard_port = _free_port() if embedded else None
    if embedded:
        address = "local"  # never attach to whatever /tmp/ray/ray_current_cluster names
        env_vars["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{dashboard_port}"
    ray.init(
        address=address or None,
        num_cpus=num_cpus,
        runtime_env={"env_vars": env_vars},
        log_to_driver=log_to_driver,
        logging_level=logging.WARNING,
        include_dashboard=True if embedded else None,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
    )


def make_searcher(spec: SweepSpec, storage_url: str | None = None) -> SafeOptunaSearch:
    """The sweep's Optuna searcher: every objective, the sampler, pre-launch constraints,
    the study in ``storage_url`` (in memory without one), behind a proxy filter when the
    spec asks for one."""
    goals = spec.search.goals
    limits = spec.search.constraints.limits()
    arguments: dict[str, Any] = {
        "space": define_by_run(spec.search.space),
        "metric": [goal.metric for goal in goals] if len(goals) > 1 else goals[0].metric,
        "mode": [goal.direction for goal in goals] if len(goals) > 1 else goals[0].direction,
        "sampler": make_sampler(spec.search.sampler, spec.search.space, len(limits)),
        "constraints": (
            ConstraintChecker(spec, limits, spec.search.constraints.latency_batch_size)
            if limits
            else None
        ),
    }
    if storage_url is not None:
        arguments["storage"] = optuna_storage(storage_url)
        arguments["study_name"] = spec.name
    gate = spec.search.proxy_filter
    if gate is None:
        return SafeOptunaSearch(**arguments)
    return ProxyFilteredSearch(
        **arguments,
        scorer=make_proxy_scorer(spec, gate.proxy, gate.batch_size),
        fraction=gate.fraction,
        warmup=gate.warmup,
    )


def _study_name(sweep_id: str) -> str:
    return sweep_id


def _fresh_study(url: str, sweep_id: str, overwrite: bool) -> None:
    """A new sweep must not inherit trials from an old study of the same name."""
    storage = optuna_storage(url)
    try:
        optuna.load_study(study_name=_study_name(sweep_id), storage=storage)
    except KeyError:
        return
    if not overwrite:
        raise SweepExistsError(
            f"the Optuna storage {_redact(url)} already holds a study {sweep_id!r}; pass "
            "--overwrite to replace it, --sweep-id to choose another id, or `morphtune "
            "resume` to continue it"
        )
    optuna.delete_study(study_name=_study_name(sweep_id), storage=storage)


def _redact(url: str) -> str:
    """A database URL without its password."""
    head, sep, tail = url.partition("://")
    if "@" in tail:
        credentials, _, host = tail.rpartition("@")
        return f"{head}{sep}{credentials.split(':')[0]}:***@{host}"
    return url


def _warm_start(spec: SweepSpec, searcher: SafeOptunaSearch, root: str | Path) -> int:
    settings = spec.search.warm_start
    if settings is None:
        return 0
    store = SweepStore(Path(settings.results).expanduser() if settings.results else root)
    if not store.has_sweep(settings.sweep):
        raise ValueError(
            f"search.warm_start.sweep: no sweep {settings.sweep!r} in {store.root} "
            f"(sweeps there: {store.list_sweeps()})"
        )
    trials = warm_start_trials(spec, store.trials(settings.sweep), settings.top_k)
    for trial in trials:
        searcher.study.add_trial(trial)
    return len(trials)


def _tuner_configs(
    spec: SweepSpec,
    searcher: SafeOptunaSearch | None,
    directory: Path,
    root: str | Path,
    sweep_id: str,
    trial_fn: TrialFunction | None,
    writer: ResultWriter,
) -> tuple[tune.TuneConfig, tune.RunConfig]:
    in_process = spec.resources.in_process
    scheduler = make_scheduler(spec)
    callbacks: list[Any] = [
        StoreCallback(root, sweep_id, spec, checkpoints=in_process and trial_fn is None),
        # a whole copy of each experiment snapshot, for `morphtune resume` (Tune's own copy
        # can be older than a crash, or cut short by it); after the store, which writes
        # the rows that the snapshot covers first (a resumed trial never reports them again)
        SnapshotKeeper(directory / KEPT_SNAPSHOT_DIR),
    ]
    callbacks.append(_SearchSummaryCallback(writer, searcher, scheduler))
    callbacks += logger_callbacks(spec, directory)  # TensorBoard / MLflow, when the spec asks
    state_callback = getattr(scheduler, "state_callback", None)
    if callable(state_callback):
        # Tune restores a scheduler from the pickle made when the run began; MO-ASHA's
        # rungs travel with the experiment checkpoints through this callback instead
        callbacks.append(state_callback())
    tune_config = tune.TuneConfig(
        # PBT owns the configs (it copies and perturbs them): Tune forbids a searcher
        # beside it, so its population is sampled by Tune's own variant generator
        search_alg=searcher
        if searcher is not None
        else BasicVariantGenerator(random_state=spec.search.sampler.seed),
        scheduler=scheduler,
        num_samples=spec.search.num_samples,
        max_concurrent_trials=spec.search.max_concurrent,
        time_budget_s=spec.search.time_budget_s,
        reuse_actors=in_process,
    )
    run_config = tune.RunConfig(
        name="tune",
        storage_path=str(directory),
        callbacks=callbacks,
        verbose=0,
        # in-process trials: Tune retries a crashed trial actor from its last checkpoint;
        # Ray Train trials retry their worker group inside Train (resources.max_failures)
        failure_config=tune.FailureConfig(
            max_failures=spec.resources.max_failures if in_process else 0, fail_fast=False
        ),
        # PBT exploits a donor's latest checkpoint some time after choosing it, while the
        # donor keeps training: pruning old checkpoints can delete it first, so a
        # population keeps all of them (trial directories are removed with the sweep)
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=None if spec.search.scheduler.name in POPULATION_SCHEDULERS else 2
        ),
    )
    return tune_config, run_config


class _SearchSummaryCallback(tune.Callback):
    """Rewrites the manifest's ``search`` summary as trials end (at most every
    ``interval_s``), so the service's search metrics (suggestion latency, infeasible and
    repeated proposals) are live while the sweep runs, not only once it is over."""

    def __init__(
        self,
        writer: ResultWriter,
        searcher: SafeOptunaSearch | None,
        scheduler: Any,
        interval_s: float = 5.0,
    ) -> None:
        self._writer = writer
        self._searcher = searcher
        self._scheduler = scheduler
        self._interval_s = interval_s
        self._written = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the experiment; the searcher and scheduler travel in
        # their own checkpoints, so a restored copy of this callback stays silent
        disabled = {"_writer": None, "_searcher": None, "_scheduler": None, "_disabled": True}
        return {**self.__dict__, **disabled}

    def _maybe_write(self) -> None:
        now = time.monotonic()
        if self.__dict__.get("_disabled") or now - self._written < self._interval_s:
            return
        self._written = now
        try:
            self._writer.update_manifest(search=_search_summary(self._searcher, self._scheduler))
        except Exception as error:  # a metrics refresh must never stop the sweep
            log.warning("could not refresh the manifest's search summary: %s", error)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._maybe_write()

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._maybe_write()


def _compact(writer: ResultWriter) -> None:
    """Merge the sweep's many small result parts (one per flush) so later queries read a
    few files; a failure leaves the parts as they are (readers resolve either layout)."""
    try:
        removed = writer.compact()
    except (OSError, ValueError) as error:
        log.warning("could not compact the sweep's result parts: %s", error)
    else:
        log.info("compacted the sweep's results (%d parts merged)", removed)


def _progress(
    display: ProgressDisplay | None,
    root: str | Path,
    sweep_id: str,
    started: float,
    elapsed_before: float,
    interval_s: float,
) -> AbstractContextManager[None]:
    """Live progress of the sweep on ``display`` while the block runs (nothing without a
    display): a thread reads the sweep's store every ``interval_s`` seconds."""
    if display is None:
        return nullcontext()
    store = SweepStore(root)  # its own reader: the cache stays with the polling thread

    def read() -> Progress:
        return read_store_progress(store, sweep_id, started=started, elapsed_before=elapsed_before)

    return track_progress(read, display, interval_s=interval_s)


def _search_summary(searcher: SafeOptunaSearch | None, scheduler: Any) -> dict[str, Any]:
    if searcher is None:  # a PBT population
        moves = getattr(scheduler, "moves", None)
        return {"pbt_moves": len(moves)} if moves is not None else {}
    summary: dict[str, Any] = {
        "infeasible": searcher.infeasible,
        "repeats_answered": searcher.finished.answered,
        "suggestion_seconds": searcher.suggest_seconds.as_manifest(),
    }
    if searcher.exhausted:
        summary["exhausted"] = searcher.exhausted
    if isinstance(searcher, ProxyFilteredSearch):
        summary["proxy_filter"] = {
            "proxy": getattr(searcher.scorer, "proxy", None),
            "filtered": searcher.filtered,
            "scored": len(searcher.scores),
        }
    moves = getattr(scheduler, "moves", None)
    if moves is not None:
        summary["pbt_moves"] = len(moves)
    study = searcher.study
    if study is not None:
        states: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            states[trial.state.name] = states.get(trial.state.name, 0) + 1
        summary["optuna_states"] = states
    return summary


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    results_root: str | Path | None = None,
    sweep_id: str | None = None,
    overwrite: bool = False,
    verbose: int = 0,
    trial_fn: TrialFunction | None = None,
    progress: ProgressDisplay | None = None,
    progress_interval_s: float = 2.0,
) -> SweepOutcome:
    """Run ``spec`` to completion and return where its results are and what was best.

    ``trial_fn(trial, report)`` replaces the built-in training engine with the caller's own
    function (it runs in-process on the ``function`` executor, one per trial).
    ``progress`` shows the sweep's live progress (read from its store every
    ``progress_interval_s`` seconds) until the sweep has finished.
    """
    sweep_id = validate_sweep_id(sweep_id or spec.name)
    paths = sweep_paths(results_root or spec.storage.results, sweep_id, spec.storage.work)
    root, directory = paths.store_root, paths.directory
    url = storage_url(spec, directory)
    if spec.storage.optuna:
        _fresh_study(url, sweep_id, overwrite)
    paths.claim(overwrite)
    if spec.name != sweep_id:
        spec = spec.model_copy(update={"name": sweep_id})
    writer = ResultWriter(root, sweep_id)
    started = time.time()
    goals = spec.search.goals
    writer.write_manifest(
        {
            "sweep_id": sweep_id,
            "name": spec.name,
            "objective": {"metric": goals[0].metric, "mode": goals[0].direction},
            "objectives": [{"metric": g.metric, "mode": g.direction} for g in goals],
            "constraints": spec.search.constraints.limits(),
            "optuna_storage": _redact(url),
            "executor": "function" if trial_fn or spec.resources.in_process else "train",
            "spec": spec.to_dict(),
            "created": started,
            "status": "running",
        }
    )
    with _progress(progress, root, sweep_id, started, 0.0, progress_interval_s):
        we_started_ray = not ray.is_initialized()
        if we_started_ray:
            init_ray(address, log_to_driver=verbose > 0)
        status = "failed"
        try:
            population = spec.search.scheduler.name in POPULATION_SCHEDULERS
            searcher = None if population else make_searcher(spec, url)
            warm = _warm_start(spec, searcher, root) if searcher is not None else 0
            tune_config, run_config = _tuner_configs(
                spec, searcher, directory, root, sweep_id, trial_fn, writer
            )
            tuner = tune.Tuner(
                make_trainable(spec, storage_path=str(directory / "train"), trial_fn=trial_fn),
                param_space=tune_space(spec) if population else None,
                tune_config=tune_config,
                run_config=run_config,
            )
            tuner.fit()
            status = "completed"
            _compact(writer)
            summary = _search_summary(searcher, tune_config.scheduler)
            if warm:
                summary["warm_started"] = warm
            writer.update_manifest(search=summary)
        finally:
            wall = time.time() - started
            writer.update_manifest(status=status, finished=time.time(), wall_s=wall)
            if we_started_ray:
                ray.shutdown()
    return _outcome(spec, paths, wall, address, overwrite)


def _outcome(
    spec: SweepSpec,
    paths: SweepPaths,
    wall: float,
    address: str | None,
    overwrite: bool,
) -> SweepOutcome:
    root, sweep_id = paths.store_root, paths.sweep_id
    store = SweepStore(root)
    outcome = SweepOutcome(sweep_id, paths.results_dir, wall, store.trial_counts(sweep_id))
    try:
        best = store.best(sweep_id)
        outcome.best = {
            "trial_id": best.trial_id,
            "value": best.value,
            "metric": best.metric,
            "config": best.config,
        }
    except LookupError:
        outcome.best = None
    if spec.search.multi_objective:
        outcome.pareto = store_pareto(store, sweep_id, spec)
    if spec.supernet.enabled and outcome.best is not None:
        outcome.subnets = search_subnets(spec, root, sweep_id, address=address, overwrite=overwrite)
    return outcome


def store_pareto(store: SweepStore, sweep_id: str, spec: SweepSpec) -> list[dict[str, Any]]:
    """The non-dominated finished trials over every objective (last reported values)."""
    goals = spec.search.goals
    points = []
    for summary in store.trials(sweep_id):
        if summary.status == "failed":
            continue
        values = [summary.metrics.get(goal.metric) for goal in goals]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            points.append((summary, [float(v) for v in values]))  # type: ignore[arg-type]
    signs = [1.0 if goal.direction == "min" else -1.0 for goal in goals]

    def dominates(a: list[float], b: list[float]) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b, strict=True)]
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    front = [
        {
            "trial_id": summary.trial_id,
            "values": dict(zip([g.metric for g in goals], values, strict=True)),
            "config": summary.config,
        }
        for summary, values in points
        if not any(dominates(other, values) for _, other in points)
    ]
    return sorted(front, key=lambda item: item["trial_id"])


def resume_sweep(
    sweep_id: str,
    *,
    results_root: str | Path,
    address: str | None = None,
    verbose: int = 0,
    trial_fn: TrialFunction | None = None,
    progress: ProgressDisplay | None = None,
    progress_interval_s: float = 2.0,
) -> SweepOutcome:
    """Continue a sweep whose driver stopped (crash, kill, lost node) where it left off.

    Tune restores its experiment state (trials, searcher, scheduler) from the last
    experiment snapshot, which can be older than the crash: every trial the results store
    records as finished is first marked finished in it
    (:mod:`morphtune.searchers._resume_repair`), so finished trials are not run again;
    unfinished ones resume from their last checkpoint, and the results store drops the rows
    they report again.
    The Optuna study in the sweep's storage may be ahead of that checkpoint: a trial the
    crashed driver asked for but never recorded is marked FAIL (an orphan), so the
    study shows no trial RUNNING for ever. ``progress`` as for :func:`run_sweep` (the
    elapsed time counts the earlier runs' wall time too).
    """
    root = sweep_paths(results_root, sweep_id).store_root
    store = SweepStore(root)
    if not store.has_sweep(sweep_id):
        raise ValueError(f"no sweep {sweep_id!r} under {root} (sweeps: {store.list_sweeps()})")
    manifest = store.manifest(sweep_id)
    spec = SweepSpec.model_validate(manifest["spec"])
    paths = sweep_paths(results_root, sweep_id, spec.storage.work)
    directory = paths.directory
    experiment = directory / "tune"
    installed = install_kept_snapshot(directory / KEPT_SNAPSHOT_DIR, experiment)
    if installed:
        log.info("restoring from the kept experiment snapshot (%s)", ", ".join(installed))
    if not tune.Tuner.can_restore(str(experiment)):
        raise ValueError(
            f"sweep {sweep_id!r} has no Tune experiment state in {experiment} to resume from"
        )
    repaired = _repair_snapshot(experiment, store, sweep_id)
    writer = ResultWriter(root, sweep_id)
    started = time.time()
    resumes = int(manifest.get("resumes", 0)) + 1
    previous = float(manifest.get("wall_s") or 0.0)
    # resumed_at: a watcher's elapsed time is the earlier runs' wall_s plus the time since
    writer.update_manifest(status="running", resumes=resumes, resumed_at=started)
    url = storage_url(spec, directory)
    orphans = _fail_orphans(experiment, url, sweep_id)
    with _progress(progress, root, sweep_id, started, previous, progress_interval_s):
        we_started_ray = not ray.is_initialized()
        if we_started_ray:
            init_ray(address, log_to_driver=verbose > 0)
        status = "failed"
        try:
            tuner = tune.Tuner.restore(
                str(experiment),
                trainable=make_trainable(
                    spec, storage_path=str(directory / "train"), trial_fn=trial_fn
                ),
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
            tuner.fit()
            status = "completed"
            _compact(writer)
            leftover = 0
            states: dict[str, int] = {}
            if spec.search.scheduler.name not in POPULATION_SCHEDULERS:  # PBT has no study
                study = optuna.load_study(
                    study_name=_study_name(sweep_id), storage=optuna_storage(url)
                )
                leftover = fail_orphans(study, [], "still RUNNING after the resumed sweep ended")
                for trial in study.get_trials(deepcopy=False):
                    states[trial.state.name] = states.get(trial.state.name, 0) + 1
            writer.update_manifest(
                resumed={
                    "orphans_failed": orphans + leftover,
                    "optuna_states": states,
                    "finished_in_store": sorted(repaired.finished),
                }
            )
        finally:
            wall = time.time() - started
            writer.update_manifest(status=status, finished=time.time(), wall_s=previous + wall)
            if we_started_ray:
                ray.shutdown()
    return _outcome(spec, paths, previous + wall, address, False)


def _repair_snapshot(experiment: Path, store: SweepStore, sweep_id: str) -> SnapshotRepair:
    """Before restoring: the trials that the store records as finished are finished in
    Tune's snapshot too (see :mod:`morphtune.searchers._resume_repair`), so none is run again."""
    try:
        repair = repair_snapshot(
            experiment, store.trial_states(sweep_id), _stored_checkpoints(store, sweep_id)
        )
    except SnapshotFormatError as error:
        raise ValueError(
            f"cannot resume sweep {sweep_id!r}: its Tune experiment snapshot is not in the "
            f"format of the installed Ray {ray.__version__} ({error}); nothing was changed"
        ) from error
    for trial_id, (before, after) in sorted(repair.finished.items()):
        log.info(
            "trial %s: %s in the snapshot, finished in the store: now %s", trial_id, before, after
        )
    if repair.released:
        log.info("freed the concurrency slots of finished trials %s", repair.released)
    for trial_id, (gone, instead) in sorted(repair.checkpoints.items()):
        log.info("trial %s: checkpoint %s is gone, resuming from %s", trial_id, gone, instead)
    return repair


def _stored_checkpoints(store: SweepStore, sweep_id: str) -> dict[str, dict[int, str]]:
    """Trial id -> iteration -> the checkpoint path its stored row names."""
    found: dict[str, dict[int, str]] = {}
    rows = store.results(sweep_id, ["trial_id", "iteration", "metrics_json"]).to_pylist()
    for row in rows:
        path = json.loads(row["metrics_json"] or "{}").get("checkpoint_path")
        if isinstance(path, str) and path:
            found.setdefault(row["trial_id"], {})[int(row["iteration"])] = path
    return found


def _fail_orphans(experiment: Path, url: str, sweep_id: str) -> int:
    """Before restoring: FAIL the study's RUNNING trials that the experiment checkpoint's
    searcher does not know (it will never report them)."""
    states = sorted(experiment.glob("searcher-state-*.pkl"))
    known: list[int] = []
    if states:
        with states[-1].open("rb") as handle:
            saved = pickle.load(handle)
        trials = saved.get("_ot_trials", {}) if isinstance(saved, dict) else {}
        known = [trial.number for trial in trials.values()]
    try:
        study = optuna.load_study(study_name=_study_name(sweep_id), storage=optuna_storage(url))
    except KeyError:
        return 0
    return fail_orphans(study, known, "asked by a driver that crashed before recording it")


def search_subnets(
    spec: SweepSpec,
    root: str | Path,
    sweep_id: str,
    *,
    address: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Search the subnets of the best trial's supernet (``subnet_search`` section) on its
    shared weights; the scored subnets become the sweep ``<sweep_id>-subnets``."""
    import torch

    from morphtune.data import load_dataset
    from morphtune.models import TaskShape
    from morphtune.searchers import SubnetSearch
    from morphtune.spec import supernet_section
    from morphtune.trainables._loop import CHECKPOINT_FILE

    best = SweepStore(root).best(sweep_id)
    checkpoint = best.metrics.get("checkpoint_path")
    if not checkpoint:
        raise ValueError(f"the best trial {best.trial_id} of {sweep_id!r} has no checkpoint")
    state = torch.load(Path(checkpoint) / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
    trial = state["trial"]
    dataset = trial["dataset"]
    data = load_dataset(
        dataset["name"],
        seed=dataset["seed"],
        val_fraction=dataset["val_fraction"],
        **dataset["options"],
    )
    settings = spec.subnet_search
    search = SubnetSearch(
        state["model"],
        trial["model"]["family"],
        TaskShape.of(data),
        supernet_section(trial),
        None,
        data,
        objectives=[(objective.metric, objective.direction) for objective in settings.objectives],
        constraints={str(name): limit for name, limit in settings.constraints.items()},
        sampler=settings.sampler,
        seed=settings.seed,
        batch_size=settings.batch_size,
        recalibration_batches=trial["supernet"]["recalibration_batches"],
    )
    we_started_ray = not ray.is_initialized()
    if we_started_ray:
        init_ray(address)
    try:
        found = search.run(
            settings.num_subnets,
            store_root=str(root),
            sweep_id=f"{sweep_id}-subnets",
            overwrite=overwrite,
            initial=settings.candidates,
            source={"sweep_id": sweep_id, "trial_id": best.trial_id},
        )
    finally:
        if we_started_ray:
            ray.shutdown()
    return {
        "sweep_id": found.sweep_id,
        "supernet_trial": best.trial_id,
        "scored": len(found.scored),
        "rejected_by_constraints": found.rejected,
        "pareto": [{"subnet": s.subnet, **s.metrics()} for s in found.pareto],
        "subnets_per_s": round(found.subnets_per_s, 2),
    }
