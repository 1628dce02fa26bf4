"""What an admin does about each outcome reason, in the words of the Entra admin center (pure).

One table for every place that explains a block, a skip or a failure (the HTML report's reason chart,
and any command that summarises reasons), so the advice is written once.
"""

from __future__ import annotations

from licshift.rules.decide import BlockReason, SkipReason

USER_NOT_FOUND = "user-not-found"

REASON_FIXES: dict[str, str] = {
    SkipReason.NOT_SELECTED: "Nothing to do: outside this wave's selection; a later wave covers them.",
    SkipReason.NO_DIRECT_ASSIGNMENT: "Nothing to do: no direct license of this SKU (already on group licensing).",
    USER_NOT_FOUND: "Check the user: the id or UPN was not found in the tenant (deleted or mistyped).",
    BlockReason.GROUP_PROCESSING_INCOMPLETE: (
        "Wait until the group's license processing finishes (Entra admin center > Groups > the group > "
        "Licenses), then start a new wave."
    ),
    BlockReason.NOT_INHERITED_FROM_GROUP: (
        "Make the user a direct member of the group (members of nested groups get no license from it), "
        "or migrate them with the group they inherit from."
    ),
    BlockReason.INHERITED_ERROR: (
        "Fix the group's license error for these users (Entra admin center > Groups > the group > "
        "Licenses), reprocess them, then start a new wave."
    ),
    BlockReason.INHERITED_NOT_ACTIVE: (
        "Wait until the group's license is Active for these users, then start a new wave."
    ),
    BlockReason.PLANS_WOULD_BE_LOST: (
        "Enable the named service plans in the group's license assignment (or disable them on the users' "
        "direct license if they are not needed), then start a new wave."
    ),
    BlockReason.PLANS_DIFFER: (
        "Policy 'identical': the group enables plans the direct license does not. Disable them on the "
        "group, or use policy no-loss."
    ),
}

ERROR_FIXES: dict[str, str] = {
    "CountViolation": (
        "Not enough seats: buy licenses or free seats (Microsoft 365 admin center > Billing > Licenses), "
        "then reprocess the users."
    ),
    "MutuallyExclusiveViolation": (
        "Another license of the user conflicts with a plan the group enables: disable that plan on the group "
        "or remove the conflicting license, then reprocess."
    ),
    "DependencyViolation": "A plan the group enables needs another plan: enable the plan it depends on.",
    "ProhibitedInUsageLocationViolation": (
        "The service is not offered in the user's usage location: set the right usage location on the user, "
        "then reprocess."
    ),
    "UniquenessViolation": "Proxy address conflict (Exchange): fix the duplicate address, then reprocess.",
}

STATUS_FIXES: dict[str, str] = {
    "failed": (
        "Graph refused the removal (error in the row); the direct license is still in place. Fix the cause, "
        "then start a new wave on the group (users already migrated are skipped)."
    ),
    "restored": (
        "The check right after the removal found a lost service plan and put the license back; the wave "
        "halted. Fix the group's plans, then start a new wave."
    ),
    "not-attempted": "The wave stopped before this removal: start a new wave on the group.",
    "rolled-back": "A rollback put the recorded direct license back, as asked.",
}


def fix_for(status: str, reason: str, detail: str = "") -> str:
    """The next step for one outcome; "" when nothing is to be done (removed, in progress)."""
    if reason == BlockReason.INHERITED_ERROR:
        for code in detail.split(", "):
            if code in ERROR_FIXES:
                return ERROR_FIXES[code]
    if reason in REASON_FIXES:
        return REASON_FIXES[reason]
    return STATUS_FIXES.get(status, "")
