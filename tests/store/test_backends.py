"""One conformance suite, run on every backend: local disk, the object-store code path over
the local filesystem, and S3 on a real moto server (see ``conftest.py``)."""

from __future__ import annotations

import math
import os

import pytest

from morphtune.store import NoResults, ResultWriter, SweepNotFound, SweepStore
from morphtune.store._location import open_location
from tests.store.conftest import RootFactory, make_bucket
from tests.store.sweeps import ACC, COUNTS, SWEEP, config_of, row, write_demo_sweep


def _part_names(root: object, sweep: str, sub: str) -> list[str]:
    location = open_location(root)  # type: ignore[arg-type]
    return sorted(
        entry.name
        for entry in location.list_files(location.join(sweep, sub))
        if entry.name.startswith("part-")
    )


def test_demo_sweep_reads_the_same_everywhere(backend: tuple[str, RootFactory]) -> None:
    _, make_root = backend
    write_demo_sweep(make_root())
    store = SweepStore(make_root())
    assert store.list_sweeps() == [SWEEP]
    assert store.has_sweep(SWEEP) and not store.has_sweep("other")
    assert store.trial_counts(SWEEP) == COUNTS
    assert store.results(SWEEP).num_rows == sum(len(values) for values in ACC.values())
    best = store.best(SWEEP)
    assert (best.trial_id, best.iteration, best.value) == ("t0", 2, 0.8)
    assert best.config == config_of("t0")
    assert store.best(SWEEP, "acc", "max", "all").trial_id == "t1"
    assert store.manifest(SWEEP)["objective"] == {"metric": "acc", "mode": "max"}
    assert {trial.trial_id for trial in store.trials(SWEEP)} == set(ACC)
    with pytest.raises(SweepNotFound):
        store.best("nope")


def test_dedupe_compact_and_replay(backend: tuple[str, RootFactory]) -> None:
    kind, make_root = backend
    writer = ResultWriter(make_root(), "s")
    first = [row("a", 1, {"acc": 0.1}), row("b", 1, {"acc": 0.4})]
    assert writer.write_results(first) == 2
    assert writer.write_results(first) == 0  # a replay of the same batch: nothing new
    assert writer.write_results([row("a", 1, {"acc": 0.9}), row("a", 2, {"acc": 0.5})]) == 1
    # a second writer (a resumed driver) loads the keys already stored
    resumed = ResultWriter(make_root(), "s")
    assert resumed.write_results([row("b", 1, {"acc": 0.8}), row("c", 1, {"acc": 0.3})]) == 1
    writer.write_trial("a", "completed", config={})
    writer.write_trial("b", "failed", config={}, error="nan loss")
    store = SweepStore(make_root())
    before = (store.results("s").to_pylist(), store.best("s", "acc", "max"))
    assert len(_part_names(make_root(), "s", "results")) == 3
    assert writer.compact() == 5  # 3 result parts, 2 trial parts
    assert len(_part_names(make_root(), "s", "results")) == 1
    assert len(_part_names(make_root(), "s", "trials")) == 1
    after = (store.results("s").to_pylist(), store.best("s", "acc", "max"))
    assert after == before
    assert after[1].trial_id == "a" and after[1].value == 0.5  # b failed
    assert store.trial_states("s") == {"a": "completed", "b": "failed", "c": "running"}
    assert writer.compact() == 0
    assert ResultWriter(make_root(), "s").write_results(first) == 0
    if kind != "local":  # object stores: a replayed batch lands on the same object
        again = ResultWriter(make_root(), "t")
        again.write_results(first)
        names = _part_names(make_root(), "t", "results")
        ResultWriter(make_root(), "u").write_results(first)  # same keys, other sweep
        assert names != _part_names(make_root(), "u", "results")
        other = ResultWriter(make_root(), "t")
        other._written = type(other._written)()  # a writer that did not see the part
        other.write_results(first)
        assert _part_names(make_root(), "t", "results") == names


def test_manifest_fingerprint_and_cache(backend: tuple[str, RootFactory]) -> None:
    _, make_root = backend
    writer = ResultWriter(make_root(), "s")
    store = SweepStore(make_root())
    empty = store.fingerprint("s")
    with pytest.raises(NoResults):
        store.best("s", "acc", "max")
    writer.write_manifest({"objective": {"metric": "acc", "mode": "max"}})
    with_manifest = store.fingerprint("s")
    assert with_manifest != empty
    writer.write_results([row("a", 1, {"acc": 0.5})])
    one_part = store.fingerprint("s")
    assert one_part != with_manifest and store.fingerprint("s") == one_part
    assert store.best("s").value == 0.5
    writer.write_results([row("a", 2, {"acc": 0.7})])
    assert store.fingerprint("s") != one_part
    assert store.best("s").value == 0.7  # the cached answer was refreshed
    updated = store.fingerprint("s")
    writer.update_manifest(objective={"metric": "acc", "mode": "min"})
    assert store.fingerprint("s") != updated
    assert store.best("s").value == 0.7  # last iteration of the only trial
    assert store.best("s", scope="all").value == 0.5  # the new objective's direction
    writer.write_trial("a", "failed", config={})
    with pytest.raises(NoResults):
        store.best("s")


def test_written_at_is_increasing_per_writer(backend: tuple[str, RootFactory]) -> None:
    _, make_root = backend
    writer = ResultWriter(make_root(), "s")
    for iteration in range(4):
        writer.write_results([row("a", iteration, {"acc": 0.1}, status="running")])
    stamps = SweepStore(make_root()).results("s", ["written_at"]).column("written_at")
    values = stamps.to_pylist()
    assert values == sorted(values) and len(set(values)) == 4
    assert all(math.isfinite(value) for value in values)


def test_delete_tree_removes_a_sweep_and_nothing_else(backend: tuple[str, RootFactory]) -> None:
    _, make_root = backend
    for sweep in ("gone", "kept"):
        writer = ResultWriter(make_root(), sweep)
        writer.write_manifest({"sweep_id": sweep})
        writer.write_results([row("t0", 1, {"acc": 0.5})])
    location = open_location(make_root())
    location.delete_tree(location.join("gone"))
    location.delete_tree(location.join("never-there"))  # missing: not an error
    assert SweepStore(make_root()).list_sweeps() == ["kept"]
    assert len(SweepStore(make_root()).results("kept")) == 1


def test_endpoint_from_aws_environment(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = make_bucket(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{moto_endpoint}")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    uri = f"s3://{bucket}/deep/prefix?region=us-east-1"
    ResultWriter(uri, "s").write_results([row("a", 1, {"acc": 0.25})])
    store = SweepStore(uri)
    assert store.list_sweeps() == ["s"]
    assert store.best("s", "acc", "max").value == 0.25
    assert str(store.root) == f"s3://{bucket}/deep/prefix"  # no query in messages
    assert os.environ["AWS_ENDPOINT_URL"].endswith(moto_endpoint)


def test_bad_uri_names_the_root() -> None:
    with pytest.raises(ValueError, match=r"root 'nosuchfs://x/y' is not a usable filesystem URI"):
        SweepStore("nosuchfs://x/y")
    with pytest.raises(ValueError, match=r"root must be a non-empty path or URI string"):
        SweepStore("")


def test_file_uri_is_local(tmp_path: object) -> None:
    root = f"file://{tmp_path}"
    ResultWriter(root, "s").write_results([row("a", 1, {"acc": 1.0})])
    assert SweepStore(tmp_path).best("s", "acc", "max").value == 1.0  # type: ignore[arg-type]
    assert SweepStore(root).root == tmp_path
