"""Simulated time. Sim seconds run `1 / time_scale` times faster than real seconds (time_scale=0.01
makes Graph's 150 s write window last 1.5 real seconds), and tests can jump ahead with `advance`.

Everything in graphsim that depends on time (group processing, timed scenario events, the legacy
actor, throttling windows) reads this clock, so compressing or advancing it moves all of them together.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta


class SimClock:
    def __init__(self, time_scale: float = 1.0, *, frozen: bool = False, epoch: datetime | None = None) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0 (1.0 = real time, 0.01 = 100x faster), got {time_scale}")
        self.time_scale = float(time_scale)
        self.frozen = frozen
        self.epoch = (epoch or datetime.now(UTC)).replace(microsecond=0)
        self._t0 = time.monotonic()
        self._offset = 0.0

    def now(self) -> float:
        """Sim seconds since the simulator started."""
        if self.frozen:
            return self._offset
        return self._offset + (time.monotonic() - self._t0) / self.time_scale

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds

    def real_seconds(self, sim_seconds: float) -> float:
        return sim_seconds * self.time_scale

    def retry_after(self, sim_seconds: float) -> int:
        """Retry-After header value for a wait of `sim_seconds`: integer real seconds, never below 1,
        as Graph sends it (so a compressed clock still never asks for a hot retry)."""
        return max(1, math.ceil(self.real_seconds(sim_seconds) - 1e-9))

    def datetime_at(self, t: float) -> datetime:
        return self.epoch + timedelta(seconds=t)

    def iso(self, t: float) -> str:
        """Graph's DateTimeOffset wire format, UTC with a Z."""
        return self.datetime_at(t).strftime("%Y-%m-%dT%H:%M:%SZ")
