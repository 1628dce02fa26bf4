"""An ordered id list with stable positions, for paging that survives changes mid-scan.

A page token is a position: removing an id leaves a hole instead of shifting later ids, so a
scan in progress neither skips nor repeats anyone when members are removed (as Graph's opaque
skip tokens behave). Added ids go to the end.
"""

from __future__ import annotations

from collections.abc import Iterator


class OrderedIds:
    __slots__ = ("_order", "_pos")

    def __init__(self) -> None:
        self._order: list[str | None] = []
        self._pos: dict[str, int] = {}

    def add(self, item: str) -> bool:
        if item in self._pos:
            return False
        self._pos[item] = len(self._order)
        self._order.append(item)
        return True

    def remove(self, item: str) -> bool:
        pos = self._pos.pop(item, None)
        if pos is None:
            return False
        self._order[pos] = None
        return True

    def __contains__(self, item: object) -> bool:
        return item in self._pos

    def __len__(self) -> int:
        return len(self._pos)

    def __iter__(self) -> Iterator[str]:
        return (item for item in self._order if item is not None)

    def scan(self, start: int) -> Iterator[tuple[int, str]]:
        """(position, id) from position `start` on."""
        order = self._order
        for pos in range(max(start, 0), len(order)):
            item = order[pos]
            if item is not None:
                yield pos, item
