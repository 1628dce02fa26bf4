"""The decision rule: may the direct assignment of one SKU be removed from one user? (pure)

This is safety contract S1 as code. With D the disabledPlans of the direct assignment and G1..Gn the
disabledPlans of every Active, error-free inherited assignment of the SKU, removing the direct
assignment loses nothing iff (G1 ∩ ... ∩ Gn) ⊆ D: a plan survives the removal iff some remaining
source enables it.

The function never performs I/O. It is called twice per user: when the wave is planned (scan) and
again on a fresh read right before the removal (the remover). The remover also passes the
licenseProcessingState of every relied-on group (the wave's and each one whose healthy assignment
the proof counts): while one of them processes, members' entries may still show its old options,
so the user is held. The full contract: docs/safety.md.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from licshift.rules.licenses import GroupOptions, LicenseAssignmentState, ServicePlan, Sku, direct_assignment


class Policy(enum.StrEnum):
    NO_LOSS = "no-loss"
    """Remove when the user's effective plans for the SKU cannot shrink (default)."""
    IDENTICAL = "identical"
    """Also require the inherited assignments to enable exactly the plans the direct one enables."""


class SkipReason(enum.StrEnum):
    """Nothing to do for this user; not a safety concern."""

    NOT_SELECTED = "not-selected"
    """The user is a member of the group but outside the wave's selection."""
    NO_DIRECT_ASSIGNMENT = "no-direct-assignment"
    """The user has no direct assignment of the SKU (already migrated, or never had one)."""


class BlockReason(enum.StrEnum):
    """Removing would be unsafe or cannot yet be proven safe; the direct assignment stays."""

    GROUP_PROCESSING_INCOMPLETE = "group-processing-incomplete"
    """The group's licenseProcessingState is not ProcessingComplete: wait (detail: the state)."""
    NOT_INHERITED_FROM_GROUP = "not-inherited-from-group"
    """The SKU is not inherited from the wave's group (detail: the groups it is inherited from, if any)."""
    INHERITED_ERROR = "inherited-error"
    """The assignment from the wave's group carries a Graph error (detail: the error code)."""
    INHERITED_NOT_ACTIVE = "inherited-not-active"
    """The assignment from the wave's group is not Active (detail: the state)."""
    RELIED_ON_GROUP_PROCESSING = "relied-on-group-processing"
    """A hold, not a final block: a group the proof relies on is not ProcessingComplete (detail: the
    group and its state). The user is retried once it has finished; never removed meanwhile."""
    PLANS_WOULD_BE_LOST = "plans-would-be-lost"
    """A plan enabled by the direct assignment is enabled by no healthy inherited one (plans listed)."""
    PLANS_DIFFER = "plans-differ"
    """Policy `identical` only: the inherited assignments enable plans the direct one does not."""


@dataclass(frozen=True, slots=True)
class Remove:
    sku_id: str
    disabled_plans: frozenset[str]
    """The direct assignment being removed: the snapshot a restore puts back."""
    relied_on: tuple[GroupOptions, ...] = field(default=(), compare=False)
    """The groups the proof counted (the wave's first, then by id) with the options each showed; not
    part of the decision's identity."""


@dataclass(frozen=True, slots=True)
class Skip:
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class Block:
    reason: BlockReason
    detail: str
    plans: tuple[ServicePlan, ...] = ()


Decision = Remove | Skip | Block

PROCESSING_COMPLETE = "ProcessingComplete"
HOLD_REASONS = frozenset({BlockReason.RELIED_ON_GROUP_PROCESSING})
"""Blocks that are not final: the user is retried later."""


def relied_on_groups(
    license_states: Iterable[LicenseAssignmentState], sku_id: str, wave_group: str
) -> tuple[GroupOptions, ...]:
    """The wave's group and every group with a healthy inherited assignment of `sku_id`, each with
    the disabledPlans the proof counts for it (two entries from one group: the intersection)."""
    wave_group = wave_group.lower()
    disabled: dict[str, frozenset[str]] = {}
    for s in license_states:
        if s.sku_id == sku_id and s.assigned_by_group and s.is_healthy:
            seen = disabled.get(s.assigned_by_group)
            disabled[s.assigned_by_group] = s.disabled_plans if seen is None else seen & s.disabled_plans
    ordered = sorted(disabled, key=lambda g: (g != wave_group, g))
    out = tuple(GroupOptions(g, disabled[g]) for g in ordered)
    return out if wave_group in disabled else (GroupOptions(wave_group, frozenset()), *out)


def _processing_hold(relied_on: tuple[GroupOptions, ...], group_states: Mapping[str, str]) -> Block | None:
    for group in relied_on:
        state = group_states.get(group.group_id)
        if state != PROCESSING_COMPLETE:
            return Block(BlockReason.RELIED_ON_GROUP_PROCESSING, f"group {group.group_id} is {state or 'unknown'}")
    return None


def decide(
    license_states: Iterable[LicenseAssignmentState],
    sku: Sku,
    wave_group: str,
    policy: Policy = Policy.NO_LOSS,
    *,
    selected: bool = True,
    group_processing_state: str = PROCESSING_COMPLETE,
    group_states: Mapping[str, str] | None = None,
) -> Decision:
    """Decide for one user and one SKU. `license_states` is the user's licenseAssignmentStates
    (all SKUs; other SKUs are ignored), `wave_group` the lower-case id of the wave's group.
    `group_states` (group id -> licenseProcessingState) must cover every relied-on group when given
    (a missing one counts as not complete); None skips that check (the scan, which holds at enqueue).
    """
    if not selected:
        return Skip(SkipReason.NOT_SELECTED)
    wave_group = wave_group.lower()  # ids from Graph are normalised; a caller's must not block everyone
    states = tuple(s for s in license_states if s.sku_id == sku.sku_id)
    direct = direct_assignment(states, sku.sku_id)
    if direct is None:
        return Skip(SkipReason.NO_DIRECT_ASSIGNMENT)
    if group_processing_state != PROCESSING_COMPLETE:
        return Block(BlockReason.GROUP_PROCESSING_INCOMPLETE, group_processing_state or "unknown")

    inherited = [s for s in states if not s.is_direct]
    unfit = _wave_group_unfit(inherited, wave_group)
    if unfit is not None:
        return unfit

    relied_on = relied_on_groups(states, sku.sku_id, wave_group)
    if group_states is not None:
        hold = _processing_hold(relied_on, group_states)
        if hold is not None:
            return hold
    healthy = [s for s in inherited if s.is_healthy]
    still_disabled = frozenset.intersection(*(s.disabled_plans for s in healthy))
    lost = still_disabled - direct.disabled_plans
    if lost:
        plans = sku.describe(lost)
        return Block(BlockReason.PLANS_WOULD_BE_LOST, ", ".join(p.name or p.plan_id for p in plans), plans)
    # `==`, not `is`: a policy read back from storage as a plain string must not weaken to no-loss.
    if policy == Policy.IDENTICAL:
        # Compare within the SKU's plans: a stale id outside the SKU enables nothing either way.
        extra = (direct.disabled_plans - still_disabled) & sku.plan_ids
        if extra:
            plans = sku.describe(extra)
            return Block(BlockReason.PLANS_DIFFER, ", ".join(p.name or p.plan_id for p in plans), plans)
    return Remove(sku.sku_id, direct.disabled_plans, relied_on)


def _wave_group_unfit(inherited: list[LicenseAssignmentState], wave_group: str) -> Block | None:
    """Why the wave's group cannot carry the SKU for this user, or None: it must be a source, and
    every entry from it healthy."""
    from_wave_group = [s for s in inherited if s.assigned_by_group == wave_group]
    if not from_wave_group:
        others = sorted({s.assigned_by_group for s in inherited if s.assigned_by_group})
        detail = "inherited from " + ", ".join(others) if others else "not inherited from any group"
        return Block(BlockReason.NOT_INHERITED_FROM_GROUP, detail)
    unhealthy = [s for s in from_wave_group if not s.is_healthy]
    if not unhealthy:
        return None
    # Every entry from the wave's group must be healthy: two that disagree (one healthy, one not)
    # leave it open which one Entra acts on, and the proof may not pick the convenient one.
    # Report the most telling problem: an error code beats a bare state. Sorted and joined, so the
    # detail never depends on the order Graph listed the entries in.
    errors = sorted({s.error for s in unhealthy if s.error is not None})
    if errors:
        return Block(BlockReason.INHERITED_ERROR, ", ".join(errors))
    not_active = sorted({s.state or "unknown" for s in unhealthy})
    return Block(BlockReason.INHERITED_NOT_ACTIVE, ", ".join(not_active))


def lost_plans(before: frozenset[str], after: frozenset[str]) -> frozenset[str]:
    """Plans enabled before and not after: what the post-removal check (S3) looks for."""
    return before - after
