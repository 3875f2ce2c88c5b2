"""``morphtune.v1.SweepService`` over a :class:`~morphtune.store.SweepStore`.

Each method is a thin translation; domain errors become status codes (never UNKNOWN):

=========================  ====================  ==========================================
error                      status code           when
=========================  ====================  ==========================================
``ValueError``             INVALID_ARGUMENT      empty/malformed sweep_id, unknown metric,
                                                 bad mode or scope (message names the field)
``SweepNotFound``          NOT_FOUND             no such sweep (message names it)
``NoResults``              FAILED_PRECONDITION   the sweep has no finite value yet
``CorruptFileError``       DATA_LOSS             a store file does not parse
anything else              INTERNAL              logged with its traceback
=========================  ====================  ==========================================
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc
from morphtune.store import (
    BestResult,
    CorruptFileError,
    NoResults,
    SweepNotFound,
    SweepStore,
    validate_sweep_id,
)
from morphtune.store._schema import flatten_scalars

__all__ = ["SERVICE_NAME", "SweepServicer", "status_for"]

SERVICE_NAME: str = morphtune_pb2.DESCRIPTOR.services_by_name["SweepService"].full_name
_LOGGER = logging.getLogger(__name__)
_Response = TypeVar("_Response")


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and details a domain error is answered with."""
    if isinstance(error, SweepNotFound):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(error, NoResults):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, CorruptFileError):
        return grpc.StatusCode.DATA_LOSS, str(error)
    if isinstance(error, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see server log"


def _answering_errors(
    method: Callable[[Any, Any, grpc.ServicerContext], _Response],
) -> Callable[[Any, Any, grpc.ServicerContext], _Response]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> _Response:
        try:
            return method(self, request, context)
        except Exception as error:  # every failure gets a deliberate status code
            code, details = status_for(error)
            if code == grpc.StatusCode.INTERNAL:
                _LOGGER.exception("%s failed", method.__name__)
        context.abort(code, details)
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


def _sweep_id(value: str) -> str:
    if not value:
        raise ValueError("sweep_id must be a non-empty string, got ''")
    return validate_sweep_id(value)


def _numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    flat = flatten_scalars(metrics, field="metrics")
    return {key: value for key, value in flat.items() if isinstance(value, float)}


def best_config_message(result: BestResult) -> morphtune_pb2.BestConfig:
    return morphtune_pb2.BestConfig(
        sweep_id=result.sweep_id,
        trial_id=result.trial_id,
        iteration=result.iteration,
        metric=result.metric,
        mode=result.mode,
        value=result.value,
        config_json=json.dumps(result.config),
        metrics=_numeric_metrics(result.metrics),
    )


class SweepServicer(morphtune_pb2_grpc.SweepServiceServicer):
    """Answers ``morphtune.v1.SweepService`` from a results store."""

    def __init__(self, store: SweepStore) -> None:
        self._store = store

    @_answering_errors
    def ListSweeps(
        self, request: morphtune_pb2.ListSweepsRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.ListSweepsResponse:
        return morphtune_pb2.ListSweepsResponse(sweep_ids=self._store.list_sweeps())

    @_answering_errors
    def GetSweep(
        self, request: morphtune_pb2.GetSweepRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.Sweep:
        sweep_id = _sweep_id(request.sweep_id)
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

    @_answering_errors
    def GetBestConfig(
        self, request: morphtune_pb2.GetBestConfigRequest, context: grpc.ServicerContext
    ) -> morphtune_pb2.BestConfig:
        result = self._store.best(
            _sweep_id(request.sweep_id),
            metric=request.metric or None,
            mode=request.mode or None,
            scope=request.scope or "last",
        )
        return best_config_message(result)
