"""Remove drift again (LICSHIFT_DRIFT_REMOVE): the drift watch's optional second half.

There is deliberately no second remover here. For each (group, SKU) that rules.driftremoval allows,
this starts an ordinary wave of exactly the drifted users through intake.start_wave, the path every
wave takes (allowlist, group and SKU checks, canary gate). The scheduler then runs it like any wave:
wait for group processing, fresh read, decision rule, removal at the shared write pace, post-check,
restore on any loss. Its REMOVED rows clear the drift rows on the next drift watch run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from licshift.ports.graph import GraphError
from licshift.rules.driftremoval import FollowUp, hold_reason, plan_drift_removal
from licshift.rules.messages import StartWave
from licshift.rules.outcomes import DriftState, Event, Severity
from licshift.rules.waves import Selection, SelectionKind
from licshift.services import intake, telemetry
from licshift.services.runtime import Runtime

log = logging.getLogger("licshift.services.driftremoval")

ACTOR = "drift-watch"


@dataclass
class RemovalReport:
    started: dict[str, FollowUp] = field(default_factory=dict)
    """Follow-up wave id -> what it removes again."""
    held: list[DriftState] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


async def remove_drift_again(rt: Runtime) -> RemovalReport:
    """Start the follow-up waves the guard rails allow; hold and alert on licenses that keep coming back."""
    report = RemovalReport()
    drift = [d async for d in rt.ledger.iter_drift()]
    control = await rt.ledger.get_control()
    plan = plan_drift_removal(
        drift,
        await rt.ledger.list_waves(),
        kill_switch=control.value.kill_switch or rt.settings.kill_switch,
        max_users=min(rt.settings.drift_remove_max_users, rt.settings.max_wave_users),
        max_repeats=rt.settings.drift_remove_max_repeats,
    )
    changed: list[DriftState] = []
    for follow in plan.starts:
        wave_id = await _start(rt, follow, report)
        if wave_id:
            report.started[wave_id] = follow
            changed += [replace(r, auto_removals=r.auto_removals + 1, auto_wave_id=wave_id) for r in follow.rows]
    report.held = [replace(r, held=hold_reason(r.auto_removals)) for r in plan.held]
    await rt.ledger.put_drift([*changed, *report.held])
    for state in report.held:
        await telemetry.emit(rt.ledger, _held_event(state), rt.now())
    for w in plan.waiting:
        report.waiting.append(f"group {w.group_id} sku {w.sku_id}: {w.users} user(s) wait: {w.reason}")
        log.info("drift remove: %s", report.waiting[-1])
    return report


async def _start(rt: Runtime, follow: FollowUp, report: RemovalReport) -> str:
    """The follow-up wave's id once intake accepted it, "" when it was refused (and why is recorded)."""
    request = StartWave(
        wave_id=str(uuid.uuid4()),
        group_id=follow.group_id,
        skus=(follow.sku_id,),
        selection=Selection(SelectionKind.USERS, users=follow.users),
        dry_run=False,
        force=False,
        policy=follow.policy,
        requested_by=ACTOR,
    )
    try:
        await intake.start_wave(rt, request)
    except (intake.Rejection, GraphError) as exc:
        report.refused.append(str(exc))
        await telemetry.emit(rt.ledger, _refused_event(follow, str(exc)), rt.now())
        return ""
    await telemetry.emit(rt.ledger, _started_event(request.wave_id, follow), rt.now())
    return request.wave_id


def _names(rows: Sequence[DriftState]) -> tuple[str, str]:
    first = rows[0]
    return first.group_name or first.group_id, first.sku_name or first.sku_id


def _started_event(wave_id: str, follow: FollowUp) -> Event:
    group, sku = _names(follow.rows)
    removed_by = sorted({r.wave_id for r in follow.rows})
    return Event(
        kind=telemetry.DRIFT_REMOVE,
        message=f"wave {wave_id} started to remove the direct {sku} license again from {len(follow.rows)} "
        f"drifted user(s) of {group} (LICSHIFT_DRIFT_REMOVE), with every check of a wave",
        severity=Severity.WARNING,
        wave_id=wave_id,
        sku_id=follow.sku_id,
        actor=ACTOR,
        data={"users": len(follow.rows), "group": group, "sku": sku, "removed_by": removed_by},
    )


def _refused_event(follow: FollowUp, reason: str) -> Event:
    group, sku = _names(follow.rows)
    return Event(
        kind=telemetry.DRIFT_REMOVE,
        message=f"drift of {len(follow.rows)} user(s) of {group} ({sku}) not removed again: {reason}",
        severity=Severity.WARNING,
        sku_id=follow.sku_id,
        actor=ACTOR,
        data={"users": len(follow.rows), "group": group, "sku": sku, "refused": reason},
    )


def _held_event(state: DriftState) -> Event:
    return Event(
        kind=telemetry.DRIFT_REMOVE_HELD,
        message=f"user {state.user_principal_name or state.user_id} keeps getting a direct "
        f"{state.sku_name or state.sku_id} license back: {state.held}",
        severity=Severity.ALERT,
        wave_id=state.auto_wave_id or state.wave_id,
        user_id=state.user_id,
        sku_id=state.sku_id,
        actor=ACTOR,
        data={
            "upn": state.user_principal_name,
            "group": state.group_name,
            "sku": state.sku_name,
            "auto_removals": state.auto_removals,
        },
    )
