"""The results service serving a store that lives on S3 (a real moto server on loopback):
what a cluster deployment does when the Ray job writes to object storage."""

from __future__ import annotations

from morphtune.service import SweepClient, make_server
from morphtune.store import SweepStore
from tests.store.conftest import make_bucket, s3_uri
from tests.store.sweeps import COUNTS, SWEEP, write_demo_sweep


def test_service_answers_from_an_s3_store(moto_endpoint: str) -> None:
    uri = s3_uri(moto_endpoint, make_bucket(moto_endpoint))
    write_demo_sweep(uri)
    expected = SweepStore(uri).best(SWEEP)
    server, port = make_server(uri, port=0)
    server.start()
    try:
        with SweepClient(f"127.0.0.1:{port}", timeout=10.0) as client:
            assert client.health() == "SERVING"
            assert client.list_sweeps() == [SWEEP]
            best = client.best(SWEEP)
            assert (best["trial_id"], best["iteration"], best["value"]) == (
                expected.trial_id,
                expected.iteration,
                expected.value,
            )
            assert client.get_sweep(SWEEP)["trial_counts"] == COUNTS
    finally:
        server.stop(grace=None)
