"""Which gRPC status code answers which error, and the decorator that applies it.

==============================  ===================  ========================================
error                           status code          when
==============================  ===================  ========================================
``ValueError``                  INVALID_ARGUMENT     a bad field (the message names it)
``SweepNotFound``/``JobNotFound``  NOT_FOUND         no such sweep / Ray job
``SweepExists``                 ALREADY_EXISTS       SubmitSweep for a sweep id in the store
``NoResults``                   FAILED_PRECONDITION  no finite value for the metric yet
``NoCluster``/``JobRejected``   FAILED_PRECONDITION  no Ray cluster configured / Ray refused
``JobsUnavailable``             UNAVAILABLE          the Ray Jobs API cannot be reached
``TimeoutError``                DEADLINE_EXCEEDED    the spec check took too long
``CorruptFileError``            DATA_LOSS            a store file does not parse
anything else                   INTERNAL             logged with its traceback
==============================  ===================  ========================================

Never UNKNOWN. A pyarrow error is a ``ValueError`` too, but it is the server's failure, so it
answers INTERNAL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from morphtune.service._jobs import JobNotFound, JobRejected, JobsUnavailable
from morphtune.store import CorruptFileError, NoResults, StoreError, SweepNotFound

__all__ = ["Answered", "Failure", "NoCluster", "SweepExists", "answering_errors", "status_for"]

_LOGGER = logging.getLogger("morphtune.service._servicer")
_Response = TypeVar("_Response")


class NoCluster(StoreError):
    """SubmitSweep/CancelSweep on a server started without a Ray cluster."""

    def __init__(self) -> None:
        super().__init__("no Ray cluster configured (serve --ray-address)")


class SweepExists(StoreError):
    def __init__(self, sweep_id: str) -> None:
        super().__init__(
            f"sweep_id {sweep_id!r} already exists in the store; pick another sweep_id"
        )


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and details a domain error is answered with."""
    if isinstance(error, Answered):
        return error.code, error.details
    if isinstance(error, SweepNotFound | JobNotFound):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(error, SweepExists):
        return grpc.StatusCode.ALREADY_EXISTS, str(error)
    if isinstance(error, NoResults | NoCluster | JobRejected):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, JobsUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
    if isinstance(error, CorruptFileError):
        return grpc.StatusCode.DATA_LOSS, str(error)
    if isinstance(error, ValueError) and not _is_arrow_error(error):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); see server log"


def _is_arrow_error(error: Exception) -> bool:
    # pyarrow.ArrowInvalid is a ValueError, but it is our failure, not the caller's.
    return type(error).__module__.startswith("pyarrow")


class Failure:
    """A cached domain error: re-raising one exception object from many threads would grow
    its traceback forever, so the status is cached instead."""

    __slots__ = ("code", "details")

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details


class Answered(Exception):
    """Raised (a new one each time) to answer a cached :class:`Failure`."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.details)
        self.code = failure.code
        self.details = failure.details


def answering_errors(
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
        context.abort(code, clip_details(details))
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


#: Status details travel in a trailer, which gRPC caps at its header size (8 KiB by default):
#: a message echoing a huge field value would turn the answer into RESOURCE_EXHAUSTED.
MAX_DETAILS_CHARS = 1024


def clip_details(details: str, limit: int = MAX_DETAILS_CHARS) -> str:
    """``details`` cut to ``limit`` characters, saying how much was cut (messages name
    their field first, so the field survives the cut)."""
    if len(details) <= limit:
        return details
    return f"{details[: limit - 40]}... ({len(details) - limit + 40} characters cut)"
