"""One real multi-objective sweep for every report test that needs one (run once per test
session, on the session's Ray), and its report written by the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SWEEP_ID = "report-mo"

# Tiny but varied: two objectives (so a Pareto front), growth (width changes mid-trial),
# pruning at init (density < 1), a conditional knob, and a searched float on a log scale.
MO_SPEC = f"""
name: {SWEEP_ID}
dataset: {{name: digits}}
model: {{family: mlp, width: 8, depth: 1}}
training: {{epochs: 2, batch_size: 128, lr: 0.01}}
growth: {{operator: none, at_fraction: 0.6}}
seed: 0
search:
  objectives: [{{metric: val_acc}}, {{metric: nonzero_params}}]
  num_samples: 4
  max_concurrent: 2
  sampler: {{name: random, seed: 3}}
  scheduler: {{name: fifo}}
  space:
    model.width: {{type: categorical, choices: [8, 16, 32]}}
    training.lr: {{type: float, low: 0.003, high: 0.03, log: true}}
    growth.operator: {{type: categorical, choices: [none, net2net]}}
    sparsity.method: {{type: categorical, choices: [none, magnitude]}}
    sparsity.density: {{type: float, low: 0.3, high: 0.8, when: {{sparsity.method: [magnitude]}}}}
"""


@dataclass(frozen=True)
class Reported:
    root: Path  # the results root
    sweep_id: str
    html: Path  # the report `morphtune report` wrote
    text: str
    stdout: str


@pytest.fixture(scope="package")
def mo_sweep(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results root holding the finished sweep ``report-mo``."""
    from morphtune.runner import run_sweep
    from morphtune.spec import parse_spec

    root = tmp_path_factory.mktemp("report-results")
    run_sweep(parse_spec(MO_SPEC), results_root=root)
    return root


@pytest.fixture(scope="package")
def mo_report(mo_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Reported:
    """``morphtune report report-mo -o .../report.html`` run once."""
    import contextlib
    import io

    from morphtune.cli import main

    output = tmp_path_factory.mktemp("report-page") / "report.html"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["report", SWEEP_ID, "--results", str(mo_sweep), "-o", str(output)])
    assert status == 0, stdout.getvalue()
    return Reported(mo_sweep, SWEEP_ID, output, output.read_text("utf-8"), stdout.getvalue())
