"""The tick: the one global scheduler that moves every wave forward (timer trigger, a singleton).

Per tick: fold what workers reported since the last tick (429s, restores, Graph's usage header) into
the model of Graph's write window and reserve the write slots of the next two ticks' worth of time
that fit it (pacing.py, quota.py), then for every active wave, oldest first:

    WAITING      poll the group's licenseProcessingState; ProcessingComplete -> SCANNING (and scan now);
                 waited longer than LICSHIFT_PROCESSING_TIMEOUT_MINUTES -> HALTED + alert
    SCANNING     stream the members (pages of 999, constant memory), select, decide per user and SKU,
                 write outcome rows in batches; dry run -> PLANNED (nothing written to Graph, S2),
                 else -> REMOVING
    REMOVING     enqueue the next slice of PLANNED rows on the reserved slots (visibility delays counted
                 from each send), only while the group's processing is complete (else hold);
                 no removal left -> VERIFYING; failures >= threshold -> HALTED
    VERIFYING    once the group's processing is complete, re-scan the group; every REMOVED user must
                 still have the SKU with at least the plans recorded before removal; a loss -> restore +
                 HALTED + alert; else COMPLETED
    ROLLING_BACK enqueue rollback-restore tasks for REMOVED rows within budget; none left -> ROLLED_BACK
    HALTED, CANCELLED   close PLANNED/ENQUEUED rows as NOT_ATTEMPTED (in-flight ones finish first; a
                 REMOVING row that stopped moving has its task sent again so the remover post-checks it)

Every write to a wave row is conditional on its ETag, every write to an outcome row too, and every
step is a function of the stored rows, so two ticks running at once by accident, or a tick that
crashes anywhere, leave nothing inconsistent: the next tick continues from what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from licshift.ports.graph import GraphError, GroupLicenseInfo, NotFound, Throttled, UserLicenses
from licshift.ports.store import ConcurrencyConflict, LedgerStore, Versioned
from licshift.rules import pacing
from licshift.rules.decide import PROCESSING_COMPLETE, Block, Decision, Remove, Skip, decide
from licshift.rules.licenses import DirectAssignment, Sku, direct_assignment, effective_plans, has_effective_sku
from licshift.rules.messages import Task, TaskKind, encode_task
from licshift.rules.outcomes import FINAL_OUTCOMES, Control, Outcome, OutcomeStatus, Severity
from licshift.rules.waves import (
    Refused,
    SelectionKind,
    Wave,
    WaveCounters,
    WaveEvent,
    WaveStatus,
    apply,
    is_selected,
    selection_exhausted,
    tally_counts,
)
from licshift.services import lease, quota, telemetry, transitions
from licshift.services.runtime import Runtime
from licshift.services.skus import UnknownSku
from licshift.services.wavenames import scan_names

log = logging.getLogger("licshift.services.scheduler")

SCAN_BATCH = 1000
"""Outcome rows per put_outcomes call, about one Graph page of members. The ledger splits them by
shard partition into transactions of up to 100 operations: at 16 shards a batch of 100 rows made
16 transactions of ~6 rows; 1,000 rows make ~16 of ~60 (30,000 plan rows: 47 s -> 33 s against
Azurite, bench/README.md). A scan that dies loses at most one batch; the next tick scans again."""
STALE_TICKS = 10
STALE_MINIMUM = timedelta(minutes=2)
USER_NOT_FOUND = "user-not-found"
ACTOR = "scheduler"
HOLD_REASON = "holding: group license processing is"
LATE_SLOT_SECONDS = 1.0
"""A message sent this long after its slot is counted in the model a second time, where it lands."""
UNION_HOLD_REASON = "holding users:"
HOLD_REASON_VERIFY = "holding: relied-on groups still processing:"
ENQUEUE_CONCURRENCY = 8
"""Rows marked and sent at once: a slice of a few hundred must fit well within one tick."""


def stale_after(tick_seconds: float) -> timedelta:
    """How long an ENQUEUED or REMOVING row may sit unchanged before its task is sent again (its
    message was lost, or a worker died and the message went to the poison queue unreconciled)."""
    return max(STALE_MINIMUM, timedelta(seconds=STALE_TICKS * tick_seconds))


@dataclass
class Budget:
    """The tick's write slots (absolute times, epoch seconds), shared by all waves in order."""

    slots: list[float]
    used: int = 0

    def take(self, wanted: int) -> list[float]:
        granted = self.slots[self.used : self.used + max(0, wanted)]
        self.used += len(granted)
        return granted

    @property
    def left(self) -> int:
        return len(self.slots) - self.used


@dataclass
class TickReport:
    rate: float
    budget: int
    enqueued: int = 0
    throttled: int = 0
    waves: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    skipped: bool = False
    """Another scheduler on the same storage held the tick lease: this tick did nothing."""


@dataclass
class _Context:
    rt: Runtime
    now: datetime
    budget: Budget
    kill_switch: bool
    throttled_by_wave: dict[str, int]
    report: TickReport
    extra: list[float] = field(default_factory=list)
    """Writes sent without a slot (no slot left for a stuck task): counted in the model afterwards."""

    def delay(self, slot: float) -> float:
        """The visibility delay for `slot`, from the moment the message is sent: a slice that takes a
        while to send still lands on its slots, and never overlaps the next tick's. A slot already
        past (a long scan before the slice) fires now: counted again where it really lands."""
        now = self.rt.now().timestamp()
        if slot < now - LATE_SLOT_SECONDS:
            self.extra.append(now)
        return pacing.delay(slot, now)


async def tick(rt: Runtime, *, past_due: bool = False) -> TickReport:
    """One scheduler tick, if this scheduler holds the tick lease: a second scheduler on the same
    storage (another app, another host) skips its tick, so there is one write budget per storage."""
    if await lease.acquire(rt, rt.now()) is None:
        return TickReport(rate=0.0, budget=0, skipped=True)
    return await _tick(rt, past_due=past_due)


async def _tick(rt: Runtime, *, past_due: bool = False) -> TickReport:
    """One scheduler tick over every active wave. Safe to run twice at once and after any crash."""
    settings = rt.settings
    now = rt.now()
    if past_due:
        log.warning("tick is past due (the host was busy or restarted); catching up", extra={"licshift_kind": "tick"})
    control = await rt.ledger.get_control()
    # Either switch stops removals: the control row (flipped at run time) or LICSHIFT_KILL_SWITCH.
    kill_switch = control.value.kill_switch or settings.kill_switch
    waves = [wave for wave in await rt.ledger.list_waves() if _needs_work(wave)]
    # Slots are reserved before anything is sent and only when some wave may use them (quota.py).
    held = await quota.reserve(
        rt, now, wanted=quota.UNLIMITED if waves else 0, lookback=stale_after(settings.tick_seconds)
    )
    throttles = held.throttled_by_wave
    rate = held.rate
    report = TickReport(rate=rate, budget=len(held.slots), throttled=sum(throttles.values()))
    ctx = _Context(rt, now, Budget(held.slots), kill_switch, throttles, report)

    try:
        for wave in waves:
            try:
                status = await _advance(ctx, wave.wave_id)
                report.waves[wave.wave_id] = status
            except ConcurrencyConflict as exc:
                # Someone else (an admin command, a worker's halt, another tick) changed the wave: the
                # next tick re-reads it and continues from what is stored.
                log.info("wave %s changed during the tick: %s", wave.wave_id, exc)
            except GraphError as exc:
                # Graph trouble for one wave must not starve the others; the next tick tries again.
                report.errors.append(f"{wave.wave_id}: {exc}")
                log.warning(
                    "wave %s: Graph error during the tick: %s",
                    wave.wave_id,
                    exc,
                    extra={"licshift_wave_id": wave.wave_id},
                )
    finally:
        held.extra = ctx.extra
        await quota.settle(rt, held, ctx.budget.used, rt.now())
    await _save_rate(rt, control, rate, now)
    report.enqueued = ctx.budget.used
    if report.waves:
        log.info(
            "tick: %d active wave(s), rate %.2f writes/s, budget %d, enqueued %d, throttled since last tick %d",
            len(report.waves),
            rate,
            report.budget,
            report.enqueued,
            report.throttled,
            extra={"licshift_kind": "tick", "licshift_rate": rate, "licshift_enqueued": report.enqueued},
        )
    return report


def _needs_work(wave: Wave) -> bool:
    if wave.status in (WaveStatus.PLANNED, WaveStatus.COMPLETED, WaveStatus.ROLLED_BACK):
        return False
    if wave.status is WaveStatus.PAUSED:
        # Only to reconcile an in-flight removal that stopped moving (enqueued counts REMOVING rows).
        return wave.counters.enqueued > 0
    if wave.status in (WaveStatus.HALTED, WaveStatus.CANCELLED):
        return wave.counters.pending > 0
    return True


async def _save_rate(rt: Runtime, control: Versioned[Control], rate: float, now: datetime) -> None:
    updated = replace(control.value, write_rate=rate, updated_at=now, updated_by=control.value.updated_by or ACTOR)
    try:
        await rt.ledger.save_control(updated, control.etag or None)
    except ConcurrencyConflict:
        # The kill switch was flipped meanwhile; its row wins, the rate is recomputed next tick.
        return
    if abs(rate - control.value.write_rate) > 1e-9 and control.value.write_rate > 0:
        log.info("write rate %.2f/s -> %.2f/s", control.value.write_rate, rate, extra={"licshift_kind": telemetry.RATE})


# --- per wave ------------------------------------------------------------------------------------


@dataclass
class _Handle:
    """A wave and the ETag it was read at; every save is conditional on it."""

    ctx: _Context
    wave: Wave
    etag: str

    async def save(self, wave: Wave) -> None:
        if wave == self.wave:
            return
        stamped = replace(wave, updated_at=self.ctx.now)
        self.etag = await self.ctx.rt.ledger.save_wave(stamped, self.etag)
        self.wave = stamped

    async def move(
        self, event: WaveEvent, reason: str, counters: WaveCounters | None = None, *, data: dict[str, Any] | None = None
    ) -> bool:
        base = self.wave if counters is None else replace(self.wave, counters=counters)
        changed = apply(base, event, self.ctx.now, reason)
        if isinstance(changed, Refused):
            log.warning("wave %s: %s", self.wave.wave_id, changed.reason)
            return False
        if changed == self.wave:
            return True
        stamped = replace(changed, updated_at=self.ctx.now)
        ledger, now = self.ctx.rt.ledger, self.ctx.now
        self.etag = await transitions.save_and_record(
            ledger, self.wave, stamped, self.etag, event, reason, now, actor=ACTOR, data=data
        )
        self.wave = stamped
        return True


async def _advance(ctx: _Context, wave_id: str) -> str:
    current = await ctx.rt.ledger.get_wave(wave_id)
    if current is None:
        return "gone"
    handle = _Handle(ctx, current.value, current.etag)
    if handle.wave.status is WaveStatus.WAITING:
        await _waiting(handle)
    if handle.wave.status is WaveStatus.SCANNING:
        await _scanning(handle)
    if handle.wave.status is WaveStatus.REMOVING:
        await _removing(handle)
    if handle.wave.status is WaveStatus.VERIFYING:
        await _verifying(handle)
    if handle.wave.status is WaveStatus.ROLLING_BACK:
        await _rolling_back(handle)
    if handle.wave.status in (WaveStatus.HALTED, WaveStatus.CANCELLED):
        await _close_leftovers(handle)
    if handle.wave.status is WaveStatus.PAUSED:
        await _reconcile_stuck(ctx, handle.wave)
    return handle.wave.status.value


async def _waiting(h: _Handle) -> None:
    rt, wave = h.ctx.rt, h.wave
    try:
        info = await rt.graph.group_license_info(wave.group_id)
    except NotFound:
        await h.move(WaveEvent.GROUP_GONE, f"group {wave.group_id} no longer exists")
        return
    if info.processing_state == PROCESSING_COMPLETE:
        await h.move(WaveEvent.PROCESSING_COMPLETE, "group license processing is complete")
        return
    waited = h.ctx.now - wave.entered_at()
    limit = timedelta(minutes=rt.settings.processing_timeout_minutes)
    if waited > limit:
        await h.move(
            WaveEvent.PROCESSING_TIMEOUT,
            f"group license processing still {info.processing_state or 'unknown'} after "
            f"{waited.total_seconds() / 60:.0f} minutes (LICSHIFT_PROCESSING_TIMEOUT_MINUTES="
            f"{rt.settings.processing_timeout_minutes:g}); check the group's license errors in Entra, "
            "then start a new wave",
        )


async def _skus(h: _Handle) -> dict[str, Sku] | None:
    rt = h.ctx.rt
    try:
        return {sid: await rt.skus.get(rt.graph, sid, h.ctx.now) for sid in h.wave.sku_ids}
    except UnknownSku as exc:
        await h.move(WaveEvent.GROUP_GONE, f"{exc}; the wave cannot decide without it")
        return None


def outcome_for(wave: Wave, user: UserLicenses, sku: Sku, decision: Decision, now: datetime) -> Outcome:
    base = Outcome(
        wave_id=wave.wave_id,
        user_id=user.user_id,
        sku_id=sku.sku_id,
        status=OutcomeStatus.PLANNED,
        decision="remove",
        user_principal_name=user.user_principal_name,
        display_name=user.display_name,
        actor=ACTOR,
        updated_at=now,
    )
    if isinstance(decision, Remove):
        return replace(
            base,
            snapshot=DirectAssignment(decision.sku_id, decision.disabled_plans),
            before_plans=effective_plans(user.states, sku),
            relied_on=decision.relied_on,
        )
    if isinstance(decision, Skip):
        return replace(base, status=OutcomeStatus.SKIPPED, decision="skip", reason=decision.reason.value)
    assert isinstance(decision, Block)
    return replace(
        base, status=OutcomeStatus.BLOCKED, decision="block", reason=decision.reason.value, detail=decision.detail
    )


_PLAN_STATUSES = (OutcomeStatus.PLANNED, OutcomeStatus.BLOCKED, OutcomeStatus.SKIPPED)


@dataclass
class _Scan:
    """The plan a scan builds: one row per selected user and SKU, written in batches of SCAN_BATCH,
    and what it counted (rows per status, and users: what the workbook's progress shows)."""

    wave: Wave
    skus: dict[str, Sku]
    now: datetime
    fresh: bool = False
    """The wave's partition held no rows before this scan: its counts are the scan's own."""
    members: int = 0
    selected: int = 0
    rows: dict[OutcomeStatus, int] = field(default_factory=lambda: dict.fromkeys(_PLAN_STATUSES, 0))
    users: dict[OutcomeStatus, int] = field(default_factory=lambda: dict.fromkeys(_PLAN_STATUSES, 0))
    batch: list[Outcome] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, user: UserLicenses) -> None:
        """Decide for the user and every SKU of the wave."""
        self.seen.add(user.user_id)
        self._count(
            [
                outcome_for(
                    self.wave, user, sku, decide(user.states, sku, self.wave.group_id, self.wave.policy), self.now
                )
                for sku in self.skus.values()
            ]
        )

    def add_missing(self, user_id: str) -> None:
        """A listed user the tenant does not have: skipped, with the reason."""
        self._count(
            [
                Outcome(
                    wave_id=self.wave.wave_id,
                    user_id=user_id,
                    sku_id=sku.sku_id,
                    status=OutcomeStatus.SKIPPED,
                    decision="skip",
                    reason=USER_NOT_FOUND,
                    detail="no such user in the tenant",
                    actor=ACTOR,
                    updated_at=self.now,
                )
                for sku in self.skus.values()
            ]
        )

    def _count(self, rows: list[Outcome]) -> None:
        for row in rows:
            self.rows[row.status] += 1
            if row.status is OutcomeStatus.BLOCKED:
                # The row is the ledger record; the log line lets the workbook chart blocks by reason
                # from the scan too, not only those the remover finds on its fresh read.
                telemetry.outcome_recorded(row)
        for status in {row.status for row in rows}:
            self.users[status] += 1
        self.batch += rows

    async def write(self, ledger: LedgerStore, *, all_of_it: bool = False) -> None:
        if self.batch and (all_of_it or len(self.batch) >= SCAN_BATCH):
            await ledger.put_outcomes(self.batch)
            self.batch = []

    async def finish(self, ledger: LedgerStore) -> WaveCounters:
        """Write what is left and start the wave's counts: the scan's own on a fresh partition, else
        recounted from the rows (a scan again after a crash may leave rows of the first one)."""
        await self.write(ledger, all_of_it=True)
        counts = await ledger.index_outcomes(self.wave.wave_id, self.rows if self.fresh else None)
        return tally_counts(counts, self.counters())

    def counters(self) -> WaveCounters:
        planned = self.rows[OutcomeStatus.PLANNED]
        return replace(
            self.wave.counters,
            members=self.members,
            selected=self.selected,
            to_remove=planned,
            planned=planned,
            blocked=self.rows[OutcomeStatus.BLOCKED],
            skipped=self.rows[OutcomeStatus.SKIPPED],
        )

    def user_counts(self) -> dict[str, int]:
        return {
            "to_remove": self.users[OutcomeStatus.PLANNED],
            "blocked": self.users[OutcomeStatus.BLOCKED],
            "skipped": self.users[OutcomeStatus.SKIPPED],
            "selected": self.selected,
        }


async def _scanning(h: _Handle) -> None:
    info = await _group_ready(h)
    if info is None:
        return
    skus = await _skus(h)
    if skus is None:
        return
    scan = _Scan(h.wave, skus, h.ctx.now, fresh=await _fresh(h.ctx.rt, h.wave.wave_id))
    if not await _scan_members(h, scan):
        return
    await _scan_listed_outsiders(h, scan)
    counters = await scan.finish(h.ctx.rt.ledger)
    what = "plan recorded; nothing written to Graph (dry run)" if h.wave.dry_run else "scan complete"
    await h.move(
        WaveEvent.SCANNED,
        f"{what}: {scan.members} members read, {scan.selected} selected, {counters.to_remove} to remove, "
        f"{counters.blocked} blocked, {counters.skipped} skipped",
        counters,
        data={"names": scan_names(info, skus.values()), "users": scan.user_counts()},
    )


async def _group_ready(h: _Handle) -> GroupLicenseInfo | None:
    """The wave's group, once its license processing is complete (else the wave waits, or halts if
    the group is gone)."""
    try:
        info = await h.ctx.rt.graph.group_license_info(h.wave.group_id)
    except NotFound:
        await h.move(WaveEvent.GROUP_GONE, f"group {h.wave.group_id} no longer exists")
        return None
    if info.processing_state != PROCESSING_COMPLETE:
        await h.move(WaveEvent.PROCESSING_INCOMPLETE, f"group license processing is {info.processing_state}; waiting")
        return None
    return info


async def _fresh(rt: Runtime, wave_id: str) -> bool:
    return not [o async for o in rt.ledger.iter_outcomes(wave_id, limit=1, fields=())]


async def _scan_members(h: _Handle, scan: _Scan) -> bool:
    """Stream the group's members into the plan; False if the selection is too large (wave halted)."""
    rt, wave = h.ctx.rt, h.wave
    limit = rt.settings.max_wave_users
    async for user in rt.graph.group_members(wave.group_id):
        if user.user_id in scan.seen:
            continue  # listed twice by Graph's paging: one row per user and SKU, counted once
        scan.members += 1
        if not is_selected(wave.selection, wave.group_id, user.user_id, scan.selected):
            continue
        scan.selected += 1
        if scan.selected > limit:
            # "all" and "percent" have no size until the scan counts them (S7: absurd sizes). Nothing
            # was written to Graph yet; the rows planned so far are closed with the halted wave.
            await scan.finish(rt.ledger)
            await h.move(
                WaveEvent.TOO_LARGE,
                f"the selection has more than {limit} users (LICSHIFT_MAX_WAVE_USERS); "
                "split it with --percent or --first, or raise the setting",
            )
            return False
        scan.add(user)
        await scan.write(rt.ledger)
        if selection_exhausted(wave.selection, scan.selected):
            break
    return True


async def _scan_listed_outsiders(h: _Handle, scan: _Scan) -> None:
    """Listed users outside the group are read one by one: the rule then blocks them (not inherited
    from the group) or skips them (no direct assignment), and the plan shows why."""
    if h.wave.selection.kind is not SelectionKind.USERS:
        return
    for user_id in sorted(h.wave.selection.users - scan.seen):
        scan.selected += 1
        try:
            scan.add(await h.ctx.rt.graph.user_licenses(user_id))
        except NotFound:
            scan.add_missing(user_id)
        await scan.write(h.ctx.rt.ledger)


VERIFY_FIELDS = ("user_id", "sku_id", "status", "before_plans", "user_principal_name")
IN_FLIGHT = (OutcomeStatus.ENQUEUED, OutcomeStatus.REMOVING)


async def _count(h: _Handle) -> WaveCounters:
    """The wave's counters from its rows per status: the ledger keeps them (its counts row and the
    moves since), so a tick pays for what changed, not for the size of the wave."""
    by_status = await h.ctx.rt.ledger.count_outcomes(h.wave.wave_id)
    throttled = h.wave.counters.throttled + h.ctx.throttled_by_wave.get(h.wave.wave_id, 0)
    return replace(tally_counts(by_status, h.wave.counters), throttled=throttled)


async def _none_pending(rt: Runtime, wave_id: str) -> bool:
    """No row of the wave is planned, enqueued or removing, by the index: the counts' word is
    checked against the rows before a wave moves on."""
    for status in (OutcomeStatus.PLANNED, *IN_FLIGHT):
        if [o async for o in rt.ledger.iter_work(wave_id, status, limit=1)]:
            return False
    return True


async def _removing(h: _Handle) -> None:
    ctx, rt, wave = h.ctx, h.ctx.rt, h.wave
    counters = await _count(h)
    if counters.failed >= rt.settings.failure_halt_threshold:
        await h.move(
            WaveEvent.FAILURE_THRESHOLD,
            f"{counters.failed} removals failed "
            f"(LICSHIFT_FAILURE_HALT_THRESHOLD={rt.settings.failure_halt_threshold}); "
            "read the failed outcomes, fix the cause, then start a new wave",
            counters,
        )
        return
    if counters.pending == 0 and await _none_pending(rt, wave.wave_id):
        await h.move(WaveEvent.REMOVALS_DONE, f"every removal has an outcome ({counters.removed} removed)", counters)
        return
    if ctx.kill_switch:
        # No new removal; a stuck in-flight one is still reconciled (the remover only post-checks it).
        await _reconcile_stuck(ctx, wave)
        await h.save(replace(wave, counters=counters))
        return
    processing = await _processing_state(h)
    if processing != PROCESSING_COMPLETE:
        # Microsoft's step 4 holds during the whole wave, not only at the scan: while the group is
        # processed again (its license options changed, members added), a member's fresh read can
        # still show the inherited plans from before, so the remover's check cannot see the loss.
        await _reconcile_stuck(ctx, wave)
        reason = f"{HOLD_REASON} {processing or 'unknown'}; removals resume when it is complete"
        await h.save(replace(wave, counters=counters, status_reason=reason))
        return
    if wave.status_reason.startswith(HOLD_REASON):
        wave = replace(wave, status_reason="group license processing is complete again; removing")
    holds = _Holds()
    cursor = wave.enqueue_cursor
    delays = ctx.budget.take(counters.planned)
    sent, cursor = await _enqueue_planned(ctx, wave, delays, cursor, holds)
    if len(sent) < len(delays) and counters.planned > len(sent) and wave.enqueue_cursor:
        # Rows put back to PLANNED behind the cursor (pause, kill switch, a remover's hold): go round again.
        more, cursor = await _enqueue_planned(ctx, wave, delays[len(sent) :], "", holds)
        sent += more
    wave = holds.reason(wave)
    ctx.budget.used -= len(delays) - len(sent)
    await _resend_stale(ctx, wave, TaskKind.REMOVE, IN_FLIGHT)
    moved = len(sent)
    counters = replace(counters, planned=counters.planned - moved, enqueued=counters.enqueued + moved)
    await h.save(replace(wave, counters=counters, enqueue_cursor=cursor))


@dataclass
class _Holds:
    """S1 over the union at enqueue (docs/safety.md): the processing state of the groups the rows
    about to be enqueued rely on, read once per tick and group, and how many rows wait for them."""

    states: dict[str, str] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)

    async def passed_over(self, ctx: _Context, wave: Wave, rows: list[Outcome]) -> list[Outcome]:
        """`rows` without those relying on a group that is not ProcessingComplete (the wave's own
        group is checked before any enqueue)."""
        unknown = {g.group_id for o in rows for g in o.relied_on} - {wave.group_id} - self.states.keys()
        if unknown:
            self.states.update(await ctx.rt.groups.states(ctx.rt.graph, sorted(unknown), ctx.now, fresh=True))
        processing = {g for g, state in self.states.items() if state != PROCESSING_COMPLETE}
        waiting = [o for o in rows if any(g.group_id in processing for g in o.relied_on)]
        self.held.update(o.key for o in waiting)
        return [o for o in rows if o.key not in self.held]

    def reason(self, wave: Wave) -> Wave:
        processing = {g: s for g, s in self.states.items() if s != PROCESSING_COMPLETE}
        if self.held:
            groups = ", ".join(f"{g} ({s or 'unknown'})" for g, s in sorted(processing.items()))
            reason = (
                f"{UNION_HOLD_REASON} {len(self.held)} wait until these relied-on groups finish processing: {groups}"
            )
            return replace(wave, status_reason=reason)
        if wave.status_reason.startswith(UNION_HOLD_REASON):
            return replace(wave, status_reason="relied-on groups finished processing; removing")
        return wave


async def _processing_state(h: _Handle) -> str | None:
    """The group's licenseProcessingState; a deleted group reads as complete (every fresh read then
    shows nothing inherited from it, and the remover blocks)."""
    try:
        info = await h.ctx.rt.graph.group_license_info(h.wave.group_id)
    except NotFound:
        return PROCESSING_COMPLETE
    return info.processing_state


async def _enqueue_planned(
    ctx: _Context, wave: Wave, slots: Sequence[float], cursor: str, holds: _Holds
) -> tuple[list[Outcome], str]:
    """Mark the next PLANNED rows after `cursor` ENQUEUED and send their tasks, one per slot; rows
    relying on a group still processing are passed over (held)."""
    rt = ctx.rt
    if not slots:
        return [], cursor
    candidates = [
        o async for o in rt.ledger.iter_work(wave.wave_id, OutcomeStatus.PLANNED, after_key=cursor, limit=len(slots))
    ]
    if candidates:
        cursor = candidates[-1].key
    candidates = await holds.passed_over(ctx, wave, candidates)
    # Each row keeps the slot of its position, so the slice stays spread over the schedule.
    slot_of = {row.key: slot for row, slot in zip(candidates, slots, strict=False)}
    marked = await _mark_enqueued(ctx, wave.wave_id, [row for row in candidates if row.key in slot_of])
    limit = asyncio.Semaphore(ENQUEUE_CONCURRENCY)

    async def one(mark: _Marked) -> Outcome:
        async with limit:
            return await _send_removal(ctx, mark, slot_of[mark.enqueued.key])

    return list(await asyncio.gather(*(one(mark) for mark in marked))), cursor


@dataclass(frozen=True)
class _Marked:
    """A row this tick marked ENQUEUED: as it was before (to put back if its task cannot be sent)
    and the ETag of the mark."""

    before: Outcome
    enqueued: Outcome
    etag: str


async def _mark_enqueued(ctx: _Context, wave_id: str, rows: list[Outcome]) -> list[_Marked]:
    """Mark the rows still PLANNED ENQUEUED, in batches; those another tick or command changed
    since they were read are left out (only the tick whose ETag matched sends)."""
    # The index rows carry no ETag of their outcome, and the save replaces the whole row: read the
    # rows, in one query over their range (they are the next PLANNED ones in key order).
    found = await ctx.rt.ledger.get_outcomes(wave_id, [r.key for r in rows], OutcomeStatus.PLANNED)
    current = [found[r.key] for r in rows if r.key in found]
    changes = [
        (replace(c.value, status=OutcomeStatus.ENQUEUED, actor=ACTOR, updated_at=ctx.now), c.etag) for c in current
    ]
    saved = await ctx.rt.ledger.save_outcomes(wave_id, changes)
    return [
        _Marked(c.value, new, saved[new.key]) for c, (new, _) in zip(current, changes, strict=True) if new.key in saved
    ]


async def _send_removal(ctx: _Context, mark: _Marked, slot: float) -> Outcome:
    # Mark first, then send: a crash in between leaves an ENQUEUED row without a message, which
    # the stale re-send picks up. A send that fails puts the row back to PLANNED.
    rt = ctx.rt
    row = mark.enqueued
    task = Task(TaskKind.REMOVE, row.wave_id, row.user_id, row.sku_id)
    try:
        await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=ctx.delay(slot))
    except Exception:
        with contextlib.suppress(ConcurrencyConflict):
            await rt.ledger.save_outcome(mark.before, mark.etag)
        raise
    return row


async def _reconcile_stuck(ctx: _Context, wave: Wave) -> None:
    """Send again the task of REMOVING rows that stopped moving, whatever the wave's status: the
    removal may have happened, and only the remover's post-check can tell whether the user lost
    something and needs the snapshot back. For a stopped wave the remover never removes; it
    post-checks (and restores) or closes the row."""
    await _resend_stale(ctx, wave, TaskKind.REMOVE, (OutcomeStatus.REMOVING,))


async def _resend_stale(ctx: _Context, wave: Wave, kind: TaskKind, statuses: tuple[OutcomeStatus, ...]) -> None:
    """Send again the task of rows stuck in `statuses` for longer than the stale window (a lost
    message, a worker that died). Tasks are idempotent, so a duplicate costs one read at most."""
    rt = ctx.rt
    horizon = ctx.now - stale_after(rt.settings.tick_seconds)
    for row in await _stale(ctx, wave, statuses, horizon):
        current = await rt.ledger.get_outcome(wave.wave_id, row.user_id, row.sku_id)
        if current is None or current.value.status not in statuses:
            continue
        if current.value.updated_at is None or current.value.updated_at >= horizon:
            continue
        if current.value.not_before is not None and current.value.not_before > ctx.now:
            continue
        try:
            await rt.ledger.save_outcome(replace(current.value, updated_at=ctx.now), current.etag)
        except ConcurrencyConflict:
            continue
        slot = ctx.budget.take(1)
        if not slot:
            ctx.extra.append(ctx.rt.now().timestamp())
        task = Task(kind, wave.wave_id, row.user_id, row.sku_id)
        await rt.queue.send(
            rt.settings.removals_queue, encode_task(task), delay_seconds=ctx.delay(slot[0]) if slot else 0.0
        )
        log.warning(
            "wave %s: re-sent the %s task of %s (stuck %s since %s)",
            wave.wave_id,
            kind,
            row.user_id,
            row.status,
            row.updated_at,
            extra={"licshift_wave_id": wave.wave_id, "licshift_user_id": row.user_id},
        )


async def _stale(ctx: _Context, wave: Wave, statuses: tuple[OutcomeStatus, ...], horizon: datetime) -> list[Outcome]:
    """Up to the slots left of the rows in `statuses` unchanged since `horizon`, from the index."""
    room = ctx.budget.left
    stale: list[Outcome] = []
    for status in statuses:
        async for row in ctx.rt.ledger.iter_work(wave.wave_id, status, stale_before=horizon):
            if len(stale) >= room:
                return stale
            # Graph's Retry-After is a promise: a throttled row's task was re-sent for then already.
            if row.not_before is None or row.not_before <= ctx.now:
                stale.append(row)
    return stale


# --- verification --------------------------------------------------------------------------------


async def _verifying(h: _Handle) -> None:
    ctx, rt, wave = h.ctx, h.ctx.rt, h.wave
    processing = await _processing_state(h)
    if processing != PROCESSING_COMPLETE:
        # A re-scan now would read inherited plans that are about to change: verify once they settle.
        reason = f"{HOLD_REASON} {processing or 'unknown'}; verification waits until it is complete"
        await h.save(replace(wave, status_reason=reason))
        return
    removed, relied_on = await _removed_rows(rt, wave)
    states = await rt.groups.states(rt.graph, sorted(relied_on), ctx.now, fresh=True)
    waiting = {g: s for g, s in states.items() if s != PROCESSING_COMPLETE}
    if waiting:
        # The same for every group a removal relied on (docs/safety.md, S1): verify on settled entries.
        groups = ", ".join(f"{g} ({s or 'unknown'})" for g, s in sorted(waiting.items()))
        reason = f"{HOLD_REASON_VERIFY} {groups}; verification waits until they are complete"
        await h.save(replace(wave, status_reason=reason))
        return
    skus = await _skus(h)
    if skus is None:
        return
    losses, drift = await _verify_users(ctx, wave, skus, removed)
    counters = replace(await _count(h), drift=drift)
    if losses:
        await h.move(
            WaveEvent.LOSS_DETECTED,
            f"verification found {losses} user(s) who lost plans after removal; their direct assignments "
            "were restored. Investigate before starting another wave",
            counters,
        )
        return
    await h.move(
        WaveEvent.VERIFIED,
        f"verified: {counters.removed} removals kept every plan"
        + (f"; {drift} direct assignment(s) came back (drift)" if drift else ""),
        counters,
    )


async def _removed_rows(rt: Runtime, wave: Wave) -> tuple[dict[str, list[Outcome]], set[str]]:
    """The wave's REMOVED rows by user, and the other groups their removals relied on. Only what the
    check needs, with the (mostly identical) plan sets shared: ~0.2 KB per removal."""
    removed: dict[str, list[Outcome]] = {}
    shared: dict[frozenset[str], frozenset[str]] = {}
    relied_on: set[str] = set()
    async for row in rt.ledger.iter_outcomes(
        wave.wave_id, statuses=[OutcomeStatus.REMOVED], fields=(*VERIFY_FIELDS, "relied_on")
    ):
        relied_on.update(g.group_id for g in row.relied_on)
        row = replace(row, before_plans=shared.setdefault(row.before_plans, row.before_plans), relied_on=())
        removed.setdefault(row.user_id, []).append(row)
    relied_on.discard(wave.group_id)
    return removed, relied_on


async def _verify_users(
    ctx: _Context, wave: Wave, skus: dict[str, Sku], removed: dict[str, list[Outcome]]
) -> tuple[int, int]:
    """Re-read every removed user (the group's members, then those who left it) and restore any who
    lost plans since (S3). Returns (users restored, direct assignments that came back)."""
    rt = ctx.rt
    losses = drift = 0

    async def check(user: UserLicenses, rows: list[Outcome]) -> None:
        nonlocal losses, drift
        for row in rows:
            sku = skus[row.sku_id]
            after = effective_plans(user.states, sku)
            if direct_assignment(user.states, sku.sku_id) is not None:
                drift += 1
                await _drift_event(ctx, row, "at verification")
            if has_effective_sku(user.states, sku.sku_id) and row.before_plans <= after:
                continue
            losses += 1
            full = await rt.ledger.get_outcome(row.wave_id, row.user_id, row.sku_id)
            await restore_after_loss(rt, full.value if full else row, user, after, ctx.now, found_by="verification")

    async for member in rt.graph.group_members(wave.group_id):
        rows = removed.pop(member.user_id, None)
        if rows:
            await check(member, rows)
    for user_id, rows in removed.items():
        # Removed users who left the group since: read them one by one.
        try:
            user = await rt.graph.user_licenses(user_id)
        except NotFound:
            log.info("wave %s: removed user %s no longer exists; nothing to verify", wave.wave_id, user_id)
            continue
        await check(user, rows)
    return losses, drift


async def _drift_event(ctx: _Context, row: Outcome, when: str) -> None:
    await telemetry.emit(
        ctx.rt.ledger,
        telemetry.event_for(
            row,
            telemetry.DRIFT,
            f"user {row.user_principal_name or row.user_id} has a direct assignment of {row.sku_id} again "
            f"({when}); a legacy script probably re-added it",
            severity=Severity.WARNING,
            actor=ACTOR,
        ),
        ctx.now,
    )


async def restore_after_loss(
    rt: Runtime, row: Outcome, user: UserLicenses, after: frozenset[str], now: datetime, *, found_by: str
) -> None:
    """Put the recorded direct assignment back for a user found to have lost plans (S3), mark the
    outcome RESTORED and raise an alert. If Graph throttles the restore, a restore task is queued at
    once (with Graph's delay) instead: the restore must happen, it only waits."""
    snapshot = row.snapshot
    current = await rt.ledger.get_outcome(row.wave_id, row.user_id, row.sku_id)
    etag = current.etag if current is not None else None
    row = replace(row, loss_found_by=found_by)
    wrote = False
    if snapshot is not None and direct_assignment(user.states, row.sku_id) is None:
        try:
            await rt.graph.restore_direct(row.user_id, snapshot)
            wrote = True
        except GraphError as exc:
            await _queue_restore(rt, row, etag, exc, now)
            return
    restored = replace(
        row,
        status=OutcomeStatus.RESTORED,
        after_plans=after,
        detail=f"lost plans found by {found_by}; "
        + ("direct assignment restored" if wrote else "direct assignment present"),
        actor=ACTOR,
        updated_at=now,
    )
    try:
        await rt.ledger.save_outcome(restored, etag)
    except ConcurrencyConflict:
        log.warning("outcome %s/%s changed while restoring", row.wave_id, row.key)
    await telemetry.emit(
        rt.ledger,
        telemetry.event_for(
            row,
            telemetry.RESTORED,
            f"user {row.user_principal_name or row.user_id} lost plans of {row.sku_id} ({found_by}); "
            + ("the recorded direct assignment was restored" if wrote else "a direct assignment is present"),
            severity=Severity.ALERT,
            actor=ACTOR,
            data={"before_plans": sorted(row.before_plans), "after_plans": sorted(after), "wrote": wrote},
        ),
        now,
    )


async def _queue_restore(rt: Runtime, row: Outcome, etag: str | None, exc: GraphError, now: datetime) -> None:
    """Graph refused or throttled a restore after a loss: queue it as a task (after Graph's delay)."""
    delay = exc.retry_after if isinstance(exc, Throttled) else 0.0
    # The loss goes on record first: a restore task acts only on a row with a recorded loss.
    pending = replace(row, not_before=now + timedelta(seconds=delay) if delay else row.not_before, updated_at=now)
    try:
        await rt.ledger.save_outcome(pending, etag)
    except ConcurrencyConflict:
        log.warning("outcome %s/%s changed while recording its loss", row.wave_id, row.key)
    task = Task(TaskKind.RESTORE, row.wave_id, row.user_id, row.sku_id)
    await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=delay)
    await telemetry.emit(
        rt.ledger,
        telemetry.event_for(
            row,
            telemetry.RESTORED,
            f"user {row.user_id} lost plans of {row.sku_id} ({row.loss_found_by}); restore queued after: {exc}",
            severity=Severity.ALERT,
            actor=ACTOR,
        ),
        now,
    )


# --- rollback and leftovers ------------------------------------------------------------------------


async def _rolling_back(h: _Handle) -> None:
    ctx, rt, wave = h.ctx, h.ctx.rt, h.wave
    # Queued removals of a wave being rolled back are dropped; in-flight ones (REMOVING) finish first.
    await _close(ctx, wave, (OutcomeStatus.PLANNED, OutcomeStatus.ENQUEUED), "wave rolled back before this removal")
    counters = await _count(h)
    if counters.removed == 0 and counters.enqueued == 0:
        await h.move(WaveEvent.ROLLBACK_DONE, f"{counters.rolled_back} direct assignment(s) put back", counters)
        return
    delays = ctx.budget.take(counters.removed)
    cursor = wave.enqueue_cursor
    candidates = [
        o
        async for o in rt.ledger.iter_outcomes(
            wave.wave_id, statuses=[OutcomeStatus.REMOVED], after_key=cursor, limit=len(delays)
        )
    ]
    for row, slot in zip(candidates, delays, strict=False):
        task = Task(TaskKind.ROLLBACK_RESTORE, wave.wave_id, row.user_id, row.sku_id)
        await rt.queue.send(rt.settings.removals_queue, encode_task(task), delay_seconds=ctx.delay(slot))
        cursor = row.key
    ctx.budget.used -= len(delays) - len(candidates)
    await _reconcile_stuck(ctx, wave)
    if not candidates and cursor and ctx.now - wave.updated_at > stale_after(rt.settings.tick_seconds):
        # A full pass went out and rows are still REMOVED with no progress: send their tasks again.
        cursor = ""
    await h.save(replace(wave, counters=counters, enqueue_cursor=cursor))


async def _close_leftovers(h: _Handle) -> None:
    reason = "wave halted" if h.wave.status is WaveStatus.HALTED else "wave cancelled"
    await _close(h.ctx, h.wave, (OutcomeStatus.PLANNED, OutcomeStatus.ENQUEUED), f"{reason} before this removal")
    await _reconcile_stuck(h.ctx, h.wave)
    await h.save(replace(h.wave, counters=await _count(h)))


async def _close(ctx: _Context, wave: Wave, statuses: tuple[OutcomeStatus, ...], detail: str) -> None:
    """Close rows in `statuses` as NOT_ATTEMPTED (a worker holding one sees the final row and stops)."""
    rt = ctx.rt
    for status in statuses:
        async for row in rt.ledger.iter_work(wave.wave_id, status):
            current = await rt.ledger.get_outcome(wave.wave_id, row.user_id, row.sku_id)
            if current is None or current.value.status not in statuses or current.value.status in FINAL_OUTCOMES:
                continue
            closed = replace(
                current.value, status=OutcomeStatus.NOT_ATTEMPTED, detail=detail, actor=ACTOR, updated_at=ctx.now
            )
            with contextlib.suppress(ConcurrencyConflict):
                await rt.ledger.save_outcome(closed, current.etag)
