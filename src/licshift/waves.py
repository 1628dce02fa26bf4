"""Waves: what an admin asks for, which users a wave selects, and the wave's lifecycle (pure).

A wave is one run of Microsoft's procedure over one licensing group and one or more SKUs: wait for
the group's license processing, scan and decide for every selected member, remove direct
assignments at the scheduler's pace, verify by re-scanning, complete. A dry run stops after the scan.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from licshift.decide import Policy


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


class SelectionKind(enum.StrEnum):
    ALL = "all"
    FIRST = "first"
    """The first N members in Graph's member order (a canary)."""
    PERCENT = "percent"
    """A stable pseudo-random share of members (hash of wave id and user id)."""
    USERS = "users"
    """An explicit list of user ids."""


@dataclass(frozen=True, slots=True)
class Selection:
    kind: SelectionKind = SelectionKind.ALL
    count: int = 0
    percent: float = 0.0
    users: frozenset[str] = frozenset()


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
