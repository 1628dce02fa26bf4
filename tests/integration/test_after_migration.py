"""After a wave: rollback puts back exactly the recorded snapshots; drift watch reports direct
assignments a legacy script re-added; a removal that keeps failing ends in the poison handler,
which records FAILED and alerts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from graphsim.faults import FaultRule
from graphsim.server import Simulator
from licshift.rules.outcomes import OutcomeStatus, Severity
from licshift.rules.waves import WaveStatus
from licshift.services.telemetry import DRIFT, DRIFT_SUMMARY, POISON

from .conftest import (
    E3,
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


def direct_of(sim: Simulator, user_id: str, sku_id: str) -> list[dict[str, Any]]:
    return [s for s in sim.tenant.license_states(user_id) if s["skuId"] == sku_id and s.get("assignedByGroup") is None]


async def test_rollback_restores_exactly_the_recorded_direct_assignments(open_stack: OpenStack) -> None:
    doc = small_tenant(8)
    # Half the users had Sway disabled in their direct assignment: rollback must put that back too.
    doc["users"] = [
        {"generate": {"count": 4, "prefix": "plain", "name": "plain", "direct": [{"sku": E3}]}},
        {
            "generate": {
                "count": 4,
                "prefix": "nosway",
                "name": "nosway",
                "direct": [{"sku": E3, "disabled_plans": ["SWAY"]}],
            }
        },
    ]
    async with simulator(doc) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        before = {u.id: direct_of(sim, u.id, sim.tenant.sku_id(E3)) for u in sim.scenario.users}
        wave = await completed(stack, await stack.enqueue(start(group, force=True)))
        assert wave.status is WaveStatus.COMPLETED
        await stack.enqueue({"command": "rollback", "wave_id": wave.wave_id})
        rolled = await stack.wait_for_wave(wave.wave_id, {"rolled-back"}, 30)
        rows = await stack.outcomes(wave.wave_id)

    assert rolled.counters.rolled_back == 8
    assert count(rows, OutcomeStatus.ROLLED_BACK) == 8
    for user_id, direct in before.items():
        after = direct_of(sim, user_id, sim.tenant.sku_id(E3))
        assert [sorted(d["disabledPlans"]) for d in after] == [sorted(d["disabledPlans"]) for d in direct]
    assert sim.counters.writes == 16, "8 removals and 8 restores"
    assert graph_losses(sim) == []


async def test_drift_watch_reports_direct_assignments_that_came_back(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(6)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        wave = await completed(stack, await stack.enqueue(start(group, force=True)))
        assert wave.status is WaveStatus.COMPLETED
        returned = [u.id for u in sim.scenario.users[:2]]
        for user_id in returned:
            sim.tenant.assign_direct(user_id, E3, cause="legacy:script")
        writes = sim.counters.writes
        report = await stack.run_drift()
        events = await stack.events([DRIFT, DRIFT_SUMMARY])

    assert sorted(f.user_id for f in report.findings) == sorted(returned)
    assert {e.user_id for e in events if e.kind == DRIFT} == set(returned)
    assert any(e.kind == DRIFT_SUMMARY and e.wave_id == wave.wave_id for e in events)
    assert all(e.severity is Severity.WARNING for e in events)
    assert sim.counters.writes == writes, "drift watch only reports"


async def test_drift_watch_also_watches_the_removals_of_a_halted_wave(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(3)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        wave = await completed(stack, await stack.enqueue(start(group, force=True)))
        # A wave that halted after removing users: its removals are as final as a completed wave's.
        loaded = await stack.rt.ledger.get_wave(wave.wave_id)
        assert loaded is not None
        await stack.rt.ledger.save_wave(replace(loaded.value, status=WaveStatus.HALTED), loaded.etag)
        returned = sim.scenario.users[0].id
        sim.tenant.assign_direct(returned, E3, cause="legacy:script")
        report = await stack.run_drift()

    assert [f.user_id for f in report.findings] == [returned]


async def test_a_removal_that_keeps_failing_is_poisoned_marked_failed_and_alerted(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(4)) as sim, open_stack(sim, max_dequeue_count=2) as stack:
        group = sim.scenario.id("all")
        victim = sim.scenario.users[0].id
        sim.faults.add(FaultRule.error(503, kind="write", retry_after=None, path_contains=victim))
        wave = await completed(stack, await stack.enqueue(start(group, force=True)), timeout=60)
        rows = by_user(await stack.outcomes(wave.wave_id))
        alerts = await stack.events([POISON])
        stats = stack.host.stats

    assert stats["remove_direct_license"].poisoned == 1
    assert stats["removals_poison"].deliveries == 1
    assert rows[victim].status is OutcomeStatus.FAILED
    assert "gave up" in rows[victim].graph_error
    assert [a.user_id for a in alerts] == [victim]
    assert alerts[0].severity is Severity.ALERT
    assert count(list(rows.values()), OutcomeStatus.REMOVED) == 3
    assert_all_final(list(rows.values()))
    assert direct_of(sim, victim, sim.tenant.sku_id(E3)), "the failed user keeps the direct assignment"
    assert graph_losses(sim) == []
