"""The ``morphtune`` command as a user runs it: a real process against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from morphtune.service import make_server
from tests.store.sweeps import SWEEP, write_demo_sweep


@pytest.fixture(scope="module")
def server_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cli-store")
    write_demo_sweep(root)
    server, port = make_server(root, port=0)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def morphtune(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "morphtune.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_best_prints_the_best_config(server_target: str) -> None:
    result = morphtune("best", SWEEP, "--server", server_target)
    assert result.returncode == 0, result.stderr
    assert "best acc (max) = 0.8" in result.stdout  # t0's last report; t3 failed
    assert "trial t0" in result.stdout


def test_best_json_scope_all(server_target: str) -> None:
    result = morphtune("best", SWEEP, "--server", server_target, "--scope", "all", "--json")
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)
    assert best["trial_id"] == "t1"
    assert best["value"] == pytest.approx(0.9)
    assert best["config"]["lr"] == pytest.approx(0.02)


def test_best_for_unknown_sweep_is_not_found(server_target: str) -> None:
    result = morphtune("best", "nope-sweep", "--server", server_target)
    assert result.returncode == 2
    assert "NOT_FOUND" in result.stderr
    assert "nope-sweep" in result.stderr
    assert "Traceback" not in result.stderr


def test_best_with_unknown_metric_is_invalid_argument(server_target: str) -> None:
    result = morphtune("best", SWEEP, "--server", server_target, "--metric", "nonsense")
    assert result.returncode == 2
    assert "INVALID_ARGUMENT" in result.stderr
    assert "nonsense" in result.stderr


def test_best_without_a_server_fails_cleanly(tmp_path: Path) -> None:
    result = morphtune("best", SWEEP, "--server", "127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
    assert "Traceback" not in result.stderr


def test_spec_show_prints_resolved_defaults(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\n")
    result = morphtune("spec", "show", str(spec))
    assert result.returncode == 0, result.stderr
    assert "name: asha" in result.stdout
    assert "family: mlp" in result.stdout


def test_unreadable_spec_is_bad_input(tmp_path: Path) -> None:
    result = morphtune("spec", "check", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2
    assert "cannot read file" in result.stderr
