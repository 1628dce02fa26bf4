"""The wave and control rows the remover checks before each removal (S5), shared for a short bound.

Every removal checks that its wave is still removing and the kill switch off twice: before it marks
its row and right before the Graph write. Read for each check, that is two wave reads and two control
reads per removal, all alike while a batch of removals runs on one instance. Here one read serves
every check on this process for `LICSHIFT_STATE_CACHE_SECONDS` (default 2 s, at most 5): a check never
acts on a read that started longer ago than that, and concurrent checks wait for the read in flight
instead of starting their own. The price, documented in docs/safety.md: a pause, a cancel, a halt by
another instance or the control table's kill switch stops removals within that bound plus the one
removal already past its last check. `LICSHIFT_KILL_SWITCH` and this process's own halts act at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from licshift.ports.store import Versioned
from licshift.rules.outcomes import Control
from licshift.rules.waves import Wave

T = TypeVar("T")
Clock = Callable[[], datetime]


class StopRows(Protocol):
    """The part of the ledger (LedgerStore) the checks read."""

    async def get_wave(self, wave_id: str) -> Versioned[Wave] | None: ...

    async def get_control(self) -> Versioned[Control]: ...


class _SharedRead(Generic[T]):
    """One row's latest read, reused while it started at most `max_age` ago."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._held: tuple[T, datetime] | None = None
        """The value and when the read that got it started."""

    async def get(self, read: Callable[[], Awaitable[T]], clock: Clock, max_age: timedelta) -> T:
        if max_age <= timedelta(0):
            return await read()
        # Checks that arrive while the row is being read wait for that read instead of starting one.
        async with self._lock:
            if self._held is not None and timedelta(0) <= clock() - self._held[1] <= max_age:
                return self._held[0]
            started_at = clock()
            value = await read()
            self._held = (value, started_at)
            return value


class StopReads:
    """The wave and control rows per process, each read at most once per `max_age` (see above)."""

    def __init__(self) -> None:
        self._waves: dict[str, _SharedRead[Wave | None]] = {}
        self._control: _SharedRead[Control] = _SharedRead()

    async def wave(self, ledger: StopRows, wave_id: str, clock: Clock, max_age: timedelta) -> Wave | None:
        async def read() -> Wave | None:
            loaded = await ledger.get_wave(wave_id)
            return loaded.value if loaded else None

        return await self._waves.setdefault(wave_id, _SharedRead()).get(read, clock, max_age)

    async def control(self, ledger: StopRows, clock: Clock, max_age: timedelta) -> Control:
        async def read() -> Control:
            return (await ledger.get_control()).value

        return await self._control.get(read, clock, max_age)

    def forget(self, wave_id: str) -> None:
        """This process changed the wave (a halt): the next check reads it again."""
        self._waves.pop(wave_id, None)
