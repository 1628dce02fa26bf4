"""The oracle: every user's effective enabled service plans over time, and every moment a user had
less than just before (a lost plan or a lost SKU), with the time, the user, the SKU, what was lost
and the cause.

Causes start with a source prefix so a test can tell who did it:
- "graph:"    a Graph request (licshift's assignLicense calls, or group processing they triggered),
- "scenario:" the scenario itself: timed events, and mutations a test makes from Python or the
              admin path (removing a member, breaking a group assignment, ...),
- "legacy:"   the legacy automation actor.
Group processing carries the cause of the change that queued it (e.g. "scenario:remove_member ...").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphsim.licensing import Effective

GRAPH = "graph:"
SCENARIO = "scenario:"
LEGACY = "legacy:"


@dataclass(frozen=True, slots=True)
class Loss:
    at: float
    """Sim seconds since the simulator started."""
    timestamp: str
    user_id: str
    sku_id: str
    plans_lost: tuple[str, ...]
    plan_names: tuple[str, ...]
    sku_lost: bool
    """The user had the SKU from no providing source afterwards."""
    cause: str

    @property
    def source(self) -> str:
        """ "graph", "scenario" or "legacy"."""
        return self.cause.split(":", 1)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 6),
            "timestamp": self.timestamp,
            "userId": self.user_id,
            "skuId": self.sku_id,
            "plansLost": list(self.plans_lost),
            "planNames": list(self.plan_names),
            "skuLost": self.sku_lost,
            "cause": self.cause,
            "source": self.source,
        }


class Losses(list[Loss]):
    """A plain list of every loss, in order; call it to filter: `oracle.losses(cause_prefix="graph:")`."""

    def __call__(self, cause_prefix: str | None = None) -> list[Loss]:
        if cause_prefix is None:
            return list(self)
        return [loss for loss in self if loss.cause.startswith(cause_prefix)]


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    at: float
    plans: Effective
    cause: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 6),
            "plans": {sku: sorted(plans) for sku, plans in sorted(self.plans.items())},
            "cause": self.cause,
        }


class Oracle:
    def __init__(
        self,
        iso: Callable[[float], str],
        plan_name: Callable[[str, str], str],
        current: Callable[[str], Effective],
    ) -> None:
        self._iso = iso
        self._plan_name = plan_name
        self._current = current
        self.losses = Losses()
        self._timelines: dict[str, list[TimelinePoint]] = {}
        self.changes = 0

    def observe(self, at: float, user_id: str, before: Effective, after: Effective, cause: str) -> None:
        """Record a change of a user's effective plans (callers only call when before != after)."""
        self.changes += 1
        line = self._timelines.get(user_id)
        if line is None:
            line = self._timelines[user_id] = [TimelinePoint(0.0, before, "initial")]
        line.append(TimelinePoint(at, after, cause))
        for sku_id, had in before.items():
            now = after.get(sku_id)
            lost = had - now if now is not None else had
            if now is None or lost:
                plans = tuple(sorted(lost))
                self.losses.append(
                    Loss(
                        at=at,
                        timestamp=self._iso(at),
                        user_id=user_id,
                        sku_id=sku_id,
                        plans_lost=plans,
                        plan_names=tuple(self._plan_name(sku_id, p) for p in plans),
                        sku_lost=now is None,
                        cause=cause,
                    )
                )

    def timeline(self, user_id: str) -> list[TimelinePoint]:
        """The user's effective plans from the start: one point per change (one point if none)."""
        line = self._timelines.get(user_id)
        if line is None:
            return [TimelinePoint(0.0, self._current(user_id), "initial")]
        return list(line)

    def summary(self) -> dict[str, Any]:
        by_source: dict[str, int] = {}
        for loss in self.losses:
            by_source[loss.source] = by_source.get(loss.source, 0) + 1
        return {
            "losses": len(self.losses),
            "lossesBySource": by_source,
            "usersWithLosses": len({loss.user_id for loss in self.losses}),
            "changes": self.changes,
        }

    def to_json(self, cause_prefix: str | None = None) -> dict[str, Any]:
        return {"summary": self.summary(), "losses": [loss.to_json() for loss in self.losses(cause_prefix)]}
