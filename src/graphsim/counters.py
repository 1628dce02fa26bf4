"""Request counters per endpoint ("GET /users/{id}", "POST /users/{id}/assignLicense", ...).

- requests: every request received under /v1.0 (a $batch counts once, and each inner request too),
- reads / writes: GET / POST requests that reached the tenant (not throttled, not failed by an
  injected fault before being applied),
- throttled: every 429 answered (quota or injected), with `throttled_quota` the quota ones,
- faults: injected faults (any effect), errors: any 4xx/5xx answered, by status.

The request log keeps every counted request in order (when, endpoint, concrete path, status), so a
test can measure timing: no call for a user before its Retry-After, writes per second across hosts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LOG_LIMIT = 200_000
"""Requests the log keeps (the oldest drop out): a few MB, enough for any test or demo run."""


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    at: datetime
    """Wall-clock time (UTC) the answer was counted."""
    endpoint: str
    path: str
    status: int
    write: bool
    """A write that reached the tenant (applied)."""


@dataclass(slots=True)
class EndpointCounts:
    requests: int = 0
    reads: int = 0
    writes: int = 0
    throttled: int = 0
    throttled_quota: int = 0
    faults: int = 0
    errors: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "reads": self.reads,
            "writes": self.writes,
            "throttled": self.throttled,
            "throttledQuota": self.throttled_quota,
            "faults": self.faults,
            "errors": {str(k): v for k, v in sorted(self.errors.items())},
        }


class Counters:
    def __init__(self) -> None:
        self.endpoints: dict[str, EndpointCounts] = {}
        self.log: deque[LoggedRequest] = deque(maxlen=LOG_LIMIT)

    def _get(self, endpoint: str) -> EndpointCounts:
        counts = self.endpoints.get(endpoint)
        if counts is None:
            counts = self.endpoints[endpoint] = EndpointCounts()
        return counts

    def record(
        self,
        endpoint: str,
        *,
        status: int,
        read: bool = False,
        write: bool = False,
        quota: bool = False,
        fault: bool = False,
        path: str = "",
    ) -> None:
        self.log.append(LoggedRequest(datetime.now(UTC), endpoint, path, status, write))
        counts = self._get(endpoint)
        counts.requests += 1
        if read:
            counts.reads += 1
        if write:
            counts.writes += 1
        if status == 429:
            counts.throttled += 1
        if quota:
            counts.throttled_quota += 1
        if fault:
            counts.faults += 1
        if status >= 400:
            counts.errors[status] = counts.errors.get(status, 0) + 1

    def total(self) -> EndpointCounts:
        out = EndpointCounts()
        for counts in self.endpoints.values():
            out.requests += counts.requests
            out.reads += counts.reads
            out.writes += counts.writes
            out.throttled += counts.throttled
            out.throttled_quota += counts.throttled_quota
            out.faults += counts.faults
            for status, n in counts.errors.items():
                out.errors[status] = out.errors.get(status, 0) + n
        return out

    @property
    def reads(self) -> int:
        return self.total().reads

    @property
    def writes(self) -> int:
        return self.total().writes

    @property
    def throttled(self) -> int:
        return self.total().throttled

    def endpoint(self, name: str) -> EndpointCounts:
        return self.endpoints.get(name) or EndpointCounts()

    def reset(self) -> None:
        self.endpoints.clear()
        self.log.clear()

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total().to_json(),
            "endpoints": {name: c.to_json() for name, c in sorted(self.endpoints.items())},
        }
