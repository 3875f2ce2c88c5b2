"""The Optuna study in PostgreSQL, for real: `.ci/run` starts a server on loopback
(scripts/postgres-up.sh) and sets MORPHTUNE_TEST_POSTGRES_URL; with
MORPHTUNE_REQUIRE_POSTGRES set a missing server fails the suite instead of skipping."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from morphtune.runner import SweepExistsError, make_searcher, run_sweep
from morphtune.searchers._study import optuna_storage
from morphtune.spec import parse_spec


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get("MORPHTUNE_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("MORPHTUNE_REQUIRE_POSTGRES"):
            pytest.fail("MORPHTUNE_REQUIRE_POSTGRES is set but MORPHTUNE_TEST_POSTGRES_URL is not")
        pytest.skip("no PostgreSQL: run `bash scripts/postgres-up.sh` and export its URL")
    return url


def spec_text(name: str, url: str, samples: int = 3) -> str:
    return f"""
name: {name}
training: {{epochs: 2}}
storage: {{optuna: "{url}"}}
search:
  num_samples: {samples}
  max_concurrent: 2
  sampler: {{name: tpe, seed: 1, n_startup_trials: 2}}
  scheduler: {{name: fifo}}
  space:
    training.lr: {{type: float, low: 0.001, high: 0.1, log: true}}
"""


def test_searcher_keeps_its_study_in_postgres(postgres_url: str) -> None:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    spec = parse_spec(spec_text(name, postgres_url))
    searcher = make_searcher(spec, postgres_url)
    for index in range(3):
        assert searcher.suggest(f"t{index}") is not None
        searcher.on_trial_complete(f"t{index}", {"val_acc": 0.1 * (index + 1)})
    # another connection (another process would do the same) sees what was told
    study = optuna.load_study(study_name=name, storage=optuna_storage(postgres_url))
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3
    assert study.best_value == pytest.approx(0.3)


def lr_trial(trial: dict[str, Any], report: Any) -> None:
    for epoch in range(2):
        report({"val_acc": 1.0 - abs(trial["training"]["lr"] - 0.01) - 0.01 * (1 - epoch)})


@pytest.mark.ray
def test_a_sweep_on_postgres_completes_every_trial_and_guards_its_name(
    ray_session: object, postgres_url: str, tmp_path: Path
) -> None:
    name = f"pgsweep-{uuid.uuid4().hex[:8]}"
    spec = parse_spec(spec_text(name, postgres_url, samples=4))
    outcome = run_sweep(spec, results_root=tmp_path, trial_fn=lr_trial)
    assert outcome.trial_states["completed"] == 4
    study = optuna.load_study(study_name=name, storage=optuna_storage(postgres_url))
    assert sorted(t.state.name for t in study.get_trials()) == ["COMPLETE"] * 4
    # a new sweep of the same name must not silently extend the old study
    with pytest.raises(SweepExistsError, match="already holds a study"):
        run_sweep(spec, results_root=tmp_path / "other", trial_fn=lr_trial)
