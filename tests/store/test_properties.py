"""Property tests: random batches with repeats, reopened writers and compactions; the reader
(fresh and cached) must equal a dict of first writes, on both write paths."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morphtune.store import ResultWriter, SweepStore
from morphtune.store._location import Location, ObjectLocation
from tests.store.sweeps import row

TRIALS = ["a", "b", "c"]
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(min_value=-(2**40), max_value=2**40),
)
key = st.tuples(st.sampled_from(TRIALS), st.integers(min_value=0, max_value=6))
batch = st.lists(st.tuples(key, values), min_size=0, max_size=8)
operation = st.one_of(
    st.tuples(st.just("write"), batch),
    st.tuples(st.just("columns"), batch),
    st.tuples(st.just("compact"), st.none()),
    st.tuples(st.just("reopen"), st.none()),
)


def _root(kind: str, directory: str) -> str | Location:
    if kind == "local":
        return directory
    return ObjectLocation(pafs.LocalFileSystem(), directory, f"objects:{directory}")


def _same(left: float, right: float) -> bool:
    return (math.isnan(left) and math.isnan(right)) or left == right


@pytest.mark.parametrize("kind", ["local", "object"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(operation, min_size=1, max_size=10))
def test_reader_equals_first_writes(kind: str, operations: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = _root(kind, directory)
        writer = ResultWriter(root, "s")
        cached = SweepStore(root)
        model: dict[tuple[str, int], float] = {}
        for name, argument in operations:
            if name in ("write", "columns"):
                expected_new = len({key for key, _ in argument if key not in model})
                if name == "write":
                    written = writer.write_results(
                        [row(t, i, {"acc": v}) for (t, i), v in argument]
                    )
                else:
                    written = writer.write_columns(
                        [t for (t, _), _ in argument],
                        np.array([i for (_, i), _ in argument], dtype=np.int64),
                        metrics={"acc": [float(v) for _, v in argument]},
                    )
                assert written == expected_new
                for key, value in argument:
                    model.setdefault(key, float(value))
            elif name == "compact":
                writer.compact()
            else:
                writer = ResultWriter(root, "s")
            # a cold store answers best(scope="all") from footer statistics, a warm one
            # from its key index: both must equal the model
            for store in (cached, SweepStore(root)):
                _check(store, model)


def _check(store: SweepStore, model: dict[tuple[str, int], float]) -> None:
    finite = {key: value for key, value in model.items() if math.isfinite(value)}
    if finite:
        best = store.best("s", "acc", "max", "all")
        top = max(finite.values())
        assert best.value == top
        assert (best.trial_id, best.iteration) == min(k for k, v in finite.items() if v == top)
        low = store.best("s", "acc", "min", "all")
        assert low.value == min(finite.values())
    if not model:
        assert store.results("s").num_rows == 0
        return
    table = store.results("s", ["trial_id", "iteration", "metrics.acc"]).to_pylist()
    stored = {(item["trial_id"], item["iteration"]): item["metrics.acc"] for item in table}
    assert stored.keys() == model.keys()
    assert all(_same(stored[key], model[key]) for key in model)
    if not finite:
        return
    last: dict[str, tuple[int, float]] = {}
    for (trial, iteration), value in sorted(model.items()):
        last[trial] = (iteration, value)
    finals = {(t, i): v for t, (i, v) in last.items() if math.isfinite(v)}
    if finals:
        low = store.best("s", "acc", "min", "last")
        bottom = min(finals.values())
        assert low.value == bottom
        assert (low.trial_id, low.iteration) == min(k for k, v in finals.items() if v == bottom)


names = st.sampled_from(["acc", "loss", "params", "density", "tag", "x.y"])
cell = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**50), max_value=2**50),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=5),
)


@settings(max_examples=40, deadline=None)
@given(
    columns=st.dictionaries(names, st.sampled_from(["number", "text"]), max_size=4),
    data=st.data(),
)
def test_columns_store_what_rows_store(columns: dict[str, str], data: st.DataObject) -> None:
    rows = data.draw(st.integers(min_value=1, max_value=6))
    generated: dict[str, list[Any]] = {}
    for name, kind in columns.items():
        element = (
            st.one_of(st.none(), st.text(max_size=4))
            if kind == "text"
            else st.one_of(st.none(), st.floats(), st.integers(-(2**40), 2**40))
        )
        generated[name] = data.draw(st.lists(element, min_size=rows, max_size=rows))
    lrs = [0.1 * (index + 1) for index in range(rows)]
    config: dict[str, list[Any]] = {"lr": lrs, "model.width": [32] * rows}
    with tempfile.TemporaryDirectory() as directory:
        by_rows, by_columns = Path(directory) / "rows", Path(directory) / "columns"
        ResultWriter(by_rows, "s").write_results(
            [
                row(
                    f"t{index}",
                    1,
                    {name: values[index] for name, values in generated.items()},
                    config={"lr": lrs[index], "model": {"width": 32}},
                )
                for index in range(rows)
            ]
        )
        ResultWriter(by_columns, "s").write_columns(
            [f"t{index}" for index in range(rows)], [1] * rows, metrics=generated, config=config
        )
        left = SweepStore(by_rows).results("s")
        right = SweepStore(by_columns).results("s")
    flattened = [name for name in left.column_names if "." in name]
    assert flattened == [name for name in right.column_names if "." in name]
    for name in flattened:
        assert left.column(name).type == right.column(name).type, name
        pairs = zip(left.column(name).to_pylist(), right.column(name).to_pylist(), strict=True)
        assert all(a == b or (a != a and b != b) for a, b in pairs), name
    for text_left, text_right in zip(
        left.column("metrics_json").to_pylist(),
        right.column("metrics_json").to_pylist(),
        strict=True,
    ):
        reported, stored = json.loads(text_left), json.loads(text_right)
        for name in generated:  # columnar JSON lists every name; null where None/non-finite
            assert stored[name] == reported.get(name), name
    for text_left, text_right in zip(
        left.column("config_json").to_pylist(), right.column("config_json").to_pylist(), strict=True
    ):
        assert json.loads(text_left) == json.loads(text_right)
