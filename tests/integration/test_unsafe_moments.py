"""Forced unsafe situations: the tenant changes between licshift's scan and its removal, or right
after the removal call. The fresh read must block the first; the post-check must catch the second,
restore the snapshot, halt the wave and alert (S1, S3)."""

from __future__ import annotations

from licshift.rules.outcomes import OutcomeStatus, Severity
from licshift.rules.waves import WaveStatus
from licshift.services.telemetry import HALTED, RESTORED

from .conftest import (
    AfterRemove,
    OpenStack,
    assert_all_final,
    by_user,
    completed,
    count,
    graph_losses,
    simulator,
    small_tenant,
    start,
)


async def test_a_group_assignment_that_breaks_after_the_scan_blocks_the_removal(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(12)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[3].id
        # The kill switch holds the wave after its scan, with every removal planned.
        await stack.enqueue({"command": "kill-switch", "on": True})
        wave_id = await stack.enqueue(start(group, force=True))
        await stack.wait_for_wave(wave_id, {"removing"}, 30)
        planned = await stack.outcomes(wave_id)
        assert count(planned, OutcomeStatus.PLANNED) == 12
        sim.tenant.break_group_license(group, "ENTERPRISEPACK", users=[victim], error="CountViolation")
        await stack.enqueue({"command": "kill-switch", "on": False})
        wave = await completed(stack, wave_id)

        rows = by_user(await stack.outcomes(wave_id))
        assert wave.status is WaveStatus.COMPLETED
        assert rows[victim].status is OutcomeStatus.BLOCKED
        assert rows[victim].reason == "inherited-error"
        assert rows[victim].detail == "CountViolation"
        assert count(list(rows.values()), OutcomeStatus.REMOVED) == 11
        assert_all_final(list(rows.values()))
        assert graph_losses(sim) == []
        assert sim.counters.writes == 11
        direct = [s for s in sim.tenant.license_states(victim) if s.get("assignedByGroup") is None]
        assert direct, "the blocked user keeps the direct assignment"


async def test_a_break_right_after_the_removal_is_restored_and_halts_the_wave(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(10)) as sim:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[0].id
        before = sim.tenant.effective(sim.tenant.user(victim))

        def break_victim(user_id: str, sku_id: str) -> None:
            if user_id == victim:
                sim.tenant.break_group_license(group, "ENTERPRISEPACK", users=[victim])

        async with open_stack(sim, graph_wrapper=lambda g: AfterRemove(g, break_victim)) as stack:
            wave_id = await stack.enqueue(start(group, selection={"kind": "users", "users": [victim]}))
            wave = await stack.wait_for_wave(wave_id, {"halted", "completed"}, 30)
            rows = by_user(await stack.outcomes(wave_id))
            alerts = [e for e in await stack.events() if e.severity is Severity.ALERT]

        assert wave.status is WaveStatus.HALTED
        row = rows[victim]
        assert row.status is OutcomeStatus.RESTORED
        assert row.snapshot is not None
        assert row.before_plans <= row.after_plans
        assert {e.kind for e in alerts} >= {RESTORED, HALTED}
        assert any(e.user_id == victim for e in alerts if e.kind == RESTORED)
        # The user has every plan back; the only loss is the one the test caused, none by licshift.
        assert sim.tenant.effective(sim.tenant.user(victim)) == before
        assert graph_losses(sim) == []
        assert [loss.source for loss in sim.oracle.losses] == ["scenario"]
        assert sim.counters.writes == 2, "one removal and one restore"


async def test_a_halted_wave_closes_its_remaining_removals(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(30)) as sim:
        group = sim.scenario.id("all")
        first = min(u.id for u in sim.scenario.users)  # enqueued first: removals go in user id order

        def break_first(user_id: str, sku_id: str) -> None:
            if user_id == first:
                sim.tenant.break_group_license(group, "ENTERPRISEPACK", users=[first], state="Disabled")

        overrides = {"LICSHIFT_WRITE_RATE_CEILING": "2", "LICSHIFT_WRITE_RATE_FLOOR": "1"}
        async with open_stack(sim, graph_wrapper=lambda g: AfterRemove(g, break_first), overrides=overrides) as stack:
            wave_id = await stack.enqueue(start(group, force=True))
            await stack.wait_for_wave(wave_id, {"halted"}, 30)

            async def settled() -> bool:
                rows = await stack.outcomes(wave_id)
                return all(r.status not in {OutcomeStatus.PLANNED, OutcomeStatus.ENQUEUED} for r in rows)

            assert await stack.run_until(settled, 30)
            writes = sim.counters.writes
            await stack.idle(3)
            rows = await stack.outcomes(wave_id)

        assert sim.counters.writes == writes, "no removal after the halt"
        assert count(rows, OutcomeStatus.NOT_ATTEMPTED) > 0
        assert_all_final(rows)
        assert by_user(rows)[first].status is OutcomeStatus.RESTORED
        assert graph_losses(sim) == []
        # Writes are removals plus restores: a restored user cost one of each.
        assert sim.counters.writes == count(rows, OutcomeStatus.REMOVED) + 2 * count(rows, OutcomeStatus.RESTORED)
