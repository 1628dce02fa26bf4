"""Readiness of a group and SKU for a wave, before anything is written (pure).

What stands in the way, in the order an admin fixes it: the group's license processing, seats, members
in license error, members the group cannot license (only in a nested group), plans the group disables
that direct holders use, and direct holders who are not members (they would be left behind). Each
member is decided by the same rule a wave uses, so the counts are what a dry run would record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from licshift.ports.graph import GroupLicenseInfo, UserLicenses
from licshift.rules.decide import PROCESSING_COMPLETE, Block, BlockReason, Policy, Remove, decide
from licshift.rules.fixes import ERROR_FIXES, fix_for
from licshift.rules.licenses import Sku, has_effective_sku

FIRST_NAMES = 5
"""Users named in a summary line; --details and --json list every one."""


@dataclass(frozen=True, slots=True)
class UserCheck:
    user_id: str
    user_principal_name: str
    decision: str
    """remove | skip | block, as the rule decides it now."""
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Readiness:
    group_id: str
    group_name: str
    processing_state: str
    sku_id: str
    sku_name: str
    members: int
    seats_enabled: int | None
    seats_consumed: int | None
    seats_needed: int
    """Members who hold no working license of the SKU yet: each takes a seat when the group licenses them."""
    errors: dict[str, list[str]] = field(default_factory=dict)
    """Graph error code of the group's assignment -> members (UPN or id)."""
    nested_only: list[str] = field(default_factory=list)
    outside_direct: list[str] = field(default_factory=list)
    """Users holding the SKU directly who are not members: a wave on this group leaves them behind."""
    plan_unlocks: list[tuple[str, int]] = field(default_factory=list)
    """(plan name, users) for plans that alone block users: enabling it on the group unblocks them."""
    users: list[UserCheck] = field(default_factory=list)

    @property
    def by_reason(self) -> Counter[str]:
        return Counter(u.reason or u.decision for u in self.users)

    @property
    def seat_shortage(self) -> int:
        if self.seats_enabled is None or self.seats_consumed is None:
            return 0
        return max(0, self.seats_needed - (self.seats_enabled - self.seats_consumed))

    @property
    def blocked(self) -> int:
        return sum(1 for u in self.users if u.decision == "block")

    @property
    def ready(self) -> bool:
        return self.processing_state == PROCESSING_COMPLETE and not self.seat_shortage and not self.blocked

    def next_step(self) -> str:
        group, sku = self.group_name or self.group_id, self.sku_name or self.sku_id
        if self.processing_state != PROCESSING_COMPLETE:
            return f"wait until {group} finishes license processing (now {self.processing_state or 'unknown'})"
        if self.seat_shortage:
            return f"add {self.seat_shortage} seat(s) of {sku} (or take users out of {group}), then reprocess"
        if self.errors:
            code, users = max(self.errors.items(), key=lambda kv: len(kv[1]))
            return f"{len(users)} member(s) in {code}: {ERROR_FIXES.get(code) or fix_for('blocked', code)}"
        if self.plan_unlocks:
            plan, unlocked = self.plan_unlocks[0]
            return f"enable {plan} on {group} and {unlocked} more user(s) can be migrated"
        if self.blocked:
            reason, count = Counter(u.reason for u in self.users if u.decision == "block").most_common(1)[0]
            return f"{count} user(s) blocked by {reason}: {fix_for('blocked', reason)}"
        return f"ready: record a plan with `licshift plan --group {self.group_id} --sku {sku}`, then start a canary"


def assess(
    group: GroupLicenseInfo,
    sku: Sku,
    members: Iterable[UserLicenses],
    *,
    seats: tuple[int, int] | None = None,
    nested_only: Iterable[UserLicenses] = (),
    direct_holders: Iterable[UserLicenses] = (),
    policy: Policy = Policy.NO_LOSS,
) -> Readiness:
    """`members`: the group's direct user members; `seats`: (enabled, consumed) of the SKU;
    `direct_holders`: users holding the SKU directly (members among them are ignored)."""
    state = group.processing_state or ""
    users: list[UserCheck] = []
    errors: dict[str, list[str]] = {}
    needed = 0
    single_plan: Counter[str] = Counter()
    member_ids: set[str] = set()
    for user in members:
        member_ids.add(user.user_id)
        name = user.user_principal_name or user.user_id
        if not has_effective_sku(user.states, sku.sku_id):
            needed += 1
        for s in user.states:
            if s.sku_id == sku.sku_id and s.assigned_by_group == group.group_id and s.error:
                errors.setdefault(s.error, []).append(name)
        check, only_plan = _user_check(user, name, sku, group.group_id, state, policy)
        users.append(check)
        if only_plan:
            single_plan[only_plan] += 1
    nested = {u.user_id: u.user_principal_name or u.user_id for u in nested_only if u.user_id not in member_ids}
    return Readiness(
        group_id=group.group_id,
        group_name=group.display_name,
        processing_state=state,
        sku_id=sku.sku_id,
        sku_name=sku.part_number,
        members=len(member_ids),
        seats_enabled=seats[0] if seats else None,
        seats_consumed=seats[1] if seats else None,
        seats_needed=needed,
        errors={code: sorted(names) for code, names in sorted(errors.items())},
        nested_only=sorted(nested.values()),
        outside_direct=sorted(
            u.user_principal_name or u.user_id
            for u in direct_holders
            if u.user_id not in member_ids
            and u.user_id not in nested  # listed once, under the fix that applies to them
            and any(s.is_direct and s.sku_id == sku.sku_id for s in u.states)
        ),
        plan_unlocks=sorted(single_plan.items(), key=lambda kv: (-kv[1], kv[0])),
        users=users,
    )


def _user_check(
    user: UserLicenses, name: str, sku: Sku, group_id: str, state: str, policy: Policy
) -> tuple[UserCheck, str]:
    """The user's decision as a wave would make it, and the one plan that alone blocks them ("" if not
    exactly one: enabling it in the group would unlock them)."""
    decision = decide(user.states, sku, group_id, policy, group_processing_state=state)
    if isinstance(decision, Remove):
        return UserCheck(user.user_id, name, "remove"), ""
    only_plan = ""
    if isinstance(decision, Block) and decision.reason == BlockReason.PLANS_WOULD_BE_LOST and len(decision.plans) == 1:
        only_plan = decision.plans[0].name or decision.plans[0].plan_id
    detail = decision.detail if isinstance(decision, Block) else ""
    kind = "block" if isinstance(decision, Block) else "skip"
    return UserCheck(user.user_id, name, kind, decision.reason.value, detail), only_plan
