"""``ResultWriter.write_columns``: the bulk path; invalid input names the argument."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from morphtune.store import ResultWriter, SweepStore


def test_columns_round_trip_and_dedupe(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path, "s")
    written = writer.write_columns(
        pa.array(["a", "b", "a", "a"]),
        np.array([1, 1, 1, 2]),
        metrics={
            "acc": [0.5, math.nan, 0.9, math.inf],
            "params": [10, 20, 10, 10],
            "tag": ["x", None, "y", 'q"\\\n'],
        },
        config={"lr": [0.1, 0.2, 0.1, 0.1], "model.width": [32, 64, 32, 32]},
        status=["running", "running", "running", "completed"],
        timestamp=123.0,
    )
    assert written == 3  # ("a", 1) repeats within the batch: the first wins
    assert writer.write_columns(["a"], [1], metrics={"acc": [0.0]}) == 0
    rows = SweepStore(tmp_path).results("s").to_pylist()
    assert [(r["trial_id"], r["iteration"], r["status"]) for r in rows] == [
        ("a", 1, "running"),
        ("b", 1, "running"),
        ("a", 2, "completed"),
    ]
    first, second, third = rows
    assert first["metrics.acc"] == 0.5 and first["cost.params"] == 10.0
    assert math.isnan(second["metrics.acc"]) and third["metrics.acc"] == math.inf
    assert json.loads(first["config_json"]) == {"lr": 0.1, "model": {"width": 32}}
    assert json.loads(second["metrics_json"]) == {"acc": None, "params": 20, "tag": None}
    assert json.loads(third["metrics_json"])["tag"] == 'q"\\\n'
    assert first["timestamp"] == 123.0 and first["written_at"] > 123.0
    assert SweepStore(tmp_path).best("s", "acc", "max", "all").trial_id == "a"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trial_id": [1, 2]}, r"trial_id must hold strings"),
        ({"trial_id": ["a", ""]}, r"trial_id values must be non-empty strings"),
        ({"iteration": [1]}, r"iteration has 1 values, expected 2"),
        ({"iteration": [1, -1]}, r"iteration values must be ints >= 0"),
        ({"iteration": [1.5, 2.0]}, r"iteration values must be ints >= 0"),
        ({"metrics": {"acc": [1.0]}}, r"metrics\['acc'\] has 1 values, expected 2"),
        ({"metrics": {"acc": [1.0, "x"]}}, r"metrics\['acc'\] must hold numbers or strings"),
        ({"metrics": {"": [1.0, 2.0]}}, r"metrics names must be non-empty strings"),
        ({"metrics": [1.0]}, r"metrics must be a mapping of name -> values, got list"),
        ({"config": {"a": [1, 2], "a.b": [1, 2]}}, r"config key 'a\.b' nests under the value"),
        ({"config": {"a..b": [1, 2]}}, r"config name 'a\.\.b' has an empty segment"),
        ({"status": ""}, r"status must be a non-empty string"),
        ({"timestamp": [1.0, math.nan]}, r"timestamp values must be finite unix seconds"),
    ],
)
def test_invalid_columns_name_the_argument(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"trial_id": ["a", "b"], "iteration": [1, 2]}
    arguments.update(kwargs)
    writer = ResultWriter(tmp_path, "s")
    with pytest.raises(ValueError, match=message):
        writer.write_columns(**arguments)
    assert not list((tmp_path / "s" / "results").iterdir())
