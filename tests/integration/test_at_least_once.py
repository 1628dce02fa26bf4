"""S4: queue delivery is at-least-once. A message delivered twice, and a crash between the Graph call
and the ledger write, each end in one correct final outcome and no extra Graph write."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from licshift import removal
from licshift.messages import Task, TaskKind, encode_task
from licshift.outcomes import OutcomeStatus
from licshift.waves import WaveStatus

from .conftest import (
    AfterRemove,
    assert_all_final,
    by_user,
    completed,
    count,
    graph_losses,
    simulator,
    small_tenant,
    start,
)


class Crash(RuntimeError):
    """The worker dies after Graph accepted the removal, before the ledger knows."""


async def test_a_crash_after_the_removal_call_ends_in_one_removed_outcome(open_stack) -> None:
    async with simulator(small_tenant(6)) as sim:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[2].id
        crashed: list[str] = []

        def crash_once(user_id: str, sku_id: str) -> None:
            if user_id == victim and not crashed:
                crashed.append(user_id)
                raise Crash("worker killed after assignLicense")

        async with open_stack(sim, graph_wrapper=lambda g: AfterRemove(g, crash_once)) as stack:
            wave_id = await stack.enqueue(start(group, force=True))
            wave = await completed(stack, wave_id)
            rows = by_user(await stack.outcomes(wave_id))
            stats = stack.host.stats["remove_direct_license"]

        assert crashed == [victim]
        assert stats.failures >= 1, "the crash was a failed delivery the host redelivered"
        assert wave.status is WaveStatus.COMPLETED
        assert rows[victim].status is OutcomeStatus.REMOVED
        assert rows[victim].attempts == 1, "the redelivery reconciled from a fresh read instead of removing again"
        assert count(list(rows.values()), OutcomeStatus.REMOVED) == 6
        assert_all_final(list(rows.values()))
        assert sim.counters.writes == 6, "exactly one write per removal"
        assert graph_losses(sim) == []


async def test_the_same_removal_delivered_twice_and_concurrently_writes_once(open_stack) -> None:
    async with simulator(small_tenant(8)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        await stack.enqueue({"command": "kill-switch", "on": True})
        wave_id = await stack.enqueue(start(group, force=True))
        await stack.wait_for_wave(wave_id, {"removing"}, 30)
        rows = await stack.outcomes(wave_id)
        rt = stack.rt
        # Lift the kill switch under the scheduler's feet, then deliver every task three times: two
        # at once in this process and one more through the queue (the scheduler adds a fourth).
        control = await rt.ledger.get_control()
        await rt.ledger.save_control(replace(control.value, kill_switch=False), control.etag)
        tasks = [Task(TaskKind.REMOVE, wave_id, r.user_id, r.sku_id) for r in rows]
        for task in tasks:
            await rt.queue.send(rt.settings.removals_queue, encode_task(task))
        results = await asyncio.gather(*(removal.run_task(rt, t) for t in tasks for _ in range(2)))
        wave = await completed(stack, wave_id)
        final = by_user(await stack.outcomes(wave_id))
        again = [await removal.run_task(rt, t) for t in tasks]

    assert "removed" in results
    assert wave.status is WaveStatus.COMPLETED
    assert all(r.status is OutcomeStatus.REMOVED for r in final.values())
    assert all(r.attempts == 1 for r in final.values())
    assert again == ["removed"] * len(tasks), "a late redelivery is a no-op"
    assert sim.counters.writes == len(tasks)
    assert graph_losses(sim) == []
