"""`licshift reprocess`: reprocessLicenseAssignment for users in a license error (CountViolation once
seats are free), paced by the same write budget as removals, one ledger event per user.

Intake (`accept`) refuses unless LICSHIFT_REPROCESS_ENABLED, records its answer first (the tasks
check it: a reprocess task names an accepted request, S7), reserves write slots in the one pacing
row (quota.py, the slots the scheduler's removals draw from) and sends one reprocess task per user on
the removals queue, each visible at its slot. Users that found no slot go back on the waves queue as
a continuation of the same request, visible when the granted slots are spent.

The remover hands reprocess tasks to `run`: read the user (the errors before), call Graph, read again
(the errors after), record a `reprocessed` event. 429 re-sends the task after Retry-After and reports
it like a throttled removal, so the scheduler lowers the rate. Reprocessing never touches a direct
assignment: Entra evaluates the user's group assignments again, which it also does by itself after
any group change; the call only does it now.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from licshift.ports.graph import GraphError, GraphRequestError, NotFound, Throttled, UserLicenses
from licshift.rules import pacing
from licshift.rules.answers import Answer, Verdict
from licshift.rules.messages import Reprocess, Task, TaskKind, encode_task, encode_waves_message
from licshift.rules.outcomes import Event, Severity
from licshift.services import quota, telemetry, throttled
from licshift.services.runtime import Runtime
from licshift.services.scheduler import stale_after

log = logging.getLogger("licshift.services.reprocess")

ACTOR = "reprocess"
CONTINUE_MIN_SECONDS = 1.0

# What happened to one user (the `outcome` of a `reprocessed` event; the CLI counts them).
CLEARED = "cleared"
"""The user had a license error from a group before the call and has none after."""
NO_ERROR = "reprocessed"
"""Reprocessed; no license error before or after."""
STILL_IN_ERROR = "still-in-error"
"""A license error shows after the call (seats still short, or Entra still processing)."""
UNCONFIRMED = "unconfirmed"
"""Reprocessed, but the read after the call failed: whether the error cleared is not known."""
USER_NOT_FOUND = "user-not-found"
NOT_ATTEMPTED = "not-attempted"
FAILED = "failed"
GOOD_OUTCOMES = frozenset({CLEARED, NO_ERROR})


class Refusal(Exception):
    """Intake will not carry out the command; the text says why and what to do."""


@dataclass(frozen=True, slots=True)
class Accepted:
    verdict: Verdict
    message: str


def enabled_or_refuse(rt: Runtime) -> None:
    if not rt.settings.reprocess_enabled:
        raise Refusal(
            "reprocessing is off in this deployment: set LICSHIFT_REPROCESS_ENABLED=true on the function app "
            "and grant its identity the Graph permission User.ReadWrite.All (infra: reprocessEnabled)"
        )


async def accept(rt: Runtime, command: Reprocess) -> Accepted:
    """Carry out a reprocess command from the waves queue (Refusal: not carried out)."""
    enabled_or_refuse(rt)
    first = not command.batch_id
    batch = command.batch_id or command.request_id or str(uuid.uuid4())
    if first:
        done = await rt.ledger.get_answer(batch)
        if done is not None and done.verdict in (Verdict.ACCEPTED, Verdict.DUPLICATE):
            return Accepted(Verdict.DUPLICATE, f"reprocess request {batch} was already accepted")
        if command.wave_id and await rt.ledger.get_wave(command.wave_id) is None:
            raise Refusal(f"wave {command.wave_id} does not exist; list waves with `licshift status`")
    now = rt.now()
    held = await quota.reserve(rt, now, wanted=len(command.users), lookback=_lookback(rt))
    slots = held.slots[: len(command.users)]
    message = _accepted_message(command, len(slots), slots[-1] - now.timestamp() if slots else 0.0)
    if first:
        # Before any task is sent: a task checks that its request was accepted.
        await rt.ledger.record_answer(Answer(batch, Verdict.ACCEPTED, message, command.wave_id, now))
    try:
        for user_id, slot in zip(command.users, slots, strict=False):
            task = Task(TaskKind.REPROCESS, command.wave_id, user_id, "", request_id=batch)
            delay = pacing.delay(slot, rt.now().timestamp())
            await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=delay)
    finally:
        await quota.settle(rt, held, len(slots), rt.now())
    rest = command.users[len(slots) :]
    if rest:
        wait = max(CONTINUE_MIN_SECONDS, (slots[-1] - rt.now().timestamp()) if slots else rt.settings.tick_seconds)
        more = replace(command, users=rest, request_id="", batch_id=batch)
        await rt.queue.send(rt.settings.waves_queue, encode_waves_message(more), delay_seconds=wait)
    await telemetry.emit(rt.ledger, _accepted_event(command, batch, len(slots), len(rest)), now)
    return Accepted(Verdict.ACCEPTED, message)


def _lookback(rt: Runtime) -> timedelta:
    return stale_after(rt.settings.tick_seconds)


def _accepted_message(command: Reprocess, sent: int, spread: float) -> str:
    what = f" ({command.reason})" if command.reason else ""
    pace = f"the first {sent} over {max(0.0, spread):.0f} s" if sent else "waiting for write slots"
    return f"reprocess of {len(command.users)} user(s){what} accepted; {pace}, paced with removals"


def _accepted_event(command: Reprocess, batch: str, sent: int, left: int) -> Event:
    part = "continued" if command.batch_id else "accepted"
    return Event(
        kind=telemetry.REPROCESS_ACCEPTED,
        message=f"reprocess {part}: {sent} task(s) sent on write slots, {left} waiting for later slots"
        + (f" ({command.reason})" if command.reason else ""),
        wave_id=command.wave_id,
        actor=command.requested_by or "licshift",
        data={"request_id": batch, "users": len(command.users), "sent": sent, "later": left, "reason": command.reason},
    )


# --- the task ------------------------------------------------------------------------------------


async def run(rt: Runtime, task: Task) -> str:
    """One user's reprocessLicenseAssignment (a removals-queue task)."""
    refusal = await _task_refusal(rt, task)
    if refusal is not None:
        raw = encode_task(task)
        event = telemetry.rejected_request(refusal, raw, prefix="removals queue: ", wave_id=task.wave_id, actor=ACTOR)
        await telemetry.emit(rt.ledger, event, rt.now())
        return "rejected"
    control = await rt.ledger.get_control()
    if control.value.kill_switch or rt.settings.kill_switch:
        return await _record(rt, task, NOT_ATTEMPTED, "kill switch on: not reprocessed; run the command again later")
    try:
        return await _reprocess(rt, task)
    except Throttled as exc:
        await _throttled(rt, task, exc)
        return "throttled"


async def _task_refusal(rt: Runtime, task: Task) -> str | None:
    what = f"reprocess task for user {task.user_id}"
    if not rt.settings.reprocess_enabled:
        return f"{what}: LICSHIFT_REPROCESS_ENABLED is off"
    answer = await rt.ledger.get_answer(task.request_id)
    if answer is None or answer.verdict not in (Verdict.ACCEPTED, Verdict.DUPLICATE):
        return f"{what}: request {task.request_id} was never accepted by intake"
    return None


async def _reprocess(rt: Runtime, task: Task) -> str:
    try:
        before = await rt.graph.user_licenses(task.user_id)
    except NotFound:
        return await _record(rt, task, USER_NOT_FOUND, "the user does not exist (deleted?); nothing reprocessed")
    try:
        await rt.graph.reprocess_license_assignment(task.user_id)
    except NotFound:
        return await _record(rt, task, USER_NOT_FOUND, "the user was deleted before the call", before=before)
    except GraphRequestError as exc:
        return await _record(rt, task, FAILED, f"Graph refused: {exc}", before=before)
    try:
        after: UserLicenses | None = await rt.graph.user_licenses(task.user_id)
    except GraphError as exc:  # throttled too: the write is done, and must not be sent again for a read
        log.warning("user %s reprocessed but not read again: %s", task.user_id, exc)
        after = None
    return await _record(rt, task, _outcome(before, after), "", before=before, after=after)


def license_errors(user: UserLicenses | None) -> list[str]:
    """The license error codes of the user's group assignments, sorted, once each."""
    if user is None:
        return []
    return sorted({s.error for s in user.states if s.assigned_by_group and s.error})


def _outcome(before: UserLicenses, after: UserLicenses | None) -> str:
    if after is None:
        return NO_ERROR if not license_errors(before) else UNCONFIRMED
    if license_errors(after):
        return STILL_IN_ERROR
    return CLEARED if license_errors(before) else NO_ERROR


_SAYS = {
    CLEARED: "license errors cleared",
    NO_ERROR: "reprocessed (no license error before or after)",
    STILL_IN_ERROR: "reprocessed; a license error still shows (seats still short, or Entra still processing)",
    UNCONFIRMED: "reprocessed; not read again (Graph failed), check with `licshift check`",
}


async def _record(
    rt: Runtime,
    task: Task,
    outcome: str,
    detail: str,
    *,
    before: UserLicenses | None = None,
    after: UserLicenses | None = None,
) -> str:
    errors_before, errors_after = license_errors(before), license_errors(after)
    read = after or before
    upn = read.user_principal_name if read is not None else ""
    said = detail or _SAYS.get(outcome, outcome)
    if errors_before or errors_after:
        said += f" (before: {', '.join(errors_before) or 'none'}; after: {', '.join(errors_after) or 'none'})"
    event = telemetry.event_for(
        task,
        telemetry.REPROCESSED,
        f"user {upn or task.user_id}: {said}",
        severity=Severity.INFO if outcome in GOOD_OUTCOMES else Severity.WARNING,
        actor=ACTOR,
        data={
            "request_id": task.request_id,
            "outcome": outcome,
            "user_principal_name": upn,
            "errors_before": errors_before,
            "errors_after": errors_after,
            "wrote": outcome in (CLEARED, NO_ERROR, STILL_IN_ERROR, UNCONFIRMED),
        },
    )
    await telemetry.emit(rt.ledger, event, rt.now())
    return outcome


async def _throttled(rt: Runtime, task: Task, exc: Throttled) -> None:
    what = f"the reprocessing of {task.user_id}"
    await throttled.retry_after(rt, task, exc, what, actor=ACTOR, data={"request_id": task.request_id})


async def gave_up(rt: Runtime, task: Task, dequeue_count: int) -> str:
    """The removals poison queue: a reprocess task that kept failing (Graph 5xx, storage)."""
    detail = f"gave up after {dequeue_count} deliveries (Graph or storage kept failing); run the command again"
    return await _record(rt, task, FAILED, detail)
