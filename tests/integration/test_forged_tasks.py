"""Graph writes are removals plus restores of a recorded loss or a rollback, nothing else (S2, S7).

The removals queue is written only by licshift, but anyone with queue access can put a task there. A
restore task acts only on a row whose post-check (or verification) recorded a loss, or while its wave
rolls back; a removal task for a dry-run wave is refused and the plan stays as recorded. Every refusal
is one rejected-request event, with zero Graph writes, and the host keeps running.
"""

from __future__ import annotations

from dataclasses import replace

from licshift.rules.messages import Task, TaskKind, encode_task
from licshift.rules.outcomes import Event, OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift.services.telemetry import REQUEST_REJECTED
from licshift_local.stack import LocalStack

from .conftest import OpenStack, by_user, completed, graph_losses, simulator, small_tenant, start


async def _send_task(stack: LocalStack, task: Task) -> None:
    await stack.rt.queue.send(stack.settings.removals_queue, encode_task(task))
    stack.host.nudge(stack.settings.removals_queue)


async def _rejections(stack: LocalStack, at_least: int) -> list[Event]:
    async def recorded() -> bool:
        return len(await stack.events([REQUEST_REJECTED])) >= at_least

    assert await stack.run_until(recorded, 20), "the forged task was recorded"
    await stack.idle(1.5)  # anything the forged task would still do (a write, a second event) shows now
    return await stack.events([REQUEST_REJECTED])


async def test_forged_restores_on_a_completed_wave_write_nothing_and_are_recorded(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(4)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        wave_id = await stack.enqueue(start(group, force=True))
        wave = await completed(stack, wave_id)
        assert wave.status is WaveStatus.COMPLETED
        rows_before = by_user(await stack.outcomes(wave_id))
        victim, other = sim.scenario.users[0].id, sim.scenario.users[1].id
        sku = rows_before[victim].sku_id
        writes = sim.counters.writes
        # No loss was ever recorded for these rows, and the wave is not rolling back.
        await _send_task(stack, Task(TaskKind.RESTORE, wave_id, victim, sku))
        await _send_task(stack, Task(TaskKind.ROLLBACK_RESTORE, wave_id, other, sku))
        rejected = await _rejections(stack, 2)
        rows_after = by_user(await stack.outcomes(wave_id))
        wave_after = await stack.get_wave(wave_id)
        stats = stack.host.stats

    assert sim.counters.writes == writes, "a forged restore writes nothing to Graph"
    assert len(rejected) == 2, [e.message for e in rejected]
    reasons = sorted(e.data["reason"] for e in rejected)
    assert "not rolling back" in reasons[0] or "not rolling back" in reasons[1], reasons
    assert any("no loss was recorded" in r for r in reasons), reasons
    assert all(e.wave_id == wave_id for e in rejected)
    assert all(e.data["raw"] for e in rejected), "the task itself is kept"
    for user in (victim, other):
        assert rows_after[user] == rows_before[user], "the rows are as they were"
    assert wave_after is not None
    assert wave_after.status is WaveStatus.COMPLETED
    assert wave_after.counters == wave.counters
    assert stats["remove_direct_license"].failures == 0
    assert stats["removals_poison"].deliveries == 0
    assert graph_losses(sim) == []


async def test_a_forged_removal_against_a_dry_run_plan_leaves_the_plan_as_it_was(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(3)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        wave_id = await stack.enqueue(start(group, dry_run=True))
        plan = await completed(stack, wave_id)
        assert plan.status is WaveStatus.PLANNED
        rows_before = by_user(await stack.outcomes(wave_id))
        victim = sim.scenario.users[0].id
        assert rows_before[victim].status is OutcomeStatus.PLANNED
        reads, writes = sim.counters.reads, sim.counters.writes
        await _send_task(stack, Task(TaskKind.REMOVE, wave_id, victim, rows_before[victim].sku_id))
        rejected = await _rejections(stack, 1)
        rows_after = by_user(await stack.outcomes(wave_id))

    assert sim.counters.writes == writes == 0, "a dry run never writes to Graph (S2)"
    assert sim.counters.reads == reads, "not even a read: the task is refused on the ledger alone"
    assert len(rejected) == 1
    assert "dry-run" in rejected[0].data["reason"]
    assert rows_after == rows_before, "the plan rows are exactly as the scan recorded them"


async def test_a_restore_acts_on_a_recorded_loss(open_stack: OpenStack) -> None:
    """The other side of the gate: a row whose loss is on record is restored by a restore task."""
    async with simulator(small_tenant(2)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        wave_id = await stack.enqueue(start(group, force=True))
        await completed(stack, wave_id)
        victim = sim.scenario.users[0].id
        loaded = await stack.rt.ledger.get_outcome(wave_id, victim, (await stack.outcomes(wave_id))[0].sku_id)
        assert loaded is not None
        assert loaded.value.status is OutcomeStatus.REMOVED
        # As verification records a loss whose restore Graph refused: the row stays removed, loss on record.
        await stack.rt.ledger.save_outcome(replace(loaded.value, loss_found_by="verification"), loaded.etag)
        writes = sim.counters.writes
        await _send_task(stack, Task(TaskKind.RESTORE, wave_id, victim, loaded.value.sku_id))

        async def restored() -> bool:
            row = await stack.rt.ledger.get_outcome(wave_id, victim, loaded.value.sku_id)
            return row is not None and row.value.status is OutcomeStatus.RESTORED

        assert await stack.run_until(restored, 20)
        rejected = await stack.events([REQUEST_REJECTED])

    assert sim.counters.writes == writes + 1, "one addLicenses: the recorded snapshot"
    assert rejected == []
