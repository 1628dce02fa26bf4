"""The one way a wave changes status, against the real ledger on Azurite: saved over the ETag it was
computed from, retried when someone else saved first, recorded as one event, or nothing at all."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from factories import T0, wave
from licshift.adapters.ledger import Ledger
from licshift.ports.store import ConcurrencyConflict, Versioned
from licshift.rules.outcomes import Event, Severity
from licshift.rules.waves import Refused, Wave, WaveEvent, WaveStatus
from licshift.services import telemetry
from licshift.services.transitions import status_event, transition

pytestmark = pytest.mark.storage

NOW = T0 + timedelta(hours=1)


async def events(ledger: Ledger, wave_id: str) -> list[Event]:
    return [e async for e in ledger.iter_events(T0) if e.wave_id == wave_id]


async def test_a_transition_is_saved_and_recorded_once(ledger: Ledger) -> None:
    created = wave(WaveStatus.REMOVING)
    await ledger.create_wave(created)
    done = await transition(ledger, created.wave_id, WaveEvent.PAUSE, "pause by bob", lambda: NOW, actor="bob")
    assert done is not None
    read, result = done
    assert read.value == created
    assert not isinstance(result, Refused)
    assert result.status is WaveStatus.PAUSED
    stored = await ledger.get_wave(created.wave_id)
    assert stored is not None
    assert stored.value.status is WaveStatus.PAUSED
    assert stored.value.status_reason == "pause by bob"
    [event] = await events(ledger, created.wave_id)
    assert (event.kind, event.actor, event.severity) == (telemetry.WAVE_STATUS, "bob", Severity.INFO)
    assert event.data == {"from": "removing", "to": "paused", "event": "pause"}


async def test_a_repeat_changes_nothing_and_records_nothing(ledger: Ledger) -> None:
    created = wave(WaveStatus.PAUSED)
    await ledger.create_wave(created)
    done = await transition(ledger, created.wave_id, WaveEvent.PAUSE, "again", lambda: NOW, actor="bob")
    assert done is not None
    read, result = done
    assert result is read.value
    assert await events(ledger, created.wave_id) == []


async def test_an_event_the_status_does_not_allow_is_refused_and_not_saved(ledger: Ledger) -> None:
    created = wave(WaveStatus.COMPLETED)
    etag = await ledger.create_wave(created)
    done = await transition(ledger, created.wave_id, WaveEvent.RESUME, "resume", lambda: NOW, actor="bob")
    assert done is not None
    assert isinstance(done[1], Refused)
    stored = await ledger.get_wave(created.wave_id)
    assert stored is not None
    assert stored.etag == etag


async def test_no_such_wave(ledger: Ledger) -> None:
    assert await transition(ledger, "nope", WaveEvent.PAUSE, "pause", lambda: NOW, actor="bob") is None


class RacingLedger(Ledger):
    """The real ledger, with another writer saving the wave right after each of the first `races`
    reads of it (the scheduler's tick moving the cursor while an admin's command is applied)."""

    def __init__(self, connection_string: str, races: int) -> None:
        super().__init__(connection_string, prefix=f"t{uuid.uuid4().hex[:12]}")
        self.races = races
        self.reads = 0

    async def get_wave(self, wave_id: str) -> Versioned[Wave] | None:
        read = await super().get_wave(wave_id)
        self.reads += 1
        if read is not None and self.races > 0:
            self.races -= 1
            await self.save_wave(replace(read.value, enqueue_cursor=f"moved {self.reads}"), read.etag)
        return read


@pytest.fixture
async def racing(storage_connection_string: str) -> AsyncIterator[Callable[[int], Awaitable[RacingLedger]]]:
    opened: list[RacingLedger] = []

    async def open_racing(races: int) -> RacingLedger:
        store = RacingLedger(storage_connection_string, races)
        await store.ensure_tables()
        opened.append(store)
        return store

    yield open_racing
    for store in opened:
        await store.delete_tables()
        await store.aclose()


async def test_a_change_saved_meanwhile_is_read_again_and_the_event_applied_to_it(
    racing: Callable[[int], Awaitable[RacingLedger]],
) -> None:
    ledger = await racing(1)
    created = wave(WaveStatus.REMOVING)
    await ledger.create_wave(created)
    done = await transition(ledger, created.wave_id, WaveEvent.CANCEL, "cancel", lambda: NOW, actor="bob")
    assert done is not None
    assert ledger.reads == 2
    stored = await ledger.get_wave(created.wave_id)
    assert stored is not None
    assert stored.value.status is WaveStatus.CANCELLED
    assert stored.value.enqueue_cursor == "moved 1"  # the other writer's change was kept, not overwritten
    assert len(await events(ledger, created.wave_id)) == 1


async def test_a_wave_that_keeps_changing_gives_up_with_a_conflict(
    racing: Callable[[int], Awaitable[RacingLedger]],
) -> None:
    ledger = await racing(10)
    created = wave(WaveStatus.REMOVING)
    await ledger.create_wave(created)
    with pytest.raises(ConcurrencyConflict):
        await transition(ledger, created.wave_id, WaveEvent.PAUSE, "pause", lambda: NOW, actor="bob", attempts=3)
    assert await events(ledger, created.wave_id) == []


def test_halting_events_are_alerts_and_others_are_status_changes() -> None:
    before = wave(WaveStatus.REMOVING)
    halted = replace(before, status=WaveStatus.HALTED)
    alert = status_event(before, halted, WaveEvent.LOSS_DETECTED, "user lost Exchange", actor="remover")
    assert (alert.kind, alert.severity) == (telemetry.HALTED, Severity.ALERT)
    assert alert.message == f"wave {before.wave_id}: removing -> halted: user lost Exchange"
    done = status_event(before, replace(before, status=WaveStatus.VERIFYING), WaveEvent.REMOVALS_DONE, "x", actor="s")
    assert (done.kind, done.severity) == (telemetry.WAVE_STATUS, Severity.INFO)
