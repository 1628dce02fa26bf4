"""The scheduler's hold on Graph's write quota: the pacing model (pacing.py) loaded from the ledger,
what workers reported folded in, slots reserved before any message is sent and the unused ones
given back after.

Reserve first, then send: the model row is saved with its ETag before the tick sends a single
message, so a tick that crashes half-way leaves its slots counted (a little capacity lost for one
window, never a window overfilled), and a second scheduler that races this one finds the row
changed and sends nothing new in that tick.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from licshift.ports.store import ConcurrencyConflict
from licshift.rules import pacing
from licshift.rules.outcomes import Event
from licshift.rules.pacing import Pacing, PacingLimits, Quota, Reports, Throttle
from licshift.services import telemetry
from licshift.services.runtime import Runtime
from licshift.settings import Settings

log = logging.getLogger("licshift.services.quota")

UNLIMITED = 1_000_000
"""Slots wanted when any wave has work: the schedule is bounded by the lookahead, not by demand."""


def limits(settings: Settings) -> PacingLimits:
    return PacingLimits(
        quota=Quota(),
        share=settings.write_quota_share,
        floor=min(settings.write_rate_floor, settings.write_rate_ceiling),
        ceiling=settings.write_rate_ceiling,
        # Two ticks ahead: a tick that comes late, or not at all, finds the next one already scheduled.
        lookahead=2 * settings.tick_seconds,
    )


@dataclass
class Reservation:
    slots: list[float]
    """Absolute times (epoch seconds) of the writes this tick may start."""
    model: Pacing
    etag: str | None
    limits: PacingLimits
    throttled_by_wave: dict[str, int] = field(default_factory=dict)
    extra: list[float] = field(default_factory=list)
    """Writes sent without a slot (a stuck task re-sent when no slot was left)."""

    @property
    def rate(self) -> float:
        return pacing.rate_at(self.model, self.model.seen_until, self.limits)


def _ts(at: datetime) -> float:
    return at.timestamp()


async def _reports(rt: Runtime, since: datetime, now: datetime) -> tuple[Reports, dict[str, int]]:
    throttles: list[Throttle] = []
    extra: list[float] = []
    usage = 0.0
    by_wave: dict[str, int] = {}
    kinds = [telemetry.THROTTLED, telemetry.RESTORED, telemetry.QUOTA_USAGE]
    async for event in rt.ledger.iter_events(since, kinds=kinds):
        if event.at is None or not since <= event.at < now:
            continue
        if event.kind == telemetry.THROTTLED:
            retry_after = float(event.data.get("retry_after", 0.0) or 0.0)
            throttles.append(Throttle(_ts(event.at), max(0.0, retry_after)))
            by_wave[event.wave_id] = by_wave.get(event.wave_id, 0) + 1
        elif event.kind == telemetry.RESTORED:
            if event.data.get("wrote", True) is not False:
                extra.append(_ts(event.at))
        else:
            usage = max(usage, float(event.data.get("usage", 0.0) or 0.0))
    return Reports(tuple(throttles), tuple(extra), usage), by_wave


RESERVE_ATTEMPTS = 3


async def reserve(rt: Runtime, now: datetime, *, wanted: int, lookback: timedelta) -> Reservation:
    """Load the model, fold in reports since it was last saved (at most `lookback` ago), reserve up
    to `wanted` slots and save the model before anything is sent. If another scheduler saved it in
    between, start over from what it saved: the model serializes them, so both get slots that fit."""
    lim = limits(rt.settings)
    for _ in range(RESERVE_ATTEMPTS):
        stored = await rt.ledger.get_pacing()
        loaded = pacing.from_json(stored.value) if stored.value else Pacing(seen_until=_ts(now - lookback))
        if loaded is None:
            log.warning("the pacing row could not be read; nothing new is scheduled for one quota window")
            loaded = pacing.restart(_ts(now), lim)
        since = min(now, max(datetime.fromtimestamp(loaded.seen_until, UTC), now - lookback))
        reports, by_wave = await _reports(rt, since, now)
        model = pacing.observe(loaded, reports, _ts(now), lim)
        slots, model = pacing.schedule(model, _ts(now), wanted, lim)
        try:
            etag = await rt.ledger.save_pacing(pacing.to_json(model), stored.etag or None, now)
        except ConcurrencyConflict:
            continue
        return Reservation(slots, model, etag, lim, by_wave)
    log.warning("other ticks kept scheduling Graph writes; this one sends nothing new")
    return Reservation([], model, None, lim, by_wave)


async def settle(rt: Runtime, reservation: Reservation, used: int, now: datetime) -> None:
    """Give back the slots no work was found for; count writes sent without a slot."""
    unused: Sequence[float] = reservation.slots[used:]
    if reservation.etag is None or (not unused and not reservation.extra):
        return
    model = pacing.add_writes(pacing.release(reservation.model, unused), reservation.extra)
    if model == reservation.model:
        return
    try:
        await rt.ledger.save_pacing(pacing.to_json(model), reservation.etag, now)
    except ConcurrencyConflict:
        # Someone saved a newer model meanwhile: the slots stay counted (conservative).
        return
    reservation.model = model


USAGE_REPORT_SECONDS = 10.0
"""At most one quota-usage event per process this often: the scheduler needs the peak, not each answer."""


@dataclass
class UsageReporter:
    """Turns Graph's x-ms-throttle-limit-percentage, seen by workers, into events the scheduler reads."""

    last: datetime | None = None
    peak: float = 0.0

    async def report(self, rt: Runtime) -> None:
        self.peak = max(self.peak, rt.graph.take_usage())
        now = rt.now()
        if self.peak <= 0.0 or (self.last is not None and now - self.last < timedelta(seconds=USAGE_REPORT_SECONDS)):
            return
        usage, self.peak, self.last = self.peak, 0.0, now
        event = Event(
            kind=telemetry.QUOTA_USAGE,
            message=f"Graph reports {usage:.0%} of a throttling limit in use",
            actor="remover",
            data={"usage": usage},
        )
        try:
            await telemetry.emit(rt.ledger, event, now)
        except Exception:  # a report must never fail the task whose answers carried it
            log.warning("could not record Graph's quota usage", exc_info=True)


usage_reporter = UsageReporter()
