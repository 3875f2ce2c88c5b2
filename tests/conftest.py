"""Session-wide fixtures: one Ray runtime for the whole test session (started lazily)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A local Ray with 2 CPUs, started once per session by the first test that needs it."""
    import ray

    from morphtune.trainables._driver import TRAIN_ENV_DEFAULTS

    for key, value in TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    ray.init(
        num_cpus=2,
        # the dashboard serves the State API that Ray Train's placement-group cleaner needs
        log_to_driver=False,
        runtime_env={"env_vars": dict(TRAIN_ENV_DEFAULTS)},
    )
    yield ray
    ray.shutdown()
