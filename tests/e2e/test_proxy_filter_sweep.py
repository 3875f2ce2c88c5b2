"""A sweep with a proxy filter: candidates below the running proxy quantile never become
trials, and the manifest says how many were discarded."""

from __future__ import annotations

from pathlib import Path

import pytest

from morphtune.runner import run_sweep
from morphtune.spec import parse_spec
from morphtune.store import SweepStore

pytestmark = pytest.mark.ray

SPEC = """
name: pfs
dataset: {name: digits}
model: {family: mlp, width: 16, depth: 1}
training: {epochs: 2, batch_size: 128, lr: 0.01}
search:
  num_samples: 3
  max_concurrent: 2
  sampler: {name: random, seed: 3}
  scheduler: {name: fifo}
  proxy_filter: {proxy: params, fraction: 0.6, warmup: 1, batch_size: 32}
  space:
    model.width: {type: categorical, choices: [2, 4, 8, 16, 32, 64, 128]}
"""


def test_sweep_trains_only_candidates_that_pass_the_proxy(
    ray_session: object, tmp_path: Path
) -> None:
    outcome = run_sweep(parse_spec(SPEC), results_root=tmp_path)
    store = SweepStore(tmp_path)
    assert outcome.trial_states.get("completed") == 3
    gate = store.manifest("pfs")["search"]["proxy_filter"]
    assert gate["proxy"] == "params"
    assert gate["scored"] == 3 + gate["filtered"]
    assert gate["filtered"] >= 1  # small widths fall below the running quantile
