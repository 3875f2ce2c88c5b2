"""``morphtune sweeps|trials|best|pareto|watch`` against a real server with token auth, and
``morphtune run --spec-env`` (the option SubmitSweep's Ray jobs use)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from morphtune.service import SweepClient, make_server
from tests.cli_run import run_cli as run
from tests.service.api_data import FAILED, write_mo_sweep
from tests.store.sweeps import write_demo_sweep

TOKEN = "cli-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cli-service")
    write_demo_sweep(root)
    write_mo_sweep(root)
    server, port = make_server(root, port=0, tokens=[TOKEN])
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORPHTUNE_TOKEN", TOKEN)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_sweeps(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "sweeps", "--server", server)
    assert code == 0 and out.split() == ["demo", "mo"]
    assert run_json(capsys, "sweeps", "--server", server) == ["demo", "mo"]
    sweep = run_json(capsys, "sweeps", "mo", "--server", server)
    assert sweep["objective"] == {"metric": "acc", "mode": "max"}
    assert sweep["trial_counts"]["failed"] == 1
    code, out, _ = run(capsys, "sweeps", "mo", "--server", server)
    assert "objective acc (max)" in out and "failed 1" in out


def test_trials_filter_order_json_and_table(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--where", "params <= 6000", "--where", "config.model.family == mlp"]
    rows = run_json(
        capsys, "trials", "mo", "--server", server, *where, "--order-by", "acc", "--desc"
    )
    assert rows
    with SweepClient(server, token=TOKEN) as client:
        expected = list(
            client.list_trials(
                "mo",
                ["params <= 6000", "config.model.family == mlp"],
                order_by="acc",
                descending=True,
            )
        )
    assert [(r["trial_id"], r["iteration"]) for r in rows] == [
        (r["trial_id"], r["iteration"]) for r in expected
    ]
    code, out, _ = run(
        capsys, "trials", "mo", "--server", server, "--limit", "3", "--page-size", "2"
    )
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["trial", "iter", "state"]
    assert {"acc", "params", "loss"} <= set(lines[0].split())
    assert len(lines) == 4
    states = run_json(capsys, "trials", "mo", "--server", server, "--where", "state in failed")
    assert [r["trial_id"] for r in states] == [FAILED]


def test_best_with_constraints(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    best = run_json(capsys, "best", "mo", "--server", server, "--where", "params <= 3000")
    with SweepClient(server, token=TOKEN) as client:
        assert best == client.best("mo", constraints=["params <= 3000"])
    code, out, _ = run(capsys, "best", "demo", "--server", server)
    assert code == 0 and "best acc (max) = 0.8" in out and "model.width = 32" in out


def test_pareto(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    front = run_json(capsys, "pareto", "mo", "--server", server)
    assert front["objectives"] == [["acc", "max"], ["params", "min"]]
    assert front["hypervolume"] > 0 and front["points"]
    code, out, _ = run(
        capsys,
        "pareto",
        "mo",
        "--server",
        server,
        "--objective",
        "acc:max",
        "--objective",
        "density:min",
        "--reference",
        "0",
        "2",
    )
    assert code == 0
    assert "hypervolume" in out and "(reference 0, 2)" in out
    assert "acc (max)" in out and "density (min)" in out


def test_watch_resumes_from_a_printed_token(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "watch", "mo", "--server", server, "--count", "5", "--json")
    assert code == 0
    first = [json.loads(line) for line in out.splitlines()]
    assert len(first) == 5
    token = first[2]["resume_token"]
    code, out, _ = run(
        capsys, "watch", "mo", "--server", server, "--count", "2", "--resume-token", token, "--json"
    )
    resumed = [json.loads(line) for line in out.splitlines()]
    assert [r["row"] for r in resumed] == [r["row"] for r in first[3:5]]
    code, out, err = run(
        capsys, "watch", "mo", "--server", server, "--count", "1", "--trial", "t03"
    )
    assert code == 0 and out.startswith("t03 iter 1 (completed): ")
    assert "resume with --resume-token " in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["trials", "mo", "--where", "bogus"],
            2,
            "error: condition 'bogus' must read COLUMN OP VALUE",
        ),
        (["trials", "mo", "--page-size", "5000"], 2, "INVALID_ARGUMENT: page_size must be between"),
        (["trials", "mo", "--where", "nope > 1"], 2, "filter[0].column must name a column"),
        (["best", "mo", "--where", "params < 0"], 1, "FAILED_PRECONDITION"),
        (["pareto", "nope"], 2, "NOT_FOUND: sweep 'nope' not found"),
        (["pareto", "mo", "--objective", "acc"], 2, "objective must read METRIC:max"),
        (["trials", "mo", "--limit", "0"], 2, "must be a positive integer"),
        (["sweeps", "--token", "wrong-token-0123456789"], 2, "UNAUTHENTICATED"),
        (["sweeps", "--tls-ca", "/nonexistent/ca.pem"], 2, "error: [Errno 2]"),
    ],
)
def test_errors_are_one_line(
    server: str, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    got, _, err = run(capsys, *args, "--server", server)
    assert got == code
    assert message in err
    assert "Traceback" not in err
    assert TOKEN not in err


def test_missing_token_as_a_user_sees_it(server: str) -> None:
    environment = {"PATH": "/usr/bin:/bin"}  # no MORPHTUNE_TOKEN
    result = subprocess.run(
        [sys.executable, "-m", "morphtune.cli", "sweeps", "--server", server],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: UNAUTHENTICATED")
    with_token = subprocess.run(
        [sys.executable, "-m", "morphtune.cli", "sweeps", "--server", server, "--token", TOKEN],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert with_token.returncode == 0, with_token.stderr
    assert with_token.stdout.split() == ["demo", "mo"]


def test_tls_against_a_plaintext_server_fails_cleanly(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "sweeps", "--server", server, "--tls", "--timeout", "2")
    assert code == 1
    assert err.startswith("error: UNAVAILABLE") or err.startswith("error: DEADLINE_EXCEEDED")


def test_run_spec_env_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("SPEC_UNSET", raising=False)
    code, _, err = run(capsys, "run", "--spec-env", "SPEC_UNSET")
    assert code == 2 and "--spec-env SPEC_UNSET: the variable is unset or empty" in err
    monkeypatch.setenv("SPEC_BAD", "name: s\nmodel: {family: perceptron}\n")
    code, _, err = run(capsys, "run", "--spec-env", "SPEC_BAD")
    assert code == 2
    assert "invalid sweep spec $SPEC_BAD" in err and "model.family" in err
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\n")
    code, _, err = run(capsys, "run", str(spec), "--spec-env", "SPEC_BAD")
    assert code == 2 and "exactly one of SPEC (a file) or --spec-env VAR" in err
    code, _, err = run(capsys, "run")
    assert code == 2
