"""Store roots: parsing, and the local listing cache proved by directory mtimes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from morphtune.store._location import LocalLocation, ObjectLocation, open_location


def test_roots_parse(tmp_path: Path) -> None:
    assert isinstance(open_location(tmp_path), LocalLocation)
    assert isinstance(open_location(str(tmp_path)), LocalLocation)
    local = open_location(f"file://{tmp_path}")
    assert isinstance(local, LocalLocation) and local.path == tmp_path
    remote = open_location("s3://bucket/a/b?region=us-east-1&endpoint_override=127.0.0.1:1")
    assert isinstance(remote, ObjectLocation)
    assert remote.root == "bucket/a/b" and remote.display == "s3://bucket/a/b"
    assert remote.join("s", "results") == "bucket/a/b/s/results"
    with pytest.raises(ValueError, match="root must be a non-empty path or URI string"):
        open_location(3)  # type: ignore[arg-type]


def test_cached_listing_is_reused_only_when_provably_current(tmp_path: Path) -> None:
    location = LocalLocation(tmp_path)
    directory = str(tmp_path)
    (tmp_path / "a").write_bytes(b"")
    first = location.list_files_cached(directory)
    assert [entry.name for entry in first] == ["a"]
    (tmp_path / "b").write_bytes(b"")  # within the margin: listed again
    assert sorted(e.name for e in location.list_files_cached(directory)) == ["a", "b"]
    past = time.time() - 10  # the last change long before the next listing
    os.utime(tmp_path, (past, past))
    listed = location.list_files_cached(directory)
    assert location.list_files_cached(directory) is listed  # reused: mtime unchanged
    (tmp_path / "c").write_bytes(b"")  # moves the directory's mtime
    assert sorted(e.name for e in location.list_files_cached(directory)) == ["a", "b", "c"]
    (tmp_path / "c").unlink()
    assert sorted(e.name for e in location.list_files_cached(directory)) == ["a", "b"]
    assert location.list_files_cached(str(tmp_path / "missing")) == []
