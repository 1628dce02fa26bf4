"""drift_watch: direct licenses that came back after a wave removed them, kept as current state.

Microsoft's procedure keeps the legacy licensing automation running (step 1), so a script may re-add
a direct assignment licshift removed. For every completed, halted or cancelled wave this scans the
group and keeps one drift row per (user, SKU) whose outcome is REMOVED but who holds the SKU
directly again: first seen, last seen, the wave that had removed it. A row is cleared when a later
wave removed the license again, the wave was rolled back, or the direct license is gone. Only new
drift raises an alert (a `drift` event once per row); `drift-cleared` records the resolution, and
`licshift drift` lists the current state.

Report only by default: removing them again fights the legacy script (both flip the assignment
back and forth, spending Graph writes each round), and the real fix is to change that script. Once
it is fixed, a new wave on the same group migrates exactly these users again with every safety check
of a wave (fresh read, decision rule, post-check), and clears their drift rows. With
LICSHIFT_DRIFT_REMOVE on, the watch starts that wave itself (services.driftremoval), within guard
rails, and holds a license that keeps coming back instead of looping.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime

from licshift.ports.graph import GraphError
from licshift.rules.outcomes import DriftState, Event, Outcome, OutcomeStatus, Severity, outcome_key
from licshift.rules.waves import Wave, WaveStatus
from licshift.services import telemetry
from licshift.services.driftremoval import RemovalReport, remove_drift_again
from licshift.services.runtime import Runtime
from licshift.services.skus import UnknownSku

log = logging.getLogger("licshift.services.drift")

ACTOR = "drift-watch"
WATCHED = frozenset({WaveStatus.COMPLETED, WaveStatus.HALTED, WaveStatus.CANCELLED})
"""Waves whose REMOVED users stay migrated: a halted or cancelled wave's removals are as final as a
completed one's (a rolled-back wave put them back on purpose, so it is not watched)."""


@dataclass(frozen=True, slots=True)
class DriftFinding:
    wave_id: str
    user_id: str
    user_principal_name: str
    sku_id: str


@dataclass
class DriftReport:
    waves_checked: int = 0
    findings: list[DriftFinding] = field(default_factory=list)
    """Every (user, SKU) drifted right now (new and already known)."""
    new: list[DriftState] = field(default_factory=list)
    cleared: list[DriftState] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    removal: RemovalReport | None = None
    """What LICSHIFT_DRIFT_REMOVE did in this run (None when it is off)."""


@dataclass
class _Removed:
    """Per group: the latest watched wave's REMOVED row of each (user, SKU)."""

    waves: dict[str, Wave] = field(default_factory=dict)
    rows: dict[str, Outcome] = field(default_factory=dict)


async def drift_watch(rt: Runtime) -> DriftReport:
    """Scan each group with watched waves once; update the drift state; alert on new drift only."""
    report = DriftReport()
    by_group: dict[str, _Removed] = {}
    for wave in sorted(await rt.ledger.list_waves(), key=lambda w: w.created_at):
        if wave.status in WATCHED and not wave.dry_run:
            removed = by_group.setdefault(wave.group_id, _Removed())
            removed.waves[wave.wave_id] = wave
            report.waves_checked += 1
            async for row in rt.ledger.iter_outcomes(wave.wave_id, statuses=[OutcomeStatus.REMOVED]):
                removed.rows[row.key] = row  # later waves overwrite: the latest removal wins
    known = {row.key: row async for row in rt.ledger.iter_drift()}
    now = rt.now()
    changed: list[DriftState] = []
    scanned: set[str] = set()
    for group_id, removed in by_group.items():
        try:
            found = await _drifted(rt, group_id, removed)
        except GraphError as exc:
            report.errors.append(f"group {group_id}: {exc}")
            log.warning("drift watch: group %s could not be scanned: %s", group_id, exc)
            continue
        scanned.add(group_id)
        for state in found:
            report.findings.append(DriftFinding(state.wave_id, state.user_id, state.user_principal_name, state.sku_id))
            old = known.get(state.key)
            if old is not None and old.open:
                changed.append(replace(old, last_seen=now, wave_id=state.wave_id))
            else:
                report.new.append(_reopened(state, old, now))
    still = {outcome_key(f.user_id, f.sku_id) for f in report.findings}
    for old in known.values():
        # A group with no watched wave left (its waves were rolled back) needs no scan to clear.
        if old.open and (old.group_id in scanned or old.group_id not in by_group) and old.key not in still:
            reason = _why_cleared(old, by_group.get(old.group_id))
            report.cleared.append(replace(old, cleared_at=now, cleared_reason=reason))
    await rt.ledger.put_drift([*changed, *report.new, *report.cleared])
    await _emit(rt, report, now)
    if rt.settings.drift_remove:
        report.removal = await remove_drift_again(rt)
    return report


def _reopened(state: DriftState, old: DriftState | None, now: datetime) -> DriftState:
    """New drift; a license that was removed again before keeps its count, so a loop is noticed."""
    if old is None:
        return replace(state, first_seen=now, last_seen=now)
    return replace(state, first_seen=now, last_seen=now, auto_removals=old.auto_removals, held=old.held)


async def _drifted(rt: Runtime, group_id: str, removed: _Removed) -> list[DriftState]:
    """The (user, SKU) pairs of the group's removed rows that hold the SKU directly again."""
    if not removed.rows:
        return []
    info = await rt.graph.group_license_info(group_id)
    by_user: dict[str, list[Outcome]] = {}
    for row in removed.rows.values():
        by_user.setdefault(row.user_id, []).append(row)
    now = rt.now()
    found: list[DriftState] = []
    async for member in rt.graph.group_members(group_id):
        direct = {s.sku_id for s in member.states if s.is_direct}
        for row in by_user.get(member.user_id, ()):
            if row.sku_id in direct:
                found.append(
                    DriftState(
                        user_id=row.user_id,
                        sku_id=row.sku_id,
                        group_id=group_id,
                        wave_id=row.wave_id,
                        first_seen=now,
                        last_seen=now,
                        user_principal_name=member.user_principal_name or row.user_principal_name,
                        group_name=info.display_name,
                        sku_name=await _sku_name(rt, row.sku_id, now),
                    )
                )
    return found


async def _sku_name(rt: Runtime, sku_id: str, now: datetime) -> str:
    try:
        return (await rt.skus.get(rt.graph, sku_id, now)).part_number
    except UnknownSku:
        return ""


def _why_cleared(state: DriftState, removed: _Removed | None) -> str:
    latest = removed.rows.get(state.key) if removed else None
    if latest is None:
        return f"wave {state.wave_id} was rolled back: the direct license is back on purpose"
    if latest.wave_id != state.wave_id:
        return f"wave {latest.wave_id} removed the direct license again"
    return "the direct license is gone (removed outside licshift), or the user left the group"


def _label(state: DriftState) -> tuple[str, str]:
    return state.user_principal_name or state.user_id, state.sku_name or state.sku_id


def _data(state: DriftState) -> dict[str, str]:
    """What the workbook's drift grid shows, by name."""
    return {"upn": state.user_principal_name, "group": state.group_name, "sku": state.sku_name}


def _next_step(rt: Runtime, group: str, *, held: bool = False) -> str:
    if rt.settings.drift_remove and not held:
        return "fix the script; meanwhile licshift removes it again with a follow-up wave (LICSHIFT_DRIFT_REMOVE)"
    return f"fix the script, then start a new wave on {group}"


async def _emit(rt: Runtime, report: DriftReport, now: datetime) -> None:
    for state in report.new:
        user, sku = _label(state)
        await telemetry.emit(
            rt.ledger,
            Event(
                kind=telemetry.DRIFT,
                message=f"user {user} has a direct license of {sku} again after wave {state.wave_id} removed it "
                f"(a legacy script?); {_next_step(rt, state.group_name or state.group_id, held=bool(state.held))}",
                severity=Severity.WARNING,
                wave_id=state.wave_id,
                user_id=state.user_id,
                sku_id=state.sku_id,
                actor=ACTOR,
                data=_data(state),
            ),
            now,
        )
    for state in report.cleared:
        user, sku = _label(state)
        await telemetry.emit(
            rt.ledger,
            Event(
                kind=telemetry.DRIFT_CLEARED,
                message=f"drift of {user} ({sku}) cleared: {state.cleared_reason}",
                wave_id=state.wave_id,
                user_id=state.user_id,
                sku_id=state.sku_id,
                actor=ACTOR,
                data={**_data(state), "reason": state.cleared_reason},
            ),
            now,
        )
    await _summaries(rt, report, now)


async def _summaries(rt: Runtime, report: DriftReport, now: datetime) -> None:
    """One summary per wave whose drift changed in this run (new or cleared), none otherwise."""
    open_ = Counter(f.wave_id for f in report.findings)
    new = Counter(s.wave_id for s in report.new)
    cleared = Counter(s.wave_id for s in report.cleared)
    for wave_id in sorted(set(new) | set(cleared)):
        await telemetry.emit(
            rt.ledger,
            Event(
                kind=telemetry.DRIFT_SUMMARY,
                message=f"wave {wave_id}: {open_[wave_id]} user(s) have a direct license again "
                f"({new[wave_id]} new, {cleared[wave_id]} cleared); {_next_step(rt, 'the group')} "
                "(licshift drift lists them)",
                severity=Severity.WARNING if new[wave_id] else Severity.INFO,
                wave_id=wave_id,
                actor=ACTOR,
                data={"open": open_[wave_id], "new": new[wave_id], "cleared": cleared[wave_id]},
            ),
            now,
        )
