"""Between protocol messages and the store's query types: request fields validated into
conditions and names (each bad field an :class:`InvalidArgument` naming it), answers built
into response messages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from morphtune.service.v1 import morphtune_pb2
from morphtune.store import BestResult, validate_sweep_id
from morphtune.store._conditions import Condition, InvalidArgument, make_condition
from morphtune.store._frame import numeric_metrics, validate_query_scope
from morphtune.store._pareto import ParetoResult

__all__ = [
    "MAX_CONDITIONS",
    "MAX_SPEC_BYTES",
    "MAX_TRIAL_ID",
    "best_config_message",
    "check_spec_text",
    "conditions",
    "objectives",
    "pareto_message",
    "query_key",
    "result_row",
    "scope",
    "sweep_id",
]

#: The spec travels to the cluster in an environment variable; keep it well under its limit.
MAX_SPEC_BYTES = 64 * 1024
MAX_CONDITIONS = 32
MAX_TRIAL_ID = 256


def sweep_id(value: str, field: str = "sweep_id") -> str:
    if not value:
        raise InvalidArgument(field, "must be a non-empty string, got ''")
    try:
        return validate_sweep_id(value)
    except ValueError as error:
        raise InvalidArgument(field, str(error).removeprefix("sweep_id ")) from None


def best_config_message(result: BestResult) -> morphtune_pb2.BestConfig:
    return morphtune_pb2.BestConfig(
        sweep_id=result.sweep_id,
        trial_id=result.trial_id,
        iteration=result.iteration,
        metric=result.metric,
        mode=result.mode,
        value=result.value,
        config_json=json.dumps(result.config),
        metrics=numeric_metrics(result.metrics),
    )


def conditions(items: Sequence[morphtune_pb2.Condition], field: str) -> list[Condition]:
    if len(items) > MAX_CONDITIONS:
        raise InvalidArgument(
            field, f"must hold at most {MAX_CONDITIONS} conditions, got {len(items)}"
        )
    conditions = []
    for index, item in enumerate(items):
        name = f"{field}[{index}]"
        kind = item.WhichOneof("value")
        if item.op in ("in", "not in"):
            if kind is not None:
                raise InvalidArgument(
                    f"{name}.{kind}", f"op {item.op!r} takes the lists numbers or texts, not {kind}"
                )
            if item.numbers and item.texts:
                raise InvalidArgument(f"{name}.texts", "give numbers or texts, not both")
            value: Any = tuple(item.numbers) or tuple(item.texts)
        else:
            if item.numbers or item.texts:
                listed = "numbers" if item.numbers else "texts"
                raise InvalidArgument(
                    f"{name}.{listed}", f"only op 'in'/'not in' take a list; op is {item.op!r}"
                )
            value = item.number if kind == "number" else item.text if kind == "text" else None
            if value is None and item.op in ("==", "!=", "<", "<=", ">", ">="):
                raise InvalidArgument(
                    f"{name}.value", f"op {item.op!r} needs number or text; neither was set"
                )
        conditions.append(make_condition(item.column, item.op, value, name))
    return conditions


def scope(value: str, field: str = "scope") -> str:
    return validate_query_scope(value or "last", field)


def result_row(sweep_id: str, row: dict[str, Any]) -> morphtune_pb2.ResultRow:
    numbers: dict[str, float] = {}
    texts: dict[str, str] = {}
    for key, value in row.items():
        if "." not in key or value is None:  # flattened columns are all prefixed
            continue
        if isinstance(value, str):
            texts[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers[key] = float(value)
    return morphtune_pb2.ResultRow(
        sweep_id=sweep_id,
        trial_id=row["trial_id"],
        iteration=row["iteration"],
        timestamp=row.get("timestamp") or 0.0,
        written_at=row.get("written_at") or 0.0,
        status=row.get("status") or "",
        state=row.get("state") or "",
        config_json=row.get("config_json") or "{}",
        metrics_json=row.get("metrics_json") or "{}",
        numbers=numbers,
        texts=texts,
        node_id=row.get("node_id") or "",
    )


def pareto_message(result: ParetoResult) -> morphtune_pb2.ParetoFront:
    return morphtune_pb2.ParetoFront(
        sweep_id=result.sweep_id,
        objectives=[morphtune_pb2.Objective(metric=m, mode=d) for m, d in result.objectives],
        points=[
            morphtune_pb2.ParetoPoint(
                trial_id=point.trial_id,
                iteration=point.iteration,
                values=point.values,
                config_json=json.dumps(point.config),
                metrics=point.metrics,
            )
            for point in result.points
        ],
        reference=result.reference,
        hypervolume=result.hypervolume,
        candidates=result.candidates,
    )


def objectives(items: Sequence[morphtune_pb2.Objective]) -> list[tuple[str, str]]:
    return [(item.metric, item.mode) for item in items]


def query_key(request: morphtune_pb2.ListTrialsRequest) -> bytes:
    query = morphtune_pb2.ListTrialsRequest()
    query.CopyFrom(request)
    query.page_token = ""
    query.page_size = 0
    query.scope = query.scope or "last"
    return query.SerializeToString(deterministic=True)


def check_spec_text(text: str) -> None:
    """The checks that need no child process: size, YAML, a mapping."""
    if not text.strip():
        raise InvalidArgument("spec_yaml", "must be a non-empty YAML sweep spec, got ''")
    size = len(text.encode("utf-8"))
    if size > MAX_SPEC_BYTES:
        raise InvalidArgument(
            "spec_yaml", f"must be at most {MAX_SPEC_BYTES} bytes of YAML, got {size} bytes"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise InvalidArgument("spec_yaml", f"is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(
            "spec_yaml", f"must be a YAML mapping (key: value), got {type(data).__name__}"
        )
