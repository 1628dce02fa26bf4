"""The remover: one direct assignment of one SKU from one user, safely (S1, S3, S4, S5).

    load the outcome row        final -> done (a redelivered message is a no-op)
    wave and kill switch        stopped -> PLANNED (paused, kill switch) or NOT_ATTEMPTED
    fresh read of the user      a REMOVING row whose direct assignment is gone: an earlier try removed
                                it (crash after the call) -> post-check
    decide again (S1)           not Remove -> BLOCKED / SKIPPED with the reason
    save REMOVING + snapshot    the crash-safe marker; an ETag conflict means another delivery owns it
    wave and kill switch again  right before the write (S5)
    assignLicense(remove)       Throttled -> re-send with Retry-After (not a failure), the row stays
                                REMOVING: Graph may have applied the write before answering 429
                                "does not have a corresponding license" / "inherited": maybe removed
                                already (a retried POST) -> post-check
    read again (S3)             the SKU still effective with every plan it had -> REMOVED
                                else restore the snapshot (the only addLicenses, S2) -> RESTORED,
                                the wave halts, an alert
Graph 5xx and dropped connections propagate: the host redelivers and the REMOVING marker makes the
retry reconcile instead of acting twice. After maxDequeueCount the poison handler reconciles the same
way and marks the row FAILED if the direct assignment is still there.

Restore and rollback-restore tasks put back exactly the recorded snapshot, and write nothing when a
fresh read shows a direct assignment is already there: Graph writes are removals plus restores only.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from licshift import telemetry
from licshift.decide import Block, Remove, Skip, decide
from licshift.graphport import (
    GraphError,
    GraphRequestError,
    InheritedOnly,
    NotAssigned,
    NotFound,
    Throttled,
    UserLicenses,
)
from licshift.licenses import DirectAssignment, Sku, direct_assignment, effective_plans, has_effective_sku
from licshift.messages import MalformedMessage, Task, TaskKind, encode_task, parse_task
from licshift.outcomes import FINAL_OUTCOMES, Control, Event, Outcome, OutcomeStatus, Severity
from licshift.runtime import Runtime, UnknownSku
from licshift.storeport import ConcurrencyConflict
from licshift.waves import STOPPED_STATUSES, Refused, Wave, WaveEvent, WaveStatus, apply

log = logging.getLogger("licshift.removal")

ACTOR = "remover"
USER_NOT_FOUND = "user-not-found"
RESTORE_ATTEMPTS = 3
RESTORE_WAIT_CAP = 120.0
"""Seconds a restore after a loss waits in-process for Graph's Retry-After before queueing itself."""
HALT_ATTEMPTS = 5


class RemovalNotVisible(Exception):
    """Graph accepted the removal but the direct assignment still shows: retry later (the host
    redelivers; the REMOVING marker makes the retry reconcile)."""


@dataclass(frozen=True, slots=True)
class _Stop:
    status: OutcomeStatus
    detail: str


def _stop(wave: Wave | None, control: Control) -> _Stop | None:
    """Why no removal may happen now (S5), and where the row goes: back to PLANNED when the wave
    will continue (paused, kill switch), NOT_ATTEMPTED when it will not."""
    if wave is None:
        return _Stop(OutcomeStatus.NOT_ATTEMPTED, "wave no longer exists")
    if wave.status in STOPPED_STATUSES or wave.status is WaveStatus.ROLLING_BACK:
        return _Stop(OutcomeStatus.NOT_ATTEMPTED, f"wave {wave.status} before this removal")
    if control.kill_switch:
        return _Stop(OutcomeStatus.PLANNED, "kill switch on: returned to the plan")
    if wave.status is WaveStatus.REMOVING:
        return None
    return _Stop(OutcomeStatus.PLANNED, f"wave {wave.status}: returned to the plan")


async def handle_task_message(rt: Runtime, text: str) -> str:
    """Entry point of the removals queue. Malformed messages are recorded, never raised."""
    try:
        task = parse_task(text)
    except MalformedMessage as exc:
        await _rejected(rt, str(exc), text)
        return "rejected"
    return await run_task(rt, task)


async def run_task(rt: Runtime, task: Task) -> str:
    if task.kind is TaskKind.REMOVE:
        return await remove(rt, task)
    return await restore(rt, task)


async def _rejected(rt: Runtime, reason: str, raw: str) -> None:
    await telemetry.emit(
        rt.ledger,
        Event(
            kind=telemetry.REQUEST_REJECTED,
            message=f"removals queue: rejected: {reason}",
            severity=Severity.WARNING,
            actor=ACTOR,
            data={"reason": reason, "raw": telemetry.truncate(raw)},
        ),
        rt.now(),
    )


async def _save(rt: Runtime, row: Outcome, etag: str) -> str | None:
    """Save a row if unchanged since `etag`; None if another delivery changed it first."""
    try:
        new_etag = await rt.ledger.save_outcome(replace(row, updated_at=rt.now()), etag)
    except ConcurrencyConflict:
        log.info("outcome %s/%s changed under us; the other delivery owns it", row.wave_id, row.key)
        return None
    if row.status in FINAL_OUTCOMES:
        telemetry.outcome_recorded(row)
    return new_etag


async def _state(rt: Runtime, task: Task) -> tuple[Wave | None, Control]:
    wave, control = await asyncio.gather(rt.ledger.get_wave(task.wave_id), rt.ledger.get_control())
    return (wave.value if wave else None), control.value


async def remove(rt: Runtime, task: Task) -> str:
    loaded = await rt.ledger.get_outcome(task.wave_id, task.user_id, task.sku_id)
    if loaded is None:
        await _rejected(rt, f"no outcome row for user {task.user_id} and SKU {task.sku_id} in wave {task.wave_id}", "")
        return "unknown"
    row, etag = loaded.value, loaded.etag
    if row.status in FINAL_OUTCOMES:
        return row.status.value
    wave, control = await _state(rt, task)
    stop = _stop(wave, control)
    if stop is not None and row.status is not OutcomeStatus.REMOVING:
        await _settle(rt, row, etag, stop)
        return stop.status.value
    try:
        sku = await rt.skus.get(rt.graph, task.sku_id, rt.now())
    except UnknownSku as exc:
        return await _fail(rt, row, etag, str(exc))
    try:
        fresh = await rt.graph.user_licenses(task.user_id)
    except NotFound:
        return await _user_gone(rt, row, etag)
    if row.status is OutcomeStatus.REMOVING and direct_assignment(fresh.states, sku.sku_id) is None:
        # An earlier delivery removed it and stopped before recording the result.
        return await _post_check(rt, row, etag, sku, fresh)
    if stop is not None or wave is None:
        await _settle(rt, row, etag, stop or _Stop(OutcomeStatus.NOT_ATTEMPTED, "wave no longer exists"))
        return (stop.status if stop else OutcomeStatus.NOT_ATTEMPTED).value
    decision = decide(fresh.states, sku, wave.group_id, wave.policy)
    if isinstance(decision, Skip | Block):
        final = replace(
            row,
            status=OutcomeStatus.SKIPPED if isinstance(decision, Skip) else OutcomeStatus.BLOCKED,
            decision="skip" if isinstance(decision, Skip) else "block",
            reason=decision.reason.value,
            detail=decision.detail if isinstance(decision, Block) else "",
            user_principal_name=fresh.user_principal_name or row.user_principal_name,
            actor=ACTOR,
        )
        await _save(rt, final, etag)
        return final.status.value
    assert isinstance(decision, Remove)
    marked = replace(
        row,
        status=OutcomeStatus.REMOVING,
        decision="remove",
        reason="",
        detail="",
        snapshot=DirectAssignment(decision.sku_id, decision.disabled_plans),
        before_plans=effective_plans(fresh.states, sku),
        user_principal_name=fresh.user_principal_name or row.user_principal_name,
        attempts=row.attempts + 1,
        graph_error="",
        actor=ACTOR,
    )
    marked_etag = await _save(rt, marked, etag)
    if marked_etag is None:
        return "busy"
    # Right before the write (S5): the wave and the kill switch again, and that no other delivery
    # of this task took the row over since we marked it (it would be about to write too).
    (wave, control), mine = await asyncio.gather(
        _state(rt, task), rt.ledger.get_outcome(task.wave_id, task.user_id, task.sku_id)
    )
    if mine is None or mine.etag != marked_etag:
        return "busy"
    stop = _stop(wave, control)
    if stop is not None:
        await _settle(rt, replace(marked, attempts=row.attempts), marked_etag, stop)
        return stop.status.value
    try:
        await rt.graph.remove_direct(task.user_id, sku.sku_id)
    except Throttled as exc:
        # The row stays REMOVING (a message is on the queue again): a 429 does not prove the write
        # was not applied, and the marker with its snapshot lets the next delivery reconcile.
        await _throttled(rt, task, exc)
        await _save(rt, replace(marked, graph_error=f"throttled: {exc}"), marked_etag)
        return "throttled"
    except (NotAssigned, InheritedOnly) as exc:
        # A retried POST whose first try succeeded answers this way: the post-check tells.
        log.info("remove %s/%s: %s; checking the result", task.user_id, sku.sku_id, exc)
    except NotFound:
        return await _user_gone(rt, marked, marked_etag)
    except GraphRequestError as exc:
        after = await rt.graph.user_licenses(task.user_id)
        if direct_assignment(after.states, sku.sku_id) is not None:
            return await _fail(rt, marked, marked_etag, str(exc))
        return await _post_check(rt, marked, marked_etag, sku, after)
    after = await rt.graph.user_licenses(task.user_id)
    return await _post_check(rt, marked, marked_etag, sku, after)


async def _settle(rt: Runtime, row: Outcome, etag: str, stop: _Stop) -> None:
    await _save(rt, replace(row, status=stop.status, detail=stop.detail, actor=ACTOR), etag)


async def _fail(rt: Runtime, row: Outcome, etag: str, error: str) -> str:
    failed = replace(row, status=OutcomeStatus.FAILED, graph_error=error, actor=ACTOR)
    await _save(rt, failed, etag)
    await telemetry.emit(
        rt.ledger,
        Event(
            kind=telemetry.REMOVAL_FAILED,
            message=f"removal of {row.sku_id} from {row.user_principal_name or row.user_id} failed: {error}",
            severity=Severity.WARNING,
            wave_id=row.wave_id,
            user_id=row.user_id,
            sku_id=row.sku_id,
            actor=ACTOR,
        ),
        rt.now(),
    )
    return OutcomeStatus.FAILED.value


async def _user_gone(rt: Runtime, row: Outcome, etag: str) -> str:
    gone = replace(
        row, status=OutcomeStatus.SKIPPED, decision="skip", reason=USER_NOT_FOUND, detail="user deleted", actor=ACTOR
    )
    await _save(rt, gone, etag)
    return gone.status.value


async def _throttled(rt: Runtime, task: Task, exc: Throttled) -> None:
    """Graph said 429: send the task again after Retry-After (never a hot retry, not a failure) and
    report it, so the scheduler lowers its rate."""
    await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=max(0.0, exc.retry_after))
    await telemetry.emit(
        rt.ledger,
        Event(
            kind=telemetry.THROTTLED,
            message=f"Graph throttled the {task.kind} of {task.sku_id} for {task.user_id}; "
            f"retrying in {exc.retry_after:g} s",
            wave_id=task.wave_id,
            user_id=task.user_id,
            sku_id=task.sku_id,
            actor=ACTOR,
            data={"retry_after": exc.retry_after},
        ),
        rt.now(),
    )


def _kept(user: UserLicenses, sku: Sku, before: frozenset[str]) -> tuple[bool, frozenset[str]]:
    after = effective_plans(user.states, sku)
    return has_effective_sku(user.states, sku.sku_id) and before <= after, after


async def _post_check(rt: Runtime, row: Outcome, etag: str, sku: Sku, after_read: UserLicenses) -> str:
    """S3 on a read taken after the removal: nothing lost -> REMOVED; else restore + halt + alert."""
    kept, after = _kept(after_read, sku, row.before_plans)
    if kept:
        if direct_assignment(after_read.states, sku.sku_id) is not None:
            raise RemovalNotVisible(
                f"Graph accepted the removal of {sku.sku_id} from {row.user_id} but the direct assignment still shows"
            )
        await _save(rt, replace(row, status=OutcomeStatus.REMOVED, after_plans=after, actor=ACTOR), etag)
        return OutcomeStatus.REMOVED.value
    lost = sku.describe(row.before_plans - after)
    wrote = await _restore_now(rt, row, after_read)
    final_read = await rt.graph.user_licenses(row.user_id)
    _, restored_plans = _kept(final_read, sku, row.before_plans)
    detail = "lost " + (", ".join(p.name or p.plan_id for p in lost) or f"the SKU {sku.part_number or sku.sku_id}")
    restored = replace(
        row,
        status=OutcomeStatus.RESTORED,
        after_plans=restored_plans,
        detail=detail + ("; direct assignment restored" if wrote else "; restore queued"),
        actor=ACTOR,
    )
    await _save(rt, restored, etag)
    await telemetry.emit(
        rt.ledger,
        Event(
            kind=telemetry.RESTORED,
            message=f"user {row.user_principal_name or row.user_id} {detail} after the removal of "
            f"{sku.part_number or sku.sku_id}; "
            + ("the direct assignment was restored" if wrote else "restore queued"),
            severity=Severity.ALERT,
            wave_id=row.wave_id,
            user_id=row.user_id,
            sku_id=row.sku_id,
            actor=ACTOR,
            data={
                "before_plans": sorted(row.before_plans),
                "after_removal_plans": sorted(after),
                "after_restore_plans": sorted(restored_plans),
            },
        ),
        rt.now(),
    )
    await halt_wave(rt, row.wave_id, f"user {row.user_id} {detail} after removal; restored from the snapshot")
    return OutcomeStatus.RESTORED.value


async def _restore_now(rt: Runtime, row: Outcome, current: UserLicenses) -> bool:
    """Put the snapshot back at once (a user without a license is an outage). Throttling is waited
    out in-process a few times; past that a restore task is queued. True if this call wrote it."""
    if row.snapshot is None or direct_assignment(current.states, row.sku_id) is not None:
        return False
    for attempt in range(RESTORE_ATTEMPTS):
        try:
            await rt.graph.restore_direct(row.user_id, row.snapshot)
            return True
        except Throttled as exc:
            if attempt + 1 == RESTORE_ATTEMPTS:
                await _throttled(rt, Task(TaskKind.RESTORE, row.wave_id, row.user_id, row.sku_id), exc)
                return False
            await asyncio.sleep(min(RESTORE_WAIT_CAP, max(0.0, exc.retry_after)))
    return False


async def halt_wave(rt: Runtime, wave_id: str, reason: str) -> None:
    for _ in range(HALT_ATTEMPTS):
        loaded = await rt.ledger.get_wave(wave_id)
        if loaded is None:
            return
        now = rt.now()
        changed = apply(loaded.value, WaveEvent.LOSS_DETECTED, now, reason)
        if isinstance(changed, Refused) or changed is loaded.value:
            return
        try:
            await rt.ledger.save_wave(changed, loaded.etag)
        except ConcurrencyConflict:
            continue
        await telemetry.emit(
            rt.ledger,
            Event(
                kind=telemetry.HALTED,
                message=f"wave {wave_id} halted: {reason}",
                severity=Severity.ALERT,
                wave_id=wave_id,
                actor=ACTOR,
                data={"from": loaded.value.status.value, "to": changed.status.value},
            ),
            now,
        )
        return
    raise ConcurrencyConflict(f"wave {wave_id} kept changing while halting it; the task will be retried")


# --- restores ------------------------------------------------------------------------------------


async def restore(rt: Runtime, task: Task) -> str:
    """Put back exactly the recorded snapshot; no write if a direct assignment is already there."""
    rollback = task.kind is TaskKind.ROLLBACK_RESTORE
    target = OutcomeStatus.ROLLED_BACK if rollback else OutcomeStatus.RESTORED
    loaded = await rt.ledger.get_outcome(task.wave_id, task.user_id, task.sku_id)
    if loaded is None:
        await _rejected(rt, f"no outcome row for user {task.user_id} and SKU {task.sku_id} in wave {task.wave_id}", "")
        return "unknown"
    row, etag = loaded.value, loaded.etag
    if row.status is target:
        return row.status.value
    if rollback:
        wave = await rt.ledger.get_wave(task.wave_id)
        if wave is None or wave.value.status is not WaveStatus.ROLLING_BACK or row.status is not OutcomeStatus.REMOVED:
            return row.status.value
    elif row.status not in (OutcomeStatus.REMOVED, OutcomeStatus.REMOVING):
        return row.status.value
    if row.snapshot is None:
        return await _fail(rt, row, etag, "no recorded snapshot to restore")
    try:
        fresh = await rt.graph.user_licenses(task.user_id)
    except NotFound:
        return await _user_gone(rt, row, etag)
    wrote = False
    if direct_assignment(fresh.states, task.sku_id) is None:
        try:
            await rt.graph.restore_direct(task.user_id, row.snapshot)
        except Throttled as exc:
            await _throttled(rt, task, exc)
            return "throttled"
        wrote = True
        fresh = await rt.graph.user_licenses(task.user_id)
    sku = await rt.skus.get(rt.graph, task.sku_id, rt.now())
    done = replace(
        row,
        status=target,
        after_plans=effective_plans(fresh.states, sku),
        detail=("rolled back" if rollback else "restored")
        + ("" if wrote else "; a direct assignment was already there"),
        actor=ACTOR,
    )
    if await _save(rt, done, etag) is None:
        return "busy"
    await telemetry.emit(
        rt.ledger,
        Event(
            kind=telemetry.ROLLED_BACK if rollback else telemetry.RESTORED,
            message=f"{'rolled back' if rollback else 'restored'} the direct assignment of {task.sku_id} for "
            f"{row.user_principal_name or task.user_id}" + ("" if wrote else " (already present, nothing written)"),
            severity=Severity.INFO if rollback else Severity.ALERT,
            wave_id=task.wave_id,
            user_id=task.user_id,
            sku_id=task.sku_id,
            actor=ACTOR,
            data={"wrote": wrote},
        ),
        rt.now(),
    )
    return target.value


# --- poison --------------------------------------------------------------------------------------


async def handle_poison_task(rt: Runtime, text: str, dequeue_count: int) -> str:
    """A removals-queue message that failed maxDequeueCount times. Reconcile like a redelivery would:
    removed and nothing lost -> REMOVED; lost -> restore + halt; direct assignment still there ->
    FAILED. Always alerts; never raises (a poison handler that fails would only poison itself)."""
    try:
        task = parse_task(text)
    except MalformedMessage as exc:
        await _poison_event(rt, f"unreadable removals message: {exc}", text, dequeue_count)
        return "rejected"
    try:
        result = await _reconcile(rt, task, dequeue_count)
    except (GraphError, RemovalNotVisible, ConcurrencyConflict) as exc:
        result = f"unreconciled: {exc}"
    await _poison_event(
        rt, f"{task.kind} task for {task.user_id} / {task.sku_id} gave up: {result}", text, dequeue_count, task
    )
    return result


async def _reconcile(rt: Runtime, task: Task, dequeue_count: int) -> str:
    if task.kind is not TaskKind.REMOVE:
        # A restore that kept failing: try once more; the alert says whether it worked.
        return await restore(rt, task)
    loaded = await rt.ledger.get_outcome(task.wave_id, task.user_id, task.sku_id)
    if loaded is None:
        return "no outcome row"
    row, etag = loaded.value, loaded.etag
    if row.status in FINAL_OUTCOMES:
        return row.status.value
    sku = await rt.skus.get(rt.graph, task.sku_id, rt.now())
    try:
        fresh = await rt.graph.user_licenses(task.user_id)
    except NotFound:
        return await _user_gone(rt, row, etag)
    if row.status is OutcomeStatus.REMOVING and direct_assignment(fresh.states, sku.sku_id) is None:
        try:
            return await _post_check(rt, row, etag, sku, fresh)
        except RemovalNotVisible:
            pass
    return await _fail(rt, row, etag, f"gave up after {dequeue_count} deliveries; the direct assignment is still there")


async def _poison_event(rt: Runtime, message: str, raw: str, dequeue_count: int, task: Task | None = None) -> None:
    await telemetry.emit(
        rt.ledger,
        Event(
            kind=telemetry.POISON,
            message=message,
            severity=Severity.ALERT,
            wave_id=task.wave_id if task else "",
            user_id=task.user_id if task else "",
            sku_id=task.sku_id if task else "",
            actor=ACTOR,
            data={"dequeue_count": dequeue_count, "raw": telemetry.truncate(raw)},
        ),
        rt.now(),
    )
