"""Every shipped example spec passes the spec check (as `morphtune spec check` runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from morphtune.spec import load_spec

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_growth_examples() -> None:
    assert len([path for path in EXAMPLES if path.name.startswith("growth-")]) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_spec_is_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
