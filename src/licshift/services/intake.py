"""wave_intake: validate a waves-queue command and record it (S7).

A command is checked in three layers: its shape (messages.py), then the deployment's settings
(allowlist, sizes), then Graph (the group exists and assigns the SKUs, the SKUs are subscribed) and
the canary gate. A rejected command becomes a warning Event with the reason and the raw text, and
nothing else happens. Only failures that a retry can fix (Graph throttled or unavailable, storage
errors) propagate, so the host retries them; a malformed message never raises, since raising would
only retry it into the poison queue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from licshift.ports.graph import GraphRequestError, GroupLicenseInfo, NotFound
from licshift.ports.store import ConcurrencyConflict
from licshift.rules.answers import Answer, Verdict, request_id_in
from licshift.rules.decide import PROCESSING_COMPLETE, Policy
from licshift.rules.licenses import Sku
from licshift.rules.messages import (
    Command,
    KillSwitch,
    MalformedMessage,
    Reprocess,
    StartWave,
    WaveCommand,
    WavesMessage,
    parse_waves_message,
    queue_text,
    stored_text,
)
from licshift.rules.outcomes import Event, Severity
from licshift.rules.waves import Refused, Wave, WaveCounters, WaveEvent, WaveStatus, canary_gate
from licshift.services import reprocess, telemetry, transitions
from licshift.services.runtime import Runtime

SAVE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class IntakeResult:
    verdict: Verdict
    message: str
    wave_id: str = ""


class Rejection(Exception):
    """A command licshift will not carry out; the text says why and what to do."""


async def handle_wave_body(rt: Runtime, stored: bytes) -> IntakeResult:
    """Entry point of the waves queue: the message's stored bytes (see messages.queue_text)."""
    try:
        text = queue_text(stored)
    except MalformedMessage as exc:
        return await _reject(rt, str(exc), stored_text(stored))
    return await handle_wave_message(rt, text)


async def handle_wave_message(rt: Runtime, text: str) -> IntakeResult:
    """Parse and carry out one waves-queue message, then answer its request id (if it carries one).
    Never raises for bad input."""
    result = await _handle(rt, text)
    await answer(rt, request_id_in(text), result.verdict, result.message, result.wave_id)
    return result


async def answer(rt: Runtime, request_id: str, verdict: Verdict, message: str, wave_id: str = "") -> None:
    if request_id:
        await rt.ledger.record_answer(Answer(request_id, verdict, message, wave_id, rt.now()))


async def _handle(rt: Runtime, text: str) -> IntakeResult:
    try:
        message = parse_waves_message(text, max_wave_users=rt.settings.max_wave_users)
    except MalformedMessage as exc:
        return await _reject(rt, str(exc), text)
    try:
        return await carry_out(rt, message)
    except Rejection as exc:
        return await _reject(rt, str(exc), text, message)


async def carry_out(rt: Runtime, message: WavesMessage) -> IntakeResult:
    if isinstance(message, StartWave):
        return await start_wave(rt, message)
    if isinstance(message, KillSwitch):
        return await set_kill_switch(rt, message)
    if isinstance(message, Reprocess):
        return await reprocess_users(rt, message)
    return await wave_command(rt, message)


async def reprocess_users(rt: Runtime, command: Reprocess) -> IntakeResult:
    try:
        done = await reprocess.accept(rt, command)
    except reprocess.Refusal as exc:
        raise Rejection(str(exc)) from None
    return IntakeResult(done.verdict, done.message, command.wave_id)


async def start_wave(rt: Runtime, request: StartWave) -> IntakeResult:
    existing = await rt.ledger.get_wave(request.wave_id)
    if existing is not None:
        return _duplicate_start(existing.value, request)
    group = await _checked_group(rt, request.group_id)
    skus = await _checked_skus(rt, request.skus, group)
    sku_ids = tuple(s.sku_id for s in skus)
    refusal = canary_gate(
        request.selection,
        request.group_id,
        sku_ids,
        dry_run=request.dry_run,
        force=request.force,
        prior=await rt.ledger.list_waves(),
        canary_max_users=rt.settings.canary_max_users,
    )
    if refusal is not None:
        raise Rejection(refusal)
    now = rt.now()
    wave = _new_wave(request, sku_ids, request.policy or rt.settings.policy, now)
    try:
        await rt.ledger.create_wave(wave)
    except ConcurrencyConflict:
        # Another delivery of the same message won the race.
        return IntakeResult(Verdict.DUPLICATE, f"wave {wave.wave_id} already exists", wave.wave_id)
    await telemetry.emit(rt.ledger, _accepted(wave, group, skus), now)
    kind = "dry run" if wave.dry_run else "wave"
    return IntakeResult(Verdict.ACCEPTED, f"{kind} {wave.wave_id} accepted", wave.wave_id)


async def _checked_group(rt: Runtime, group_id: str) -> GroupLicenseInfo:
    """The wave's group, if the deployment allows it and Graph knows it."""
    if not rt.settings.group_allowed(group_id):
        raise Rejection(f"group {group_id} is not in LICSHIFT_GROUP_ALLOWLIST; add it there or pick an allowed group")
    try:
        return await rt.graph.group_license_info(group_id)
    except NotFound:
        raise Rejection(f"group {group_id} does not exist in the tenant; check the group id") from None
    except GraphRequestError as exc:
        raise Rejection(f"group {group_id} cannot be read: {exc}") from None


async def _checked_skus(rt: Runtime, refs: tuple[str, ...], group: GroupLicenseInfo) -> tuple[Sku, ...]:
    """The SKUs the request names, subscribed in the tenant and assigned by the group (step 3)."""
    skus = _resolve_skus(refs, await rt.skus.all(rt.graph, rt.now(), fresh=True))
    not_assigned = [s.part_number or s.sku_id for s in skus if not group.assigns(s.sku_id)]
    if not_assigned:
        raise Rejection(
            f"group {group.display_name or group.group_id} does not assign {', '.join(not_assigned)}; "
            "assign the license(s) to the group first (Microsoft's step 3), then start the wave"
        )
    return skus


def _new_wave(request: StartWave, sku_ids: tuple[str, ...], policy: Policy, now: datetime) -> Wave:
    """The wave an accepted start records: waiting for the group's license processing."""
    return Wave(
        wave_id=request.wave_id,
        group_id=request.group_id,
        sku_ids=sku_ids,
        selection=request.selection,
        policy=policy,
        dry_run=request.dry_run,
        force=request.force,
        requested_by=request.requested_by,
        status=WaveStatus.WAITING,
        created_at=now,
        updated_at=now,
        counters=WaveCounters(),
        status_reason="accepted; waiting for group license processing",
        status_since=now,
    )


def _accepted(wave: Wave, group: GroupLicenseInfo, skus: tuple[Sku, ...]) -> Event:
    kind = "dry run" if wave.dry_run else "wave"
    processing = group.processing_state or "unknown"
    return Event(
        kind=telemetry.WAVE_ACCEPTED,
        message=(
            f"{kind} {wave.wave_id} accepted: group {group.display_name or group.group_id}, "
            f"{', '.join(s.part_number or s.sku_id for s in skus)}, {wave.selection.describe()}"
            + ("" if processing == PROCESSING_COMPLETE else f"; group processing is {processing}")
        ),
        wave_id=wave.wave_id,
        actor=wave.requested_by or "licshift",
        data={"group_id": wave.group_id, "sku_ids": list(wave.sku_ids), "dry_run": wave.dry_run, "force": wave.force},
    )


def _duplicate_start(wave: Wave, request: StartWave) -> IntakeResult:
    # SKUs are not compared: the request may name them by part number, the wave holds resolved ids.
    same_policy = request.policy is None or request.policy == wave.policy
    if (
        wave.group_id != request.group_id
        or wave.selection != request.selection
        or wave.dry_run != request.dry_run
        or wave.force != request.force
        or not same_policy
    ):
        raise Rejection(
            f"wave id {request.wave_id} is already used by a different wave (group {wave.group_id}); "
            "choose a new wave id for a new wave"
        )
    return IntakeResult(Verdict.DUPLICATE, f"wave {wave.wave_id} was already accepted", wave.wave_id)


def _resolve_skus(refs: tuple[str, ...], subscribed: tuple[Sku, ...]) -> tuple[Sku, ...]:
    """Each reference as a subscribed SKU: by skuId, or by skuPartNumber (case-insensitive)."""
    by_id = {s.sku_id: s for s in subscribed}
    by_part = {s.part_number.lower(): s for s in subscribed if s.part_number}
    resolved: dict[str, Sku] = {}
    missing = []
    for ref in refs:
        sku = by_id.get(ref) or by_part.get(ref.lower())
        if sku is None:
            missing.append(ref)
        else:
            resolved[sku.sku_id] = sku
    if missing:
        known = ", ".join(sorted(s.part_number or s.sku_id for s in subscribed)[:20]) or "none"
        raise Rejection(f"SKU(s) {', '.join(missing)} are not subscribed in this tenant (subscribed: {known})")
    return tuple(resolved.values())


_EVENTS = {
    Command.PAUSE: WaveEvent.PAUSE,
    Command.RESUME: WaveEvent.RESUME,
    Command.CANCEL: WaveEvent.CANCEL,
    Command.ROLLBACK: WaveEvent.ROLLBACK,
}


async def wave_command(rt: Runtime, command: WaveCommand) -> IntakeResult:
    who = command.requested_by or "an admin"
    reason = f"{command.command} requested by {who}"
    actor = command.requested_by or "licshift"
    done = await transitions.transition(
        rt.ledger, command.wave_id, _EVENTS[command.command], reason, rt.now, actor=actor
    )
    if done is None:
        raise Rejection(f"wave {command.wave_id} does not exist; list waves with `licshift status`")
    read, result = done
    if isinstance(result, Refused):
        raise Rejection(f"cannot {command.command} wave {command.wave_id}: {result.reason}")
    if result is read.value:
        return IntakeResult(Verdict.DUPLICATE, f"wave {command.wave_id} is already {result.status}", command.wave_id)
    return IntakeResult(Verdict.ACCEPTED, f"wave {command.wave_id} is now {result.status}", command.wave_id)


async def set_kill_switch(rt: Runtime, command: KillSwitch) -> IntakeResult:
    for _ in range(SAVE_ATTEMPTS):
        current = await rt.ledger.get_control()
        if current.value.kill_switch == command.on:
            state = "on" if command.on else "off"
            return IntakeResult(Verdict.DUPLICATE, f"kill switch is already {state}")
        now = rt.now()
        control = replace(current.value, kill_switch=command.on, updated_by=command.requested_by, updated_at=now)
        try:
            await rt.ledger.save_control(control, current.etag or None)
        except ConcurrencyConflict:
            continue
        state = "on: every removal stops" if command.on else "off: removals may continue"
        await telemetry.emit(
            rt.ledger,
            Event(
                kind=telemetry.KILL_SWITCH,
                message=f"kill switch {state} (by {command.requested_by or 'an admin'})",
                severity=Severity.WARNING if command.on else Severity.INFO,
                actor=command.requested_by or "licshift",
                data={"on": command.on},
            ),
            now,
        )
        return IntakeResult(Verdict.ACCEPTED, f"kill switch {'on' if command.on else 'off'}")
    raise ConcurrencyConflict("the control row kept changing; the command will be retried")


async def _reject(rt: Runtime, reason: str, raw: str, message: WavesMessage | None = None) -> IntakeResult:
    wave_id = message.wave_id if isinstance(message, StartWave | WaveCommand | Reprocess) else ""
    actor = message.requested_by if message is not None and message.requested_by else "unknown"
    await telemetry.emit(rt.ledger, telemetry.rejected_request(reason, raw, wave_id=wave_id, actor=actor), rt.now())
    return IntakeResult(Verdict.REJECTED, reason, wave_id)


async def handle_poison_body(rt: Runtime, stored: bytes, dequeue_count: int) -> None:
    """Entry point of the waves poison queue. Never raises for what the message holds: a poison
    handler that fails would only move the message on to a queue nobody reads."""
    try:
        text = queue_text(stored)
    except MalformedMessage as exc:
        await _reject(rt, f"waves poison queue: {exc}", stored_text(stored))
        return
    await handle_poison_command(rt, text, dequeue_count)


async def handle_poison_command(rt: Runtime, text: str, dequeue_count: int) -> None:
    """A waves-queue command that failed maxDequeueCount times (Graph or storage kept failing)."""
    try:
        parse_waves_message(text, max_wave_users=rt.settings.max_wave_users)
    except MalformedMessage as exc:
        # Never a command that failed: the waves queue rejects malformed messages at once.
        await _reject(rt, f"waves poison queue: {exc}", text)
        return
    why = (
        f"wave command failed {dequeue_count} times and was not carried out; send it again "
        "once Graph and storage are healthy"
    )
    await answer(rt, request_id_in(text), Verdict.FAILED, why)
    await telemetry.emit(rt.ledger, telemetry.poison_message(why, text, dequeue_count, actor="intake"), rt.now())
