"""One way to change a wave's status, for every caller (intake's admin commands, the scheduler's tick,
the remover's halt after a loss).

The lifecycle itself is pure (`apply` in licshift.rules.waves); this is what surrounds it every time:
the new status is saved only over the version it was computed from (the row's ETag), and a change is
recorded as one event: `wave-status`, or the alert kind for a halt or a processing timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from licshift.ports.store import ConcurrencyConflict, LedgerStore, Versioned
from licshift.rules.outcomes import Event, Severity
from licshift.rules.waves import Refused, Wave, WaveEvent, WaveStatus, apply
from licshift.services import telemetry

SAVE_ATTEMPTS = 5
"""Reads and tries a caller without a held ETag makes before giving up (the host retries it then)."""

ALERT_KINDS = {
    WaveEvent.PROCESSING_TIMEOUT: telemetry.PROCESSING_TIMEOUT,
    WaveEvent.GROUP_GONE: telemetry.HALTED,
    WaveEvent.TOO_LARGE: telemetry.HALTED,
    WaveEvent.FAILURE_THRESHOLD: telemetry.HALTED,
    WaveEvent.LOSS_DETECTED: telemetry.HALTED,
}
"""Events whose transition is an alert (the workbook's and the log alerts' kinds) when it halts."""


def status_event(
    before: Wave, after: Wave, event: WaveEvent, reason: str, *, actor: str, data: dict[str, Any] | None = None
) -> Event:
    """The record of one transition: from, to, the event and why."""
    alert = ALERT_KINDS.get(event)
    return Event(
        kind=alert or telemetry.WAVE_STATUS,
        message=f"wave {after.wave_id}: {before.status} -> {after.status}: {reason}",
        severity=Severity.ALERT if alert and after.status is WaveStatus.HALTED else Severity.INFO,
        wave_id=after.wave_id,
        actor=actor,
        data={"from": before.status.value, "to": after.status.value, "event": event.value, **(data or {})},
    )


async def save_and_record(
    ledger: LedgerStore,
    before: Wave,
    after: Wave,
    etag: str,
    event: WaveEvent,
    reason: str,
    now: datetime,
    *,
    actor: str,
    data: dict[str, Any] | None = None,
) -> str:
    """Save `after` over `etag` (ConcurrencyConflict if the row changed since), then record the
    transition from `before`. Returns the new ETag."""
    new_etag = await ledger.save_wave(after, etag)
    await telemetry.emit(ledger, status_event(before, after, event, reason, actor=actor, data=data), now)
    return new_etag


async def transition(
    ledger: LedgerStore,
    wave_id: str,
    event: WaveEvent,
    reason: str,
    clock: Callable[[], datetime],
    *,
    actor: str,
    attempts: int = SAVE_ATTEMPTS,
) -> tuple[Versioned[Wave], Wave | Refused] | None:
    """Read the wave, apply `event`, save it over what was read and record it; read again and retry
    when someone else saved first. Returns (the wave as read, the result): the result is the wave as
    read itself when the event changes nothing (nothing saved or recorded), or Refused. None: no such
    wave. Raises ConcurrencyConflict when the wave kept changing for `attempts` tries."""
    for _ in range(attempts):
        loaded = await ledger.get_wave(wave_id)
        if loaded is None:
            return None
        now = clock()
        changed = apply(loaded.value, event, now, reason)
        if isinstance(changed, Refused) or changed is loaded.value:
            return loaded, changed
        try:
            await save_and_record(ledger, loaded.value, changed, loaded.etag, event, reason, now, actor=actor)
        except ConcurrencyConflict:
            continue
        return loaded, changed
    raise ConcurrencyConflict(f"wave {wave_id} kept changing; it will be tried again")
