"""The repository imports cleanly from its root, and no module shadows the stdlib."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_stdlib_imports_work_from_repo_root() -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    result = subprocess.run(
        [sys.executable, "-c", "import platform, torch, ray, morphtune; print(platform.system())"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_no_module_shadows_the_standard_library() -> None:
    names = set(sys.stdlib_module_names)
    offenders = []
    for root in (REPO, REPO / "src", REPO / "src" / "morphtune"):
        for entry in root.iterdir():
            stem = entry.stem if entry.suffix == ".py" else entry.name
            is_package = entry.is_dir() and (entry / "__init__.py").exists()
            if (entry.suffix == ".py" or is_package) and stem in names:
                offenders.append(str(entry))
    assert offenders == []


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "morphtune"
    assert script.exists()
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    for command in ("run", "serve", "best", "spec", "demo"):
        assert command in result.stdout
