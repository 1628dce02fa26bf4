"""Fault injection: the ways Graph misbehaves that a client must survive, deterministic with a seed.

A rule matches requests by kind ("read" = GET, "write" = POST, "any") and optionally by a path
substring; it fires with probability `rate` (drawn from one seeded generator, in request order) and at
most `count` times (None = unlimited). Effects, in order: `latency_seconds` (real seconds, not
scaled), then either `status` (503, 504, 429, ... with Graph's error body and, if given, Retry-After
in real seconds, NOT scaled by time_scale: a storm's Retry-After >= 180 must reach the client as is,
since msgraph-sdk gives up at once at >= 180 s) or `drop` (the connection is closed with no answer).
With `after_write`, a write is applied first and then answered with the fault ("a 429 whose write
nevertheless happened"; the SDK retries the POST). Rules are switched at run time from Python
(`sim.faults`) or POST /_sim/faults.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

KINDS = frozenset({"read", "write", "any"})


@dataclass(frozen=True, slots=True)
class FaultRule:
    kind: str = "any"
    status: int | None = None
    rate: float = 1.0
    count: int | None = None
    retry_after: int | None = None
    latency_seconds: float = 0.0
    drop: bool = False
    after_write: bool = False
    path_contains: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {self.rate}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"fault status must be an HTTP error status (4xx/5xx), got {self.status}")
        if self.after_write and self.kind == "read":
            raise ValueError("after_write applies to writes: use kind 'write' or 'any'")
        if self.count is not None and self.count < 0:
            raise ValueError("fault count must be >= 0 (None = unlimited)")

    # ---- the usual ones, by name
    @staticmethod
    def error(
        status: int = 503,
        *,
        kind: str = "any",
        rate: float = 1.0,
        count: int | None = None,
        retry_after: int | None = 1,
        path_contains: str | None = None,
    ) -> FaultRule:
        return FaultRule(kind, status, rate, count, retry_after, path_contains=path_contains, name=f"error-{status}")

    @staticmethod
    def storm(
        retry_after: int = 200,
        *,
        kind: str = "any",
        rate: float = 1.0,
        count: int | None = None,
        path_contains: str | None = None,
    ) -> FaultRule:
        """429s with a long Retry-After (>= 180 s: msgraph-sdk does not retry, the caller sees the 429)."""
        return FaultRule(kind, 429, rate, count, retry_after, path_contains=path_contains, name="429-storm")

    @staticmethod
    def write_then_429(
        *, retry_after: int = 1, rate: float = 1.0, count: int | None = 1, path_contains: str | None = "assignLicense"
    ) -> FaultRule:
        """Apply the write, then answer 429: the SDK retries the POST against the changed state."""
        return FaultRule(
            "write", 429, rate, count, retry_after, after_write=True, path_contains=path_contains, name="write-then-429"
        )

    @staticmethod
    def latency(seconds: float, *, kind: str = "any", rate: float = 1.0, count: int | None = None) -> FaultRule:
        return FaultRule(kind, None, rate, count, latency_seconds=seconds, name="latency")

    @staticmethod
    def dropped(
        *,
        kind: str = "any",
        rate: float = 1.0,
        count: int | None = None,
        after_write: bool = False,
        path_contains: str | None = None,
    ) -> FaultRule:
        return FaultRule(
            kind, None, rate, count, drop=True, after_write=after_write, path_contains=path_contains, name="drop"
        )

    @staticmethod
    def from_json(payload: Mapping[str, Any]) -> FaultRule:
        known = {f for f in FaultRule.__dataclass_fields__}
        unknown = set(payload) - known
        if unknown:
            raise ValueError(f"unknown fault rule field(s) {sorted(unknown)}; known: {sorted(known)}")
        return FaultRule(**dict(payload))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def matches(self, kind: str, path: str) -> bool:
        if self.kind != "any" and self.kind != kind:
            return False
        return self.path_contains is None or self.path_contains.lower() in path.lower()

    @property
    def terminal(self) -> bool:
        return self.status is not None or self.drop


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What the HTTP layer does to one request."""

    latency_seconds: float = 0.0
    rule: FaultRule | None = None
    """The terminal rule (status or drop), if any fired."""


class Faults:
    def __init__(self, rules: Iterable[FaultRule] = (), *, seed: int = 0, enabled: bool = True) -> None:
        self.seed = seed
        self._rng = random.Random(f"graphsim-faults:{seed}")
        self.rules: list[FaultRule] = list(rules)
        self.enabled = enabled
        self.fired: dict[str, int] = {}

    def set(self, rules: Iterable[FaultRule], *, seed: int | None = None) -> None:
        self.rules = list(rules)
        if seed is not None:
            self.seed = seed
            self._rng = random.Random(f"graphsim-faults:{seed}")

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()

    def plan(self, kind: str, path: str) -> FaultPlan:
        if not self.enabled or not self.rules:
            return FaultPlan()
        latency = 0.0
        terminal: FaultRule | None = None
        for index, rule in enumerate(self.rules):
            if rule.count == 0 or not rule.matches(kind, path):
                continue
            if rule.terminal and terminal is not None:
                continue
            if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                continue
            if rule.count is not None:
                self.rules[index] = rule = replace(rule, count=rule.count - 1)
            key = rule.name or ("drop" if rule.drop else f"status-{rule.status}" if rule.status else "latency")
            self.fired[key] = self.fired.get(key, 0) + 1
            latency += rule.latency_seconds
            if rule.terminal:
                terminal = rule
        return FaultPlan(latency, terminal)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "seed": self.seed,
            "rules": [r.to_json() for r in self.rules],
            "fired": dict(self.fired),
        }
