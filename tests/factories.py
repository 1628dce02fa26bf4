"""Records the tests build again and again, each an ordinary one by default: a test changes only the
fields it is about (`wave(WaveStatus.REMOVING, dry_run=True)`, `outcome(status=OutcomeStatus.REMOVED)`)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from licshift.rules.decide import Policy
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.rules.waves import Selection, SelectionKind, Wave, WaveStatus

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
"""Office 365 E3 (ENTERPRISEPACK), Microsoft's example SKU."""
GROUP = "0f5c3a50-6b7a-4a0e-9c51-3f1b7d2a8e10"
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def user_id(n: int) -> str:
    """A valid user object id that sorts by `n`."""
    return f"{n:08d}-0000-4000-8000-000000000000"


def wave(status: WaveStatus = WaveStatus.WAITING, **changes: Any) -> Wave:
    """A wave of the first 5 members of GROUP for E3, policy no-loss, created at T0 (a fresh id each call)."""
    base = Wave(
        wave_id=str(uuid.uuid4()),
        group_id=GROUP,
        sku_ids=(E3,),
        selection=Selection(SelectionKind.FIRST, count=5),
        policy=Policy.NO_LOSS,
        dry_run=False,
        force=False,
        requested_by="alice",
        status=status,
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **changes)


def outcome(status: OutcomeStatus = OutcomeStatus.PLANNED, *, user: int = 1, **changes: Any) -> Outcome:
    """User `user`'s E3 row in wave "w1", decided "remove", last written at T0."""
    base = Outcome(
        wave_id="w1",
        user_id=user_id(user),
        sku_id=E3,
        status=status,
        decision="remove",
        updated_at=T0,
    )
    return replace(base, **changes)
