"""The remover's shared wave and control reads (services/stopreads.py): one read serves every check
while it is at most the bound old, counted from when the read started; never older, never an error."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from factories import T0, wave
from licshift.ports.store import Versioned
from licshift.rules.outcomes import Control
from licshift.rules.waves import Wave, WaveStatus
from licshift.services.stopreads import StopReads

BOUND = timedelta(seconds=2)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


class Rows:
    """The wave and control rows as the ledger holds them, counting reads; `gate` holds reads in flight."""

    def __init__(self, clock: Clock, read_seconds: float = 0.0) -> None:
        self.wave = wave(WaveStatus.REMOVING)
        self.control = Control()
        self.wave_reads = 0
        self.control_reads = 0
        self.gate: asyncio.Event | None = None
        self.fail_next = False
        self._clock = clock
        self._read_seconds = read_seconds

    async def _read(self) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self._clock.advance(self._read_seconds)
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("table storage unavailable")

    async def get_wave(self, wave_id: str) -> Versioned[Wave] | None:
        self.wave_reads += 1
        await self._read()
        return Versioned(self.wave, "w") if wave_id == self.wave.wave_id else None

    async def get_control(self) -> Versioned[Control]:
        self.control_reads += 1
        await self._read()
        return Versioned(self.control, "c")


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_concurrent_checks_share_the_read_in_flight(clock: Clock) -> None:
    rows, stops = Rows(clock), StopReads()
    rows.gate = asyncio.Event()
    checks = [asyncio.create_task(stops.wave(rows, rows.wave.wave_id, clock, BOUND)) for _ in range(16)]
    controls = [asyncio.create_task(stops.control(rows, clock, BOUND)) for _ in range(16)]
    await asyncio.sleep(0)
    rows.gate.set()
    assert {w.status for w in await asyncio.gather(*checks) if w} == {WaveStatus.REMOVING}
    assert not any(c.kill_switch for c in await asyncio.gather(*controls))
    assert (rows.wave_reads, rows.control_reads) == (1, 1)


async def test_a_read_serves_checks_up_to_the_bound_and_no_longer(clock: Clock) -> None:
    rows, stops = Rows(clock), StopReads()
    assert not (await stops.control(rows, clock, BOUND)).kill_switch
    rows.control = replace(rows.control, kill_switch=True)  # flipped by the CLI just after the read
    clock.advance(2.0)
    assert not (await stops.control(rows, clock, BOUND)).kill_switch, "within the bound: the shared read"
    assert rows.control_reads == 1
    clock.advance(0.001)
    assert (await stops.control(rows, clock, BOUND)).kill_switch, "past the bound: read again"
    assert rows.control_reads == 2


async def test_the_age_counts_from_when_the_read_started(clock: Clock) -> None:
    rows, stops = Rows(clock, read_seconds=1.5), StopReads()
    await stops.wave(rows, rows.wave.wave_id, clock, BOUND)  # started at T0, answered at T0 + 1.5 s
    clock.advance(0.6)
    await stops.wave(rows, rows.wave.wave_id, clock, BOUND)
    assert rows.wave_reads == 2, "2.1 s after the read started it is too old, though answered 0.6 s ago"


async def test_each_wave_has_its_own_read_and_a_missing_wave_is_remembered_as_missing(clock: Clock) -> None:
    rows, stops = Rows(clock), StopReads()
    assert await stops.wave(rows, "gone", clock, BOUND) is None
    assert await stops.wave(rows, "gone", clock, BOUND) is None
    assert await stops.wave(rows, rows.wave.wave_id, clock, BOUND) is not None
    assert rows.wave_reads == 2


async def test_a_failed_read_is_not_kept(clock: Clock) -> None:
    rows, stops = Rows(clock), StopReads()
    rows.fail_next = True
    with pytest.raises(ConnectionError):
        await stops.control(rows, clock, BOUND)
    await stops.control(rows, clock, BOUND)
    assert rows.control_reads == 2


async def test_forget_makes_the_next_check_read_the_wave_again(clock: Clock) -> None:
    rows, stops = Rows(clock), StopReads()
    await stops.wave(rows, rows.wave.wave_id, clock, BOUND)
    rows.wave = replace(rows.wave, status=WaveStatus.HALTED)
    stops.forget(rows.wave.wave_id)
    halted = await stops.wave(rows, rows.wave.wave_id, clock, BOUND)
    assert halted is not None
    assert halted.status is WaveStatus.HALTED


async def test_a_bound_of_zero_reads_for_every_check_and_a_clock_going_back_reads_again(clock: Clock) -> None:
    rows, stops = Rows(clock), StopReads()
    for _ in range(3):
        await stops.control(rows, clock, timedelta(0))
    assert rows.control_reads == 3
    await stops.control(rows, clock, BOUND)
    clock.advance(-1)
    await stops.control(rows, clock, BOUND)
    assert rows.control_reads == 5
