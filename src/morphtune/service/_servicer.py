"""``morphtune.v1.SweepService`` over a :class:`~morphtune.store.SweepStore`.

Each method validates its request (every bad field is INVALID_ARGUMENT naming the field, its
value and the rule; see :mod:`._messages`), then answers from the store; domain errors map to
status codes as :mod:`._status` documents (never UNKNOWN). GetSweep, GetBestConfig,
ListTrials and GetParetoFront answers (and their domain errors) are cached per sweep while
its store fingerprint is unchanged (:mod:`._cache`); ListSweeps is re-listed at most once per
check interval.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from morphtune.service import _messages as messages
from morphtune.service._cache import CacheEntry, SweepCache
from morphtune.service._jobs import RayJobsClient, validate_job_id
from morphtune.service._spec_check import check_spec
from morphtune.service._status import (
    Answered,
    Failure,
    NoCluster,
    SweepExists,
    answering_errors,
    status_for,
)
from morphtune.service._watch import Position, decode_token, encode_token, end_position
from morphtune.service._watch import watch_rows as _watch_rows
from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc
from morphtune.store import SweepStore
from morphtune.store._conditions import InvalidArgument
from morphtune.store._pareto import manifest_objectives, pareto_front
from morphtune.store._query import (
    TrialPage,
    best_under,
    decode_page_token,
    encode_page_token,
    resolve_objective,
    select_rows,
    validate_page_size,
)

__all__ = ["SERVICE_NAME", "SweepServicer", "best_config_message", "status_for"]

SERVICE_NAME: str = morphtune_pb2.DESCRIPTOR.services_by_name["SweepService"].full_name
best_config_message = messages.best_config_message
_LOGGER = logging.getLogger(__name__)


class SweepServicer(morphtune_pb2_grpc.SweepServiceServicer):
    """Answers ``morphtune.v1.SweepService`` from a results store.

    ``jobs``: the Ray Jobs client SubmitSweep/CancelSweep use (``None``: they answer
    FAILED_PRECONDITION). ``check_interval``: how often a sweep's fingerprint is re-checked
    (seconds); ``watch_interval``: how often a WatchSweep stream looks for new rows;
    ``spec_timeout``: the longest a SubmitSweep spec check may take.
    """

    def __init__(
        self,
        store: SweepStore,
        *,
        jobs: RayJobsClient | None = None,
        check_interval: float = 0.5,
        watch_interval: float = 0.25,
        spec_timeout: float = 120.0,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self._cache = SweepCache(store, check_interval=check_interval)
        self._check_interval = check_interval
        self._listed: tuple[float, morphtune_pb2.ListSweepsResponse] | None = None
        self._watch_interval = watch_interval
        self._spec_timeout = spec_timeout
        self._closing = threading.Event()

    @property
    def store(self) -> SweepStore:
        return self._store

    def ready(self) -> bool:
        """Whether the store can be read now (its root lists); for the health service."""
        try:
            self._store.list_sweeps()
        except Exception:  # any failure to list means the store cannot be served
            _LOGGER.warning("store %s cannot be read", self._store.root, exc_info=True)
            return False
        return True

    def close(self) -> None:
        """End every WatchSweep stream (they finish OK; clients resume with their token)."""
        self._closing.set()

    # -- cached answers ---------------------------------------------------------------------

    def _entry(self, sweep_id: str) -> CacheEntry:
        entry = self._cache.get(sweep_id)
        return entry if entry is not None else self._cache.entry(messages.sweep_id(sweep_id))

    def _cached(
        self,
        entry: CacheEntry,
        key: tuple[str, bytes],
        compute: Callable[[CacheEntry], Any],
    ) -> Any:
        answer = entry.answers.get(key)
        if answer is None:
            try:
                answer = compute(entry)
            except Exception as error:
                code, details = status_for(error)
                if code == grpc.StatusCode.INTERNAL:
                    raise  # not cached: logged by answering_errors
                answer = Failure(code, details)
            entry.remember(key, answer)
        if isinstance(answer, Failure):
            raise Answered(answer)
        return answer

    # -- sweeps -----------------------------------------------------------------------------

    @answering_errors
    def ListSweeps(
        self, request: morphtune_pb2.ListSweepsRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.ListSweepsResponse:
        now = time.monotonic()
        listed = self._listed
        if listed is None or now - listed[0] >= self._check_interval:
            listed = (now, morphtune_pb2.ListSweepsResponse(sweep_ids=self._store.list_sweeps()))
            self._listed = listed  # a new sweep shows within one check interval
        return listed[1]

    @answering_errors
    def GetSweep(
        self, request: morphtune_pb2.GetSweepRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.Sweep:
        entry = self._entry(request.sweep_id)
        return self._cached(entry, ("sweep", b""), self._sweep_message)  # type: ignore[no-any-return]

    def _sweep_message(self, entry: CacheEntry) -> morphtune_pb2.Sweep:
        sweep_id = entry.sweep_id
        manifest = self._store.manifest(sweep_id)
        sweep = morphtune_pb2.Sweep(
            sweep_id=sweep_id,
            name=str(manifest.get("name", sweep_id)),
            status=str(manifest.get("status", "")),
            created=str(manifest.get("created", "")),
            manifest_json=json.dumps(manifest),
            trial_counts=self._store.trial_counts(sweep_id),
        )
        objective = manifest.get("objective")
        if isinstance(objective, dict):
            sweep.objective.metric = str(objective.get("metric", ""))
            sweep.objective.mode = str(objective.get("mode", ""))
        return sweep

    # -- best -------------------------------------------------------------------------------

    @answering_errors
    def GetBestConfig(
        self, request: morphtune_pb2.GetBestConfigRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.BestConfig:
        entry = self._entry(request.sweep_id)
        key = ("best", request.SerializeToString(deterministic=True))
        answer = entry.answers.get(key)  # the hot path: one dict lookup
        if answer is None or isinstance(answer, Failure):
            answer = self._cached(entry, key, lambda e: self._best(e, request))
        return answer  # type: ignore[return-value]

    def _best(
        self, entry: CacheEntry, request: morphtune_pb2.GetBestConfigRequest
    ) -> morphtune_pb2.BestConfig:
        scope = messages.scope(request.scope)
        constraints = messages.conditions(request.constraints, "constraints")
        if not constraints:
            result = self._store.best(
                entry.sweep_id,
                metric=request.metric or None,
                mode=request.mode or None,
                scope=scope,
            )
            return messages.best_config_message(result)
        manifest = self._store.manifest(entry.sweep_id)
        metric, mode = resolve_objective(manifest, entry.sweep_id, request.metric, request.mode)
        return messages.best_config_message(
            best_under(entry.frame, metric, mode, scope, constraints)
        )

    # -- trials -----------------------------------------------------------------------------

    @answering_errors
    def ListTrials(
        self, request: morphtune_pb2.ListTrialsRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.ListTrialsResponse:
        sweep_id = messages.sweep_id(request.sweep_id)
        size = validate_page_size(request.page_size)
        messages.scope(request.scope)
        messages.conditions(request.filter, "filter")  # syntax errors before any read
        query = messages.query_key(request)
        offset = decode_page_token(request.page_token, query) if request.page_token else 0
        entry = self._entry(sweep_id)
        key = ("trials", request.SerializeToString(deterministic=True))

        def compute(entry: CacheEntry) -> morphtune_pb2.ListTrialsResponse:
            page: TrialPage = select_rows(
                entry.frame,
                messages.conditions(request.filter, "filter"),
                order_by=request.order_by,
                descending=request.descending,
                scope=messages.scope(request.scope),
                offset=offset,
                limit=size,
            )
            token = "" if page.next_offset is None else encode_page_token(query, page.next_offset)
            return morphtune_pb2.ListTrialsResponse(
                rows=[messages.result_row(sweep_id, row) for row in page.rows],
                next_page_token=token,
                total_size=page.total,
            )

        return self._cached(entry, key, compute)  # type: ignore[no-any-return]

    # -- pareto -----------------------------------------------------------------------------

    @answering_errors
    def GetParetoFront(
        self, request: morphtune_pb2.GetParetoFrontRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.ParetoFront:
        sweep_id = messages.sweep_id(request.sweep_id)
        messages.scope(request.scope)
        messages.conditions(request.constraints, "constraints")
        if request.reference and not all(math.isfinite(v) for v in request.reference):
            raise InvalidArgument("reference", f"must be finite, got {list(request.reference)}")
        entry = self._entry(sweep_id)
        key = ("pareto", request.SerializeToString(deterministic=True))

        def compute(entry: CacheEntry) -> morphtune_pb2.ParetoFront:
            objectives = messages.objectives(request.objectives)
            if not objectives:
                objectives = manifest_objectives(self._store.manifest(sweep_id), sweep_id)
            result = pareto_front(
                entry.frame,
                objectives,
                scope=messages.scope(request.scope),
                constraints=messages.conditions(request.constraints, "constraints"),
                reference=list(request.reference) or None,
            )
            return messages.pareto_message(result)

        return self._cached(entry, key, compute)  # type: ignore[no-any-return]

    # -- watch ------------------------------------------------------------------------------

    def WatchSweep(
        self, request: morphtune_pb2.WatchSweepRequest, context: grpc.ServicerContext
    ) -> Iterator[morphtune_pb2.WatchSweepResponse]:
        try:
            sweep_id, position, trial_id = self._watch_start(request)
            wake = threading.Event()
            context.add_callback(wake.set)  # the client went away: stop waiting

            def keep_going() -> bool:
                return context.is_active() and not self._closing.is_set()

            def wait(seconds: float) -> None:
                wake.wait(seconds)

            rows = _watch_rows(
                self._cache,
                sweep_id,
                position,
                trial_id,
                keep_going=keep_going,
                wait=wait,
                poll_interval=self._watch_interval,
            )
            for row, at in rows:
                yield morphtune_pb2.WatchSweepResponse(
                    row=messages.result_row(sweep_id, row), resume_token=encode_token(sweep_id, at)
                )
        except Exception as error:
            code, details = status_for(error)
            if code == grpc.StatusCode.INTERNAL:
                _LOGGER.exception("WatchSweep failed")
            context.abort(code, details)

    def _watch_start(
        self, request: morphtune_pb2.WatchSweepRequest
    ) -> tuple[str, Position | None, str]:
        sweep_id = messages.sweep_id(request.sweep_id)
        trial_id = request.trial_id
        if len(trial_id) > messages.MAX_TRIAL_ID or not trial_id.isprintable():
            raise InvalidArgument(
                "trial_id",
                f"must be printable and at most {messages.MAX_TRIAL_ID} characters, "
                f"got {trial_id!r}",
            )
        if request.resume_token and request.from_end:
            raise InvalidArgument(
                "from_end", "cannot be combined with a resume_token (the token says where)"
            )
        position = decode_token(request.resume_token, sweep_id) if request.resume_token else None
        entry = self._cache.entry(sweep_id)  # NOT_FOUND before the stream starts
        if request.from_end:
            position = end_position(entry.frame)
        return sweep_id, position, trial_id

    # -- jobs -------------------------------------------------------------------------------

    @answering_errors
    def SubmitSweep(
        self, request: morphtune_pb2.SubmitSweepRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.SubmitSweepResponse:
        text = request.spec_yaml
        messages.check_spec_text(text)
        override = messages.sweep_id(request.sweep_id) if request.sweep_id else ""
        if self._jobs is None:
            raise NoCluster()
        remaining = context.time_remaining()
        timeout = self._spec_timeout if remaining is None else min(self._spec_timeout, remaining)
        try:
            name = check_spec(text, timeout=max(timeout, 1.0))
        except ValueError as error:
            raise InvalidArgument("spec_yaml", f"does not validate: {error}") from None
        sweep_id = override or name
        if self._store.has_sweep(sweep_id):
            raise SweepExists(sweep_id)
        job = self._jobs.submit(text, sweep_id)
        _LOGGER.info("submitted sweep %s as Ray job %s", sweep_id, job.job_id)
        return morphtune_pb2.SubmitSweepResponse(
            job_id=job.job_id, sweep_id=sweep_id, status=job.status
        )

    @answering_errors
    def CancelSweep(
        self, request: morphtune_pb2.CancelSweepRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.CancelSweepResponse:
        job_id = validate_job_id(request.job_id)
        if self._jobs is None:
            raise NoCluster()
        stopped, job = self._jobs.stop(job_id)
        _LOGGER.info("stop requested for Ray job %s (was running: %s)", job_id, stopped)
        return morphtune_pb2.CancelSweepResponse(job_id=job_id, stopped=stopped, status=job.status)
