"""The licensing rules of Entra ID as graphsim models them (pure): SKUs and plans, direct and
inherited assignments, what a user effectively has, and which configured rule an assignment breaks.

- A source (direct assignment, or one group's assignment) enables plans(sku) - disabledPlans.
- The user's effective plans of a SKU are the union over *providing* sources: direct ones, and
  inherited ones whose state is Active or ActiveWithError (an entry in Error gives nothing).
- A user consumes one seat of a SKU if any providing source assigns it, however many there are.
- Rules come from the scenario: mutually exclusive plan pairs, plan dependencies (a plan needs at
  least one of a set of plans), plans prohibited in some usage locations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ACTIVE = "Active"
ACTIVE_WITH_ERROR = "ActiveWithError"
ERROR = "Error"
DISABLED = "Disabled"
STATES = frozenset({ACTIVE, ACTIVE_WITH_ERROR, ERROR, DISABLED})
PROVIDING_STATES = frozenset({ACTIVE, ACTIVE_WITH_ERROR})

COUNT_VIOLATION = "CountViolation"
MUTUALLY_EXCLUSIVE_VIOLATION = "MutuallyExclusiveViolation"
DEPENDENCY_VIOLATION = "DependencyViolation"
PROHIBITED_IN_USAGE_LOCATION_VIOLATION = "ProhibitedInUsageLocationViolation"
UNIQUENESS_VIOLATION = "UniquenessViolation"
OTHER = "Other"
ERROR_CODES = frozenset(
    {
        COUNT_VIOLATION,
        MUTUALLY_EXCLUSIVE_VIOLATION,
        DEPENDENCY_VIOLATION,
        PROHIBITED_IN_USAGE_LOCATION_VIOLATION,
        UNIQUENESS_VIOLATION,
        OTHER,
    }
)

QUEUED = "QueuedForProcessing"
IN_PROGRESS = "ProcessingInProgress"
COMPLETE = "ProcessingComplete"


@dataclass(frozen=True, slots=True)
class PlanInfo:
    plan_id: str
    name: str
    service: str = ""
    applies_to: str = "User"


@dataclass(frozen=True, slots=True)
class SkuInfo:
    sku_id: str
    part_number: str
    plans: tuple[PlanInfo, ...]
    applies_to: str = "User"
    capability_status: str = "Enabled"
    plan_ids: frozenset[str] = field(default=frozenset(), compare=False)
    """User-assignable plan ids; filled by `make`."""

    @staticmethod
    def make(
        sku_id: str, part_number: str, plans: Iterable[PlanInfo], applies_to: str = "User", capability: str = "Enabled"
    ) -> SkuInfo:
        plans = tuple(plans)
        user_plans = frozenset(p.plan_id for p in plans if p.applies_to == "User")
        return SkuInfo(sku_id, part_number, plans, applies_to, capability, user_plans)

    def enabled(self, disabled: frozenset[str]) -> frozenset[str]:
        return self.plan_ids - disabled

    def plan_name(self, plan_id: str) -> str:
        for plan in self.plans:
            if plan.plan_id == plan_id:
                return plan.name
        return plan_id


@dataclass(frozen=True, slots=True)
class Rules:
    conflicts: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """plan -> plans it cannot be combined with (symmetric)."""
    dependencies: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """plan -> plans of which at least one must also be enabled."""
    prohibited: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """plan -> usage locations (ISO 3166 alpha-2) where it may not be assigned."""

    @staticmethod
    def make(
        exclusive_pairs: Iterable[tuple[str, str]] = (),
        dependencies: Mapping[str, Iterable[str]] | None = None,
        prohibited: Mapping[str, Iterable[str]] | None = None,
    ) -> Rules:
        conflicts: dict[str, set[str]] = {}
        for a, b in exclusive_pairs:
            conflicts.setdefault(a, set()).add(b)
            conflicts.setdefault(b, set()).add(a)
        return Rules(
            {k: frozenset(v) for k, v in conflicts.items()},
            {k: frozenset(v) for k, v in (dependencies or {}).items()},
            {k: frozenset(x.upper() for x in v) for k, v in (prohibited or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class DirectLicense:
    sku_id: str
    disabled: frozenset[str]
    updated_at: float


@dataclass(frozen=True, slots=True)
class InheritedLicense:
    sku_id: str
    group_id: str
    disabled: frozenset[str]
    state: str
    error: str | None
    updated_at: float

    @property
    def providing(self) -> bool:
        return self.state in PROVIDING_STATES

    def same_outcome(self, other: InheritedLicense) -> bool:
        return (
            self.sku_id == other.sku_id
            and self.disabled == other.disabled
            and self.state == other.state
            and self.error == other.error
        )


Effective = dict[str, frozenset[str]]
"""sku id -> enabled plan ids, for every SKU the user effectively has."""


def effective(
    direct: Iterable[DirectLicense], inherited: Iterable[InheritedLicense], skus: Mapping[str, SkuInfo]
) -> Effective:
    out: dict[str, frozenset[str]] = {}
    for d in direct:
        sku = skus.get(d.sku_id)
        if sku is not None:
            out[d.sku_id] = out.get(d.sku_id, frozenset()) | sku.enabled(d.disabled)
    for e in inherited:
        if e.state in PROVIDING_STATES:
            sku = skus.get(e.sku_id)
            if sku is not None:
                out[e.sku_id] = out.get(e.sku_id, frozenset()) | sku.enabled(e.disabled)
    return out


def consumed_skus(direct: Iterable[DirectLicense], inherited: Iterable[InheritedLicense]) -> frozenset[str]:
    skus = {d.sku_id for d in direct}
    skus.update(e.sku_id for e in inherited if e.state in PROVIDING_STATES)
    return frozenset(skus)


def all_plans(eff: Effective) -> frozenset[str]:
    out: set[str] = set()
    for plans in eff.values():
        out |= plans
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Violation:
    code: str
    plan: str = ""
    others: tuple[str, ...] = ()
    location: str | None = None


def find_violation(
    new_plans: frozenset[str], other_plans: frozenset[str], location: str, rules: Rules
) -> Violation | None:
    """The first rule that adding `new_plans` to a user who already has `other_plans` breaks."""
    for plan in sorted(rules.prohibited.keys() & new_plans):
        if location in rules.prohibited[plan]:
            return Violation(PROHIBITED_IN_USAGE_LOCATION_VIOLATION, plan, location=location)
    combined = new_plans | other_plans
    for plan in sorted(rules.conflicts.keys() & new_plans):
        clash = rules.conflicts[plan] & combined
        if clash:
            return Violation(MUTUALLY_EXCLUSIVE_VIOLATION, plan, tuple(sorted(clash)))
    for plan in sorted(rules.dependencies.keys() & new_plans):
        required = rules.dependencies[plan]
        if not required & combined:
            return Violation(DEPENDENCY_VIOLATION, plan, tuple(sorted(required)))
    return None


def broken_dependency(before: frozenset[str], after: frozenset[str], rules: Rules) -> Violation | None:
    """A plan the user keeps whose dependency held before and would not hold after a removal."""
    for plan in sorted(after):
        required = rules.dependencies.get(plan)
        if required and required & before and not required & after:
            return Violation(DEPENDENCY_VIOLATION, plan, tuple(sorted(required)))
    return None
