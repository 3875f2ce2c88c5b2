"""What every model family shares: config checks, the task shape, and the growth view.

Every family's config is a frozen dataclass with a ``width`` and a ``depth`` (the two
axes growth acts on) and a ``resized(width, depth)`` that gives the config of the same
family at another size. The fields in ``TASK_FIELDS`` describe the task (input and output
sizes) and never change under growth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

__all__ = [
    "GrowableConfig",
    "TaskShape",
    "check_positive_int",
    "check_positive_ints",
    "rescale",
]


def check_positive_int(field: str, value: object, *, minimum: int = 1) -> int:
    """``value`` if it is an int ``>= minimum`` (bools refused), else a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        rule = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{field} must be {rule}, but got {field}={value!r}")
    return value


def check_positive_ints(field: str, values: object) -> tuple[int, ...]:
    """A non-empty sequence of positive ints, as a tuple."""
    if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
        raise ValueError(f"{field} must be a sequence of ints, but got {field}={values!r}")
    items = tuple(values)
    if not items:
        raise ValueError(f"{field} must hold at least one entry, but got {field}={items}")
    for index, value in enumerate(items):
        check_positive_int(f"{field}[{index}]", value)
    return items


def rescale(size: int, new: int, old: int) -> int:
    """``size * new / old`` rounded half up, at least 1: a part's size when the whole it
    belongs to goes from ``old`` to ``new`` (exact integer arithmetic)."""
    return max(1, (size * new * 2 + old) // (2 * old))


@runtime_checkable
class GrowableConfig(Protocol):
    """The growth view of a model config (every registered family's config has it)."""

    family: ClassVar[str]
    TASK_FIELDS: ClassVar[tuple[str, ...]]

    @property
    def width(self) -> int: ...

    @property
    def depth(self) -> int: ...

    def resized(self, width: int, depth: int) -> Self: ...


@dataclass(frozen=True)
class TaskShape:
    """What a model must take and produce, from the dataset: one sample's input shape,
    the number of classes (vocabulary size for ``task == "lm"``) and the task."""

    input_shape: tuple[int, ...]
    num_classes: int
    task: str = "classify"

    @classmethod
    def of(cls, data: Any) -> TaskShape:
        """The task shape of a :class:`~morphtune.data.DatasetSplit`."""
        return cls(tuple(data.input_shape), int(data.num_classes), str(data.task))

    def image(self, family: str) -> tuple[int, int, int]:
        """``(channels, height, width)`` of an image classification task."""
        if self.task != "classify" or len(self.input_shape) != 3:
            raise ValueError(
                f"model family {family!r} needs images (C x H x W inputs, task 'classify'), "
                f"but the dataset gives inputs of shape {self.input_shape} for task {self.task!r}"
            )
        channels, height, width = self.input_shape
        return channels, height, width
