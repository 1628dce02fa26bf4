"""Audit of the safety contract at the edges the other suites do not reach: the kill switch as a
setting (S5), a restore that Graph throttles or refuses (S3), a post-check whose own reads fail or whose
in-flight removal is orphaned when the wave stops (S3, S4), and throttled reads (never a failure).

Each test drives the real pipeline (local host, Azurite, the simulator over HTTP); a small Graph
wrapper injects the failure at the exact call where it matters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from licshift.ports.graph import GraphError, LicenseGraph, Throttled, TransientGraphError, UserLicenses
from licshift.rules.licenses import DirectAssignment
from licshift.rules.messages import Task, TaskKind
from licshift.rules.outcomes import OutcomeStatus, Severity
from licshift.rules.waves import WaveStatus
from licshift.services import remover, scheduler
from licshift.services.telemetry import HALTED, POISON, RESTORED

from .conftest import E3, OpenStack, by_user, count, graph_losses, simulator, small_tenant, start

Fault = Callable[[str], GraphError | None]


class Harness:
    """A LicenseGraph that can fail chosen calls before they reach Graph, and run a hook right after a
    successful removal (the tenant changing between licshift's write and its post-check)."""

    def __init__(
        self,
        inner: LicenseGraph,
        *,
        after_remove: Callable[[str], None] | None = None,
        read_fault: Fault | None = None,
        restore_fault: Fault | None = None,
    ) -> None:
        self._inner = inner
        self._after_remove = after_remove
        self._read_fault = read_fault
        self._restore_fault = restore_fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def user_licenses(self, user_id: str) -> UserLicenses:
        error = self._read_fault(user_id) if self._read_fault else None
        if error is not None:
            raise error
        return await self._inner.user_licenses(user_id)

    async def remove_direct(self, user_id: str, sku_id: str) -> None:
        await self._inner.remove_direct(user_id, sku_id)
        if self._after_remove:
            self._after_remove(user_id)

    async def restore_direct(self, user_id: str, assignment: DirectAssignment) -> None:
        error = self._restore_fault(user_id) if self._restore_fault else None
        if error is not None:
            raise error
        await self._inner.restore_direct(user_id, assignment)


def direct_of(sim: Any, user_id: str) -> list[dict[str, Any]]:
    sku = sim.tenant.sku_id(E3)
    return [s for s in sim.tenant.license_states(user_id) if s["skuId"] == sku and s.get("assignedByGroup") is None]


def has_direct(sim: Any, user_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(direct_of(sim, user_id))

    return check


# --- S5: the kill switch setting ---------------------------------------------------------------------


async def test_the_kill_switch_setting_stops_every_removal_like_the_control_row(open_stack: OpenStack) -> None:
    async with (
        simulator(small_tenant(6)) as sim,
        open_stack(sim, overrides={"LICSHIFT_KILL_SWITCH": "true"}) as stack,
    ):
        group = sim.scenario.id("all")
        wave_id = await stack.enqueue(start(group, force=True))
        await stack.wait_for_wave(wave_id, {"removing"}, 30)
        await stack.idle(2)
        held = await stack.outcomes(wave_id)
        # Tasks that reach the remover anyway (sent before the switch, redelivered) must not remove.
        results = [await remover.run_task(stack.rt, Task(TaskKind.REMOVE, wave_id, r.user_id, r.sku_id)) for r in held]
        after = await stack.outcomes(wave_id)

    assert sim.counters.writes == 0, "LICSHIFT_KILL_SWITCH=true: nothing is written to Graph"
    assert count(held, OutcomeStatus.PLANNED) == 6, "the scheduler enqueued nothing"
    assert results == ["planned"] * 6
    assert count(after, OutcomeStatus.PLANNED) == 6


# --- S3: restores that do not go through at once ------------------------------------------------------


async def test_a_restore_throttled_past_its_in_process_tries_is_still_carried_out(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(3)) as sim:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[0].id
        before = sim.tenant.effective(sim.tenant.user(victim))
        throttled: list[str] = []

        def break_victim(user_id: str) -> None:
            if user_id == victim:
                sim.tenant.break_group_license(group, E3, users=[victim])

        def throttle_restores(user_id: str) -> GraphError | None:
            if len(throttled) < remover.RESTORE_ATTEMPTS:
                throttled.append(user_id)
                return Throttled("restore throttled", retry_after=0.01)
            return None

        async with open_stack(
            sim, graph_wrapper=lambda g: Harness(g, after_remove=break_victim, restore_fault=throttle_restores)
        ) as stack:
            wave_id = await stack.enqueue(start(group, selection={"kind": "users", "users": [victim]}))
            wave = await stack.wait_for_wave(wave_id, {"halted", "completed"}, 30)
            restored = await stack.run_until(has_direct(sim, victim), 10)
            await stack.idle(1)
            row = by_user(await stack.outcomes(wave_id))[victim]
            alerts = [e for e in await stack.events() if e.severity is Severity.ALERT]

    assert len(throttled) == remover.RESTORE_ATTEMPTS
    assert restored, "the queued restore put the recorded direct assignment back"
    assert sim.tenant.effective(sim.tenant.user(victim)) == before
    assert wave.status is WaveStatus.HALTED
    assert row.status is OutcomeStatus.RESTORED
    assert {e.kind for e in alerts} >= {RESTORED, HALTED}
    assert sim.counters.writes == 2, "one removal, one restore"
    assert graph_losses(sim) == []


async def test_a_restore_graph_keeps_refusing_still_halts_the_wave_and_is_retried(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(3)) as sim:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[0].id
        before = sim.tenant.effective(sim.tenant.user(victim))
        outage = [True]

        def break_victim(user_id: str) -> None:
            if user_id == victim:
                sim.tenant.break_group_license(group, E3, users=[victim])

        def refuse_restores(user_id: str) -> GraphError | None:
            return TransientGraphError("Graph is unavailable (503)", status=503) if outage[0] else None

        async with open_stack(
            sim,
            graph_wrapper=lambda g: Harness(g, after_remove=break_victim, restore_fault=refuse_restores),
            max_dequeue_count=3,
        ) as stack:
            wave_id = await stack.enqueue(start(group, selection={"kind": "users", "users": [victim]}))
            # The loss alone must halt the wave, whether or not the restore went through.
            wave = await stack.wait_for_wave(wave_id, {"halted", "completed"}, 20)
            alerts = [e for e in await stack.events() if e.severity is Severity.ALERT]
            outage[0] = False
            restored = await stack.run_until(has_direct(sim, victim), 15)
            await stack.idle(1)
            row = by_user(await stack.outcomes(wave_id))[victim]

    assert wave.status is WaveStatus.HALTED
    assert {e.kind for e in alerts} >= {RESTORED, HALTED}
    assert restored, "the restore is tried again until Graph accepts it"
    assert sim.tenant.effective(sim.tenant.user(victim)) == before
    assert row.status is OutcomeStatus.RESTORED
    assert graph_losses(sim) == []


async def test_a_failed_read_after_the_restore_still_records_restored_halts_and_alerts(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(3)) as sim:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[0].id
        before = sim.tenant.effective(sim.tenant.user(victim))
        reads_after_removal: list[int] = []

        def break_victim(user_id: str) -> None:
            if user_id == victim:
                sim.tenant.break_group_license(group, E3, users=[victim])
                reads_after_removal.append(0)

        def fail_the_read_after_the_restore(user_id: str) -> GraphError | None:
            # The post-check read (1st after the removal) works; the one after the restore (2nd) fails once.
            if user_id != victim or not reads_after_removal:
                return None
            reads_after_removal[0] += 1
            if reads_after_removal[0] == 2:
                return TransientGraphError("connection to Graph failed")
            return None

        async with open_stack(
            sim,
            graph_wrapper=lambda g: Harness(g, after_remove=break_victim, read_fault=fail_the_read_after_the_restore),
        ) as stack:
            wave_id = await stack.enqueue(start(group, selection={"kind": "users", "users": [victim]}))
            wave = await stack.wait_for_wave(wave_id, {"halted", "completed"}, 30)
            await stack.idle(2)
            row = by_user(await stack.outcomes(wave_id))[victim]
            alerts = [e for e in await stack.events() if e.severity is Severity.ALERT]

    assert wave.status is WaveStatus.HALTED, "a restore always halts the wave"
    assert row.status is OutcomeStatus.RESTORED, (row.status, row.reason, row.detail)
    assert {e.kind for e in alerts} >= {RESTORED, HALTED}
    assert sim.tenant.effective(sim.tenant.user(victim)) == before
    assert sim.counters.writes == 2, "one removal, one restore, and no second removal"


# --- S3/S4: an in-flight removal orphaned when its wave stops -----------------------------------------


async def test_a_loss_left_unreconciled_in_a_cancelled_wave_is_found_and_restored(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(3)) as sim:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[0].id
        before = sim.tenant.effective(sim.tenant.user(victim))
        graph_down = [False]

        def break_victim(user_id: str) -> None:
            if user_id == victim:
                sim.tenant.break_group_license(group, E3, users=[victim])
                graph_down[0] = True  # the post-check cannot read: the worker gives up, then the poison handler

        def reads(user_id: str) -> GraphError | None:
            return TransientGraphError("Graph is unavailable (503)", status=503) if graph_down[0] else None

        async with open_stack(
            sim, graph_wrapper=lambda g: Harness(g, after_remove=break_victim, read_fault=reads), max_dequeue_count=2
        ) as stack:
            wave_id = await stack.enqueue(start(group, selection={"kind": "users", "users": [victim]}))

            async def poisoned() -> bool:
                return any(e.user_id == victim for e in await stack.events([POISON]))

            assert await stack.run_until(poisoned, 30)
            assert by_user(await stack.outcomes(wave_id))[victim].status is OutcomeStatus.REMOVING
            await stack.enqueue({"command": "cancel", "wave_id": wave_id})
            await stack.wait_for_wave(wave_id, {"cancelled"}, 10)
            graph_down[0] = False
            # Ticks long after: the stuck removal is stale and must be reconciled, not forgotten.
            later = replace(stack.rt, clock=lambda: stack.rt.now() + scheduler.stale_after(1.0) + timedelta(minutes=1))
            await scheduler.tick(later)
            restored = await stack.run_until(has_direct(sim, victim), 10)
            await stack.idle(1)
            row = by_user(await stack.outcomes(wave_id))[victim]

    assert restored, "the user who lost the license got the recorded direct assignment back"
    assert sim.tenant.effective(sim.tenant.user(victim)) == before
    assert row.status is OutcomeStatus.RESTORED
    assert graph_losses(sim) == []


# --- throttled reads are not failures ----------------------------------------------------------------


async def test_throttled_reads_in_the_remover_are_retried_later_not_failed(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(3)) as sim:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[0].id
        throttled: list[str] = []

        def throttle_reads(user_id: str) -> GraphError | None:
            if user_id == victim and len(throttled) < 2:
                throttled.append(user_id)
                return Throttled("read throttled", retry_after=0.01)
            return None

        async with open_stack(
            sim, graph_wrapper=lambda g: Harness(g, read_fault=throttle_reads), max_dequeue_count=2
        ) as stack:
            wave_id = await stack.enqueue(start(group, force=True))
            wave = await stack.wait_for_wave(wave_id, {"completed", "halted"}, 30)
            rows = by_user(await stack.outcomes(wave_id))
            poison = stack.host.stats["remove_direct_license"].poisoned

    assert len(throttled) == 2
    assert wave.status is WaveStatus.COMPLETED
    assert rows[victim].status is OutcomeStatus.REMOVED, (rows[victim].status, rows[victim].graph_error)
    assert poison == 0, "a 429 is re-scheduled with Retry-After, never burnt as a failed delivery"
    assert sim.counters.writes == 3


# --- Microsoft's step 4 during the wave: group processing restarted after the scan ---------------------


async def test_no_removal_is_enqueued_while_the_group_is_processing_again(open_stack: OpenStack) -> None:
    doc = small_tenant(4)
    # Processing that takes long (in simulated seconds; the initial assignment is already processed).
    doc["groups"][0]["processing"] = {"queued_seconds": 0, "in_progress_seconds": 1_000_000}
    async with simulator(doc) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        await stack.enqueue({"command": "kill-switch", "on": True})
        wave_id = await stack.enqueue(start(group, force=True))
        await stack.wait_for_wave(wave_id, {"removing"}, 30)
        # The admin changes the group's license options: every member is reprocessed, and until that
        # finishes a member's fresh read still shows the old inherited plans (SWAY enabled).
        sim.tenant.set_group_license(group, E3, disabled_plans=["SWAY"])
        assert sim.tenant.group_processing_state(group) != "ProcessingComplete"
        await stack.enqueue({"command": "kill-switch", "on": False})
        await stack.idle(3)
        rows = await stack.outcomes(wave_id)
        wave = await stack.get_wave(wave_id)

    assert sim.counters.writes == 0, "no removal while the group's license processing is not complete"
    assert count(rows, OutcomeStatus.PLANNED) == 4
    assert wave is not None
    assert wave.status is WaveStatus.REMOVING
    assert "processing" in wave.status_reason
