"""settle_check: the post-removal check kept up over a settle window (safety rule S3, docs/safety.md).

A removal is proven harmless against the groups it relied on as they were then. For
LICSHIFT_SETTLE_HOURS after it, this timer watches those groups: when one's options for the SKU
differ from the ones the removal recorded (or it stopped assigning the SKU, or it is gone), its users
are read again once every group they rely on is ProcessingComplete (earlier, their entries may still
show the old options). A user whose effective plans of the SKU are now fewer than before the removal
gets the recorded snapshot back (LICSHIFT_SETTLE_ACTION=restore, the default) or an alert only
(alert-only); either way an alert-level event names the group that changed. A user who lost nothing
has the groups' new options recorded, so one change costs one read per user, oldest removal first,
at most a tick's write budget of reads and restores per run. No group change, no user read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from licshift.ports.graph import GraphError, GroupLicenseInfo, NotFound, Throttled
from licshift.ports.store import ConcurrencyConflict
from licshift.rules.decide import PROCESSING_COMPLETE
from licshift.rules.licenses import GroupOptions, Sku, direct_assignment, effective_plans, has_effective_sku
from licshift.rules.outcomes import Outcome, OutcomeStatus, Severity
from licshift.rules.waves import WaveStatus
from licshift.services import telemetry
from licshift.services.remover import halt_wave
from licshift.services.runtime import Runtime
from licshift.services.scheduler import restore_after_loss
from licshift.services.skus import UnknownSku
from licshift.settings import SettleAction

log = logging.getLogger("licshift.services.settle")

ACTOR = "settle-check"
WATCHED = frozenset(
    {
        WaveStatus.REMOVING,
        WaveStatus.VERIFYING,
        WaveStatus.PAUSED,
        WaveStatus.COMPLETED,
        WaveStatus.HALTED,
        WaveStatus.CANCELLED,
    }
)
"""Waves whose REMOVED rows stand (a rollback puts them back on purpose; a dry run removed nothing)."""
SETTLED_STATUSES = frozenset({WaveStatus.COMPLETED, WaveStatus.HALTED, WaveStatus.CANCELLED})


@dataclass
class SettleReport:
    watched: int = 0
    """REMOVED rows inside their settle window."""
    groups_read: int = 0
    users_read: int = 0
    restored: int = 0
    alerted: int = 0
    waiting: int = 0
    """Rows whose relied-on groups changed but are still processing: read on a later run."""
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Due:
    row: Outcome
    changed: tuple[str, ...]
    """The relied-on groups whose options differ from those the removal recorded."""


def window_start(row: Outcome) -> datetime | None:
    return row.removed_at or row.updated_at


def current_options(info: GroupLicenseInfo | None, sku_id: str) -> frozenset[str] | None:
    """The group's disabledPlans of `sku_id` now; None if it no longer assigns it (or is gone)."""
    if info is None:
        return None
    return next((a.disabled_plans for a in info.assigned_licenses if a.sku_id == sku_id), None)


def changed_groups(row: Outcome, infos: Mapping[str, GroupLicenseInfo | None]) -> tuple[str, ...]:
    return tuple(
        g.group_id for g in row.relied_on if current_options(infos.get(g.group_id), row.sku_id) != g.disabled_plans
    )


def processed(row: Outcome, infos: Mapping[str, GroupLicenseInfo | None]) -> bool:
    """Every relied-on group that still exists has finished processing (a deleted one cannot)."""
    return all(
        (info := infos.get(g.group_id)) is None or info.processing_state == PROCESSING_COMPLETE for g in row.relied_on
    )


def due(
    rows: Iterable[Outcome], infos: Mapping[str, GroupLicenseInfo | None], now: datetime, window: timedelta
) -> tuple[list[Due], int]:
    """Rows to read now, oldest removal first, and how many wait for processing to finish (pure)."""
    ready: list[Due] = []
    waiting = 0
    for row in rows:
        start = window_start(row)
        if row.status is not OutcomeStatus.REMOVED or start is None or now - start > window:
            continue
        changed = changed_groups(row, infos)
        if not changed:
            continue
        if processed(row, infos):
            ready.append(Due(row, changed))
        else:
            waiting += 1
    ready.sort(key=lambda d: (window_start(d.row) or now, d.row.wave_id, d.row.key))
    return ready, waiting


def refreshed(row: Outcome, infos: Mapping[str, GroupLicenseInfo | None]) -> tuple[GroupOptions, ...]:
    """The row's relied-on groups with their options now (gone ones dropped): what the next run
    compares with, so a change is read once."""
    out = []
    for g in row.relied_on:
        options = current_options(infos.get(g.group_id), row.sku_id)
        if options is not None:
            out.append(GroupOptions(g.group_id, options))
    return tuple(out)


async def settle_check(rt: Runtime) -> SettleReport:
    report = SettleReport()
    now = rt.now()
    window = timedelta(hours=rt.settings.settle_hours)
    rows = await _watched_rows(rt, now, window)
    report.watched = len(rows)
    groups = sorted({g.group_id for row in rows for g in row.relied_on})
    infos: dict[str, GroupLicenseInfo | None] = {}
    for group_id in groups:
        try:
            infos[group_id] = await rt.groups.info(rt.graph, group_id, now, fresh=True)
        except GraphError as exc:
            # Unknown is not "changed": rows relying on this group wait for the next run.
            report.errors.append(f"group {group_id}: {exc}")
            rows = [r for r in rows if all(g.group_id != group_id for g in r.relied_on)]
            if isinstance(exc, Throttled):
                break
        report.groups_read += 1
    ready, report.waiting = due(rows, infos, now, window)
    budget = max(1, int(rt.settings.write_rate_ceiling * rt.settings.tick_seconds))
    for item in ready[:budget]:
        try:
            await _check(rt, item, infos, report)
        except Throttled as exc:
            report.errors.append(f"throttled; the rest waits for the next run: {exc}")
            break
        except (GraphError, UnknownSku) as exc:
            report.errors.append(f"user {item.row.user_id}: {exc}")
    if report.restored or report.alerted or report.errors:
        log.info(
            "settle check: %d watched, %d read, %d restored, %d alerted, %d waiting, %d errors",
            report.watched,
            report.users_read,
            report.restored,
            report.alerted,
            report.waiting,
            len(report.errors),
            extra={"licshift_kind": "settle-run"},
        )
    return report


async def _watched_rows(rt: Runtime, now: datetime, window: timedelta) -> list[Outcome]:
    rows: list[Outcome] = []
    for wave in await rt.ledger.list_waves():
        if wave.dry_run or wave.status not in WATCHED:
            continue
        if wave.status in SETTLED_STATUSES and wave.updated_at is not None and now - wave.updated_at > window:
            continue  # every removal of a finished wave came before its last change
        async for row in rt.ledger.iter_outcomes(wave.wave_id, statuses=[OutcomeStatus.REMOVED]):
            if row.relied_on:
                rows.append(row)
    return rows


async def _check(rt: Runtime, item: Due, infos: Mapping[str, GroupLicenseInfo | None], report: SettleReport) -> None:
    row = item.row
    sku = await rt.skus.get(rt.graph, row.sku_id, rt.now())
    try:
        user = await rt.graph.user_licenses(row.user_id)
    except NotFound:
        return  # a deleted user has nothing left to lose; the row stays as the record
    report.users_read += 1
    after = effective_plans(user.states, sku)
    if has_effective_sku(user.states, sku.sku_id) and row.before_plans <= after:
        await _save(rt, replace(row, relied_on=refreshed(row, infos)))
        return
    names = _group_names(item.changed, infos, sku)
    lost = ", ".join(p.name or p.plan_id for p in sku.describe(row.before_plans - after)) or (
        f"the SKU {sku.part_number or sku.sku_id}"
    )
    what = f"user {row.user_principal_name or row.user_id} lost {lost} of {sku.part_number or sku.sku_id} after {names}"
    direct = direct_assignment(user.states, sku.sku_id)
    if rt.settings.settle_action is SettleAction.RESTORE and row.snapshot is not None and direct is None:
        # The one restore path after a found loss: it records the loss first, and a restore Graph
        # throttles or refuses goes on as a restore task (after Retry-After) until it is done.
        report.restored += 1
        await restore_after_loss(rt, row, user, after, rt.now(), found_by=f"settle check: {names}")
        # A wave still removing relied on the same assumptions: stop it (a finished wave stays as it is).
        await halt_wave(rt, row.wave_id, f"settle check: {what}; the direct assignment was restored")
        return
    report.alerted += 1
    why = "LICSHIFT_SETTLE_ACTION=alert-only" if row.snapshot is not None else "no recorded snapshot"
    if direct is not None:
        why = "a direct assignment is there again"
    message = f"{what}; not restored ({why})"
    detail = f"settle check: {message}"
    # The loss goes on record: a restore task may then put the snapshot back if an admin wants it.
    noted = replace(row, relied_on=refreshed(row, infos), after_plans=after, detail=detail, loss_found_by=ACTOR)
    await _save(rt, noted)
    await _alert(rt, row, message, item.changed)


def _group_names(groups: tuple[str, ...], infos: Mapping[str, GroupLicenseInfo | None], sku: Sku) -> str:
    named = []
    for group_id in groups:
        info = infos.get(group_id)
        if info is None:
            named.append(f"group {group_id} was deleted")
        elif current_options(info, sku.sku_id) is None:
            named.append(f"group '{info.display_name}' ({group_id}) stopped assigning {sku.part_number or sku.sku_id}")
        else:
            named.append(f"group '{info.display_name}' ({group_id}) changed its license options")
    return " and ".join(named)


async def _save(rt: Runtime, row: Outcome) -> None:
    current = await rt.ledger.get_outcome(row.wave_id, row.user_id, row.sku_id)
    if current is None or current.value.status is not OutcomeStatus.REMOVED:
        return  # a rollback or another check got there first; it owns the row now
    try:
        await rt.ledger.save_outcome(replace(row, actor=ACTOR, updated_at=rt.now()), current.etag)
    except ConcurrencyConflict:
        log.info("outcome %s/%s changed during the settle check; the next run reads it again", row.wave_id, row.key)


async def _alert(rt: Runtime, row: Outcome, message: str, groups: tuple[str, ...]) -> None:
    await telemetry.emit(
        rt.ledger,
        telemetry.event_for(
            row,
            telemetry.SETTLE_LOSS,
            message,
            severity=Severity.ALERT,
            actor=ACTOR,
            data={"groups": list(groups), "before_plans": sorted(row.before_plans), "wrote": False},
        ),
        rt.now(),
    )
