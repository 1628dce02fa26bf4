"""Write pacing that tracks Graph's write quota the way Graph counts it (pure).

Graph allows 3,000 writes per sliding 150 s per app and tenant, and 18,000 per 5 min per tenant.
The scheduler is the one place that starts writes, so it keeps a model of that window: writes per
second, for the last five minutes and as far ahead as it has scheduled. Every write it knows of is
in the model: removals and rollback restores it scheduled itself (they count from the moment they
are due, whether they ran, are in flight or are still on the queue), and the writes workers start
on their own, reported as events: restores right after a loss, and re-sends after a 429, which
count at the moment Retry-After allows them.

Each tick tops the schedule up to `lookahead` seconds ahead of now, spaced at the target rate
(`share` of the quota per window), and a slot is taken only if no window of the model that contains
it would exceed `share` of the quota. Slots are absolute times: a message's visibility delay is
counted from the moment it is sent (`delay`), so a tick that takes a while to send its slice never
shifts it, and consecutive ticks never overlap. The schedule continues from where the last one
ended, not from the tick's start: a late tick (up to `lookahead` minus one tick) loses nothing and a
long tick never schedules the same seconds twice.

Graph's signals lower the pace before and after a 429:
- `x-ms-throttle-limit-percentage` (Graph sends it above 80 % of a limit): usage above the target
  means someone else spends the same quota (another app on the tenant-wide quota, another
  deployment with the same app id); the pace drops by that excess.
- a 429: no new write is scheduled before its Retry-After has passed, and the pace drops in
  proportion to the share of writes that were throttled.
Either way the pressure eases back to the full target linearly over one quota window (150 s), so a
burst of 429s costs minutes at most, never a slow climb. The easing counts from the end of Graph's
Retry-After, not from the tick that read the 429s (a tick can come up to a minute later).

A tick only sees 429s after the fact, and the slots it schedules lie up to two ticks ahead, so a cut
for a storm that has already ended would slow the wave for minutes after Graph took writes again.
Hence: once Graph has taken `RECOVERED_WRITES` writes due after the last 429 and after the wait
it asked for (the model's own slots, at least `REPORT_LAG` seconds old, with no 429 reported for
them), the 429s are history: a pending cut for them is lifted and they cause none. Graph's usage
header cuts again at every tick that still reports an excess. While a cut for 429s holds, a tick
schedules one tick ahead instead of two, so the tick after the storm is the one that sets the pace.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_SHARE = 0.97
"""Default target share of the quota: 3 % of headroom for delivery jitter (queue polling, worker
latency) and for writes reported after the fact (restores)."""
MIN_SHARE = 0.05
HEADER_MARGIN = 0.02
"""Reported usage this far above the target is read as someone else spending the quota."""
MIN_PRESSURE = 0.05
REPORT_LAG = 5.0
"""Seconds from a write's slot until its 429, if any, is surely on record: queue delivery, the
remover's fresh read, the write, the event. Slots younger than this prove nothing yet."""
RECOVERED_WRITES = 20
"""Writes due after the last 429, with none of them throttled, that show Graph takes writes again."""


@dataclass(frozen=True, slots=True)
class Quota:
    """Graph's identity write quota (graph throttling limits, identity and access service)."""

    writes: int = 3_000
    window: float = 150.0
    tenant_writes: int = 18_000
    tenant_window: float = 300.0

    @property
    def rate(self) -> float:
        return self.writes / self.window


@dataclass(frozen=True, slots=True)
class PacingLimits:
    quota: Quota = field(default_factory=Quota)
    share: float = DEFAULT_SHARE
    """Target share of the quota in any window."""
    floor: float = 0.5
    """Writes per second the back-off never goes below."""
    ceiling: float = 20.0
    """Writes per second never exceeded (an admin's cap, to leave room for other apps)."""
    lookahead: float = 120.0
    """Seconds ahead of now a tick schedules: two ticks, so one late or skipped tick loses nothing."""

    @property
    def cap(self) -> int:
        """Writes allowed in any app window of the model."""
        return max(1, math.floor(self.share * self.quota.writes + 1e-9))

    @property
    def tenant_cap(self) -> int:
        return max(1, math.floor(self.share * self.quota.tenant_writes + 1e-9))

    @property
    def full_rate(self) -> float:
        """The target pace without pressure: share of the quota, within the ceiling."""
        return max(self.floor, min(self.ceiling, self.share * self.quota.rate))


@dataclass(frozen=True, slots=True)
class Throttle:
    at: float
    retry_after: float


@dataclass(frozen=True, slots=True)
class Reports:
    """What workers reported since the last tick (from the events table)."""

    throttles: tuple[Throttle, ...] = ()
    extra_writes: tuple[float, ...] = ()
    """Times of writes the scheduler did not schedule: restores after a loss, stale re-sends."""
    usage: float = 0.0
    """Highest x-ms-throttle-limit-percentage reported (0: none above 80 %)."""


@dataclass(frozen=True, slots=True)
class Pacing:
    """The model, persisted between ticks. Times are epoch seconds."""

    origin: int = 0
    """Epoch second of counts[0]."""
    counts: tuple[int, ...] = ()
    """Writes per second of the model, from `origin`."""
    next_at: float = 0.0
    """Where the schedule continues: the last slot plus one spacing."""
    pressure: float = 1.0
    """Share of the target pace allowed at `pressure_at`; eases back to 1 over one window."""
    pressure_at: float = 0.0
    paused_until: float = 0.0
    """No new slot before this (Graph's Retry-After)."""
    seen_until: float = 0.0
    """Reports up to this time are in the model."""
    last_throttle: float = 0.0
    """When Graph last answered 429, while the pressure still holds a cut for it (0: none)."""

    def at(self, second: int) -> int:
        i = second - self.origin
        return self.counts[i] if 0 <= i < len(self.counts) else 0


def pressure_at(p: Pacing, t: float, limits: PacingLimits) -> float:
    eased = (t - p.pressure_at) / limits.quota.window
    return min(1.0, p.pressure + (1.0 - p.pressure) * max(0.0, eased))


def rate_at(p: Pacing, t: float, limits: PacingLimits) -> float:
    """Writes per second the schedule is spaced at around time t."""
    return max(limits.floor, min(limits.ceiling, limits.share * limits.quota.rate * pressure_at(p, t, limits)))


def _trimmed(p: Pacing, now: float, limits: PacingLimits) -> Pacing:
    """Forget seconds no window that matters from now on can contain."""
    keep_from = math.floor(now - max(limits.quota.window, limits.quota.tenant_window)) - 1
    if keep_from <= p.origin:
        return p
    drop = min(len(p.counts), keep_from - p.origin)
    return replace(p, origin=keep_from, counts=p.counts[drop:])


def add_writes(p: Pacing, times: Iterable[float]) -> Pacing:
    """The model with writes at `times` added (each counted in its whole second)."""
    seconds = [math.floor(t) for t in times]
    if not seconds:
        return p
    origin = min([p.origin, *seconds]) if p.counts else min(seconds)
    end = max([p.origin + len(p.counts), *(s + 1 for s in seconds)])
    counts = [0] * (end - origin)
    for i, c in enumerate(p.counts):
        counts[p.origin - origin + i] = c
    for s in seconds:
        counts[s - origin] += 1
    return replace(p, origin=origin, counts=tuple(counts))


def remove_writes(p: Pacing, times: Iterable[float]) -> Pacing:
    """Slots taken but not used (no work for them) go back."""
    counts = list(p.counts)
    for t in times:
        i = math.floor(t) - p.origin
        if 0 <= i < len(counts) and counts[i] > 0:
            counts[i] -= 1
    return replace(p, counts=tuple(counts))


def observe(p: Pacing, reports: Reports, now: float, limits: PacingLimits) -> Pacing:
    """Fold in what workers reported since `p.seen_until`: extra writes, 429s, reported usage."""
    # Writes that came due since the 429s began (this tick's share), against how many Graph refused.
    began = min([now - 1, *(t.at for t in reports.throttles)]) if reports.throttles else now - 1
    due = sum(p.at(s) for s in range(math.floor(max(p.seen_until, began)), math.floor(now)))
    p = add_writes(p, (*reports.extra_writes, *(t.at + t.retry_after for t in reports.throttles)))
    paused = max([p.paused_until, *(t.at + t.retry_after for t in reports.throttles)])
    last_throttle = max([p.last_throttle, *(t.at for t in reports.throttles)])
    if last_throttle and recovered(p, max(last_throttle, paused), now):
        # Graph has taken writes since its last 429: a cut for those 429s would only slow a wave
        # Graph already serves again.
        p = replace(p, pressure=1.0, pressure_at=now, last_throttle=0.0) if p.last_throttle else p
        reports, last_throttle = replace(reports, throttles=()), 0.0
    current = pressure_at(p, now, limits)
    lowest = max(MIN_PRESSURE, limits.floor / max(limits.share * limits.quota.rate, 1e-9))
    pressure, since = current, p.pressure_at
    if reports.throttles:
        refused = len(reports.throttles)
        pressure = min(current, max(lowest, 1.0 - refused / max(due, refused)))
        # Eased from the moment Graph takes writes again, however late the tick that reads the 429s.
        since = paused
    if reports.usage > limits.share + HEADER_MARGIN:
        # Graph counts more than we do: leave the excess to whoever spends it.
        pressure = min(pressure, max(lowest, (2 * limits.share - reports.usage) / limits.share))
        since = max(now, paused)
    if pressure >= current:
        pressure, since = p.pressure, p.pressure_at
    return replace(
        p, pressure=pressure, pressure_at=since, paused_until=paused, seen_until=now, last_throttle=last_throttle
    )


def recovered(p: Pacing, since: float, now: float) -> bool:
    """Graph took at least RECOVERED_WRITES of the model's writes due after `since` (its last 429
    and the end of the wait it asked for), old enough for a 429 to be on record: the throttling is
    over. A host running behind its slots could report a 429 later still: then the next tick cuts
    again, and Retry-After is honoured either way."""
    seconds = range(math.floor(since) + 1, math.floor(now - REPORT_LAG))
    return sum(p.at(s) for s in seconds) >= RECOVERED_WRITES


class _Windows:
    """Sliding-window sums over the per-second counts, kept up to date as slots are added."""

    def __init__(self, p: Pacing, start: int, end: int, width: int) -> None:
        self.width = width
        self.low = start - width + 1
        span = [p.at(s) for s in range(self.low, end + width)]
        # sums[i] = writes in seconds [low + i, low + i + width)
        run = sum(span[:width])
        self.sums = [run]
        for i in range(1, len(span) - width + 1):
            run += span[i + width - 1] - span[i - 1]
            self.sums.append(run)

    def fullest(self, second: int) -> int:
        """The fullest window containing `second`."""
        i = second - self.low
        return max(self.sums[i - self.width + 1 : i + 1])

    def add(self, second: int) -> None:
        i = second - self.low
        for j in range(i - self.width + 1, i + 1):
            self.sums[j] += 1


def schedule(p: Pacing, now: float, wanted: int, limits: PacingLimits) -> tuple[list[float], Pacing]:
    """Up to `wanted` slots in [now, now + lookahead), and the model with them counted.

    Slots continue from the previous schedule (never before now or Retry-After), spaced at the
    current pace, and only where every window containing them stays within the target share.
    """
    p = _trimmed(p, now, limits)
    # While a cut for 429s holds, one tick ahead only: the next tick, which knows whether Graph still
    # throttles, schedules the rest (a message once sent cannot be taken back).
    horizon = now + (limits.lookahead / 2 if p.last_throttle else limits.lookahead)
    t = max(now, p.next_at, p.paused_until)
    if wanted <= 0 or t >= horizon:
        return [], p
    first, last = math.floor(t), math.floor(horizon)
    # A window of 150 s can touch 151 whole seconds: count those, so no real window passes the cap.
    app = _Windows(p, first, last + 1, math.ceil(limits.quota.window) + 1)
    tenant = _Windows(p, first, last + 1, math.ceil(limits.quota.tenant_window) + 1)
    slots: list[float] = []
    while t < horizon and len(slots) < wanted:
        second = math.floor(t)
        if app.fullest(second) < limits.cap and tenant.fullest(second) < limits.tenant_cap:
            slots.append(t)
            app.add(second)
            tenant.add(second)
            t += 1.0 / rate_at(p, t, limits)
        else:
            t = second + 1.0
    p = add_writes(p, slots)
    return slots, replace(p, next_at=t if slots else max(p.next_at, now))


def release(p: Pacing, unused: Sequence[float]) -> Pacing:
    """Give back slots the tick took but found no work for; the schedule resumes at the first."""
    if not unused:
        return p
    return replace(remove_writes(p, unused), next_at=min(unused))


def delay(slot: float, now: float) -> float:
    """The visibility delay of a message for `slot`, counted from the moment it is sent."""
    return max(0.0, slot - now)


def window_counts(times: Iterable[float], window: float) -> int:
    """The most writes in any sliding window of `window` seconds (a benchmark's and a test's check)."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- storage form (a JSON text in the control table) ---------------------------------------------


def to_json(p: Pacing) -> str:
    data: dict[str, Any] = {
        "origin": p.origin,
        "counts": list(p.counts),
        "next_at": p.next_at,
        "pressure": p.pressure,
        "pressure_at": p.pressure_at,
        "paused_until": p.paused_until,
        "seen_until": p.seen_until,
        "last_throttle": p.last_throttle,
    }
    return json.dumps(data, separators=(",", ":"))


def from_json(text: str) -> Pacing | None:
    """The stored model, or None if it cannot be read (see `restart`)."""
    try:
        data = json.loads(text)
        return Pacing(
            origin=int(data["origin"]),
            counts=tuple(max(0, int(c)) for c in data["counts"]),
            next_at=float(data["next_at"]),
            pressure=min(1.0, max(MIN_PRESSURE, float(data["pressure"]))),
            pressure_at=float(data["pressure_at"]),
            paused_until=float(data["paused_until"]),
            seen_until=float(data["seen_until"]),
            # Absent in rows saved before it existed: no cut pending for a 429.
            last_throttle=float(data.get("last_throttle", 0.0)),
        )
    except (ValueError, KeyError, TypeError):
        return None


def restart(now: float, limits: PacingLimits) -> Pacing:
    """A model that lost its memory (an unreadable row): writes already scheduled may be on their
    way, so nothing new is scheduled until one whole window has passed."""
    return Pacing(paused_until=now + limits.quota.window, seen_until=now)
