"""``morphtune submit|status|cancel|logs``: run sweeps on a remote Ray cluster's Jobs API.

``submit SPEC --address http://HEAD:8265`` validates the spec here first (as ``morphtune spec
check`` does), then submits ``morphtune run --spec-env MORPHTUNE_SPEC_YAML`` with the spec text
in the job's ``runtime_env`` (the cluster needs no copy of the file), and prints the job id and
the sweep id. ``--wait`` waits for the job to end, ``--follow`` also streams its logs; either
exits 1 unless the job succeeded.

The address defaults to ``$RAY_API_SERVER_ADDRESS`` (as for ``ray job submit``). A cluster
started with ``RAY_AUTH_MODE=token`` needs its token: ``--token-file FILE``, else
``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH`` names. The token is sent as
``Authorization: Bearer`` and never printed.

Exit status: 0 success; 1 a runtime failure (unreachable cluster, a Ray error, a job that
failed or was stopped); 2 bad input (an invalid spec or argument, an unknown job, a missing or
wrong token); 130 interrupted while waiting (the job keeps running).

Only argparse and json are imported at module level; the spec (torch) is loaded by ``submit``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from morphtune.service._jobs import JobInfo, RayJobsClient

__all__ = ["ADDRESS_ENV", "TOKEN_PATH_ENV", "add_job_commands", "read_token"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
ADDRESS_ENV = "RAY_API_SERVER_ADDRESS"
TOKEN_ENV = "RAY_AUTH_TOKEN"  # the same variable Ray's own clients read
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


class _Exit(Exception):
    """Stop the command with this exit status; the message (if any) goes to stderr."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------ the token


def read_token(token_file: str | None) -> tuple[str | None, str]:
    """The Ray token and where it came from (for messages; never the token itself)."""
    if token_file is not None:
        return _token_from_file(
            token_file, f"--token-file {token_file}"
        ), f"--token-file {token_file}"
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env, f"${TOKEN_ENV}"
    path = os.environ.get(TOKEN_PATH_ENV, "").strip()
    if path:
        return _token_from_file(path, f"${TOKEN_PATH_ENV} ({path})"), f"${TOKEN_PATH_ENV}"
    return None, ""


def _token_from_file(path: str, what: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise _Exit(
            EXIT_BAD_INPUT, f"error: {what}: cannot read the token file: {reason}"
        ) from None
    token = text.strip()
    if not token:
        raise _Exit(EXIT_BAD_INPUT, f"error: {what}: the token file is empty")
    if any(character.isspace() for character in token):
        raise _Exit(
            EXIT_BAD_INPUT,
            f"error: {what}: the token file must hold one token (no spaces or line breaks "
            "inside it)",
        )
    return token


# ----------------------------------------------------------------------------- the client


def _client(args: argparse.Namespace, **options: Any) -> RayJobsClient:
    from morphtune.service._jobs import RayJobsClient

    address = args.address or os.environ.get(ADDRESS_ENV, "").strip()
    if not address:
        raise _Exit(
            EXIT_BAD_INPUT,
            f"error: --address is required (the Ray dashboard, e.g. http://HEAD:8265), or set "
            f"${ADDRESS_ENV}",
        )
    if not args.timeout > 0:
        raise _Exit(EXIT_BAD_INPUT, f"error: --timeout must be > 0 seconds, got {args.timeout}")
    token, source = read_token(args.token_file)
    args.token_source = source
    try:
        # an empty token (not None) keeps RayJobsClient from reading $RAY_AUTH_TOKEN itself
        client = RayJobsClient(address, token=token or "", timeout=args.timeout, **options)
    except ValueError as error:
        raise _Exit(EXIT_BAD_INPUT, f"error: --address: {error}") from None
    args.client = client
    return client


def _job_id(text: str) -> str:
    from morphtune.service._jobs import validate_job_id

    try:
        return validate_job_id(text, "JOB")
    except ValueError as error:
        raise _Exit(EXIT_BAD_INPUT, f"error: {error}") from None


def _explain(error: Exception, client: RayJobsClient, args: argparse.Namespace) -> _Exit:
    """A Ray Jobs API failure as one clear line and its exit status."""
    from morphtune.service._jobs import JobNotFound, JobRejected

    where = f"the Ray cluster at {client.address}"
    source = getattr(args, "token_source", "")
    status = getattr(error, "status", None)
    if status == 401 and not source:
        return _Exit(
            EXIT_BAD_INPUT,
            f"error: {where} requires a token and none was given (HTTP 401): pass "
            f"--token-file FILE or set ${TOKEN_ENV}",
        )
    if status in (401, 403) and source:
        return _Exit(
            EXIT_BAD_INPUT,
            f"error: {where} refused the token from {source} (HTTP {status}): it is not this "
            f"cluster's token ({error})",
        )
    if isinstance(error, JobNotFound):
        job = getattr(args, "job", None)
        what = f"no job {job!r}" if job else "not found"
        return _Exit(EXIT_BAD_INPUT, f"error: {where} has {what} ({error})")
    if isinstance(error, JobRejected):
        return _Exit(EXIT_BAD_INPUT, f"error: {error}")
    if status is None:  # no HTTP answer at all
        return _Exit(
            EXIT_FAILED,
            f"error: {error} (is --address the head's dashboard, port 8265 by default? On "
            "Kubernetes: kubectl -n morphtune port-forward svc/morphtune-head-svc 8265)",
        )
    return _Exit(EXIT_FAILED, f"error: {error}")


def _run(args: argparse.Namespace, action: Callable[[argparse.Namespace], int]) -> int:
    from morphtune.service._jobs import JobsError

    try:
        try:
            return action(args)
        except JobsError as error:
            raise _explain(error, args.client, args) from None  # set by _client
    except _Exit as stop:
        if str(stop):
            print(str(stop), file=sys.stderr)
        return stop.code


# ---------------------------------------------------------------------------- formatting


def _when(millis: int | None) -> str:
    if millis is None:
        return "-"
    return datetime.fromtimestamp(millis / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def job_summary(job: JobInfo) -> dict[str, Any]:
    """What ``status --json`` prints (the runtime_env, which holds the spec, left out)."""
    return {
        "job_id": job.job_id,
        "status": job.status,
        "sweep_id": job.metadata.get("morphtune.sweep_id", ""),
        "entrypoint": job.entrypoint,
        "message": job.message,
        "error_type": job.error_type,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "metadata": job.metadata,
    }


def format_status(job: JobInfo) -> str:
    lines = [f"job {job.job_id}: {job.status}"]
    sweep = job.metadata.get("morphtune.sweep_id")
    if sweep:
        lines.append(f"  sweep       {sweep}")
    lines.append(f"  entrypoint  {job.entrypoint or '-'}")
    lines.append(f"  started     {_when(job.start_time)}")
    lines.append(f"  ended       {_when(job.end_time)}")
    if job.message:
        lines.append(f"  message     {job.message.strip()}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ following


def _follow(
    client: RayJobsClient, job_id: str, interval: float, stream_logs: bool, grace: float
) -> JobInfo:
    """Poll until the job ends, printing new log text as it appears (when ``stream_logs``).

    The status is read before the logs: once a poll sees the job finished, the logs read
    after it hold everything the driver wrote. A poll the Jobs API does not answer (a
    timeout, a refused connection, HTTP 5xx: a busy head, a restarted port-forward) is
    retried for up to ``grace`` seconds of outage before the follow gives up; a refusal
    (4xx, a wrong token, an unknown job) ends it at once.
    """
    from morphtune.service._jobs import JobsUnavailable

    shown = 0
    outage_since: float | None = None
    while True:
        try:
            job = client.info(job_id)
            text = client.logs(job_id) if stream_logs else ""
        except JobsUnavailable as error:
            now = time.monotonic()
            if outage_since is None:
                outage_since = now
                print(
                    f"warning: {error}; retrying for up to {grace:g} s (--unreachable-grace)",
                    file=sys.stderr,
                    flush=True,
                )
            if now - outage_since >= grace:
                raise
            time.sleep(interval)
            continue
        if outage_since is not None:
            gap = time.monotonic() - outage_since
            print(f"note: the Ray Jobs API answers again after {gap:.1f} s", file=sys.stderr)
            outage_since = None
        if stream_logs:
            if len(text) < shown:  # the log was replaced (a resubmitted id): start over
                shown = 0
            if len(text) > shown:
                sys.stdout.write(text[shown:])
                sys.stdout.flush()
                shown = len(text)
        if job.finished:
            return job
        time.sleep(interval)


def _wait_and_report(
    client: RayJobsClient, args: argparse.Namespace, job_id: str, stream_logs: bool
) -> int:
    try:
        job = _follow(client, job_id, args.interval, stream_logs, args.unreachable_grace)
    except KeyboardInterrupt:
        print(
            f"\nstopped waiting; job {job_id} keeps running (morphtune cancel {job_id} "
            f"--address {client.address} stops it)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    outcome = f"job {job_id} {job.status}"
    if job.status != "SUCCEEDED" and job.message:
        outcome += f": {job.message.strip()}"
    print(outcome, file=sys.stderr)
    return EXIT_OK if job.status == "SUCCEEDED" else EXIT_FAILED


# ------------------------------------------------------------------------------- commands


def _load_spec_text(path: str) -> tuple[str, Any]:
    """The spec file's text and the spec it validates to (the checks of ``spec check``)."""
    from morphtune.spec import SpecError, load_spec

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise _Exit(EXIT_BAD_INPUT, f"error: {path}: cannot read the spec: {reason}") from None
    try:
        spec = load_spec(path)
    except SpecError as error:
        raise _Exit(EXIT_BAD_INPUT, f"error: {error}") from None
    return text, spec


def _cmd_submit(args: argparse.Namespace) -> int:
    def action(args: argparse.Namespace) -> int:
        _check_polling(args)
        if not args.command.strip():
            raise _Exit(EXIT_BAD_INPUT, "error: --command must be a non-empty shell command")
        text, spec = _load_spec_text(args.spec)  # before any request: bad specs never leave
        from morphtune.store import validate_sweep_id

        try:
            sweep_id = validate_sweep_id(args.sweep_id or spec.name)
        except ValueError as error:
            raise _Exit(EXIT_BAD_INPUT, f"error: --sweep-id: {error}") from None
        client = _client(args, command=args.command, results_root=args.results)
        results = str(spec.storage.results)
        if args.results is None and "://" not in results and not results.startswith("/"):
            print(
                f"note: no --results, so the cluster writes to the spec's storage.results "
                f"{results!r}, relative to the job's working directory there; pass e.g. "
                "--results /results (a volume the results service reads)",
                file=sys.stderr,
            )
        try:
            job = client.submit(
                text, sweep_id, overwrite=args.overwrite, submitted_by="morphtune-cli"
            )
        except ValueError as error:  # the spec is too large for the job's environment
            raise _Exit(EXIT_BAD_INPUT, f"error: {args.spec}: {error}") from None
        if args.json:
            summary = {"job_id": job.job_id, "sweep_id": sweep_id, "status": job.status}
            print(json.dumps({**summary, "address": client.address}), flush=True)
        else:
            print(f"job_id: {job.job_id}\nsweep_id: {sweep_id}\nstatus: {job.status}", flush=True)
        if not (args.wait or args.follow):
            follow = f"morphtune logs {job.job_id} --address {client.address} --follow"
            print(f"follow it with: {follow}", file=sys.stderr)
            return EXIT_OK
        return _wait_and_report(client, args, job.job_id, stream_logs=args.follow)

    return _run(args, action)


def _cmd_status(args: argparse.Namespace) -> int:
    def action(args: argparse.Namespace) -> int:
        job_id = _job_id(args.job)
        client = _client(args)
        job = client.info(job_id)
        print(json.dumps(job_summary(job), indent=2) if args.json else format_status(job))
        return EXIT_OK

    return _run(args, action)


def _cmd_cancel(args: argparse.Namespace) -> int:
    def action(args: argparse.Namespace) -> int:
        job_id = _job_id(args.job)
        client = _client(args)
        stopped, job = client.stop(job_id)
        if stopped:
            print(f"job {job_id}: stop requested (now {job.status})")
        else:
            print(f"job {job_id}: had already ended ({job.status}); nothing to stop")
        return EXIT_OK

    return _run(args, action)


def _cmd_logs(args: argparse.Namespace) -> int:
    def action(args: argparse.Namespace) -> int:
        _check_polling(args)
        job_id = _job_id(args.job)
        client = _client(args)
        if args.follow:
            return _wait_and_report(client, args, job_id, stream_logs=True)
        sys.stdout.write(client.logs(job_id))
        sys.stdout.flush()
        return EXIT_OK

    return _run(args, action)


# --------------------------------------------------------------------------------- parser


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help=f"the Ray dashboard (Jobs API), e.g. http://HEAD:8265 (default: ${ADDRESS_ENV})",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"file holding the cluster's Ray token (default: ${TOKEN_ENV}, else the file "
        f"${TOKEN_PATH_ENV} names); never printed",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.set_defaults(client=None)


def _interval_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls (default 1)"
    )
    parser.add_argument(
        "--unreachable-grace",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="while waiting, how long the Jobs API may stay unanswered (timeouts, refused "
        "connections, HTTP 5xx) before giving up (default 120)",
    )


def _check_polling(args: argparse.Namespace) -> None:
    if not args.interval > 0:
        raise _Exit(EXIT_BAD_INPUT, f"error: --interval must be > 0, got {args.interval}")
    if not args.unreachable_grace >= 0:
        raise _Exit(
            EXIT_BAD_INPUT,
            f"error: --unreachable-grace must be >= 0 seconds, got {args.unreachable_grace}",
        )


def add_job_commands(sub: Any) -> None:
    """Add ``submit``, ``status``, ``cancel`` and ``logs`` to ``sub``."""
    submit = sub.add_parser(
        "submit", help="check a sweep spec here, then run it on a Ray cluster (Jobs API)"
    )
    submit.add_argument("spec", help="sweep spec YAML file")
    _connection_flags(submit)
    submit.add_argument(
        "--results",
        metavar="ROOT",
        help="results root as the cluster sees it, e.g. /results or s3://bucket/prefix "
        "(default: the spec's storage.results, on the cluster)",
    )
    submit.add_argument("--sweep-id", help="sweep id (default: the spec's name)")
    submit.add_argument(
        "--overwrite", action="store_true", help="replace an existing sweep's results"
    )
    submit.add_argument(
        "--command",
        default="morphtune",
        help="how the cluster runs morphtune (default 'morphtune')",
    )
    submit.add_argument(
        "--wait", action="store_true", help="wait until the job ends; exit 1 unless it succeeded"
    )
    submit.add_argument(
        "--follow", action="store_true", help="like --wait, streaming the job's logs meanwhile"
    )
    submit.add_argument("--json", action="store_true", help="print the submission as JSON")
    _interval_flag(submit)
    submit.set_defaults(handler=_cmd_submit)

    status = sub.add_parser("status", help="show a Ray job's state (a submitted sweep)")
    status.add_argument("job", help="job (submission) id, as submit printed it")
    _connection_flags(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_cmd_status)

    cancel = sub.add_parser("cancel", help="stop a Ray job (a submitted sweep)")
    cancel.add_argument("job", help="job (submission) id")
    _connection_flags(cancel)
    cancel.set_defaults(handler=_cmd_cancel)

    logs = sub.add_parser("logs", help="print a Ray job's output; --follow until it ends")
    logs.add_argument("job", help="job (submission) id")
    _connection_flags(logs)
    logs.add_argument(
        "--follow",
        action="store_true",
        help="keep printing new output until the job ends; exit 1 unless it succeeded",
    )
    _interval_flag(logs)
    logs.set_defaults(handler=_cmd_logs)
