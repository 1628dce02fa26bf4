"""S4: queue delivery is at-least-once. A message delivered twice, and a crash between the Graph call
and the ledger write, each end in one correct final outcome and no extra Graph write."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from licshift.ports.store import LedgerStore
from licshift.rules.messages import KillSwitch, Task, TaskKind, encode_task
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift.services import intake, remover

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


class Crash(RuntimeError):
    """The worker dies after Graph accepted the removal, before the ledger knows."""


async def test_a_crash_after_the_removal_call_ends_in_one_removed_outcome(open_stack: OpenStack) -> None:
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


async def test_the_same_removal_delivered_twice_and_concurrently_writes_once(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(8)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        await stack.enqueue({"command": "kill-switch", "on": True})
        wave_id = await stack.enqueue(start(group, force=True))
        await stack.wait_for_wave(wave_id, {"removing"}, 30)
        rows = await stack.outcomes(wave_id)
        rt = stack.rt
        # Lift the kill switch under the scheduler's feet, then deliver every task three times: two
        # at once in this process and one more through the queue (the scheduler adds a fourth).
        # Through intake's own path: it retries when the tick's rate update wins the control row's ETag.
        await intake.set_kill_switch(rt, KillSwitch(on=False, requested_by="tests"))
        tasks = [Task(TaskKind.REMOVE, wave_id, r.user_id, r.sku_id) for r in rows]
        for task in tasks:
            await rt.queue.send(rt.settings.removals_queue, encode_task(task))
        results = await asyncio.gather(*(remover.run_task(rt, t) for t in tasks for _ in range(2)))
        wave = await completed(stack, wave_id)
        final = by_user(await stack.outcomes(wave_id))
        again = [await remover.run_task(rt, t) for t in tasks]

    assert "removed" in results
    assert wave.status is WaveStatus.COMPLETED
    assert all(r.status is OutcomeStatus.REMOVED for r in final.values())
    assert all(r.attempts == 1 for r in final.values())
    assert again == ["removed"] * len(tasks), "a late redelivery is a no-op"
    assert sim.counters.writes == len(tasks)
    assert graph_losses(sim) == []


async def test_a_removal_another_delivery_is_making_is_not_sent_twice(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(1)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        await stack.enqueue({"command": "kill-switch", "on": True})
        wave_id = await stack.enqueue(start(group, force=True))
        await stack.wait_for_wave(wave_id, {"removing"}, 30)
        rt = stack.rt
        (row,) = await stack.outcomes(wave_id)
        loaded = await rt.ledger.get_outcome(wave_id, row.user_id, row.sku_id)
        assert loaded is not None
        # Another delivery marked the row a moment ago and is between its last check and its Graph call.
        owner = replace(loaded.value, status=OutcomeStatus.REMOVING, attempts=1, updated_at=rt.now())
        await rt.ledger.save_outcome(owner, loaded.etag)
        # Through intake's own path: it retries when the tick's rate update wins the control row's ETag.
        await intake.set_kill_switch(rt, KillSwitch(on=False, requested_by="tests"))
        task = Task(TaskKind.REMOVE, wave_id, row.user_id, row.sku_id)

        assert await remover.run_task(rt, task) == "busy"
        writes_while_owned = sim.counters.writes
        # The owner's Graph call failed and it released the row: the next delivery goes ahead at once.
        current = await rt.ledger.get_outcome(wave_id, row.user_id, row.sku_id)
        assert current is not None
        await rt.ledger.save_outcome(replace(current.value, graph_error="interrupted: 503"), current.etag)
        result = await remover.run_task(rt, task)
        final = await rt.ledger.get_outcome(wave_id, row.user_id, row.sku_id)

    assert writes_while_owned == 0
    assert result == "removed"
    assert final is not None
    assert final.value.status is OutcomeStatus.REMOVED
    assert sim.counters.writes == 1
    assert graph_losses(sim) == []


class ChangedAfterMark:
    """The ledger as the remover sees it, except that right after it saves its REMOVING marker the
    row changes under it: the delivery stalls past the owner window (the clock jumps) and another
    delivery takes the row over, or a duplicate delivery throttled on its fresh read records Graph's
    Retry-After on the row (at once, inside the owner window)."""

    def __init__(self, ledger: LedgerStore, clock: list[datetime], how: str) -> None:
        self._ledger = ledger
        self._clock = clock
        self._how = how
        self.changed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def save_outcome(self, outcome: Outcome, etag: str | None) -> str:
        saved = await self._ledger.save_outcome(outcome, etag)
        if outcome.status is not OutcomeStatus.REMOVING or self.changed:
            return saved
        self.changed = True
        if self._how == "stalled":
            self._clock[0] += timedelta(seconds=remover.OWNER_SECONDS + 1)
            other = replace(outcome, attempts=outcome.attempts + 1, updated_at=self._clock[0])
        else:
            other = replace(outcome, not_before=self._clock[0] + timedelta(seconds=30))
        await self._ledger.save_outcome(other, saved)
        return saved  # the marking delivery still holds the ETag of its own marker


@pytest.mark.parametrize("how", ["stalled", "promised"])
async def test_a_delivery_whose_marked_row_changed_before_its_write_does_not_write(
    open_stack: OpenStack, how: str
) -> None:
    async with simulator(small_tenant(1)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        await stack.enqueue({"command": "kill-switch", "on": True})
        wave_id = await stack.enqueue(start(group, force=True))
        await stack.wait_for_wave(wave_id, {"removing"}, 30)
        await intake.set_kill_switch(stack.rt, KillSwitch(on=False, requested_by="tests"))
        (row,) = await stack.outcomes(wave_id)
        clock = [datetime.now(UTC)]
        ledger = ChangedAfterMark(stack.rt.ledger, clock, how)
        rt = replace(stack.rt, ledger=cast(LedgerStore, ledger), clock=lambda: clock[0])
        result = await remover.run_task(rt, Task(TaskKind.REMOVE, wave_id, row.user_id, row.sku_id))

    assert ledger.changed
    assert result == "busy", "the row changed after this delivery marked it: it must not write"
    assert sim.counters.writes == 0
