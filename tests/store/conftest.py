"""Store backends for the conformance tests: local disk, an object-store location over the
local filesystem (the direct-upload code path, fast), and a real S3-compatible server (moto)
on loopback."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from morphtune.store._location import Location, ObjectLocation

_buckets = itertools.count()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``host:port`` of a moto S3 server on 127.0.0.1 (dummy credentials in the env)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {key: os.environ.get(key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"{host}:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"bucket{next(_buckets)}"
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{endpoint}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=name)
    return name


def s3_uri(endpoint: str, bucket: str, prefix: str = "runs") -> str:
    return f"s3://{bucket}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


RootFactory = Callable[[], "str | Path | Location"]


@pytest.fixture(params=["local", "object", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, RootFactory]:
    """``(kind, make_root)``: ``make_root()`` returns the same store root each call."""
    kind = request.param
    if kind == "local":
        return kind, lambda: tmp_path
    if kind == "object":
        root = tmp_path / "objects"
        root.mkdir()
        return kind, lambda: ObjectLocation(pafs.LocalFileSystem(), str(root), f"objects:{root}")
    endpoint = request.getfixturevalue("moto_endpoint")
    uri = s3_uri(endpoint, make_bucket(endpoint))
    return kind, lambda: uri
