"""Graph's throttling for the identity and access service (docs/graph.md §2):

- a resource-unit (RU) token bucket per app + tenant, sized by tenant: S (< 50 users) 3,500 RU,
  M (50-500) 5,000 RU, L (> 500) 8,000 RU per 10 s, refilled continuously;
- a write quota of 3,000 writes per 150 s per app + tenant and 18,000 per 5 min per tenant (all apps),
  as sliding windows.

Request costs: GET users 2, GET group members 3, GET subscribedSkus 3, any other GET 1; $select -1,
$expand +1, $top < 20 -1, never below 1. Any other POST/PATCH/PUT/DELETE: 1 RU + 1 write.
A throttled request still spends its RU (Graph: throttled requests count against usage), so hot
retries only dig deeper.

All windows are in sim seconds (see clock.py); Retry-After is converted to real seconds, integer,
at least 1.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

DEFAULT_APP = "00000000-0000-0000-0000-00000000a99e"
"""The app id used when a request carries no token with an appid/azp claim."""


@dataclass(frozen=True, slots=True)
class ThrottleLimits:
    ru_per_window: int = 8_000
    ru_window_seconds: float = 10.0
    app_writes: int = 3_000
    app_write_window_seconds: float = 150.0
    tenant_writes: int = 18_000
    tenant_write_window_seconds: float = 300.0
    enabled: bool = True

    @staticmethod
    def for_tenant_size(users: int) -> ThrottleLimits:
        if users < 50:
            return ThrottleLimits(ru_per_window=3_500)
        if users <= 500:
            return ThrottleLimits(ru_per_window=5_000)
        return ThrottleLimits(ru_per_window=8_000)


def request_cost(base: int, *, select: bool, expand: bool, top: int | None) -> int:
    cost = base
    if select:
        cost -= 1
    if expand:
        cost += 1
    if top is not None and top < 20:
        cost -= 1
    return max(cost, 1)


@dataclass(frozen=True, slots=True)
class Rejection:
    wait_seconds: float
    """Sim seconds until the request would be admitted."""
    scope: str
    """x-ms-throttle-scope: e.g. "Tenant_Application/ReadWrite/<app>/<tenant>"."""
    information: str
    """x-ms-throttle-information: ResourceUnitLimitExceeded or WriteLimitExceeded."""


@dataclass(frozen=True, slots=True)
class Admission:
    usage: float
    """Share of the tightest quota in use after this request (Graph reports it above 0.8)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class ThrottleStats:
    admitted: int = 0
    rejected_ru: int = 0
    rejected_writes: int = 0
    external_writes: int = 0
    by_app: dict[str, int] = field(default_factory=dict)


class Throttle:
    def __init__(self, limits: ThrottleLimits, tenant_id: str) -> None:
        self.limits = limits
        self.tenant_id = tenant_id
        self._buckets: dict[str, _Bucket] = {}
        self._app_writes: dict[str, deque[float]] = {}
        self._tenant_writes: deque[float] = deque()
        self.stats = ThrottleStats()

    def _bucket(self, app: str, now: float) -> _Bucket:
        limits = self.limits
        bucket = self._buckets.get(app)
        if bucket is None:
            bucket = self._buckets[app] = _Bucket(float(limits.ru_per_window), now)
        elapsed = max(now - bucket.at, 0.0)
        rate = limits.ru_per_window / limits.ru_window_seconds
        bucket.tokens = min(float(limits.ru_per_window), bucket.tokens + elapsed * rate)
        bucket.at = now
        return bucket

    @staticmethod
    def _trim(log: deque[float], now: float, window: float) -> None:
        while log and log[0] <= now - window:
            log.popleft()

    def admit(self, app: str, ru: int, write: bool, now: float) -> Admission | Rejection:
        limits = self.limits
        if not limits.enabled:
            return Admission(0.0)
        kind = "ReadWrite" if write else "Read"
        bucket = self._bucket(app, now)
        app_log = self._app_writes.setdefault(app, deque())
        if write:
            self._trim(app_log, now, limits.app_write_window_seconds)
            self._trim(self._tenant_writes, now, limits.tenant_write_window_seconds)
            if len(app_log) >= limits.app_writes:
                self._spend(bucket, ru)
                self.stats.rejected_writes += 1
                wait = app_log[len(app_log) - limits.app_writes] + limits.app_write_window_seconds - now
                return Rejection(wait, self._scope("Tenant_Application", "Write", app), "WriteLimitExceeded")
            if len(self._tenant_writes) >= limits.tenant_writes:
                self._spend(bucket, ru)
                self.stats.rejected_writes += 1
                log = self._tenant_writes
                wait = log[len(log) - limits.tenant_writes] + limits.tenant_write_window_seconds - now
                return Rejection(wait, self._scope("Tenant", "Write", app), "WriteLimitExceeded")
        if bucket.tokens < ru:
            self._spend(bucket, ru)
            self.stats.rejected_ru += 1
            rate = limits.ru_per_window / limits.ru_window_seconds
            wait = (ru - bucket.tokens) / rate
            return Rejection(wait, self._scope("Tenant_Application", kind, app), "ResourceUnitLimitExceeded")
        bucket.tokens -= ru
        if write:
            app_log.append(now)
            self._tenant_writes.append(now)
        self.stats.admitted += 1
        self.stats.by_app[app] = self.stats.by_app.get(app, 0) + 1
        usage = 1.0 - bucket.tokens / limits.ru_per_window
        if write:
            usage = max(usage, len(app_log) / limits.app_writes, len(self._tenant_writes) / limits.tenant_writes)
        return Admission(usage)

    @staticmethod
    def _spend(bucket: _Bucket, ru: int) -> None:
        bucket.tokens = max(bucket.tokens - ru, 0.0)

    def record_external_write(self, now: float) -> None:
        """A write by another app (the legacy script) that counts against the tenant-wide quota."""
        if not self.limits.enabled:
            return
        self._trim(self._tenant_writes, now, self.limits.tenant_write_window_seconds)
        self._tenant_writes.append(now)
        self.stats.external_writes += 1

    def _scope(self, scope: str, kind: str, app: str) -> str:
        return f"{scope}/{kind}/{app}/{self.tenant_id}"


def limit_percentage(usage: float) -> str | None:
    """x-ms-throttle-limit-percentage: sent only above 80 % of a quota."""
    if usage <= 0.8:
        return None
    return f"{math.floor(usage * 100) / 100:.2f}"
