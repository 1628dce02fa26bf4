"""SKUs, service plans and license assignment states, as Microsoft Graph returns them.

Pure types: no I/O. Every GUID is normalised to lower case so that comparisons never depend on how
Graph (or a human) spelled it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIVE = "Active"
# The values Graph documents for licenseAssignmentState.state; anything else is treated as not Active.
ASSIGNMENT_STATES = frozenset({"Active", "ActiveWithError", "Disabled", "Error"})

# Matched with fullmatch: `$` would also accept a trailing newline, which must never reach a URL (S7).
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class InvalidId(ValueError):
    """An identifier that is not a GUID where Graph expects one."""


def is_guid(value: object) -> bool:
    return isinstance(value, str) and bool(_GUID.fullmatch(value))


def guid(value: object, what: str = "id") -> str:
    """Return `value` as a lower-case GUID string, or raise InvalidId naming what was expected.

    Everything that ends up in a Graph URL or $filter passes through here first (S7).
    """
    if isinstance(value, uuid.UUID):
        return str(value)
    if not is_guid(value):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidId(f"{what} must be a GUID like 6fd2c87f-b296-42f0-b197-1e91e994b900, got {shown}")
    assert isinstance(value, str)
    return value.lower()


BLANK_ERROR = "(blank error)"
"""What an `error` of "" or only whitespace reads as: not a documented "no error" value, so an error."""


def normalise_error(error: object) -> str | None:
    """Graph documents `null` for "no error", but real payloads carry the string "None". Anything
    else is an error, a blank one included: S1 counts only on sources that say they have none."""
    if error is None:
        return None
    text = str(error).strip()
    if text == "":
        return BLANK_ERROR
    if text.lower() == "none":
        return None
    return text


@dataclass(frozen=True, slots=True)
class ServicePlan:
    plan_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Sku:
    """A subscribed SKU and the user-assignable service plans it contains."""

    sku_id: str
    part_number: str
    plans: tuple[ServicePlan, ...] = ()

    @property
    def plan_ids(self) -> frozenset[str]:
        return frozenset(p.plan_id for p in self.plans)

    def plan_name(self, plan_id: str) -> str:
        for plan in self.plans:
            if plan.plan_id == plan_id:
                return plan.name
        return plan_id

    def describe(self, plan_ids: Iterable[str]) -> tuple[ServicePlan, ...]:
        """The plans named by `plan_ids`, in a stable order, unknown ids kept by id."""
        return tuple(ServicePlan(p, self.plan_name(p)) for p in sorted(set(plan_ids)))

    @staticmethod
    def from_graph(payload: Mapping[str, Any]) -> Sku:
        """Build from one subscribedSku object (GET /subscribedSkus)."""
        plans = tuple(
            ServicePlan(guid(p["servicePlanId"], "servicePlanId"), str(p.get("servicePlanName") or ""))
            for p in payload.get("servicePlans") or ()
            if (p.get("appliesTo") or "User") == "User"
        )
        return Sku(
            sku_id=guid(payload["skuId"], "skuId"),
            part_number=str(payload.get("skuPartNumber") or ""),
            plans=plans,
        )


@dataclass(frozen=True, slots=True)
class LicenseAssignmentState:
    """One entry of user.licenseAssignmentStates: one SKU from one source (direct or one group)."""

    sku_id: str
    assigned_by_group: str | None
    disabled_plans: frozenset[str] = field(default_factory=frozenset)
    state: str = ACTIVE
    error: str | None = None

    @property
    def is_direct(self) -> bool:
        return self.assigned_by_group is None

    @property
    def is_healthy(self) -> bool:
        """Active and without error: the only kind of source S1 counts on."""
        return self.state == ACTIVE and self.error is None

    @staticmethod
    def from_graph(payload: Mapping[str, Any]) -> LicenseAssignmentState:
        group = payload.get("assignedByGroup")
        return LicenseAssignmentState(
            sku_id=guid(payload["skuId"], "skuId"),
            assigned_by_group=guid(group, "assignedByGroup") if group else None,
            disabled_plans=frozenset(guid(p, "disabledPlans") for p in payload.get("disabledPlans") or ()),
            state=str(payload.get("state") or ""),
            error=normalise_error(payload.get("error")),
        )

    def to_graph(self) -> dict[str, Any]:
        return {
            "skuId": self.sku_id,
            "assignedByGroup": self.assigned_by_group,
            "disabledPlans": sorted(self.disabled_plans),
            "state": self.state,
            "error": self.error or "None",
        }


@dataclass(frozen=True, slots=True)
class DirectAssignment:
    """What `addLicenses` needs to put a direct assignment back exactly as it was (S2, S3)."""

    sku_id: str
    disabled_plans: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        return {"skuId": self.sku_id, "disabledPlans": sorted(self.disabled_plans)}

    @staticmethod
    def from_json(payload: Mapping[str, Any]) -> DirectAssignment:
        return DirectAssignment(
            sku_id=guid(payload["skuId"], "skuId"),
            disabled_plans=frozenset(guid(p, "disabledPlans") for p in payload.get("disabledPlans") or ()),
        )


@dataclass(frozen=True, slots=True)
class GroupOptions:
    """A group a removal relied on, with the disabledPlans of the SKU its assignment showed then: the
    settle check compares them with the group's options later (S3 over time)."""

    group_id: str
    disabled_plans: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        return {"groupId": self.group_id, "disabledPlans": sorted(self.disabled_plans)}

    @staticmethod
    def from_json(payload: Mapping[str, Any]) -> GroupOptions:
        return GroupOptions(
            group_id=guid(payload["groupId"], "groupId"),
            disabled_plans=frozenset(guid(p, "disabledPlans") for p in payload.get("disabledPlans") or ()),
        )


def states_for(states: Iterable[LicenseAssignmentState], sku_id: str) -> tuple[LicenseAssignmentState, ...]:
    return tuple(s for s in states if s.sku_id == sku_id)


def direct_assignment(states: Iterable[LicenseAssignmentState], sku_id: str) -> DirectAssignment | None:
    """The user's direct assignment of `sku_id`, or None. Graph lists one direct entry per SKU; if a
    payload ever carried several, their enabled plans add up, so only plans disabled in every one of
    them count as disabled (the view under which a removal can lose the most).
    """
    direct = [s for s in states if s.sku_id == sku_id and s.is_direct]
    if not direct:
        return None
    disabled = frozenset.intersection(*(s.disabled_plans for s in direct))
    return DirectAssignment(sku_id, disabled)


def effective_plans(states: Iterable[LicenseAssignmentState], sku: Sku) -> frozenset[str]:
    """Enabled plans of `sku` the user actually has: the union over healthy sources."""
    enabled: set[str] = set()
    for s in states:
        if s.sku_id == sku.sku_id and s.is_healthy:
            enabled |= sku.plan_ids - s.disabled_plans
    return frozenset(enabled)


def has_effective_sku(states: Iterable[LicenseAssignmentState], sku_id: str) -> bool:
    return any(s.sku_id == sku_id and s.is_healthy for s in states)
