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
                                the wave halts, an alert; a restore Graph throttles or refuses is
                                queued as a restore task and the row stays REMOVING until it is done
A throttled read anywhere re-sends the task after Retry-After, like a throttled write.
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
from datetime import datetime, timedelta

from licshift.ports.graph import (
    GraphError,
    GraphRequestError,
    InheritedOnly,
    NotAssigned,
    NotFound,
    Throttled,
    TransientGraphError,
    UserLicenses,
)
from licshift.ports.store import ConcurrencyConflict, Versioned
from licshift.rules.decide import HOLD_REASONS, Block, Remove, Skip, SkipReason, decide, relied_on_groups
from licshift.rules.licenses import (
    DirectAssignment,
    Sku,
    direct_assignment,
    effective_plans,
    has_effective_sku,
    states_for,
)
from licshift.rules.messages import MalformedMessage, Task, TaskKind, encode_task, parse_task, queue_text, stored_text
from licshift.rules.outcomes import FINAL_OUTCOMES, Outcome, OutcomeStatus, Severity
from licshift.rules.waves import STOPPED_STATUSES, Wave, WaveEvent, WaveStatus
from licshift.services import reprocess, telemetry, throttled, transitions
from licshift.services.runtime import Runtime
from licshift.services.skus import UnknownSku

log = logging.getLogger("licshift.services.remover")

ACTOR = "remover"
USER_NOT_FOUND = "user-not-found"
GONE_BEFORE_REMOVAL = "gone-before-removal"
"""Skip reason: the scan saw a direct assignment the fresh read no longer shows (someone else removed
it, or licshift did and the ledger lost the record): not licshift's removal to roll back or count."""
POST_CHECK = "post-check"
RESTORE_ATTEMPTS = 3
RESTORE_WAIT_CAP = 120.0
"""Seconds a restore after a loss waits in-process for Graph's Retry-After before queueing itself."""
HALT_ATTEMPTS = 5
OWNER_SECONDS = 60.0
"""How long a REMOVING row belongs to the delivery that marked it. Another delivery of the same task
that finds the direct assignment still there within this window leaves it alone (it re-queues
itself for later): the owner may be between its last check and its Graph call, and a second
removal would be a wasted write. A delivery that fails releases the row at once (graph_error set);
one that died holds it at most this long."""
RESTORE_RETRY_SECONDS = 2.0
"""Delay of a restore task queued after Graph failed or refused a restore (not throttling)."""


class RemovalNotVisible(Exception):
    """Graph accepted the removal but the direct assignment still shows: retry later (the host
    redelivers; the REMOVING marker makes the retry reconcile)."""


@dataclass(frozen=True, slots=True)
class _Stop:
    status: OutcomeStatus
    detail: str


def _stop(wave: Wave | None, kill_switch: bool) -> _Stop | None:
    """Why no removal may happen now (S5), and where the row goes: back to PLANNED when the wave
    will continue (paused, kill switch), NOT_ATTEMPTED when it will not."""
    if wave is None:
        return _Stop(OutcomeStatus.NOT_ATTEMPTED, "wave no longer exists")
    if wave.status in STOPPED_STATUSES or wave.status is WaveStatus.ROLLING_BACK:
        return _Stop(OutcomeStatus.NOT_ATTEMPTED, f"wave {wave.status} before this removal")
    if kill_switch:
        return _Stop(OutcomeStatus.PLANNED, "kill switch on: returned to the plan")
    if wave.status is WaveStatus.REMOVING:
        return None
    return _Stop(OutcomeStatus.PLANNED, f"wave {wave.status}: returned to the plan")


async def handle_task_body(rt: Runtime, stored: bytes) -> str:
    """Entry point of the removals queue: the message's stored bytes (see messages.queue_text)."""
    try:
        text = queue_text(stored)
    except MalformedMessage as exc:
        await _rejected(rt, str(exc), stored_text(stored))
        return "rejected"
    return await handle_task_message(rt, text)


async def handle_task_message(rt: Runtime, text: str) -> str:
    """Entry point of the removals queue. Malformed messages are recorded, never raised."""
    try:
        task = parse_task(text)
    except MalformedMessage as exc:
        await _rejected(rt, str(exc), text)
        return "rejected"
    return await run_task(rt, task)


async def run_task(rt: Runtime, task: Task) -> str:
    try:
        if task.kind is TaskKind.REPROCESS:
            return await reprocess.run(rt, task)
        if task.kind is TaskKind.REMOVE:
            return await remove(rt, task)
        return await restore(rt, task)
    except Throttled as exc:
        # A throttled read (the SDK's own retries gave up). Every step leaves its row where a later
        # delivery continues (a removal that may have happened stays REMOVING), so the task is sent
        # again after Retry-After, like a throttled write: never a hot retry, never a failed delivery.
        await _throttled(rt, task, exc)
        await _promise(rt, task, _until(rt, exc))
        return "throttled"


async def _rejected(rt: Runtime, reason: str, raw: str, task: Task | None = None) -> None:
    wave_id = task.wave_id if task is not None else ""
    event = telemetry.rejected_request(reason, raw, prefix="removals queue: ", wave_id=wave_id, actor=ACTOR)
    await telemetry.emit(rt.ledger, event, rt.now())


def _until(rt: Runtime, exc: Throttled) -> datetime:
    return rt.now() + timedelta(seconds=max(0.0, exc.retry_after))


async def _promise(rt: Runtime, task: Task, until: datetime) -> None:
    """Record Graph's Retry-After on the task's row, so that no other path (the scheduler's re-send of
    stale rows, the poison handler, a duplicate delivery) calls Graph for it before then."""
    for _ in range(HALT_ATTEMPTS):
        loaded = await rt.ledger.get_outcome(task.wave_id, task.user_id, task.sku_id)
        if loaded is None or (loaded.value.not_before is not None and loaded.value.not_before >= until):
            return
        try:
            await rt.ledger.save_outcome(replace(loaded.value, not_before=until), loaded.etag)
            return
        except ConcurrencyConflict:
            continue


async def _wait_promised(rt: Runtime, task: Task, row: Outcome) -> bool:
    """True (and the task sent again for then) if Graph asked to wait for this row and the time has
    not come yet: a delivery before its time must not call Graph at all."""
    if row.not_before is None:
        return False
    left = (row.not_before - rt.now()).total_seconds()
    if left <= 0:
        return False
    await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=left)
    log.info("%s task for %s/%s waits %.0f s more for Graph's Retry-After", task.kind, task.user_id, task.sku_id, left)
    return True


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


async def _state(rt: Runtime, task: Task) -> tuple[Wave | None, bool]:
    """The task's wave and whether a kill switch is on: the control row's or LICSHIFT_KILL_SWITCH. The
    rows are at most LICSHIFT_STATE_CACHE_SECONDS old, shared by this process's removals (stopreads.py)."""
    max_age = timedelta(seconds=rt.settings.state_cache_seconds)
    wave, control = await asyncio.gather(
        rt.stops.wave(rt.ledger, task.wave_id, rt.now, max_age), rt.stops.control(rt.ledger, rt.now, max_age)
    )
    return wave, control.kill_switch or rt.settings.kill_switch


async def _row(rt: Runtime, task: Task) -> Versioned[Outcome] | None:
    """The task's outcome row. A task without one (forged, or its wave deleted) is recorded as a
    rejected request and does nothing."""
    loaded = await rt.ledger.get_outcome(task.wave_id, task.user_id, task.sku_id)
    if loaded is None:
        await _rejected(rt, f"no outcome row for user {task.user_id} and SKU {task.sku_id} in wave {task.wave_id}", "")
    return loaded


async def remove(rt: Runtime, task: Task) -> str:
    loaded = await _row(rt, task)
    if loaded is None:
        return "unknown"
    row, etag = loaded.value, loaded.etag
    if row.status in FINAL_OUTCOMES:
        return row.status.value
    wave, kill_switch = await _state(rt, task)
    early = await _not_now(rt, task, row, wave)
    if early is not None:
        return early
    stop = _stop(wave, kill_switch)
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
    held = _owner_holds(rt, row)
    if held > 0:
        await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=held + 1.0)
        return "busy"
    if stop is not None or wave is None:
        await _settle(rt, row, etag, stop or _Stop(OutcomeStatus.NOT_ATTEMPTED, "wave no longer exists"))
        return (stop.status if stop else OutcomeStatus.NOT_ATTEMPTED).value
    decision = await _decide_fresh(rt, fresh, sku, wave)
    if isinstance(decision, Skip | Block):
        return await _not_removed(rt, row, etag, sku, decision, fresh, wave.group_id)
    assert isinstance(decision, Remove)
    marked = _marked(row, decision, fresh, sku)
    marked_etag = await _save(rt, marked, etag)
    if marked_etag is None:
        return "busy"
    return await _remove_marked(rt, task, marked, marked_etag, sku, row.attempts)


def _marked(row: Outcome, decision: Remove, fresh: UserLicenses, sku: Sku) -> Outcome:
    """The crash-safe marker: REMOVING, with the snapshot a restore puts back and the plans the user
    has right now (what the post-check compares with)."""
    return replace(
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
        relied_on=decision.relied_on,
    )


async def _remove_marked(rt: Runtime, task: Task, marked: Outcome, etag: str, sku: Sku, attempts: int) -> str:
    """The write, for a row this delivery marked REMOVING (at `etag`): the stop rules once more right
    before it (S5), assignLicense, then the post-check on a fresh read (S3)."""
    # The wave and the kill switch again, and that the row is still at our marker: no other delivery
    # took it over (it would be about to write too), and none recorded Graph's Retry-After on it
    # (`_promise`: a duplicate delivery throttled on its fresh read, inside our owner window).
    (wave, kill_switch), mine = await asyncio.gather(
        _state(rt, task), rt.ledger.get_outcome(task.wave_id, task.user_id, task.sku_id)
    )
    if mine is None or mine.etag != etag:
        return "busy"
    stop = _stop(wave, kill_switch)
    if stop is not None:
        await _settle(rt, replace(marked, attempts=attempts), etag, stop)
        return stop.status.value
    try:
        await rt.graph.remove_direct(task.user_id, sku.sku_id)
    except (TransientGraphError, OSError) as exc:
        # Release the row before the host redelivers: a retry must not wait for the owner window.
        await _save(rt, replace(marked, graph_error=f"interrupted: {exc}"), etag)
        raise
    except Throttled as exc:
        # The row stays REMOVING (a message is on the queue again): a 429 does not prove the write
        # was not applied, and the marker with its snapshot lets the next delivery reconcile.
        await _throttled(rt, task, exc)
        await _save(rt, replace(marked, graph_error=f"throttled: {exc}", not_before=_until(rt, exc)), etag)
        return "throttled"
    except (NotAssigned, InheritedOnly) as exc:
        # A retried POST whose first try succeeded answers this way: the post-check tells.
        log.info("remove %s/%s: %s; checking the result", task.user_id, sku.sku_id, exc)
    except NotFound:
        return await _user_gone(rt, marked, etag)
    except GraphRequestError as exc:
        after = await rt.graph.user_licenses(task.user_id)
        if direct_assignment(after.states, sku.sku_id) is not None:
            return await _fail(rt, marked, etag, str(exc))
        return await _post_check(rt, marked, etag, sku, after)
    after = await rt.graph.user_licenses(task.user_id)
    return await _post_check(rt, marked, etag, sku, after)


async def _not_now(rt: Runtime, task: Task, row: Outcome, wave: Wave | None) -> str | None:
    """What a removal task does instead when the row is not to be removed now, or None."""
    if wave is not None and wave.dry_run:
        # A dry run writes nothing (S2) and its plan stays as recorded: this task did not come from
        # licshift's scheduler.
        await _rejected(rt, f"remove task for dry-run wave {task.wave_id}: a plan is never carried out", "", task)
        return "rejected"
    if row.loss_found_by:
        # A loss is on record and its restore is pending: only a restore may touch this row now.
        return await restore(rt, replace(task, kind=TaskKind.RESTORE))
    if await _wait_promised(rt, task, row):
        return "throttled"
    return None


async def _not_removed(
    rt: Runtime, row: Outcome, etag: str, sku: Sku, decision: Skip | Block, fresh: UserLicenses, wave_group: str
) -> str:
    if isinstance(decision, Block) and decision.reason in HOLD_REASONS:
        return await _hold(rt, row, etag, decision, fresh, sku, wave_group)
    if isinstance(decision, Skip) and decision.reason is SkipReason.NO_DIRECT_ASSIGNMENT and row.snapshot:
        return await _gone_before_removal(rt, row, etag, sku, fresh)
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


async def _decide_fresh(rt: Runtime, fresh: UserLicenses, sku: Sku, wave: Wave) -> Remove | Skip | Block:
    """The rule on the fresh read. S1 over the union: a Remove stands only if every group the proof
    counts has finished processing; their states are read after the user, so a change made before
    the user's read shows (the group-state cache window aside, docs/safety.md)."""
    decision = decide(fresh.states, sku, wave.group_id, wave.policy)
    if not isinstance(decision, Remove):
        return decision
    states = await rt.groups.states(rt.graph, [g.group_id for g in decision.relied_on], rt.now())
    return decide(fresh.states, sku, wave.group_id, wave.policy, group_states=states)


async def _hold(
    rt: Runtime, row: Outcome, etag: str, hold: Block, fresh: UserLicenses, sku: Sku, wave_group: str
) -> str:
    """A relied-on group is processing: back to PLANNED with the reason and the groups, so the
    scheduler enqueues the user again once they have all finished (never removed meanwhile)."""
    held = replace(
        row,
        status=OutcomeStatus.PLANNED,
        decision="block",
        reason=hold.reason.value,
        detail=hold.detail,
        relied_on=relied_on_groups(fresh.states, sku.sku_id, wave_group),
        user_principal_name=fresh.user_principal_name or row.user_principal_name,
        actor=ACTOR,
    )
    await _save(rt, held, etag)
    log.info("held %s/%s: %s", row.user_id, row.sku_id, hold.detail, extra={"licshift_wave_id": row.wave_id})
    return "held"


def _owner_holds(rt: Runtime, row: Outcome) -> float:
    """Seconds another delivery still owns this REMOVING row (0: nobody, take it over)."""
    if row.status is not OutcomeStatus.REMOVING or row.graph_error or row.updated_at is None:
        return 0.0
    age = (rt.now() - row.updated_at).total_seconds()
    return max(0.0, OWNER_SECONDS - age)


async def _settle(rt: Runtime, row: Outcome, etag: str, stop: _Stop) -> None:
    await _save(rt, replace(row, status=stop.status, detail=stop.detail, actor=ACTOR), etag)


async def _fail(rt: Runtime, row: Outcome, etag: str, error: str) -> str:
    failed = replace(row, status=OutcomeStatus.FAILED, graph_error=error, actor=ACTOR)
    await _save(rt, failed, etag)
    await telemetry.emit(
        rt.ledger,
        telemetry.event_for(
            row,
            telemetry.REMOVAL_FAILED,
            f"removal of {row.sku_id} from {row.user_principal_name or row.user_id} failed: {error}",
            severity=Severity.WARNING,
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


async def _gone_before_removal(rt: Runtime, row: Outcome, etag: str, sku: Sku, fresh: UserLicenses) -> str:
    """The scan saw a direct assignment the fresh read does not: say so, with what the read showed,
    instead of "no direct assignment" (which reads as "nothing to do" and hides who removed it). The
    row keeps the scan's snapshot for the record; a rollback restores REMOVED rows only."""
    sources = [
        f"group {s.assigned_by_group} ({s.state}{', error ' + s.error if s.error else ''})"
        for s in states_for(fresh.states, sku.sku_id)
    ]
    after = effective_plans(fresh.states, sku)
    shown = (
        f"inherited from {', '.join(sorted(sources))}; {len(after)} of {len(sku.plan_ids)} plans enabled"
        if sources
        else f"no assignment of {sku.part_number or sku.sku_id} at all"
    )
    gone = replace(
        row,
        status=OutcomeStatus.SKIPPED,
        decision="skip",
        reason=GONE_BEFORE_REMOVAL,
        detail=f"the scan saw a direct assignment; the fresh read before removal showed none: {shown}",
        after_plans=after,
        user_principal_name=fresh.user_principal_name or row.user_principal_name,
        actor=ACTOR,
    )
    await _save(rt, gone, etag)
    return gone.status.value


async def _throttled(rt: Runtime, task: Task, exc: Throttled) -> None:
    await throttled.retry_after(rt, task, exc, f"the {task.kind} of {task.sku_id} for {task.user_id}", actor=ACTOR)


def _kept(user: UserLicenses, sku: Sku, before: frozenset[str]) -> tuple[bool, frozenset[str]]:
    after = effective_plans(user.states, sku)
    return has_effective_sku(user.states, sku.sku_id) and before <= after, after


async def _post_check(rt: Runtime, row: Outcome, etag: str, sku: Sku, after_read: UserLicenses) -> str:
    """S3 on a read taken after the removal: nothing lost -> REMOVED; else restore + halt + alert.

    The order after a loss matters: restore first (every second without the license is an outage),
    then record, halt and alert, none of which may hinge on another Graph call succeeding. A row left
    REMOVING with its direct assignment back would look to a redelivery like a removal not yet made,
    and be decided (and possibly removed) afresh in a wave that is not halted yet.
    """
    kept, after = _kept(after_read, sku, row.before_plans)
    if kept:
        if direct_assignment(after_read.states, sku.sku_id) is not None:
            raise RemovalNotVisible(
                f"Graph accepted the removal of {sku.sku_id} from {row.user_id} but the direct assignment still shows"
            )
        removed = replace(row, status=OutcomeStatus.REMOVED, after_plans=after, actor=ACTOR, removed_at=rt.now())
        await _save(rt, removed, etag)
        return OutcomeStatus.REMOVED.value
    return await _after_loss(rt, row, etag, sku, after_read, after)


async def _after_loss(
    rt: Runtime, row: Outcome, etag: str, sku: Sku, after_read: UserLicenses, after: frozenset[str]
) -> str:
    """The user has less than before the removal: restore, record, alert, halt (in that order)."""
    lost = sku.describe(row.before_plans - after)
    detail = "lost " + (", ".join(p.name or p.plan_id for p in lost) or f"the SKU {sku.part_number or sku.sku_id}")
    row = replace(row, loss_found_by=POST_CHECK)
    restore = await _restore_now(rt, row, after_read)
    if restore.wrote:
        restored_plans, reread = await _read_plans(rt, row.user_id, sku)
        final = replace(
            row,
            status=OutcomeStatus.RESTORED,
            after_plans=restored_plans,
            detail=f"{detail}; direct assignment restored" + reread,
            actor=ACTOR,
        )
    else:
        # Not put back yet: the row stays REMOVING (not final), so the queued restore task, a
        # redelivery or the scheduler's re-send of stale rows reconciles it from a fresh read.
        restored_plans = after
        final = replace(
            row,
            after_plans=after,
            detail=f"{detail}; {restore.summary}",
            graph_error=restore.error,
            not_before=restore.not_before or row.not_before,
        )
    await _save(rt, final, etag)
    await telemetry.emit(
        rt.ledger,
        telemetry.event_for(
            row,
            telemetry.RESTORED,
            f"user {row.user_principal_name or row.user_id} {detail} after the removal of "
            f"{sku.part_number or sku.sku_id}; {restore.summary}",
            severity=Severity.ALERT,
            actor=ACTOR,
            data={
                "before_plans": sorted(row.before_plans),
                "after_removal_plans": sorted(after),
                "after_restore_plans": sorted(restored_plans),
                "wrote": restore.wrote,
            },
        ),
        rt.now(),
    )
    await halt_wave(rt, row.wave_id, f"user {row.user_id} {detail} after removal; {restore.summary}")
    return OutcomeStatus.RESTORED.value if restore.wrote else "restore-pending"


async def _read_plans(rt: Runtime, user_id: str, sku: Sku) -> tuple[frozenset[str], str]:
    """The user's effective plans of `sku` for the ledger's after state; a failed read is noted, not
    raised (the restore it would describe has already happened)."""
    try:
        user = await rt.graph.user_licenses(user_id)
    except GraphError as exc:
        return frozenset(), f" (not re-read: {exc})"
    return effective_plans(user.states, sku), ""


@dataclass(frozen=True, slots=True)
class _RestoreResult:
    wrote: bool
    summary: str
    error: str = ""
    not_before: datetime | None = None


async def _restore_now(rt: Runtime, row: Outcome, current: UserLicenses) -> _RestoreResult:
    """Put the snapshot back at once (a user without a license is an outage). Throttling is waited
    out in-process a few times; past that, or when Graph fails or refuses the write, a restore task
    is queued, which tries again until Graph accepts it (or its poison handler alerts)."""
    if direct_assignment(current.states, row.sku_id) is not None:
        return _RestoreResult(False, "a direct assignment still shows: nothing to restore yet")
    task = Task(TaskKind.RESTORE, row.wave_id, row.user_id, row.sku_id)
    if row.snapshot is None:
        await rt.queue.send(rt.settings.removals_queue, encode_task(task))
        return _RestoreResult(False, "no recorded snapshot; restore task queued", "no recorded snapshot")
    attempts = 0
    while True:
        attempts += 1
        try:
            await rt.graph.restore_direct(row.user_id, row.snapshot)
            return _RestoreResult(True, "the direct assignment was restored")
        except Throttled as exc:
            if attempts >= RESTORE_ATTEMPTS or exc.retry_after > RESTORE_WAIT_CAP:
                # Waiting less than Graph asked and trying again would break its Retry-After: a wait
                # longer than the cap goes to a restore task that becomes visible only then.
                await _throttled(rt, task, exc)
                summary = f"restore throttled; restore task queued for {exc.retry_after:g} s from now"
                return _RestoreResult(False, summary, f"throttled: {exc}", _until(rt, exc))
            await asyncio.sleep(max(0.0, exc.retry_after))
        except GraphError as exc:
            await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=RESTORE_RETRY_SECONDS)
            return _RestoreResult(False, f"restore failed ({exc}); restore task queued", str(exc))


async def halt_wave(rt: Runtime, wave_id: str, reason: str) -> None:
    """Halt the wave after a loss (S3): an alert, recorded once however many workers find losses."""
    try:
        await transitions.transition(rt.ledger, wave_id, WaveEvent.LOSS_DETECTED, reason, rt.now, actor=ACTOR)
    finally:
        rt.stops.forget(wave_id)  # this instance's next check sees the halt at once


# --- restores ------------------------------------------------------------------------------------


async def restore(rt: Runtime, task: Task) -> str:
    """Put back exactly the recorded snapshot; no write if a direct assignment is already there."""
    rollback = task.kind is TaskKind.ROLLBACK_RESTORE
    target = OutcomeStatus.ROLLED_BACK if rollback else OutcomeStatus.RESTORED
    loaded = await _row(rt, task)
    if loaded is None:
        return "unknown"
    row, etag = loaded.value, loaded.etag
    if row.status is target:
        return row.status.value
    wave = await rt.ledger.get_wave(task.wave_id) if rollback else None
    refusal = _restore_refusal(task, row, wave.value if wave else None)
    if refusal is not None:
        # Graph writes are removals plus restores of a recorded loss or a rollback, nothing else (S2);
        # anything else on this queue did not come from licshift, and is recorded (S7).
        await _rejected(rt, refusal, encode_task(task), task)
        return "rejected"
    if await _wait_promised(rt, task, row):
        return "throttled"
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
            await _save(rt, replace(row, not_before=_until(rt, exc)), etag)
            return "throttled"
        wrote = True
        fresh = await rt.graph.user_licenses(task.user_id)
    sku = await rt.skus.get(rt.graph, task.sku_id, rt.now())
    done = replace(
        row,
        status=target,
        after_plans=effective_plans(fresh.states, sku),
        detail=("rolled back" if rollback else (row.detail + "; " if row.detail else "") + "restored")
        + ("" if wrote else "; a direct assignment was already there"),
        actor=ACTOR,
    )
    if await _save(rt, done, etag) is None:
        return "busy"
    await telemetry.emit(
        rt.ledger,
        telemetry.event_for(
            task,
            telemetry.ROLLED_BACK if rollback else telemetry.RESTORED,
            f"{'rolled back' if rollback else 'restored'} the direct assignment of {task.sku_id} for "
            f"{row.user_principal_name or task.user_id}" + ("" if wrote else " (already present, nothing written)"),
            severity=Severity.INFO if rollback else Severity.ALERT,
            actor=ACTOR,
            data={"wrote": wrote},
        ),
        rt.now(),
    )
    return target.value


def _restore_refusal(task: Task, row: Outcome, wave: Wave | None) -> str | None:
    """Why a restore task may not act on `row` (None: it may). A restore puts back a recorded loss;
    a rollback-restore undoes a removal while its wave rolls back."""
    what = f"{task.kind} task for user {task.user_id} / SKU {task.sku_id} in wave {task.wave_id}"
    if task.kind is TaskKind.ROLLBACK_RESTORE:
        if wave is None or wave.status is not WaveStatus.ROLLING_BACK:
            return f"{what}: the wave is {wave.status if wave else 'unknown'}, not rolling back"
        if row.status is not OutcomeStatus.REMOVED:
            return f"{what}: the row is {row.status}, not removed"
        return None
    if not row.loss_found_by:
        return f"{what}: no loss was recorded for it (row {row.status})"
    if row.status not in (OutcomeStatus.REMOVED, OutcomeStatus.REMOVING):
        return f"{what}: the row is {row.status}"
    return None


# --- poison --------------------------------------------------------------------------------------


async def handle_poison_body(rt: Runtime, stored: bytes, dequeue_count: int) -> str:
    """Entry point of the removals poison queue; never raises for what the message holds."""
    try:
        text = queue_text(stored)
    except MalformedMessage as exc:
        await _rejected(rt, f"poison queue: {exc}", stored_text(stored))
        return "rejected"
    return await handle_poison_task(rt, text, dequeue_count)


async def handle_poison_task(rt: Runtime, text: str, dequeue_count: int) -> str:
    """A removals-queue message that failed maxDequeueCount times. Reconcile like a redelivery would:
    removed and nothing lost -> REMOVED; lost -> restore + halt; direct assignment still there ->
    FAILED. Always alerts; never raises (a poison handler that fails would only poison itself)."""
    try:
        task = parse_task(text)
    except MalformedMessage as exc:
        # Never a task that failed: the removals queue rejects unreadable messages at once.
        await _rejected(rt, f"poison queue: {exc}", text)
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
    if task.kind is TaskKind.REPROCESS:
        return await reprocess.gave_up(rt, task, dequeue_count)
    if task.kind is not TaskKind.REMOVE:
        # A restore that kept failing: try once more; the alert says whether it worked.
        return await restore(rt, task)
    loaded = await rt.ledger.get_outcome(task.wave_id, task.user_id, task.sku_id)
    if loaded is None:
        return "no outcome row"
    row, etag = loaded.value, loaded.etag
    if row.status in FINAL_OUTCOMES:
        return row.status.value
    if row.loss_found_by:
        return await restore(rt, replace(task, kind=TaskKind.RESTORE))
    if row.not_before is not None and row.not_before > rt.now():
        # Graph asked to wait; the task it re-sent reconciles the row then.
        return f"throttled until {row.not_before.isoformat()}; left to the task re-sent for then"
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
    ids = {"wave_id": task.wave_id, "user_id": task.user_id, "sku_id": task.sku_id} if task else {}
    event = telemetry.poison_message(message, raw, dequeue_count, actor=ACTOR, **ids)
    await telemetry.emit(rt.ledger, event, rt.now())
