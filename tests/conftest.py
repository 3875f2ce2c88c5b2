"""Session-wide fixtures: one Ray runtime for the whole test session (started lazily)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A local Ray with 2 CPUs, started once per session by the first test that needs it."""
    import ray

    from morphtune.runner import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
