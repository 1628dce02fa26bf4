"""The "legacy automation" actor: the licensing script the customer keeps running during the
migration (Microsoft's procedure, step 1). Every `every_seconds` it gives a direct assignment of its
SKU to each target user who lacks a DIRECT one. It is naive on purpose: it does not look at
inherited assignments, so it re-adds the direct licenses licshift removed (drift).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LegacyTargets:
    """Who should have a license in the script's eyes; a user matching any entry is a target.
    `everyone` wins over the rest."""

    everyone: bool = False
    departments: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    """Direct user members of these groups."""
    users: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LegacySpec:
    sku_id: str
    disabled_plans: frozenset[str] = frozenset()
    every_seconds: float = 60.0
    targets: LegacyTargets = field(default_factory=LegacyTargets)
    enabled: bool = True


@dataclass(slots=True)
class LegacyStats:
    ticks: int = 0
    added: int = 0
    failed: int = 0
    last_error: str = ""

    def to_json(self) -> dict[str, object]:
        return {"ticks": self.ticks, "added": self.added, "failed": self.failed, "lastError": self.last_error}
