"""The names a wave's scan saw: group, SKU part numbers and service plan names (pure).

The scan records them in the data of its `scanned` wave-status event, so reports and the workbook show
names instead of GUIDs without reading Graph again, and show them as they were when the wave ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from licshift.ports.graph import GroupLicenseInfo
from licshift.rules.licenses import Sku
from licshift.rules.outcomes import Event

SCANNED_EVENT = "scanned"
"""WaveEvent.SCANNED's value: the wave-status event that carries the names."""


def scan_names(group: GroupLicenseInfo, skus: Iterable[Sku]) -> dict[str, Any]:
    """The names record as stored in the event data (compact: ids map to names)."""
    return {
        "group": group.display_name,
        "skus": {s.sku_id: {"part": s.part_number, "plans": {p.plan_id: p.name for p in s.plans}} for s in skus},
    }


@dataclass(frozen=True)
class Names:
    group: str = ""
    skus: Mapping[str, str] = field(default_factory=dict)
    """SKU id -> part number."""
    sku_plans: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """SKU id -> the ids of its user-assignable service plans."""
    plans: Mapping[str, str] = field(default_factory=dict)
    """Service plan id -> name."""

    def sku(self, sku_id: str) -> str:
        return self.skus.get(sku_id) or sku_id

    def plan(self, plan_id: str) -> str:
        return self.plans.get(plan_id) or plan_id

    @staticmethod
    def from_record(record: Mapping[str, Any]) -> Names:
        skus: dict[str, str] = {}
        sku_plans: dict[str, frozenset[str]] = {}
        plans: dict[str, str] = {}
        for sku_id, sku in (record.get("skus") or {}).items():
            if not isinstance(sku, Mapping):
                continue
            skus[str(sku_id)] = str(sku.get("part") or "")
            sku_plan_names = sku.get("plans") or {}
            sku_plans[str(sku_id)] = frozenset(str(p) for p in sku_plan_names)
            plans.update({str(p): str(n) for p, n in sku_plan_names.items() if n})
        return Names(str(record.get("group") or ""), skus, sku_plans, plans)

    @staticmethod
    def from_events(events: Iterable[Event]) -> Names:
        """The newest names record among a wave's events (none recorded: ids stay ids)."""
        newest: Event | None = None
        for event in events:
            if event.data.get("event") != SCANNED_EVENT or not isinstance(event.data.get("names"), Mapping):
                continue
            if newest is None or (event.at and newest.at and event.at > newest.at):
                newest = event
        return Names() if newest is None else Names.from_record(newest.data["names"])
