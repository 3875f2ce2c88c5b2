from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from morphtune.service import SweepClient, make_server
from morphtune.store import SweepStore
from tests.store.sweeps import write_demo_sweep


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_demo_sweep(root)
    return root


@pytest.fixture(scope="module")
def store(store_root: Path) -> SweepStore:
    return SweepStore(store_root)


@pytest.fixture(scope="module")
def target(store_root: Path) -> Iterator[str]:
    server, port = make_server(store_root, port=0)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
def client(target: str) -> Iterator[SweepClient]:
    with SweepClient(target, timeout=5.0) as sweep_client:
        yield sweep_client
