"""How many Graph writes one scheduler tick may start, and when (pure).

Graph's identity write quota is 3,000 writes per 150 s per app and tenant (20/s). The scheduler is
the one place that starts writes, so the rate is enforced there: a tick of `tick_seconds` may enqueue
at most rate x tick_seconds removals or restores, each made visible at its own moment of the tick so
the writes arrive spread out instead of in a burst. Workers that are throttled anyway report it; the
rate then halves (multiplicative decrease) and creeps back up by a fixed step per clean tick
(additive increase), the scheme TCP uses to share a link it cannot see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DECREASE_FACTOR = 0.5


@dataclass(frozen=True, slots=True)
class RateLimits:
    floor: float
    ceiling: float
    step: float
    tick_seconds: float

    @property
    def effective_floor(self) -> float:
        """The floor, raised so that one tick can always start at least one write: a rate whose tick
        budget rounds down to zero would never make progress.
        """
        return min(self.ceiling, max(self.floor, 1.0 / self.tick_seconds))


def clamp(rate: float, limits: RateLimits) -> float:
    return min(limits.ceiling, max(limits.effective_floor, rate))


def next_rate(rate: float, throttled: int, limits: RateLimits) -> float:
    """The rate for the coming tick: halved if any write was throttled since the last tick, else one
    step higher; always within [effective floor, ceiling]. A rate of 0 means "never set": start at
    the ceiling (Graph tells us soon enough if that is too fast).
    """
    current = limits.ceiling if rate <= 0 else rate
    if throttled > 0:
        return clamp(current * DECREASE_FACTOR, limits)
    return clamp(current + limits.step, limits)


def tick_budget(rate: float, tick_seconds: float, already_used: int = 0) -> int:
    """Writes the tick may start: rate x tick_seconds, rounded down, less writes already spent in
    this window outside the scheduler (restores done by workers right after a loss).
    """
    return max(0, math.floor(rate * tick_seconds + 1e-9) - max(0, already_used))


def spread(count: int, tick_seconds: float) -> list[float]:
    """Visibility delays for `count` messages: evenly spaced over [0, tick_seconds), non-decreasing."""
    if count <= 0:
        return []
    gap = tick_seconds / count
    # Rounded down to milliseconds (the queue's precision is seconds anyway): never past the tick.
    return [math.floor(i * gap * 1000) / 1000 for i in range(count)]
