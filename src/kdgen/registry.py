"""One small registry, loud on mistakes: duplicates and unknown names raise and list the choices."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from .errors import KdgenError

T = TypeVar("T")


def nearest(name: str, choices: list[str], n: int = 3) -> list[str]:
    """The choices closest to `name` (for "did you mean" hints)."""
    return difflib.get_close_matches(name, choices, n=n, cutoff=0.3)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice; pick another name")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            hint = nearest(name, self.names())
            did = f" (did you mean {', '.join(repr(h) for h in hint)}?)" if hint else ""
            raise KdgenError(
                f"unknown {self.kind} '{name}'{did}; choose one of: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def summary(self, name: str) -> str:
        """First line of the registered object's docstring."""
        doc = (getattr(self._items[name], "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""
