"""A name -> entry registry, the one shape behind every pluggable part of morphtune.

Datasets, model families, pruning scores, layer distributions, growth operators, samplers
and schedulers each keep one :class:`Registry`. Entries are added with the
:meth:`Registry.register` decorator and looked up with :meth:`Registry.get`, whose error
lists the valid names and how to register more (as JaxPruner's and timm's registries do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one ``kind`` by name, in registration order.

    ``kind`` names what is registered in messages (``"dataset"``, ``"model family"``);
    ``hint`` says how to register more (``"morphtune.data.register_dataset"``) and is
    appended to the unknown-name error when given. Iterating, ``len`` and ``in`` work on the
    names, so ``sorted(registry)`` and ``name in registry`` read like they do on a list.
    """

    def __init__(self, kind: str, hint: str | None = None) -> None:
        self.kind = kind
        self.hint = hint
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its argument under ``name`` and returning it unchanged."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty str, but got {name!r}")

        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str) -> T:
        """The entry registered under ``name``; ``ValueError`` listing the valid names if none."""
        try:
            return self._entries[name]
        except KeyError:
            hint = f" (register more with {self.hint})" if self.hint else ""
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid: {sorted(self._entries)}{hint}"
            ) from None

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        # Like ``in`` on a list of names: an unhashable value is simply not one of them.
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        # Over a snapshot: registering while iterating must not raise (it did not on a list).
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()!r})"
