"""Retry-After is a promise: once Graph answered 429 for a user's task, no path calls Graph for that
user before the time Graph named. Measured from the simulator's request log.

Retry-After is 180 s (msgraph-sdk retries shorter waits itself, in-process), the tick 1 s, so the
scheduler's stale window is its 2-minute minimum. The paths that used to break the promise are
exercised without waiting minutes: the scheduler runs one tick as it would 150 s after the 429s
(stale window passed, Retry-After not), a copy of a throttled task lands on the poison queue, and a
duplicate delivery arrives early.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from graphsim.counters import LoggedRequest
from graphsim.faults import FaultRule
from licshift.adapters.queues import poison_queue
from licshift.rules.messages import Task, TaskKind, encode_task
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift.services import scheduler
from licshift.services.telemetry import THROTTLED

from .conftest import E3, AfterRemove, OpenStack, by_user, graph_losses, simulator, small_tenant, start

RETRY_AFTER = 180


def first_429(log: list[LoggedRequest], user_id: str) -> datetime | None:
    return next((r.at for r in log if r.status == 429 and user_id in r.path), None)


def calls_before_their_time(sim: Any, users: list[str]) -> list[tuple[str, str, float]]:
    """(user, request, seconds after its 429) for every Graph call about a throttled user inside its
    Retry-After window."""
    log = list(sim.counters.log)
    early = []
    for user in users:
        throttled_at = first_429(log, user)
        assert throttled_at is not None, f"{user} was never throttled"
        for r in log:
            gap = (r.at - throttled_at).total_seconds()
            if user in r.path and 0 < gap < RETRY_AFTER:
                early.append((user, f"{r.endpoint} -> {r.status}", round(gap, 1)))
    return early


async def test_no_graph_call_for_a_throttled_row_before_its_retry_after(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(6)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        sim.faults.add(FaultRule.storm(RETRY_AFTER, kind="write", count=3, path_contains="assignLicense"))
        wave_id = await stack.enqueue(start(group, force=True))

        async def three_throttled() -> bool:
            return len(await stack.events([THROTTLED])) >= 3

        assert await stack.run_until(three_throttled, 30)
        throttled = sorted({e.user_id for e in await stack.events([THROTTLED])})
        await stack.idle(2)
        rows = by_user(await stack.outcomes(wave_id))
        sku = rows[throttled[0]].sku_id

        # The scheduler 150 s later: its stale window (120 s) has passed, Graph's 180 s have not.
        later = replace(stack.rt, clock=lambda: datetime.now(UTC) + timedelta(seconds=150))
        await scheduler.tick(later)
        # A copy of a throttled task in the poison queue, and a duplicate delivery of another.
        task = Task(TaskKind.REMOVE, wave_id, throttled[0], sku)
        await stack.rt.queue.send(poison_queue(stack.settings.removals_queue), encode_task(task))
        await stack.rt.queue.send(stack.settings.removals_queue, encode_task(replace(task, user_id=throttled[1])))
        await stack.idle(6)
        after = by_user(await stack.outcomes(wave_id))
        wave = await stack.get_wave(wave_id)
        poison_runs = stack.host.stats["removals_poison"].deliveries

    assert len(throttled) == 3
    assert poison_runs == 1, "the poison handler ran on the copy"
    assert calls_before_their_time(sim, throttled) == []
    log = list(sim.counters.log)
    for user in throttled:
        row = after[user]
        assert row.status is OutcomeStatus.REMOVING, "the throttled removal waits, it is not failed or closed"
        assert row.not_before is not None, "Graph's Retry-After is on record"
        at = first_429(log, user)
        assert at is not None
        assert abs((row.not_before - at).total_seconds() - RETRY_AFTER) < 5
    assert sum(1 for r in after.values() if r.status is OutcomeStatus.REMOVED) == 3
    assert wave is not None
    assert wave.status is WaveStatus.REMOVING
    assert graph_losses(sim) == []


async def test_a_throttled_restore_is_not_retried_before_its_retry_after(open_stack: OpenStack) -> None:
    """The post-check found a loss and Graph throttled the restore for 180 s: the restore is queued for
    then (not retried in-process after a shorter wait), the loss is recorded and the wave halts now."""
    async with simulator(small_tenant(3)) as sim:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[1].id

        def break_victim(user_id: str, sku_id: str) -> None:
            if user_id == victim:
                # The group's assignment breaks for the user between the removal and the post-check,
                # and Graph throttles the restore that follows.
                sim.tenant.break_group_license(group, E3, users=[victim])
                sim.faults.add(FaultRule.storm(RETRY_AFTER, kind="write", count=1, path_contains=victim))

        async with open_stack(sim, graph_wrapper=lambda inner: AfterRemove(inner, break_victim)) as stack:
            wave_id = await stack.enqueue(start(group, force=True))
            wave = await stack.wait_for_wave(wave_id, {"halted"}, 30)
            await stack.idle(4)
            row = by_user(await stack.outcomes(wave_id))[victim]

    assert wave.status is WaveStatus.HALTED
    assert row.loss_found_by == "post-check"
    assert row.status is OutcomeStatus.REMOVING, "the restore is pending, queued for Graph's time"
    assert row.not_before is not None
    restore_429 = [r for r in sim.counters.log if r.status == 429 and victim in r.path]
    assert len(restore_429) == 1
    assert abs((row.not_before - restore_429[0].at).total_seconds() - RETRY_AFTER) < 5
    assert [r for r in sim.counters.log if victim in r.path and r.at > restore_429[0].at] == []
