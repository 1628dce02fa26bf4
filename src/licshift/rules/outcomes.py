"""Outcome records: one per wave, user and SKU, from the scan's decision to the final result (pure).

Together with the events they are the ledger of S6: who, what, why, before and after state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from licshift.rules.licenses import DirectAssignment, GroupOptions


class OutcomeStatus(enum.StrEnum):
    PLANNED = "planned"
    """The scan decided Remove; not enqueued yet (a dry run's Remove rows stay here)."""
    ENQUEUED = "enqueued"
    """A removal message is on the queue."""
    REMOVING = "removing"
    """The snapshot is recorded and the removal may have reached Graph (crash-safe marker, S4)."""
    REMOVED = "removed"
    """Final: the direct assignment is gone and the post-check proved nothing was lost."""
    RESTORED = "restored"
    """Final: the post-check found a loss; the snapshot was put back and the wave halted (S3)."""
    BLOCKED = "blocked"
    """Final: the decision rule blocked (at scan or on the fresh read)."""
    SKIPPED = "skipped"
    """Final: nothing to do (no direct assignment, not selected)."""
    FAILED = "failed"
    """Final: Graph refused or kept failing; the direct assignment is still in place."""
    NOT_ATTEMPTED = "not-attempted"
    """Final: the wave was cancelled or halted before this removal ran."""
    ROLLED_BACK = "rolled-back"
    """Final: a rollback put the recorded direct assignment back."""


FINAL_OUTCOMES = frozenset(
    {
        OutcomeStatus.REMOVED,
        OutcomeStatus.RESTORED,
        OutcomeStatus.BLOCKED,
        OutcomeStatus.SKIPPED,
        OutcomeStatus.FAILED,
        OutcomeStatus.NOT_ATTEMPTED,
        OutcomeStatus.ROLLED_BACK,
    }
)


def outcome_key(user_id: str, sku_id: str) -> str:
    """RowKey of an outcome: stable, sortable, unique per user and SKU within a wave."""
    return f"{user_id}_{sku_id}"


@dataclass(frozen=True, slots=True)
class Outcome:
    wave_id: str
    user_id: str
    sku_id: str
    status: OutcomeStatus
    decision: str
    """remove | skip | block: the latest decision of the rule for this user and SKU."""
    reason: str = ""
    detail: str = ""
    user_principal_name: str = ""
    display_name: str = ""
    """Recorded at the scan so reports name people without reading Graph again."""
    snapshot: DirectAssignment | None = None
    """The direct assignment as read right before removal: what a restore or rollback puts back."""
    before_plans: frozenset[str] = frozenset()
    after_plans: frozenset[str] = frozenset()
    attempts: int = 0
    graph_error: str = ""
    actor: str = "licshift"
    updated_at: datetime | None = None
    not_before: datetime | None = None
    """Graph's Retry-After for this row, as a time: no path calls Graph for it before then."""
    loss_found_by: str = ""
    """Who recorded that the user lost plans after the removal (post-check, verification, ...): the
    only reason a restore task may act on the row besides a rollback ("" = no loss recorded)."""
    relied_on: tuple[GroupOptions, ...] = ()
    """The groups the latest Remove decision relied on (the wave's first) with the options each
    showed: the scheduler holds the row while one of them processes; the settle check watches them."""
    removed_at: datetime | None = None
    """When the post-check proved the removal harmless: the start of the settle window (S3)."""

    @property
    def key(self) -> str:
        return outcome_key(self.user_id, self.sku_id)


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ALERT = "alert"


@dataclass(frozen=True, slots=True)
class Event:
    """Anything worth an audit row that is not an outcome: rejected requests (S7), wave transitions,
    throttling reports, restores, drift findings, poison messages.
    """

    kind: str
    message: str
    severity: Severity = Severity.INFO
    wave_id: str = ""
    user_id: str = ""
    sku_id: str = ""
    actor: str = "licshift"
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TickLease:
    """Which scheduler may run a tick now (lease.py): one row beside the control row."""

    holder: str = ""
    """The holder's Runtime instance id ("" = free)."""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Control:
    """Global switches, one row: the kill switch (S5) and the scheduler's current write rate."""

    kill_switch: bool = False
    write_rate: float = 0.0
    """Writes per second the scheduler currently allows itself; 0 = not set yet (use the ceiling)."""
    updated_by: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DriftState:
    """One (user, SKU) whose direct license came back after a wave removed it: the current state,
    one row each, kept up to date by drift_watch (first and last seen, cleared when resolved)."""

    user_id: str
    sku_id: str
    group_id: str
    wave_id: str
    """The wave that had removed the direct license (the latest one, if several did)."""
    first_seen: datetime
    last_seen: datetime
    user_principal_name: str = ""
    group_name: str = ""
    sku_name: str = ""
    cleared_at: datetime | None = None
    cleared_reason: str = ""
    auto_removals: int = 0
    """Follow-up waves licshift started to remove it again (LICSHIFT_DRIFT_REMOVE); kept when the
    row is cleared and the license comes back, so a script that keeps re-adding it is noticed."""
    auto_wave_id: str = ""
    """The latest follow-up wave started for this drift ("" = none yet)."""
    held: str = ""
    """Why licshift stopped removing it again ("" = not held); an admin takes it from there."""

    @property
    def key(self) -> str:
        return outcome_key(self.user_id, self.sku_id)

    @property
    def open(self) -> bool:
        return self.cleared_at is None
