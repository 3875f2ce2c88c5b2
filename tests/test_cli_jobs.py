"""``morphtune submit|status|cancel|logs``: argument and error paths, without Ray.

The commands against a real token-auth Ray cluster (submit, follow, status, logs, cancel,
401/403) are in tests/e2e/test_multinode.py. Here: what must be refused before any request
(bad job ids, specs, tokens, addresses), and what a client meets when the address is wrong
(nothing listening, something that speaks no HTTP, a redirect that would carry the token
elsewhere).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from morphtune._cli_jobs import format_status, job_summary, read_token
from morphtune.service._jobs import MAX_ENV_SPEC_BYTES, JobInfo
from tests.cli_run import run_cli as run

TOKEN = "cli-jobs-secret-0123456789abcdef"
SPEC = """
name: remote-digits
dataset: {name: digits}
model: {family: mlp, width: 16, depth: 1}
training: {epochs: 2}
search:
  num_samples: 2
  scheduler: {name: fifo}
  space:
    model.width: {type: categorical, choices: [16, 32]}
"""


@pytest.fixture(autouse=True)
def no_ray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed() -> str:
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SPEC)
    return path


@pytest.mark.parametrize("command", ["status", "cancel", "logs"])
@pytest.mark.parametrize("job", ["bad id!", "-rf", "a" * 200, "../x"])
def test_bad_job_ids_are_refused_before_any_request(
    capsys: pytest.CaptureFixture[str], closed: str, command: str, job: str
) -> None:
    code, out, err = run(capsys, command, "--address", closed, "--", job)
    assert code == 2 and out == ""
    assert "JOB must match [A-Za-z0-9][A-Za-z0-9._:-]{0,127}" in err and repr(job) in err


@pytest.mark.parametrize(
    "args",
    [["status", "raysubmit_x"], ["cancel", "raysubmit_x"], ["logs", "raysubmit_x"]],
)
def test_an_unreachable_cluster_is_a_runtime_failure(
    capsys: pytest.CaptureFixture[str], closed: str, args: list[str]
) -> None:
    code, _, err = run(capsys, *args, "--address", closed, "--timeout", "3")
    assert code == 1
    assert f"Ray Jobs API at {closed} unreachable" in err
    assert "port-forward" in err  # says how the dashboard is usually reached


def test_submit_to_an_unreachable_cluster(
    capsys: pytest.CaptureFixture[str], closed: str, spec: Path
) -> None:
    code, out, err = run(capsys, "submit", str(spec), "--address", closed, "--timeout", "3")
    assert code == 1 and out == "" and f"Ray Jobs API at {closed} unreachable" in err
    # the spec's default results root is relative: on a cluster that is rarely what you want
    assert "note: no --results" in err and "'./morphtune-results'" in err
    code, _, err = run(capsys, "submit", str(spec), "--address", closed, "--results", "/results")
    assert code == 1 and "unreachable" in err and "note:" not in err


def test_the_address_comes_from_the_flag_or_the_environment(
    capsys: pytest.CaptureFixture[str], closed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, "status", "raysubmit_x")
    assert code == 2 and "--address is required" in err and "$RAY_API_SERVER_ADDRESS" in err
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", closed)
    code, _, err = run(capsys, "status", "raysubmit_x", "--timeout", "3")
    assert code == 1 and f"Ray Jobs API at {closed} unreachable" in err
    code, _, err = run(capsys, "status", "raysubmit_x", "--address", "ray://head:10001")
    assert code == 2 and "--address: ray address must be the dashboard's http(s)" in err
    assert "'ray'" in err


def test_an_invalid_spec_never_leaves_the_machine(
    capsys: pytest.CaptureFixture[str], closed: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("family: mlp", "family: nope"))
    code, out, err = run(capsys, "submit", str(bad), "--address", closed)
    assert code == 2 and out == ""
    assert "model.family" in err and "'nope'" in err and "line 4" in err
    assert "unreachable" not in err  # refused here, before any request
    code, _, err = run(capsys, "submit", str(tmp_path / "missing.yaml"), "--address", closed)
    assert code == 2 and "missing.yaml" in err and "unreachable" not in err


def test_submit_checks_its_own_arguments(
    capsys: pytest.CaptureFixture[str], closed: str, spec: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "submit", str(spec), "--address", closed, "--sweep-id", "a/b")
    assert code == 2 and "--sweep-id" in err and "'a/b'" in err
    code, _, err = run(capsys, "submit", str(spec), "--address", closed, "--interval", "0")
    assert code == 2 and "--interval must be > 0, got 0.0" in err
    code, _, err = run(capsys, "submit", str(spec), "--address", closed, "--timeout", "-1")
    assert code == 2 and "--timeout must be > 0 seconds, got -1.0" in err
    code, _, err = run(capsys, "submit", str(spec), "--address", closed, "--command", " ")
    assert code == 2 and "--command must be a non-empty shell command" in err
    huge = tmp_path / "huge.yaml"  # valid YAML, too big for the job's environment variable
    huge.write_text(SPEC + "# " + "x" * MAX_ENV_SPEC_BYTES + "\n")
    code, _, err = run(capsys, "submit", str(huge), "--address", closed)
    assert code == 2 and f"must be at most {MAX_ENV_SPEC_BYTES} bytes" in err
    assert "MORPHTUNE_SPEC_YAML" in err and "unreachable" not in err
    code, _, err = run(capsys, "submit")
    assert code == 2 and "spec" in err  # argparse: SPEC is required


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read the token file: No such file or directory"),
        ("\n  \n", "the token file is empty"),
        (f"{TOKEN}\nsecond-token\n", "the token file must hold one token"),
    ],
)
def test_bad_token_files(
    capsys: pytest.CaptureFixture[str],
    closed: str,
    tmp_path: Path,
    content: str | None,
    problem: str,
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    code, out, err = run(
        capsys, "status", "raysubmit_x", "--address", closed, "--token-file", str(path)
    )
    assert code == 2 and out == ""
    assert f"--token-file {path}: {problem}" in err
    assert TOKEN not in err


def test_where_the_token_comes_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_token(None) == (None, "")
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert read_token(None) == (TOKEN, "$RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")  # Ray's order: the variable first
    assert read_token(None) == ("from-env", "$RAY_AUTH_TOKEN")
    other = tmp_path / "other"
    other.write_text("from-file")
    assert read_token(str(other)) == ("from-file", f"--token-file {other}")


class _Garbage(threading.Thread):
    """Answers every connection with bytes that are not HTTP (as Ray's GCS port would)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()

    def run(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with connection:
                connection.recv(4096)
                connection.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00not http\r\n\r\n")


def test_an_address_that_speaks_no_http(capsys: pytest.CaptureFixture[str]) -> None:
    garbage = _Garbage()
    garbage.start()
    try:
        port = garbage.sock.getsockname()[1]
        code, _, err = run(capsys, "status", "raysubmit_x", "--address", f"127.0.0.1:{port}")
    finally:
        garbage.sock.close()
    assert code == 1 and "answered no HTTP" in err and "dashboard's port (8265" in err


@pytest.fixture
def redirect() -> Iterator[tuple[str, list[str]]]:
    """A server that redirects every request to a second one, which records what it got."""
    seen: list[str] = []

    class Target(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization") or "(none)")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"status": "RUNNING"}).encode())

        def log_message(self, *args: object) -> None:
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{target.server_port}{self.path}")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    source = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threads = [
        threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True)
        for s in (target, source)
    ]
    for thread in threads:
        thread.start()
    yield f"http://127.0.0.1:{source.server_port}", seen
    for server in (source, target):
        server.shutdown()
        server.server_close()


def test_a_redirect_does_not_carry_the_token_elsewhere(
    capsys: pytest.CaptureFixture[str],
    redirect: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address, seen = redirect
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    code, out, err = run(capsys, "status", "raysubmit_x", "--address", address)
    assert code == 2 and out == ""
    assert "answered HTTP 307" in err and TOKEN not in err
    assert seen == []  # the redirect was not followed


def test_status_formats() -> None:
    job = JobInfo(
        job_id="morphtune-s-1",
        status="FAILED",
        entrypoint="morphtune run --spec-env MORPHTUNE_SPEC_YAML --sweep-id s",
        message="Job entrypoint command failed with exit code 2",
        metadata={"morphtune.sweep_id": "s"},
        runtime_env={"env_vars": {"MORPHTUNE_SPEC_YAML": "name: s\n"}},
        start_time=1_700_000_000_000,
        end_time=None,
    )
    text = format_status(job)
    assert text.splitlines()[0] == "job morphtune-s-1: FAILED"
    assert "sweep       s" in text and "started     2023-11-14 22:13:20 UTC" in text
    assert "ended       -" in text and "exit code 2" in text
    summary = job_summary(job)
    assert summary["sweep_id"] == "s" and summary["start_time"] == 1_700_000_000_000
    assert "runtime_env" not in summary  # it holds the whole spec (and maybe credentials)
    assert job.finished and not JobInfo("j", "RUNNING").finished


class _FlakyJobsApi(http.server.BaseHTTPRequestHandler):
    """A Jobs API whose first ``outage`` requests fail (HTTP 503 or a stall past the client's
    timeout), then reports the job RUNNING for two polls and SUCCEEDED after, with logs."""

    requests = 0
    outage = 0
    stall = 0.0

    def do_GET(self) -> None:
        cls = type(self)
        cls.requests += 1
        if cls.requests <= cls.outage:
            if cls.stall:
                threading.Event().wait(cls.stall)  # the client gives up first
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"Traceback ...\nRuntimeError: the dashboard is busy")
            return
        finished = cls.requests > cls.outage + 4  # info+logs per poll: two RUNNING polls
        if self.path.endswith("/logs"):
            body: dict[str, object] = {"logs": "line 1\n" + ("line 2\n" if finished else "")}
        else:
            body = {"submission_id": "j1", "status": "SUCCEEDED" if finished else "RUNNING"}
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[tuple[str, type[_FlakyJobsApi]]]:
    handler = type("Flaky", (_FlakyJobsApi,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("stall", [0.0, 0.6], ids=["http-503", "timeout"])
def test_following_rides_out_a_short_outage(
    capsys: pytest.CaptureFixture[str], flaky: tuple[str, type[_FlakyJobsApi]], stall: float
) -> None:
    address, api = flaky
    api.outage, api.stall = 3, stall
    flags = ["--address", address, "--timeout", "0.3", "--interval", "0.05"]
    code, out, err = run(capsys, "logs", "j1", "--follow", *flags, "--unreachable-grace", "30")
    assert code == 0, err
    assert out == "line 1\nline 2\n"  # every line once, across the outage
    assert err.count("warning:") == 1 and "retrying for up to 30 s" in err
    assert "answers again after" in err and "job j1 SUCCEEDED" in err


def test_following_gives_up_after_the_grace(
    capsys: pytest.CaptureFixture[str], flaky: tuple[str, type[_FlakyJobsApi]]
) -> None:
    address, api = flaky
    api.outage = 10**6
    flags = ["--address", address, "--timeout", "0.3", "--interval", "0.05"]
    code, out, err = run(capsys, "logs", "j1", "--follow", *flags, "--unreachable-grace", "0.4")
    assert code == 1 and out == ""
    assert "retrying for up to 0.4 s" in err and "answered HTTP 503" in err
    assert "the dashboard is busy" in err
    assert api.requests >= 3  # it did retry before giving up
    code, _, err = run(capsys, "logs", "j1", "--follow", *flags, "--unreachable-grace", "-1")
    assert code == 2 and "--unreachable-grace must be >= 0 seconds, got -1.0" in err
