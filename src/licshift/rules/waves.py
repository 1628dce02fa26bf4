"""Waves: what an admin asks for, which users a wave selects, and the wave's lifecycle (pure).

A wave is one run of Microsoft's procedure over one licensing group and one or more SKUs: wait for
the group's license processing, scan and decide for every selected member, remove direct
assignments at the scheduler's pace, verify by re-scanning, complete. A dry run stops after the scan.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from licshift.rules.decide import Policy
from licshift.rules.outcomes import Outcome, OutcomeStatus


class WaveStatus(enum.StrEnum):
    WAITING = "waiting"
    """Accepted; waiting for the group's licenseProcessingState to reach ProcessingComplete."""
    SCANNING = "scanning"
    """Reading members and recording a decision per selected user and SKU."""
    REMOVING = "removing"
    """Remove decisions are being enqueued and carried out at the scheduler's pace."""
    VERIFYING = "verifying"
    """All removals have an outcome; re-reading the wave's users to prove nothing was lost."""
    PLANNED = "planned"
    """Dry run finished: the plan is recorded, nothing was written to Graph. Final."""
    COMPLETED = "completed"
    """Final."""
    PAUSED = "paused"
    """An admin paused it; no removal happens until resumed."""
    HALTED = "halted"
    """Stopped by licshift: a restore happened, failures passed the threshold, or processing timed out."""
    CANCELLED = "cancelled"
    """Final: an admin cancelled it."""
    ROLLING_BACK = "rolling-back"
    """Restoring every direct assignment this wave removed."""
    ROLLED_BACK = "rolled-back"
    """Final."""


FINAL_STATUSES = frozenset({WaveStatus.PLANNED, WaveStatus.COMPLETED, WaveStatus.CANCELLED, WaveStatus.ROLLED_BACK})
"""Statuses from which nothing but a rollback (of a completed/halted/cancelled wave) moves on."""

REMOVALS_ALLOWED = frozenset({WaveStatus.REMOVING})
"""S5: the only status in which a worker may remove a direct assignment."""

STOPPED_STATUSES = FINAL_STATUSES | {WaveStatus.HALTED}
"""Statuses after which a queued removal of the wave is closed as not attempted (not put back)."""


class SelectionKind(enum.StrEnum):
    ALL = "all"
    FIRST = "first"
    """The first N members in Graph's member order (a canary)."""
    PERCENT = "percent"
    """A stable pseudo-random share of members (hash of group id and user id)."""
    USERS = "users"
    """An explicit list of user ids."""


@dataclass(frozen=True, slots=True)
class Selection:
    kind: SelectionKind = SelectionKind.ALL
    count: int = 0
    percent: float = 0.0
    users: frozenset[str] = frozenset()

    @property
    def known_size(self) -> int | None:
        """How many users the selection can hold at most, or None when only the scan can tell."""
        if self.kind is SelectionKind.FIRST:
            return self.count
        if self.kind is SelectionKind.USERS:
            return len(self.users)
        return None

    def describe(self) -> str:
        if self.kind is SelectionKind.FIRST:
            return f"first {self.count}"
        if self.kind is SelectionKind.PERCENT:
            return f"{self.percent:g}%"
        if self.kind is SelectionKind.USERS:
            return f"{len(self.users)} listed users"
        return "all members"


@dataclass(frozen=True, slots=True)
class WaveCounters:
    members: int = 0
    selected: int = 0
    to_remove: int = 0
    enqueued: int = 0
    removed: int = 0
    restored: int = 0
    failed: int = 0
    blocked: int = 0
    skipped: int = 0
    throttled: int = 0
    rolled_back: int = 0
    planned: int = 0
    """Remove decisions not yet enqueued (a dry run's plan stays here)."""
    not_attempted: int = 0
    drift: int = 0
    """Removed users whose direct assignment came back (legacy script), seen at verification."""

    @property
    def pending(self) -> int:
        """Removals that have no final outcome yet."""
        return self.planned + self.enqueued


@dataclass(frozen=True, slots=True)
class Wave:
    wave_id: str
    group_id: str
    sku_ids: tuple[str, ...]
    selection: Selection
    policy: Policy
    dry_run: bool
    force: bool
    requested_by: str
    status: WaveStatus
    created_at: datetime
    updated_at: datetime
    counters: WaveCounters = field(default_factory=WaveCounters)
    status_reason: str = ""
    enqueue_cursor: str = ""
    """RowKey of the last outcome row enqueued for removal: the scheduler resumes after it."""
    status_since: datetime | None = None
    """When the wave entered its current status (the processing timeout counts from here)."""
    resume_to: str = ""
    """The status a paused wave returns to on resume ("" = derive it from whether it was scanned)."""

    def entered_at(self) -> datetime:
        """When the wave entered its status. Without a recorded time, the last save: the scheduler
        saves a waiting wave only when it changes status, so that is when it started waiting.
        """
        return self.status_since or self.updated_at

    @property
    def scanned(self) -> bool:
        return self.counters.members > 0 or self.counters.selected > 0


# --- selection ---------------------------------------------------------------------------------


def percent_bucket(group_id: str, user_id: str) -> float:
    """A stable number in [0, 100) for a user of a group. Keyed by group (not wave) so that a 10%
    wave followed by a 25% wave selects a superset: the second wave adds users, it does not reshuffle.
    """
    digest = hashlib.sha256(f"{group_id.lower()}:{user_id.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def is_selected(selection: Selection, group_id: str, user_id: str, selected_so_far: int) -> bool:
    """Whether the member `user_id`, met after `selected_so_far` selected members, is in the wave."""
    if selection.kind is SelectionKind.ALL:
        return True
    if selection.kind is SelectionKind.FIRST:
        return selected_so_far < selection.count
    if selection.kind is SelectionKind.PERCENT:
        return percent_bucket(group_id, user_id) < selection.percent
    return user_id.lower() in selection.users


def selection_exhausted(selection: Selection, selected_so_far: int) -> bool:
    """True when no later member can be selected, so a scan may stop reading pages."""
    if selection.kind is SelectionKind.FIRST:
        return selected_so_far >= selection.count
    if selection.kind is SelectionKind.USERS:
        return selected_so_far >= len(selection.users)
    return False


# --- lifecycle -----------------------------------------------------------------------------------


class WaveEvent(enum.StrEnum):
    # Admin commands (waves queue).
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    ROLLBACK = "rollback"
    # The scheduler's observations.
    PROCESSING_COMPLETE = "processing-complete"
    PROCESSING_INCOMPLETE = "processing-incomplete"
    PROCESSING_TIMEOUT = "processing-timeout"
    GROUP_GONE = "group-gone"
    SCANNED = "scanned"
    TOO_LARGE = "too-large"
    REMOVALS_DONE = "removals-done"
    FAILURE_THRESHOLD = "failure-threshold"
    LOSS_DETECTED = "loss-detected"
    VERIFIED = "verified"
    ROLLBACK_DONE = "rollback-done"


ADMIN_EVENTS = frozenset({WaveEvent.PAUSE, WaveEvent.RESUME, WaveEvent.CANCEL, WaveEvent.ROLLBACK})


@dataclass(frozen=True, slots=True)
class Refused:
    """The event does not apply to the wave in its status; `reason` says why and what to do."""

    reason: str


_PAUSABLE = frozenset({WaveStatus.WAITING, WaveStatus.SCANNING, WaveStatus.REMOVING, WaveStatus.VERIFYING})
_CANCELLABLE = _PAUSABLE | {WaveStatus.PAUSED, WaveStatus.HALTED}
_ROLLBACKABLE = frozenset(
    {
        WaveStatus.REMOVING,
        WaveStatus.VERIFYING,
        WaveStatus.PAUSED,
        WaveStatus.HALTED,
        WaveStatus.COMPLETED,
        WaveStatus.CANCELLED,
    }
)

# Scheduler events: (from status, event) -> to status. Anything missing is refused.
_SYSTEM: dict[tuple[WaveStatus, WaveEvent], WaveStatus] = {
    (WaveStatus.WAITING, WaveEvent.PROCESSING_COMPLETE): WaveStatus.SCANNING,
    (WaveStatus.WAITING, WaveEvent.PROCESSING_TIMEOUT): WaveStatus.HALTED,
    (WaveStatus.WAITING, WaveEvent.GROUP_GONE): WaveStatus.HALTED,
    (WaveStatus.SCANNING, WaveEvent.PROCESSING_INCOMPLETE): WaveStatus.WAITING,
    (WaveStatus.SCANNING, WaveEvent.GROUP_GONE): WaveStatus.HALTED,
    (WaveStatus.SCANNING, WaveEvent.TOO_LARGE): WaveStatus.HALTED,
    (WaveStatus.REMOVING, WaveEvent.REMOVALS_DONE): WaveStatus.VERIFYING,
    (WaveStatus.REMOVING, WaveEvent.FAILURE_THRESHOLD): WaveStatus.HALTED,
    (WaveStatus.REMOVING, WaveEvent.LOSS_DETECTED): WaveStatus.HALTED,
    (WaveStatus.VERIFYING, WaveEvent.VERIFIED): WaveStatus.COMPLETED,
    (WaveStatus.VERIFYING, WaveEvent.LOSS_DETECTED): WaveStatus.HALTED,
    (WaveStatus.VERIFYING, WaveEvent.GROUP_GONE): WaveStatus.HALTED,
    (WaveStatus.ROLLING_BACK, WaveEvent.ROLLBACK_DONE): WaveStatus.ROLLED_BACK,
    # A restore seen by a worker of a paused wave still halts it: the admin must look before resuming.
    (WaveStatus.PAUSED, WaveEvent.LOSS_DETECTED): WaveStatus.HALTED,
}


def next_status(wave: Wave, event: WaveEvent) -> WaveStatus | Refused:
    """The status `event` moves the wave to, or why it cannot. Admin commands that are already in
    effect (pause a paused wave) return the current status, so a redelivered command is a no-op.
    """
    status = wave.status
    if event is WaveEvent.SCANNED:
        if status is WaveStatus.SCANNING:
            return WaveStatus.PLANNED if wave.dry_run else WaveStatus.REMOVING
        return Refused(f"wave is {status}, not scanning")
    if event is WaveEvent.PAUSE:
        if status is WaveStatus.PAUSED:
            return status
        if status in _PAUSABLE:
            return WaveStatus.PAUSED
        return Refused(f"wave is {status}: only a waiting, scanning, removing or verifying wave can be paused")
    if event is WaveEvent.RESUME:
        if status is WaveStatus.PAUSED:
            if wave.resume_to:
                return WaveStatus(wave.resume_to)
            # A wave paused before its scan finished waits and scans again (both are idempotent).
            return WaveStatus.REMOVING if wave.scanned else WaveStatus.WAITING
        if status in _PAUSABLE:
            return status
        if status is WaveStatus.HALTED:
            return Refused(
                "wave is halted by licshift; read its alert events, then start a new wave for the group "
                "(users already migrated are skipped) or roll this one back"
            )
        return Refused(f"wave is {status}: only a paused wave can be resumed")
    if event is WaveEvent.CANCEL:
        if status is WaveStatus.CANCELLED:
            return status
        if status in _CANCELLABLE:
            return WaveStatus.CANCELLED
        return Refused(f"wave is {status}: it can no longer be cancelled (roll it back to undo its removals)")
    if event is WaveEvent.ROLLBACK:
        if status in (WaveStatus.ROLLING_BACK, WaveStatus.ROLLED_BACK):
            return status
        if status in _ROLLBACKABLE:
            return WaveStatus.ROLLING_BACK
        if status is WaveStatus.PLANNED:
            return Refused("wave is a dry run: it wrote nothing to Graph, so there is nothing to roll back")
        return Refused(f"wave is {status}: nothing was removed yet; cancel it instead")
    target = _SYSTEM.get((status, event))
    if target is None:
        return Refused(f"event {event} does not apply to a {status} wave")
    return target


def apply(wave: Wave, event: WaveEvent, now: datetime, reason: str = "") -> Wave | Refused:
    """The wave after `event` (pure): status, when it entered it, why, and where a resume returns."""
    target = next_status(wave, event)
    if isinstance(target, Refused):
        return target
    if target is wave.status:
        return wave
    resume_to = wave.resume_to
    cursor = wave.enqueue_cursor
    if target is WaveStatus.PAUSED:
        resume_to = str(wave.status)
    elif wave.status is WaveStatus.PAUSED:
        resume_to = ""
        # Workers put removals that met the pause back to PLANNED, behind the cursor: start over.
        cursor = ""
    if target is WaveStatus.ROLLING_BACK:
        cursor = ""
    return replace(
        wave,
        status=target,
        status_since=now,
        updated_at=now,
        status_reason=reason or str(event),
        resume_to=resume_to,
        enqueue_cursor=cursor,
    )


# --- canary gate ---------------------------------------------------------------------------------


def qualifying_canary(
    prior: Iterable[Wave], group_id: str, sku_ids: Iterable[str], canary_max_users: int
) -> Wave | None:
    """A prior wave that proves the procedure on this group and these SKUs: completed, not a dry run,
    at most `canary_max_users` selected, at least one removal, and no restore and no failure.
    """
    wanted = frozenset(sku_ids)
    for wave in sorted(prior, key=lambda w: w.created_at):
        c = wave.counters
        if (
            wave.group_id == group_id
            and wanted <= frozenset(wave.sku_ids)
            and wave.status is WaveStatus.COMPLETED
            and not wave.dry_run
            and 0 < c.selected <= canary_max_users
            and c.removed > 0
            and c.restored == 0
            and c.failed == 0
        ):
            return wave
    return None


def canary_gate(
    selection: Selection,
    group_id: str,
    sku_ids: Iterable[str],
    *,
    dry_run: bool,
    force: bool,
    prior: Iterable[Wave],
    canary_max_users: int,
) -> str | None:
    """None if the wave may start, else the reason it may not. A wave larger than a canary (or whose
    size only the scan can tell) needs a clean canary first; dry runs and forced waves do not.
    """
    if dry_run or force:
        return None
    size = selection.known_size
    if size is not None and size <= canary_max_users:
        return None
    if qualifying_canary(prior, group_id, sku_ids, canary_max_users) is not None:
        return None
    asked = selection.describe() if size is None else f"{size} users"
    return (
        f"wave selects {asked}, more than a canary ({canary_max_users} users), and no completed canary "
        f"on this group and SKUs removed a license without a restore or failure; run a canary first "
        f"(selection first <= {canary_max_users}) or set force"
    )


# --- counters ------------------------------------------------------------------------------------


def tally(outcomes: Iterable[Outcome], scanned: WaveCounters) -> WaveCounters:
    """Counters recounted from the wave's outcome rows; scan-time figures (members, selected,
    to_remove), throttling and drift counts are carried over from `scanned`.
    """
    by_status = dict.fromkeys(OutcomeStatus, 0)
    for o in outcomes:
        by_status[o.status] += 1
    return tally_counts(by_status, scanned)


def tally_counts(by_status: Mapping[OutcomeStatus, int], scanned: WaveCounters) -> WaveCounters:
    """`tally` from rows already counted by status."""
    return replace(
        scanned,
        planned=by_status[OutcomeStatus.PLANNED],
        enqueued=by_status[OutcomeStatus.ENQUEUED] + by_status[OutcomeStatus.REMOVING],
        removed=by_status[OutcomeStatus.REMOVED],
        restored=by_status[OutcomeStatus.RESTORED],
        failed=by_status[OutcomeStatus.FAILED],
        blocked=by_status[OutcomeStatus.BLOCKED],
        skipped=by_status[OutcomeStatus.SKIPPED],
        not_attempted=by_status[OutcomeStatus.NOT_ATTEMPTED],
        rolled_back=by_status[OutcomeStatus.ROLLED_BACK],
    )
