"""Python client of ``morphtune.v1.SweepService``; errors surface as ``grpc.RpcError``."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc

__all__ = ["SweepClient"]


class SweepClient:
    """Plaintext client for a morphtune service at ``target`` (``host:port``).

    Every call uses ``timeout`` seconds as its deadline. Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        if not isinstance(target, str) or not target:
            raise ValueError(f"target must be a non-empty 'host:port' string, got {target!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self._target = target
        self._timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._stub = morphtune_pb2_grpc.SweepServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    @property
    def target(self) -> str:
        return self._target

    def list_sweeps(self) -> list[str]:
        response = self._stub.ListSweeps(morphtune_pb2.ListSweepsRequest(), timeout=self._timeout)
        return list(response.sweep_ids)

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """Keys: sweep_id, name, status, created, objective (dict or None), manifest (dict),
        trial_counts (state -> count)."""
        sweep = self._stub.GetSweep(
            morphtune_pb2.GetSweepRequest(sweep_id=sweep_id), timeout=self._timeout
        )
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

    def best(
        self,
        sweep_id: str,
        metric: str | None = None,
        mode: str | None = None,
        scope: str = "last",
    ) -> dict[str, Any]:
        """Keys: sweep_id, trial_id, iteration, metric, mode, value, config (dict), metrics
        (flattened numeric metrics of that row)."""
        request = morphtune_pb2.GetBestConfigRequest(
            sweep_id=sweep_id, metric=metric or "", mode=mode or "", scope=scope or ""
        )
        best = self._stub.GetBestConfig(request, timeout=self._timeout)
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
