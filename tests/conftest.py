"""Session-wide fixtures: one Ray runtime for the whole test session (started lazily)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tests train tiny models: one intra-op thread is as fast as two on an idle 2-core
    machine, and ~100x faster when anything else competes for the cores (torch's
    worker threads spin). Ray workers get their own thread count from Ray."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """A local Ray with 2 CPUs, started once per session by the first test that needs it."""
    import ray

    from morphtune.runner import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
