"""Query logic (filters, order, pages, best under constraints, Pareto front) against brute
force over the rows ``SweepStore.results`` returns, on a real multi-objective sweep."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morphtune.hypervolume import hypervolume
from morphtune.store import NoResults, SweepStore
from morphtune.store._query import (
    Condition,
    InvalidArgument,
    SweepFrame,
    best_under,
    decode_page_token,
    encode_page_token,
    make_condition,
    pareto_front,
    select_rows,
    validate_page_size,
)
from tests.service.api_data import FAILED, NAN_LAST, NO_RECORD, SWEEP, write_mo_sweep


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SweepStore:
    root = tmp_path_factory.mktemp("query")
    write_mo_sweep(root)
    return SweepStore(root)


@pytest.fixture(scope="module")
def frame(store: SweepStore) -> SweepFrame:
    return SweepFrame(store, SWEEP)


@pytest.fixture(scope="module")
def rows(store: SweepStore) -> list[dict[str, Any]]:
    states = store.trial_states(SWEEP)
    table = store.results(SWEEP).to_pylist()
    return [row | {"state": states.get(row["trial_id"], "running")} for row in table]


# ----------------------------------------------------------------- brute-force reference

COLUMNS = {
    "acc": "metrics.acc",
    "params": "metrics.params",
    "cost.params": "cost.params",
    "density": "metrics.density",
    "signal.density": "signal.density",
    "config.lr": "config.lr",
    "config.model.family": "config.model.family",
    "iteration": "iteration",
    "state": "state",
    "trial_id": "trial_id",
}


def holds(value: Any, op: str, target: Any) -> bool:
    if value is None:
        return False
    if op in ("in", "not in"):
        inside = any(value == item for item in target)
        return inside if op == "in" else not inside
    return {
        "==": value == target,
        "!=": value != target,
        "<": value < target,
        "<=": value <= target,
        ">": value > target,
        ">=": value >= target,
    }[op]


def last_rows(rows: list[dict[str, Any]], column: str | None = None) -> list[dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        if column is not None and row.get(column) is None:
            continue
        kept = last.get(row["trial_id"])
        if kept is None or row["iteration"] > kept["iteration"]:
            last[row["trial_id"]] = row
    return list(last.values())


def python_select(
    rows: list[dict[str, Any]],
    conditions: Sequence[tuple[str, str, Any]],
    order_by: str,
    descending: bool,
    scope: str,
) -> list[tuple[str, int]]:
    candidates = last_rows(rows) if scope == "last" else list(rows)
    kept = [
        row
        for row in candidates
        if all(holds(row.get(COLUMNS[c]), op, v) for c, op, v in conditions)
    ]
    kept.sort(key=lambda row: (row["trial_id"], row["iteration"]))
    if not order_by:
        return [(r["trial_id"], r["iteration"]) for r in (kept[::-1] if descending else kept)]
    column = COLUMNS[order_by]
    valid = [r for r in kept if r.get(column) is not None and r[column] == r[column]]
    nans = [r for r in kept if r.get(column) is not None and r[column] != r[column]]
    nulls = [r for r in kept if r.get(column) is None]
    valid = sorted(valid, key=lambda r: r[column], reverse=descending)
    return [(r["trial_id"], r["iteration"]) for r in valid + nans + nulls]


def conditions_of(specs: Sequence[tuple[str, str, Any]]) -> list[Condition]:
    return [
        make_condition(column, op, tuple(v) if isinstance(v, list) else v, f"filter[{i}]")
        for i, (column, op, v) in enumerate(specs)
    ]


def keys(page_rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(row["trial_id"], row["iteration"]) for row in page_rows]


# --------------------------------------------------------------------------------- tests

CASES = [
    ([], "", False, "last"),
    ([], "", True, "all"),
    ([("acc", ">=", 0.7)], "acc", True, "last"),
    ([("params", "<=", 3000.0), ("config.model.family", "==", "mlp")], "config.lr", False, "all"),
    ([("state", "in", ["completed", "failed"])], "params", False, "last"),
    ([("state", "not in", ["completed"])], "", False, "all"),
    ([("signal.density", "<", 0.75)], "trial_id", True, "last"),
    ([("acc", "!=", 0.5)], "acc", False, "all"),  # NaN != 0.5 holds
    ([("iteration", ">", 2.0)], "iteration", True, "all"),
    ([("config.model.family", ">", "cnn")], "cost.params", True, "all"),
]


@pytest.mark.parametrize(("specs", "order_by", "descending", "scope"), CASES)
def test_select_rows_matches_brute_force(
    frame: SweepFrame,
    rows: list[dict[str, Any]],
    specs: list[tuple[str, str, Any]],
    order_by: str,
    descending: bool,
    scope: str,
) -> None:
    expected = python_select(rows, specs, order_by, descending, scope)
    page = select_rows(
        frame,
        conditions_of(specs),
        order_by=order_by,
        descending=descending,
        scope=scope,
        limit=1000,
    )
    assert keys(page.rows) == expected
    assert page.total == len(expected)
    assert page.next_offset is None


_NUMBER_COLUMNS = st.sampled_from(["acc", "params", "density", "config.lr", "iteration"])
_NUMBERS = st.sampled_from([0.5, 0.7, 1000.0, 3000.0, 0.003, 2.0, 0.8, math.inf])
_TEXT_COLUMNS = st.sampled_from(["config.model.family", "state", "trial_id"])
_TEXTS = st.sampled_from(["mlp", "cnn", "completed", "failed", "running", "t05", "t01"])
_COMPARE = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])
_MEMBER = st.sampled_from(["in", "not in"])
_CONDITION = st.one_of(
    st.tuples(_NUMBER_COLUMNS, _COMPARE, _NUMBERS),
    st.tuples(_NUMBER_COLUMNS, _MEMBER, st.lists(_NUMBERS, min_size=1, max_size=3)),
    st.tuples(_TEXT_COLUMNS, _COMPARE, _TEXTS),
    st.tuples(_TEXT_COLUMNS, _MEMBER, st.lists(_TEXTS, min_size=1, max_size=3)),
)


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(_CONDITION, max_size=3),
    order_by=st.sampled_from(["", "acc", "params", "config.model.family", "state"]),
    descending=st.booleans(),
    scope=st.sampled_from(["last", "all"]),
)
def test_random_queries_match_brute_force(
    frame: SweepFrame,
    rows: list[dict[str, Any]],
    specs: list[tuple[str, str, Any]],
    order_by: str,
    descending: bool,
    scope: str,
) -> None:
    expected = python_select(rows, specs, order_by, descending, scope)
    page = select_rows(
        frame,
        conditions_of(specs),
        order_by=order_by,
        descending=descending,
        scope=scope,
        limit=1000,
    )
    assert keys(page.rows) == expected


def test_pages_concatenate_to_the_whole_answer(frame: SweepFrame) -> None:
    whole = select_rows(frame, order_by="acc", descending=True, scope="all", limit=1000)
    collected, offset = [], 0
    while True:
        page = select_rows(
            frame, order_by="acc", descending=True, scope="all", offset=offset, limit=7
        )
        assert page.total == whole.total
        collected += keys(page.rows)
        if page.next_offset is None:
            break
        offset = page.next_offset
    assert collected == keys(whole.rows)
    assert len(collected) == len(set(collected)) == whole.total


def test_rows_carry_every_column_and_the_state(frame: SweepFrame, store: SweepStore) -> None:
    page = select_rows(frame, conditions_of([("trial_id", "==", FAILED)]), scope="last")
    (row,) = page.rows
    assert row["state"] == "failed"
    assert row["cost.params"] == row["metrics.params"]
    assert set(store.result_columns(SWEEP)) <= set(row)
    none = select_rows(frame, conditions_of([("trial_id", "==", NO_RECORD)]))
    assert none.rows[0]["state"] == "running"


def brute_best(
    rows: list[dict[str, Any]],
    metric: str,
    mode: str,
    scope: str,
    specs: list[tuple[str, str, Any]],
) -> tuple[str, int, float] | None:
    column = COLUMNS[metric]
    candidates = [r for r in rows if r["state"] != "failed" and r.get(column) is not None]
    if scope == "last":
        candidates = last_rows(candidates, column)
    candidates = [
        r
        for r in candidates
        if all(holds(r.get(COLUMNS[c]), op, v) for c, op, v in specs) and math.isfinite(r[column])
    ]
    if not candidates:
        return None
    sign = -1.0 if mode == "max" else 1.0
    best = min(candidates, key=lambda r: (sign * r[column], r["trial_id"], r["iteration"]))
    return best["trial_id"], best["iteration"], best[column]


@pytest.mark.parametrize(
    ("metric", "mode", "scope", "specs"),
    [
        ("acc", "max", "last", [("params", "<=", 3000.0)]),
        ("acc", "max", "all", [("params", "<=", 3000.0), ("config.model.family", "==", "cnn")]),
        ("acc", "min", "last", [("state", "==", "completed")]),
        ("params", "min", "all", [("acc", ">", 0.9)]),
        ("acc", "max", "last", []),
        ("acc", "max", "all", []),
    ],
)
def test_best_under_constraints_matches_brute_force(
    frame: SweepFrame,
    store: SweepStore,
    rows: list[dict[str, Any]],
    metric: str,
    mode: str,
    scope: str,
    specs: list[tuple[str, str, Any]],
) -> None:
    expected = brute_best(rows, metric, mode, scope, specs)
    assert expected is not None
    best = best_under(frame, metric, mode, scope, conditions_of(specs))
    assert (best.trial_id, best.iteration, best.value) == expected
    assert best.trial_id != FAILED
    if not specs:  # the same answer as the store's own best query
        stored = store.best(SWEEP, metric, mode, scope)
        assert (stored.trial_id, stored.iteration, stored.value) == expected
        assert best.config == stored.config and best.metrics == stored.metrics


def test_constraint_holds_on_the_last_report(frame: SweepFrame, rows: list[dict[str, Any]]) -> None:
    # params grows with the iteration: a trial whose last report is too big is out, even if
    # an earlier iteration was small enough
    best = best_under(frame, "acc", "max", "last", conditions_of([("params", "<=", 3000.0)]))
    row = next(
        r for r in rows if (r["trial_id"], r["iteration"]) == (best.trial_id, best.iteration)
    )
    assert row["metrics.params"] <= 3000.0
    assert row["iteration"] == max(r["iteration"] for r in rows if r["trial_id"] == best.trial_id)


def test_best_with_no_feasible_row_is_no_results(frame: SweepFrame) -> None:
    with pytest.raises(NoResults, match="meet the 1 constraint"):
        best_under(frame, "acc", "max", "last", conditions_of([("params", "<", 0.0)]))


def brute_front(
    rows: list[dict[str, Any]], objectives: list[tuple[str, str]], scope: str
) -> dict[str, tuple[int, list[float]]]:
    columns = [COLUMNS[m] for m, _ in objectives]
    candidates = [
        r for r in rows if r["state"] != "failed" and all(r.get(c) is not None for c in columns)
    ]
    if scope == "last":
        last: dict[str, dict[str, Any]] = {}
        for r in candidates:
            if r["trial_id"] not in last or r["iteration"] > last[r["trial_id"]]["iteration"]:
                last[r["trial_id"]] = r
        candidates = list(last.values())
    candidates = [r for r in candidates if all(math.isfinite(r[c]) for c in columns)]
    signs = [-1.0 if mode == "max" else 1.0 for _, mode in objectives]
    points = [[s * r[c] for s, c in zip(signs, columns, strict=True)] for r in candidates]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    front: dict[str, tuple[int, list[float]]] = {}
    for r, p in zip(candidates, points, strict=True):
        if any(dominates(q, p) for q in points):
            continue
        kept = front.get(r["trial_id"])
        if kept is None or r["iteration"] > kept[0]:
            front[r["trial_id"]] = (r["iteration"], [r[c] for c in columns])
    return front


@pytest.mark.parametrize("scope", ["last", "all"])
@pytest.mark.parametrize(
    "objectives",
    [
        [("acc", "max"), ("params", "min")],
        [("acc", "max"), ("params", "min"), ("density", "min")],
        [("acc", "min"), ("params", "max"), ("density", "max"), ("config.lr", "min")],
    ],
)
def test_pareto_front_matches_brute_force(
    frame: SweepFrame, rows: list[dict[str, Any]], objectives: list[tuple[str, str]], scope: str
) -> None:
    expected = brute_front(rows, objectives, scope)
    result = pareto_front(frame, objectives, scope=scope)
    got = {p.trial_id: (p.iteration, list(p.values)) for p in result.points}
    assert got == expected
    assert FAILED not in got
    assert [p.trial_id for p in result.points] == sorted(got)
    directions = [mode for _, mode in objectives]
    points = np.array([values for _, values in expected.values()])
    assert result.hypervolume == pytest.approx(
        hypervolume(points, np.array(result.reference), directions)
    )
    assert result.hypervolume > 0


def test_pareto_reference_and_constraints(frame: SweepFrame, rows: list[dict[str, Any]]) -> None:
    objectives = [("acc", "max"), ("params", "min")]
    result = pareto_front(
        frame,
        objectives,
        constraints=conditions_of([("config.model.family", "==", "mlp")]),
        reference=[0.0, 1e6],
    )
    assert result.reference == (0.0, 1e6)
    families = {
        r["trial_id"]: r["config.model.family"]
        for r in rows
        if r["trial_id"] in {p.trial_id for p in result.points}
    }
    assert set(families.values()) == {"mlp"}
    assert NAN_LAST not in families  # its last report has a NaN accuracy


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda f: select_rows(f, conditions_of([("nope", ">", 1.0)])),
            r"filter\[0\]\.column must name a column of sweep 'mo', got 'nope'",
        ),
        (
            lambda f: select_rows(f, conditions_of([("config.model.family", "<", 1.0)])),
            r"filter\[0\]\.value must match the column's type",
        ),
        (
            lambda f: select_rows(f, conditions_of([("acc", "==", "high")])),
            r"filter\[0\]\.value must match the column's type",
        ),
        (lambda f: select_rows(f, order_by="zzz"), "order_by must name a column"),
        (
            lambda f: select_rows(f, scope="first"),
            r"scope must be one of \['last', 'all'\], got 'first'",
        ),
        (
            lambda f: pareto_front(f, [("acc", "max")]),
            "objectives must hold 2 to 4 objectives, got 1",
        ),
        (
            lambda f: pareto_front(f, [("acc", "max"), ("metrics.acc", "min")]),
            "objectives must name distinct columns",
        ),
        (
            lambda f: pareto_front(f, [("acc", "max"), ("params", "up")]),
            r"objectives\[1\]\.mode must be one of",
        ),
        (
            lambda f: pareto_front(f, [("acc", "max"), ("config.model.family", "min")]),
            r"objectives\[1\]\.metric .* is not numeric",
        ),
        (
            lambda f: pareto_front(f, [("acc", "max"), ("params", "min")], reference=[1.0]),
            "reference must hold one value per objective",
        ),
        (
            lambda f: best_under(f, "config.model.family", "max", "last", []),
            "metric .* is not numeric",
        ),
    ],
)
def test_bad_queries_name_the_field(frame: SweepFrame, call: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        call(frame)


@pytest.mark.parametrize(
    ("column", "op", "value", "message"),
    [
        ("", "==", 1.0, r"filter\[3\]\.column must be a non-empty column name"),
        ("acc", "~", 1.0, r"filter\[3\]\.op must be one of"),
        ("acc", "in", 1.0, r"filter\[3\]\.value must be a non-empty list"),
        ("acc", "in", (1.0, "a"), r"filter\[3\]\.value must be all numbers or all texts"),
        ("acc", "<", (1.0,), r"filter\[3\]\.value must be one number or one text"),
        ("acc", "<", math.nan, r"filter\[3\]\.number must not be NaN"),
    ],
)
def test_bad_conditions_name_the_field(column: str, op: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make_condition(column, op, value, "filter[3]")


def test_page_tokens_and_sizes() -> None:
    token = encode_page_token(b"query-a", 200)
    assert decode_page_token(token, b"query-a") == 200
    with pytest.raises(InvalidArgument, match="page_token was issued for a different query"):
        decode_page_token(token, b"query-b")
    for bad in ("", "!!", "e30", token[:-3]):
        with pytest.raises(InvalidArgument, match="page_token is not a page token"):
            decode_page_token(bad, b"query-a")
    assert validate_page_size(0) == 100
    assert validate_page_size(1000) == 1000
    for bad_size in (-1, 1001, 10**9):
        with pytest.raises(
            InvalidArgument, match=f"page_size must be between 1 and 1000.*got {bad_size}"
        ):
            validate_page_size(bad_size)


def test_empty_sweep_lists_nothing(tmp_path: Path) -> None:
    from morphtune.store import ResultWriter

    ResultWriter(tmp_path, "young").write_manifest({"objective": {"metric": "acc", "mode": "max"}})
    frame = SweepFrame(SweepStore(tmp_path), "young")
    page = select_rows(frame, conditions_of([("acc", ">", 0.1)]))
    assert (page.rows, page.total, page.next_offset) == ([], 0, None)
    with pytest.raises(NoResults):
        best_under(frame, "acc", "max", "last", conditions_of([("acc", ">", 0.1)]))
    with pytest.raises(NoResults):
        pareto_front(frame, [("acc", "max"), ("params", "min")])
