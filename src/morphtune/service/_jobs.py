"""A small client of the Ray Jobs REST API (urllib; the service never imports ray).

Endpoints used (served by the Ray dashboard, default port 8265):

* ``POST /api/jobs/`` ``{entrypoint, submission_id, runtime_env, metadata}`` -> submission id
* ``GET /api/jobs/<id>`` -> the job's details (``status``, ``entrypoint``, ``metadata``, ...)
* ``POST /api/jobs/<id>/stop`` -> ``{"stopped": bool}``

A sweep is submitted as the entrypoint ``<command> run --spec-env MORPHTUNE_SPEC_YAML
--sweep-id <id> [--results <root>]`` with the spec text in that environment variable of the
job's ``runtime_env``, so the cluster needs no copy of the file. With a token (clusters
started with ``RAY_AUTH_MODE=token``; default ``$RAY_AUTH_TOKEN``) every request carries
``Authorization: Bearer <token>``. The token never appears in errors or logs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SPEC_ENV",
    "TOKEN_ENV",
    "JobInfo",
    "JobNotFound",
    "JobRejected",
    "JobsError",
    "JobsUnavailable",
    "RayJobsClient",
    "validate_job_id",
]

SPEC_ENV = "MORPHTUNE_SPEC_YAML"
TOKEN_ENV = "RAY_AUTH_TOKEN"
_JOB_ID_RULE = "[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
_JOB_ID_RE = re.compile(_JOB_ID_RULE)
_DETAIL_CHARS = 400


class JobsError(Exception):
    """A Ray Jobs API request failed; the message names the address and the answer."""


class JobNotFound(JobsError, LookupError):
    """The Ray Jobs API knows no job with this id."""


class JobRejected(JobsError):
    """The Ray Jobs API refused the request (HTTP 4xx other than 404)."""


class JobsUnavailable(JobsError):
    """The Ray Jobs API could not be reached, timed out, or failed (HTTP 5xx)."""


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    status: str
    entrypoint: str = ""
    message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    runtime_env: dict[str, Any] = field(default_factory=dict)


def validate_job_id(job_id: object, field_name: str = "job_id") -> str:
    if not isinstance(job_id, str) or _JOB_ID_RE.fullmatch(job_id) is None:
        raise ValueError(f"{field_name} must match {_JOB_ID_RULE}, got {job_id!r}")
    return job_id


def _base_url(address: str) -> str:
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"ray address must be the dashboard's http://host:port, got {address!r}")
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = f"http://{address}"
    scheme = urllib.parse.urlsplit(address).scheme
    if scheme not in ("http", "https"):
        raise ValueError(
            f"ray address must be the dashboard's http(s)://host:port (the Jobs API), "
            f"got scheme {scheme!r} in {address!r}"
        )
    return address


class RayJobsClient:
    """Submits, inspects and stops sweeps through the Ray Jobs API at ``address``.

    ``address``: the dashboard URL (``http://head:8265``; a bare ``host:port`` means http).
    ``command``: how the cluster runs morphtune (default ``morphtune``; e.g.
    ``python -m morphtune.cli``). ``results_root``: passed as ``run --results`` so the
    cluster writes where this service reads (e.g. ``s3://bucket/results``).
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        command: str = "morphtune",
        results_root: str | None = None,
    ) -> None:
        self.address = _base_url(address)
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not command.strip():
            raise ValueError("command must be a non-empty shell command, got ''")
        # Ray's own variable, as `ray job submit` reads it (e.g. from a Kubernetes Secret).
        self._token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._timeout = timeout
        self._command = command
        self._results_root = results_root

    def entrypoint(self, sweep_id: str) -> str:
        parts = [self._command, "run", "--spec-env", SPEC_ENV, "--sweep-id", shlex.quote(sweep_id)]
        if self._results_root:
            parts += ["--results", shlex.quote(self._results_root)]
        return " ".join(parts)

    def submit(self, spec_yaml: str, sweep_id: str) -> JobInfo:
        """Submit ``morphtune run`` on the spec; the job's info right after submission."""
        submission_id = f"morphtune-{sweep_id[:80]}-{uuid.uuid4().hex[:12]}"
        body = {
            "entrypoint": self.entrypoint(sweep_id),
            "submission_id": submission_id,
            "runtime_env": {"env_vars": {SPEC_ENV: spec_yaml}},
            "metadata": {"morphtune.sweep_id": sweep_id, "submitted_by": "morphtune-service"},
        }
        answer = self._request("POST", "/api/jobs/", body)
        job_id = str(answer.get("submission_id") or submission_id)
        return self.info(job_id)

    def info(self, job_id: str) -> JobInfo:
        answer = self._request("GET", f"/api/jobs/{urllib.parse.quote(job_id, safe='')}")
        return JobInfo(
            job_id=str(answer.get("submission_id") or job_id),
            status=str(answer.get("status", "")),
            entrypoint=str(answer.get("entrypoint", "")),
            message=str(answer.get("message") or ""),
            metadata={str(k): str(v) for k, v in (answer.get("metadata") or {}).items()},
            runtime_env=dict(answer.get("runtime_env") or {}),
        )

    def stop(self, job_id: str) -> tuple[bool, JobInfo]:
        """Ask the job to stop: ``(whether it was still running, its info after)``."""
        quoted = urllib.parse.quote(job_id, safe="")
        answer = self._request("POST", f"/api/jobs/{quoted}/stop", {})
        return bool(answer.get("stopped", False)), self.info(job_id)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = self.address + path
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            detail = _short(error.read().decode("utf-8", "replace"))
            where = f"Ray Jobs API {method} {url} answered HTTP {error.code}: {detail}"
            if error.code == 404:
                raise JobNotFound(where) from None
            if 400 <= error.code < 500:
                raise JobRejected(where) from None
            raise JobsUnavailable(where) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise JobsUnavailable(f"Ray Jobs API at {self.address} unreachable: {reason}") from None
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            raise JobsUnavailable(
                f"Ray Jobs API {method} {url} answered non-JSON: {_short(text)}"
            ) from None


def _short(text: str) -> str:
    """The last line of a (traceback) body, cut to a readable length."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "(empty body)"
    return last if len(last) <= _DETAIL_CHARS else last[: _DETAIL_CHARS - 3] + "..."
