"""drift_watch: find direct assignments that came back after a wave removed them.

Microsoft's procedure keeps the legacy licensing automation running (step 1), so a script may re-add
a direct assignment licshift removed. For every completed, halted or cancelled wave this scans the
group and reports each user whose outcome is REMOVED but who has a direct assignment of the SKU
again: one warning event per user and a summary event per wave; `licshift drift` lists them.

Report only, on purpose: removing them again would fight the legacy script (both would flip the
assignment back and forth, spending Graph writes each round), and the real fix is to change that
script. Once it is fixed, a new wave on the same group migrates exactly these users again with every
safety check of a wave (fresh read, decision rule, post-check).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from licshift import telemetry
from licshift.graphport import GraphError
from licshift.outcomes import Event, Outcome, OutcomeStatus, Severity
from licshift.runtime import Runtime
from licshift.waves import Wave, WaveStatus

log = logging.getLogger("licshift.drift")

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
    errors: list[str] = field(default_factory=list)


async def drift_watch(rt: Runtime) -> DriftReport:
    """Scan each group with watched waves once and report removed users whose direct assignment is back."""
    report = DriftReport()
    by_group: dict[str, list[Wave]] = {}
    for wave in await rt.ledger.list_waves():
        if wave.status in WATCHED and not wave.dry_run:
            by_group.setdefault(wave.group_id, []).append(wave)
    for group_id, waves in by_group.items():
        try:
            await _check_group(rt, group_id, waves, report)
        except GraphError as exc:
            report.errors.append(f"group {group_id}: {exc}")
            log.warning("drift watch: group %s could not be scanned: %s", group_id, exc)
    return report


async def _check_group(rt: Runtime, group_id: str, waves: list[Wave], report: DriftReport) -> None:
    # user id -> removed outcomes of this group's completed waves
    removed: dict[str, list[Outcome]] = {}
    for wave in waves:
        report.waves_checked += 1
        async for row in rt.ledger.iter_outcomes(wave.wave_id, statuses=[OutcomeStatus.REMOVED]):
            removed.setdefault(row.user_id, []).append(row)
    if not removed:
        return
    found: dict[str, list[DriftFinding]] = {}
    now = rt.now()
    async for member in rt.graph.group_members(group_id):
        rows = removed.get(member.user_id)
        if not rows:
            continue
        direct_skus = {s.sku_id for s in member.states if s.is_direct}
        for row in rows:
            if row.sku_id not in direct_skus:
                continue
            finding = DriftFinding(
                row.wave_id, row.user_id, member.user_principal_name or row.user_principal_name, row.sku_id
            )
            found.setdefault(row.wave_id, []).append(finding)
            await telemetry.emit(
                rt.ledger,
                telemetry.event_for(
                    row,
                    telemetry.DRIFT,
                    f"user {finding.user_principal_name or finding.user_id} has a direct assignment of "
                    f"{finding.sku_id} again after wave {finding.wave_id} removed it (a legacy script?)",
                    severity=Severity.WARNING,
                    actor=ACTOR,
                ),
                now,
            )
    for wave_id, findings in found.items():
        report.findings.extend(findings)
        await telemetry.emit(
            rt.ledger,
            Event(
                kind=telemetry.DRIFT_SUMMARY,
                message=f"wave {wave_id}: {len(findings)} user(s) have a direct assignment again; fix the legacy "
                "script, then start a new wave on the group to migrate them again",
                severity=Severity.WARNING,
                wave_id=wave_id,
                actor=ACTOR,
                data={"users": len(findings)},
            ),
            now,
        )
