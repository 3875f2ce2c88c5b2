"""Conditions on result columns (``params <= 1e5``, ``state in [completed]``) and the
error every query raises for a bad request field.

A condition compares one column with a number (numeric columns) or a text (text columns);
``in``/``not in`` take a list. A null (never reported) value matches no condition; NaN
compares as IEEE 754 does (only ``!=`` holds), and NaN as a condition value is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CONDITION_OPS",
    "Condition",
    "InvalidArgument",
    "condition_mask",
    "is_numeric",
    "make_condition",
]

CONDITION_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
_COMPARE = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


class InvalidArgument(ValueError):
    """A request field breaks a rule; the message is ``"<field> <detail>"``, the detail
    stating the rule and the value (``page_size must be between 1 and 1000, got 5000``)."""

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        super().__init__(f"{field} {detail}")


Value = float | str | tuple[float, ...] | tuple[str, ...]


@dataclass(frozen=True)
class Condition:
    """``column op value``; ``field`` names the condition in errors (``filter[2]``)."""

    column: str
    op: str
    value: Value
    field: str = "condition"


def make_condition(column: object, op: object, value: object, field: str) -> Condition:
    """A validated :class:`Condition`; raises :class:`InvalidArgument` naming the part."""
    if not isinstance(column, str) or not column:
        raise InvalidArgument(f"{field}.column", f"must be a non-empty column name, got {column!r}")
    if op not in CONDITION_OPS:
        raise InvalidArgument(f"{field}.op", f"must be one of {list(CONDITION_OPS)}, got {op!r}")
    if op in ("in", "not in"):
        if not isinstance(value, tuple) or not value:
            raise InvalidArgument(
                f"{field}.value",
                f"must be a non-empty list of numbers or of texts for op {op!r}, got {value!r}",
            )
        kinds = {type(item) for item in value}
        if kinds not in ({float}, {str}):
            raise InvalidArgument(
                f"{field}.value", f"must be all numbers or all texts for op {op!r}, got {value!r}"
            )
        items = value
    else:
        if not isinstance(value, float | str):
            raise InvalidArgument(
                f"{field}.value", f"must be one number or one text for op {op!r}, got {value!r}"
            )
        items = (value,)
    for item in items:
        if isinstance(item, float) and math.isnan(item):
            raise InvalidArgument(f"{field}.number", "must not be NaN (it equals nothing)")
    return Condition(column, str(op), value, field)  # type: ignore[arg-type]


def is_numeric(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_floating(data_type) or pa.types.is_integer(data_type))


def condition_mask(table: pa.Table, column: str, condition: Condition) -> pa.ChunkedArray:
    data = table.column(column)
    data_type = data.type
    if pa.types.is_null(data_type):
        return pa.chunked_array([pa.array(np.zeros(len(table), dtype=bool))])
    values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    numeric_value = isinstance(values[0], float)
    if numeric_value != is_numeric(data_type):
        holds = "numbers" if is_numeric(data_type) else "text"
        given = "a number" if numeric_value else "text"
        raise InvalidArgument(
            f"{condition.field}.value",
            f"must match the column's type: column {column!r} holds {holds}, got {given} "
            f"({condition.value!r})",
        )
    if condition.op in ("in", "not in"):
        value_set = pa.array(values, type=pa.float64() if numeric_value else pa.string())
        if numeric_value:
            data = data.cast(pa.float64())
        mask = pc.is_in(data, value_set=value_set)
        if condition.op == "not in":
            mask = pc.invert(mask)
        return pc.and_(mask, pc.is_valid(data))
    mask = _COMPARE[condition.op](data, pa.scalar(values[0]))
    return pc.fill_null(mask, False)
