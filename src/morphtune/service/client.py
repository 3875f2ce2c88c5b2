"""Typed Python client of ``morphtune.v1.SweepService``; errors surface as ``grpc.RpcError``.

Answers are plain dicts and lists (JSON columns parsed), so they print and serialise as is.
Conditions (filters, constraints) are given as text, ``"params <= 1e5"``,
``"config.model.family == mlp"``, ``"state in completed,stopped"``, or as
``(column, op, value)`` tuples; see :func:`parse_condition`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc

__all__ = ["ConditionLike", "SweepClient", "condition_message", "parse_condition"]

ConditionLike = str | tuple[str, str, Any]
_CONDITION_RE = re.compile(
    r"^\s*(?P<column>[^\s<>=!]+)\s*"
    r"(?:(?P<symbol>==|!=|<=|>=|<|>|=)|\s(?P<word>not\s+in|in)\s)\s*(?P<value>.*?)\s*$"
)


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse_condition(text: str) -> tuple[str, str, Any]:
    """``"params <= 1e5"`` -> ``("params", "<=", 100000.0)``; ``"a in x,y"`` -> a list.

    Values that parse as numbers are numbers, anything else is text (quotes are stripped).
    ``=`` means ``==``. Raises ``ValueError`` naming the text and the accepted forms.
    """
    match = _CONDITION_RE.match(text)
    if match is None or not match["value"]:
        raise ValueError(
            f"condition {text!r} must read COLUMN OP VALUE with OP one of "
            "==, !=, <, <=, >, >=, in, not in (e.g. 'params <= 1e5', 'state in completed,stopped')"
        )
    op = match["symbol"] or " ".join(match["word"].split())
    op = "==" if op == "=" else op
    if op in ("in", "not in"):
        items = [item.strip().strip("'\"") for item in match["value"].split(",")]
        return match["column"], op, [_number_or_text(item) for item in items if item]
    return match["column"], op, _number_or_text(match["value"].strip("'\""))


def condition_message(condition: ConditionLike) -> morphtune_pb2.Condition:
    """A ``morphtune.v1.Condition`` from text or a ``(column, op, value)`` tuple."""
    column, op, value = parse_condition(condition) if isinstance(condition, str) else condition
    message = morphtune_pb2.Condition(column=column, op=op)
    if isinstance(value, list | tuple):
        if all(isinstance(item, int | float) and not isinstance(item, bool) for item in value):
            message.numbers.extend(float(item) for item in value)
        else:
            message.texts.extend(str(item) for item in value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        message.number = float(value)
    else:
        message.text = str(value)
    return message


def _row(row: morphtune_pb2.ResultRow) -> dict[str, Any]:
    return {
        "sweep_id": row.sweep_id,
        "trial_id": row.trial_id,
        "iteration": row.iteration,
        "timestamp": row.timestamp,
        "written_at": row.written_at,
        "status": row.status,
        "state": row.state,
        "config": json.loads(row.config_json) if row.config_json else {},
        "metrics": json.loads(row.metrics_json) if row.metrics_json else {},
        "numbers": dict(row.numbers),
        "texts": dict(row.texts),
        "node_id": row.node_id or None,
    }


def _watch_items(stream: Any) -> Iterator[tuple[dict[str, Any], str]]:
    try:
        for message in stream:
            yield _row(message.row), message.resume_token
    finally:
        stream.cancel()


class SweepClient:
    """Client for a morphtune service at ``target`` (``host:port``).

    ``timeout``: the deadline of every unary call (seconds). ``token``: sent as
    ``authorization: Bearer <token>``. ``tls``: a TLS channel, verified against
    ``root_certificates`` (PEM bytes; default: the system roots); ``client_cert`` and
    ``client_key`` (PEM bytes) for mutual TLS. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        timeout: float = 10.0,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not isinstance(target, str) or not target:
            raise ValueError(f"target must be a non-empty 'host:port' string, got {target!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if token is not None and (not token or any(c.isspace() for c in token)):
            raise ValueError("token must be a non-empty string without whitespace")
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key must be given together (mutual TLS)")
        if not tls and (root_certificates or client_cert):
            raise ValueError("root_certificates/client_cert/client_key need tls=True")
        self._target = target
        self._timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        if tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=client_key,
                certificate_chain=client_cert,
            )
            self._channel = grpc.secure_channel(target, credentials, options=list(options))
        else:
            self._channel = grpc.insecure_channel(target, options=list(options))
        self._stub = morphtune_pb2_grpc.SweepServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @property
    def target(self) -> str:
        return self._target

    def _call(self, method: Any, request: Any) -> Any:
        return method(request, timeout=self._timeout, metadata=self._metadata)

    # -- sweeps -----------------------------------------------------------------------------

    def list_sweeps(self) -> list[str]:
        response = self._call(self._stub.ListSweeps, morphtune_pb2.ListSweepsRequest())
        return list(response.sweep_ids)

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """Keys: sweep_id, name, status, created, objective (dict or None), manifest (dict),
        trial_counts (state -> count)."""
        sweep = self._call(self._stub.GetSweep, morphtune_pb2.GetSweepRequest(sweep_id=sweep_id))
        objective = None
        if sweep.HasField("objective"):
            objective = {"metric": sweep.objective.metric, "mode": sweep.objective.mode}
        return {
            "sweep_id": sweep.sweep_id,
            "name": sweep.name,
            "status": sweep.status,
            "created": sweep.created,
            "objective": objective,
            "manifest": json.loads(sweep.manifest_json) if sweep.manifest_json else {},
            "trial_counts": dict(sweep.trial_counts),
        }

    # -- queries ----------------------------------------------------------------------------

    def best(
        self,
        sweep_id: str,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
        constraints: Iterable[ConditionLike] = (),
    ) -> dict[str, Any]:
        """Keys: sweep_id, trial_id, iteration, metric, mode, value, config (dict), metrics
        (flattened numeric metrics of that row)."""
        request = morphtune_pb2.GetBestConfigRequest(
            sweep_id=sweep_id,
            metric=metric or "",
            mode=mode or "",
            scope=scope or "",
            constraints=[condition_message(item) for item in constraints],
        )
        best = self._call(self._stub.GetBestConfig, request)
        return {
            "sweep_id": best.sweep_id,
            "trial_id": best.trial_id,
            "iteration": best.iteration,
            "metric": best.metric,
            "mode": best.mode,
            "value": best.value,
            "config": json.loads(best.config_json),
            "metrics": dict(best.metrics),
        }

    def list_trials_page(
        self,
        sweep_id: str,
        where: Iterable[ConditionLike] = (),
        *,
        order_by: str = "",
        descending: bool = False,
        scope: str = "last",
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[dict[str, Any]], str, int]:
        """One page: ``(rows, next_page_token, total_size)``; ``""`` token on the last page."""
        request = morphtune_pb2.ListTrialsRequest(
            sweep_id=sweep_id,
            filter=[condition_message(item) for item in where],
            order_by=order_by,
            descending=descending,
            page_size=page_size,
            page_token=page_token,
            scope=scope,
        )
        response = self._call(self._stub.ListTrials, request)
        return [_row(row) for row in response.rows], response.next_page_token, response.total_size

    def list_trials(
        self,
        sweep_id: str,
        where: Iterable[ConditionLike] = (),
        *,
        order_by: str = "",
        descending: bool = False,
        scope: str = "last",
        page_size: int = 0,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every matching row, fetching pages as the iteration goes (at most ``limit``).

        Row keys: sweep_id, trial_id, iteration, timestamp, written_at, status, state, node_id,
        config, metrics (parsed JSON), numbers and texts (flattened columns by full name).
        """
        conditions = list(where)
        token, seen = "", 0
        while True:
            rows, token, _ = self.list_trials_page(
                sweep_id,
                conditions,
                order_by=order_by,
                descending=descending,
                scope=scope,
                page_size=page_size,
                page_token=token,
            )
            for row in rows:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield row
            if not token:
                return

    def pareto(
        self,
        sweep_id: str,
        objectives: Sequence[tuple[str, str]] = (),
        *,
        scope: str = "last",
        constraints: Iterable[ConditionLike] = (),
        reference: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """Keys: sweep_id, objectives [(metric, mode)], points [{trial_id, iteration, values
        {metric: value}, config, metrics}], reference, hypervolume, candidates."""
        request = morphtune_pb2.GetParetoFrontRequest(
            sweep_id=sweep_id,
            objectives=[morphtune_pb2.Objective(metric=m, mode=d) for m, d in objectives],
            scope=scope,
            constraints=[condition_message(item) for item in constraints],
            reference=list(reference or ()),
        )
        front = self._call(self._stub.GetParetoFront, request)
        names = [objective.metric for objective in front.objectives]
        return {
            "sweep_id": front.sweep_id,
            "objectives": [(o.metric, o.mode) for o in front.objectives],
            "points": [
                {
                    "trial_id": point.trial_id,
                    "iteration": point.iteration,
                    "values": dict(zip(names, point.values, strict=True)),
                    "config": json.loads(point.config_json),
                    "metrics": dict(point.metrics),
                }
                for point in front.points
            ],
            "reference": list(front.reference),
            "hypervolume": front.hypervolume,
            "candidates": front.candidates,
        }

    def watch(
        self,
        sweep_id: str,
        *,
        resume_token: str = "",
        trial_id: str = "",
        from_end: bool = False,
        timeout: float | None = None,
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """``(row, resume_token)`` for each row as it is written, oldest first; blocks for
        new rows. Pass the last token back as ``resume_token`` to continue exactly after it.
        ``timeout``: the stream's deadline (default none). Closing the generator cancels it.
        """
        request = morphtune_pb2.WatchSweepRequest(
            sweep_id=sweep_id, resume_token=resume_token, trial_id=trial_id, from_end=from_end
        )
        # started here, not on the first next(): from_end counts from the call
        stream = self._stub.WatchSweep(request, timeout=timeout, metadata=self._metadata)
        return _watch_items(stream)

    # -- jobs -------------------------------------------------------------------------------

    def submit(self, spec_yaml: str, sweep_id: str = "") -> dict[str, str]:
        """Submit a sweep spec (YAML text) to the server's Ray cluster.
        Keys: job_id, sweep_id, status."""
        request = morphtune_pb2.SubmitSweepRequest(spec_yaml=spec_yaml, sweep_id=sweep_id)
        response = self._call(self._stub.SubmitSweep, request)
        return {"job_id": response.job_id, "sweep_id": response.sweep_id, "status": response.status}

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a submitted sweep's Ray job. Keys: job_id, stopped (bool), status."""
        response = self._call(
            self._stub.CancelSweep, morphtune_pb2.CancelSweepRequest(job_id=job_id)
        )
        return {"job_id": response.job_id, "stopped": response.stopped, "status": response.status}

    # -- health -----------------------------------------------------------------------------

    def health(self, service: str = "") -> str:
        """The serving status name, e.g. ``"SERVING"``, of ``service`` (``""``: the server)."""
        response = self._health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=self._timeout
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SweepClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
