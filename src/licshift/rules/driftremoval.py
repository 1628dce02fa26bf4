"""Which drifted direct licenses licshift removes again, and which it leaves to an admin (pure).

With LICSHIFT_DRIFT_REMOVE on, drift_watch turns open drift into follow-up waves: one wave per
(group, SKU) of exactly the drifted users, started like any other wave (intake, canary gate, fresh
read, decision rule, post-check). This module only chooses; it writes nothing. The guard rails are
the ones an identity admin expects from automation that writes to a tenant:

- the kill switch stops everything;
- a group with a halted wave or a rollback in progress is left alone (someone has to look first);
- a (group, SKU) is touched only when its latest wave completed and no wave on it is under way, so
  a follow-up never races another wave nor undoes a cancel;
- at most `max_users` users per run (the rest wait for the next run);
- a user and SKU licshift already removed again `max repeats` times is held, with an alert, instead
  of looping against a script that re-adds the license each time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from licshift.rules.decide import Policy
from licshift.rules.outcomes import DriftState
from licshift.rules.waves import FINAL_STATUSES, Wave, WaveStatus

BLOCKING_STATUSES = frozenset({WaveStatus.HALTED, WaveStatus.ROLLING_BACK})
"""A wave in one of these on a group stops every follow-up on that group until an admin acts."""


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A wave to start: exactly `users` on `group_id` for `sku_id`."""

    group_id: str
    sku_id: str
    policy: Policy
    rows: tuple[DriftState, ...]
    """The drift rows it removes again, one per user."""

    @property
    def users(self) -> frozenset[str]:
        return frozenset(r.user_id.lower() for r in self.rows)


@dataclass(frozen=True, slots=True)
class Waiting:
    """Drift of a (group, SKU) that is not removed again in this run, and why."""

    group_id: str
    sku_id: str
    users: int
    reason: str


@dataclass(frozen=True, slots=True)
class DriftRemovalPlan:
    starts: tuple[FollowUp, ...] = ()
    held: tuple[DriftState, ...] = ()
    """Rows that reached the repeat limit in this run: they get `held` set and one alert."""
    waiting: tuple[Waiting, ...] = ()


def hold_reason(repeats: int) -> str:
    return (
        f"licshift removed it again {repeats} time(s) and it came back each time: something re-adds it; "
        "fix that script, then start a wave yourself"
    )


def plan_drift_removal(
    drift: Iterable[DriftState],
    waves: Iterable[Wave],
    *,
    kill_switch: bool,
    max_users: int,
    max_repeats: int,
) -> DriftRemovalPlan:
    """The follow-up waves to start for open drift, the rows to hold, and what waits and why."""
    candidates = [d for d in drift if d.open and not d.held]
    held = tuple(d for d in candidates if d.auto_removals >= max_repeats)
    by_target: dict[tuple[str, str], list[DriftState]] = {}
    for d in candidates:
        if d.auto_removals < max_repeats:
            by_target.setdefault((d.group_id, d.sku_id), []).append(d)
    real = [w for w in waves if not w.dry_run]
    starts: list[FollowUp] = []
    waiting: list[Waiting] = []
    budget = max_users
    for (group_id, sku_id), rows in sorted(by_target.items()):
        why, latest = _why_not(real, group_id, sku_id, kill_switch)
        if why is None and budget <= 0:
            why = f"the cap of {max_users} user(s) per drift watch run is reached; the next run continues"
        if why is not None or latest is None:
            waiting.append(Waiting(group_id, sku_id, len(rows), why or "no wave removed it"))
            continue
        chosen = sorted(rows, key=lambda d: (d.first_seen, d.user_id))[:budget]
        budget -= len(chosen)
        starts.append(FollowUp(group_id, sku_id, latest.policy, tuple(chosen)))
        if len(chosen) < len(rows):
            waiting.append(Waiting(group_id, sku_id, len(rows) - len(chosen), "over the per-run cap; next run"))
    return DriftRemovalPlan(tuple(starts), held, tuple(waiting))


def _why_not(waves: Sequence[Wave], group_id: str, sku_id: str, kill_switch: bool) -> tuple[str | None, Wave | None]:
    """Why the (group, SKU) gets no follow-up now (None: it may), and its latest wave."""
    if kill_switch:
        return "the kill switch is on", None
    on_group = [w for w in waves if w.group_id == group_id]
    stuck = sorted({str(w.status) for w in on_group if w.status in BLOCKING_STATUSES})
    if stuck:
        return f"the group has a {' and a '.join(stuck)} wave; resolve it first", None
    on_sku = sorted((w for w in on_group if sku_id in w.sku_ids), key=lambda w: w.created_at)
    if not on_sku:
        return "no wave on this group and SKU", None
    if any(w.status not in FINAL_STATUSES for w in on_sku):
        return "a wave on this group and SKU is under way", None
    latest = on_sku[-1]
    if latest.status is not WaveStatus.COMPLETED:
        return f"the latest wave on this group and SKU is {latest.status}, not completed", None
    return None, latest
