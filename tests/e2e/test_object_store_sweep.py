"""A sweep whose results root is an ``s3://`` URI, against a real S3-compatible server (moto)
on loopback: the store (manifest, result and trial parts, last-row index) lands in the
bucket, the driver's working state (Tune's experiment, checkpoints, the SQLite study) in the
local work directory, and the results service and CLI read the bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from morphtune._sweep_paths import sweep_paths
from morphtune.runner import resume_sweep, run_sweep
from morphtune.spec import SpecError, parse_spec
from morphtune.store import SweepStore
from tests.cli_run import run_cli
from tests.store.conftest import make_bucket, moto_endpoint, s3_uri

__all__ = ["moto_endpoint"]  # the fixture, imported for this module

pytestmark = pytest.mark.ray

SPEC = """
name: s3sweep
dataset: {{name: digits}}
model: {{family: mlp, width: 16, depth: 1}}
training: {{epochs: 2, batch_size: 64, lr: 0.01}}
storage: {{results: "{results}", work: "{work}"}}
search:
  objective: {{metric: val_acc, mode: max}}
  num_samples: 2
  max_concurrent: 1
  sampler: {{name: random, seed: 0}}
  scheduler: {{name: fifo}}
  space:
    training.lr: {{type: float, low: 0.003, high: 0.03, log: true}}
"""


def test_a_sweep_writes_its_results_to_the_bucket(
    ray_session: object, moto_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = s3_uri(moto_endpoint, make_bucket(moto_endpoint))
    work = tmp_path / "work"
    spec = parse_spec(SPEC.format(results=uri, work=work))
    outcome = run_sweep(spec)
    assert outcome.trial_states["completed"] == 2 and outcome.trial_states["failed"] == 0
    assert str(outcome.results_dir).startswith("s3://") and "?" not in str(outcome.results_dir)
    assert outcome.best is not None and outcome.best["metric"] == "val_acc"

    # the results are in the bucket, read back by a fresh reader ...
    store = SweepStore(uri)
    assert store.list_sweeps() == ["s3sweep"]
    assert store.manifest("s3sweep")["status"] == "completed"
    assert {t.status for t in store.trials("s3sweep")} == {"completed"}
    assert len(store.results("s3sweep")) == 4  # 2 trials x 2 epochs
    best = store.best("s3sweep", "val_acc", "max")
    assert best.trial_id == outcome.best["trial_id"] and best.value == outcome.best["value"]
    bucket, prefix = uri.split("://", 1)[1].split("?", 1)[0].split("/", 1)
    s3 = pafs.S3FileSystem(
        endpoint_override=moto_endpoint, scheme="http", region="us-east-1",
        access_key="testing", secret_key="testing",
    )  # fmt: skip
    stored = s3.get_file_info(pafs.FileSelector(f"{bucket}/{prefix}/s3sweep", recursive=True))
    names = {Path(info.path).name for info in stored}
    assert {"manifest.json", "last_rows.parquet"} <= names
    assert any(name.startswith("part-") for name in names)

    # ... and the working state stayed local: Tune's experiment and the SQLite study
    assert (work / "s3sweep" / "tune").is_dir() and (work / "s3sweep" / "optuna.db").is_file()
    assert not list(work.rglob("manifest.json")) and not list(work.rglob("part-*.parquet"))

    # resume finds the working state from the spec in the bucket's manifest (nothing is left
    # to run: the same trials, counted once more as resumed)
    resumed = resume_sweep("s3sweep", results_root=uri)
    assert resumed.trial_states == outcome.trial_states
    assert SweepStore(uri).manifest("s3sweep")["resumes"] == 1
    assert len(SweepStore(uri).results("s3sweep")) == 4

    # `morphtune run` of the same spec is refused without --overwrite, and replaces it with
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text(SPEC.format(results=uri, work=work))
    code, _, err = run_cli(capsys, "run", str(spec_file))
    assert code == 2 and "already has results" in err and "--overwrite" in err
    code, out, _ = run_cli(capsys, "run", str(spec_file), "--overwrite")
    assert code == 0, out
    lines = out.splitlines()
    summary = json.loads("\n".join(lines[max(i for i, x in enumerate(lines) if x == "{") :]))
    assert summary["results"] == outcome.results_dir and summary["trials"]["completed"] == 2
    assert len(SweepStore(uri).results("s3sweep")) == 4  # the old parts are gone


def test_paths_of_local_and_object_roots(tmp_path: Path, moto_endpoint: str) -> None:
    local = sweep_paths(str(tmp_path), "a", "/ignored")
    assert local.store_root == tmp_path.resolve() and local.directory == tmp_path.resolve() / "a"
    assert sweep_paths(f"file://{tmp_path}", "a").directory == tmp_path.resolve() / "a"
    uri = s3_uri(moto_endpoint, "bucket-x")
    remote = sweep_paths(uri, "a", str(tmp_path / "w"))
    assert remote.store_root == uri and remote.directory == tmp_path / "w" / "a"
    assert remote.results_dir == "s3://bucket-x/runs/a"
    with pytest.raises(ValueError, match="not a usable filesystem URI"):
        sweep_paths("nosuchscheme://x/y", "a")


def test_the_work_directory_must_be_local() -> None:
    with pytest.raises(SpecError, match=r"storage\.work.*local directory"):
        parse_spec("name: a\nstorage: {results: 's3://b/p', work: 's3://b/w'}\n")
