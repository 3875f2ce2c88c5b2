"""A small client of the Ray Jobs REST API (urllib; the service never imports ray).

Endpoints used (served by the Ray dashboard, default port 8265):

* ``POST /api/jobs/`` ``{entrypoint, submission_id, runtime_env, metadata}`` -> submission id
* ``GET /api/jobs/<id>`` -> the job's details (``status``, ``entrypoint``, ``metadata``, ...)
* ``POST /api/jobs/<id>/stop`` -> ``{"stopped": bool}``
* ``GET /api/jobs/<id>/logs`` -> ``{"logs": str}`` (the driver's whole output so far; a
  follower polls it and prints what is new)

A sweep is submitted as the entrypoint ``<command> run --spec-env MORPHTUNE_SPEC_YAML
--sweep-id <id> [--results <root>]`` with the spec text in that environment variable of the
job's ``runtime_env``, so the cluster needs no copy of the file. With a token (clusters
started with ``RAY_AUTH_MODE=token``; default ``$RAY_AUTH_TOKEN``) every request carries
``Authorization: Bearer <token>``. The token never appears in errors or logs, and redirects
are not followed (urllib would forward the ``Authorization`` header to wherever one points).
"""

from __future__ import annotations

import http.client
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
    "MAX_ENV_SPEC_BYTES",
    "SPEC_ENV",
    "TERMINAL_STATUSES",
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
#: Linux refuses to exec a process with one environment string longer than 128 KiB
#: (MAX_ARG_STRLEN), and the spec travels as ``MORPHTUNE_SPEC_YAML=<text>``.
MAX_ENV_SPEC_BYTES = 128 * 1024 - len(SPEC_ENV) - 2
#: Job states after which nothing changes (``PENDING`` and ``RUNNING`` are the others).
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class JobsError(Exception):
    """A Ray Jobs API request failed; the message names the address and the answer.

    ``status``: the HTTP status Ray answered with (``None`` when there was no answer).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
    #: milliseconds since the epoch, as Ray reports them (``None``: not started/ended yet)
    start_time: int | None = None
    end_time: int | None = None
    error_type: str = ""

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


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

    def entrypoint(self, sweep_id: str, *, overwrite: bool = False) -> str:
        parts = [self._command, "run", "--spec-env", SPEC_ENV, "--sweep-id", shlex.quote(sweep_id)]
        if self._results_root:
            parts += ["--results", shlex.quote(self._results_root)]
        if overwrite:
            parts.append("--overwrite")
        return " ".join(parts)

    def submit(
        self,
        spec_yaml: str,
        sweep_id: str,
        *,
        overwrite: bool = False,
        submitted_by: str = "morphtune-service",
    ) -> JobInfo:
        """Submit ``morphtune run`` on the spec; the job's info right after submission."""
        size = len(spec_yaml.encode("utf-8", "surrogatepass"))
        if size > MAX_ENV_SPEC_BYTES:
            raise ValueError(
                f"the spec must be at most {MAX_ENV_SPEC_BYTES} bytes to travel in the job's "
                f"environment variable {SPEC_ENV}, got {size} bytes"
            )
        submission_id = f"morphtune-{sweep_id[:80]}-{uuid.uuid4().hex[:12]}"
        body = {
            "entrypoint": self.entrypoint(sweep_id, overwrite=overwrite),
            "submission_id": submission_id,
            "runtime_env": {"env_vars": {SPEC_ENV: spec_yaml}},
            "metadata": {"morphtune.sweep_id": sweep_id, "submitted_by": submitted_by},
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
            start_time=_millis(answer.get("start_time")),
            end_time=_millis(answer.get("end_time")),
            error_type=str(answer.get("error_type") or ""),
        )

    def logs(self, job_id: str) -> str:
        """Everything the job's driver has printed so far (stdout and stderr)."""
        answer = self._request("GET", f"/api/jobs/{urllib.parse.quote(job_id, safe='')}/logs")
        logs = answer.get("logs", "") if isinstance(answer, dict) else None
        if not isinstance(logs, str):
            raise JobsUnavailable(
                f"Ray Jobs API at {self.address} answered the logs of {job_id!r} without a "
                f"'logs' text: {_short(json.dumps(answer))}"
            )
        return logs

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
            with _OPENER.open(request, timeout=self._timeout) as response:
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            detail = _short(error.read().decode("utf-8", "replace"))
            where = f"Ray Jobs API {method} {url} answered HTTP {error.code}: {detail}"
            if error.code == 404:
                raise JobNotFound(where, error.code) from None
            if 300 <= error.code < 500:  # a redirect is not followed: the token stays here
                raise JobRejected(where, error.code) from None
            raise JobsUnavailable(where, error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise JobsUnavailable(f"Ray Jobs API at {self.address} unreachable: {reason}") from None
        except http.client.HTTPException as error:  # e.g. the GCS port, which speaks no HTTP
            raise JobsUnavailable(
                f"Ray Jobs API at {self.address} answered no HTTP ({type(error).__name__}); "
                "is this the dashboard's port (8265 by default)?"
            ) from None
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            raise JobsUnavailable(
                f"Ray Jobs API {method} {url} answered non-JSON: {_short(text)}"
            ) from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Every 3xx becomes an ``HTTPError``: the request, with its token, goes nowhere else."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _millis(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _short(text: str) -> str:
    """The last line of a (traceback) body, cut to a readable length."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "(empty body)"
    return last if len(last) <= _DETAIL_CHARS else last[: _DETAIL_CHARS - 3] + "..."
