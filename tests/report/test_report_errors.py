"""Bad input to ``morphtune report``: a clear one-line error, exit status 2, and no file
(nor a temp file) left behind; an existing report is left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from morphtune.cli import main
from tests.report.pages import write_unfinished_sweep
from tests.store.sweeps import write_demo_sweep


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["report", *args])
    return status, capsys.readouterr().err


def _listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    write_demo_sweep(root)
    write_unfinished_sweep(root)
    return root


def test_unknown_sweep(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out" / "report.html"
    output.parent.mkdir()
    status, err = _report(capsys, "nope", "--results", str(results), "-o", str(output))
    assert status == 2
    assert "sweep 'nope' not found" in err and "['demo', 'unfinished']" in err
    assert _listing(output.parent) == []


def test_malformed_sweep_id(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = _report(
        capsys, "../demo", "--results", str(results), "-o", str(tmp_path / "r.html")
    )
    assert status == 2 and "sweep_id must match" in err
    assert not (tmp_path / "r.html").exists()


def test_no_finished_trial_keeps_an_existing_report(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "report.html"
    output.write_text("the previous report")
    status, err = _report(capsys, "unfinished", "--results", str(results), "-o", str(output))
    assert status == 2
    assert "no finished trial" in err and "1 failed" in err and "1 running" in err
    assert output.read_text() == "the previous report"
    assert _listing(tmp_path) == ["report.html", "results"]  # no temp file either


def test_objective_never_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from morphtune.store import ResultWriter

    writer = ResultWriter(tmp_path, "other-metric")
    writer.write_manifest({"objective": {"metric": "val_acc", "mode": "max"}})
    writer.write_results(
        [{"trial_id": "a", "iteration": 1, "status": "running", "config": {}, "metrics": {"x": 1}}]
    )
    writer.write_trial("a", "completed", config={}, last_iteration=1)
    status, err = _report(
        capsys, "other-metric", "--results", str(tmp_path), "-o", str(tmp_path / "r.html")
    )
    assert status == 2 and "'val_acc'" in err and "['x']" in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("missing/report.html", "does not exist"),
        ("a-file/report.html", "is not a directory"),
        ("a-dir", "is a directory"),
    ],
)
def test_unwritable_output(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, reason: str
) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    before = _listing(tmp_path)
    status, err = _report(capsys, "demo", "--results", str(results), "-o", str(tmp_path / where))
    assert status == 2
    assert err.startswith("error: -o/--output") and reason in err
    assert _listing(tmp_path) == before and _listing(tmp_path / "a-dir") == []


def test_a_path_the_kernel_refuses(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Even root cannot create files in /proc: the write fails, the error says so."""
    status, err = _report(capsys, "demo", "--results", str(results), "-o", "/proc/report.html")
    assert status == 2 and "error: -o/--output '/proc/report.html'" in err
    assert not Path("/proc/report.html").exists()


def test_optuna_storage_that_is_not_there(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    output = tmp_path / "r.html"
    status, err = _report(
        capsys, "demo", "--results", str(results), "-o", str(output), "--optuna", missing
    )
    assert status == 2 and f"--optuna {missing}: no such SQLite file" in err
    assert not output.exists() and not (tmp_path / "nope.db").exists()


def test_top_must_be_positive(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "report",
                "demo",
                "--results",
                str(results),
                "-o",
                str(tmp_path / "r.html"),
                "--top",
                "0",
            ]
        )
    assert exit_info.value.code == 2
    assert "--top: must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_a_good_report_after_all(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same inputs with a writable path succeed (so the failures above are the input's)."""
    output = tmp_path / "report.html"
    status = main(["report", "demo", "--results", str(results), "-o", str(output), "--top", "1"])
    assert status == 0, capsys.readouterr().err
    assert "best acc = 0.8 (trial t0)" in capsys.readouterr().out
    assert output.read_text("utf-8").startswith("<!DOCTYPE html>")
    assert _listing(tmp_path) == ["report.html", "results"]
