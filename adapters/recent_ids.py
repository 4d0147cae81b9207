"""The ids of the bot's own recent messages, to spot a user's reply to one of them."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class RecentIds(Generic[T]):
    """A set that keeps only the ``limit`` newest ids, so a long-running bot's memory stays bounded."""

    def __init__(self, limit: int) -> None:
        self._order: deque[T] = deque(maxlen=limit)
        self._members: set[T] = set()

    def add(self, item: T) -> None:
        if len(self._order) == self._order.maxlen:
            self._members.discard(self._order[0])
        self._order.append(item)
        self._members.add(item)

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __len__(self) -> int:
        return len(self._members)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentMap(Generic[K, V]):
    """A dict that keeps only the ``limit`` newest keys: which character wrote each recent message."""

    def __init__(self, limit: int) -> None:
        self._order: deque[K] = deque(maxlen=limit)
        self._values: dict[K, V] = {}

    def __setitem__(self, key: K, value: V) -> None:
        if key not in self._values:
            if len(self._order) == self._order.maxlen:
                self._values.pop(self._order[0], None)
            self._order.append(key)
        self._values[key] = value

    def get(self, key: K) -> V | None:
        return self._values.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __len__(self) -> int:
        return len(self._values)
