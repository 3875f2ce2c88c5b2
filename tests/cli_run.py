"""Run the ``morphtune`` CLI in-process, as a test sees it: exit status, stdout, stderr."""

from __future__ import annotations

import pytest

from morphtune.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``main(args)``'s exit status (argparse's ``SystemExit`` included) and what it printed."""
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
