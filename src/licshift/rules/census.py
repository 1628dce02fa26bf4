"""A wave's outcome counts kept up to date from status changes, not recounted (pure).

Every status change of an outcome row is recorded as a `Move` (from, to) in the same table
transaction as the change itself (docs/ledger.md, "Counts and the work index"), so the counts
stored for a wave plus the moves not folded in yet are always exactly the rows per status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from licshift.rules.outcomes import OutcomeStatus

WORK_STATUSES = frozenset({OutcomeStatus.PLANNED, OutcomeStatus.ENQUEUED, OutcomeStatus.REMOVING})
"""Statuses the scheduler looks for (rows to enqueue, tasks to re-send): each such row has an index
row, so a tick finds them without reading the wave."""


class Move(NamedTuple):
    """One outcome row's status change; `before` None: the row was created, `after` None: deleted."""

    before: OutcomeStatus | None
    after: OutcomeStatus | None


def empty_counts() -> dict[OutcomeStatus, int]:
    return dict.fromkeys(OutcomeStatus, 0)


def fold(counts: Mapping[OutcomeStatus, int], moves: Iterable[Move]) -> dict[OutcomeStatus, int]:
    """`counts` after `moves` (in any order: a sum of deltas). Every status is present in the result."""
    folded = empty_counts()
    folded.update(counts)
    for move in moves:
        if move.before is not None:
            folded[move.before] -= 1
        if move.after is not None:
            folded[move.after] += 1
    return folded


def move_of(before: OutcomeStatus | None, after: OutcomeStatus) -> Move | None:
    """The move a save records (None when the status stays)."""
    return None if before is after else Move(before, after)
