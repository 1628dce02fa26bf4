"""Safety over the whole union of groups a decision relies on (S1, S3 over time).

A user can keep a plan only because a second group (not the wave's) enables it. When that group's
options change, Entra processes its members one by one and, until it reaches them, their
licenseAssignmentStates still show the old options: a removal in that window looks safe on every
read and loses the plan later. licshift holds such users until every relied-on group has finished
processing, and after a removal a settle check puts back what a later change of such a group took.
"""

from __future__ import annotations

from typing import Any

from licshift.rules.outcomes import OutcomeStatus, Severity
from licshift.rules.waves import WaveStatus
from licshift.services.telemetry import RESTORED

from .conftest import (
    E3,
    OpenStack,
    assert_all_final,
    by_user,
    completed,
    count,
    graph_losses,
    simulator,
    start,
    wait_processing_complete,
)

SLOW = {"queued_seconds": 300, "in_progress_seconds": 600}
"""Sim seconds (x 0.01 real): the second group takes about 9 real seconds to process its members."""


def union_tenant(relying: int, covered: int) -> dict[str, Any]:
    """Every user has E3 directly with every plan. The wave group disables SWAY; "extra" enables it
    (slowly processed); "third" enables it too but only for the covered users. The relying users keep
    SWAY after the migration only through "extra"; the covered users through "extra" and "third"."""
    return {
        "name": "union",
        "skus": [{"catalog": E3, "seats": relying + covered + 10}],
        "users": [
            {"generate": {"count": relying, "prefix": "rely", "name": "relying", "direct": [{"sku": E3}]}},
            {"generate": {"count": covered, "prefix": "cover", "name": "covered", "direct": [{"sku": E3}]}},
        ],
        "groups": [
            {
                "key": "wave",
                "name": "Licensing wave",
                "members": ["@all"],
                "licenses": [{"sku": E3, "disabled_plans": ["SWAY"]}],
            },
            {
                "key": "extra",
                "name": "Sway users",
                "members": ["@all"],
                "licenses": [{"sku": E3}],
                "processing": SLOW,
            },
            {"key": "third", "name": "Covered", "members": ["@population:covered"], "licenses": [{"sku": E3}]},
        ],
    }


def users_of(sim: Any, prefix: str) -> list[str]:
    return [u.id for u in sim.scenario.users if u.upn.startswith(prefix)]


async def test_reprocessing_relied_on_group_holds_then_migrates(open_stack: OpenStack) -> None:
    async with simulator(union_tenant(4, 4)) as sim, open_stack(sim) as stack:
        wave_group, extra = sim.scenario.id("wave"), sim.scenario.id("extra")
        relying, covered = users_of(sim, "rely"), users_of(sim, "cover")
        await stack.enqueue({"command": "kill-switch", "on": True})
        wave_id = await stack.enqueue(start(wave_group, force=True))
        await stack.wait_for_wave(wave_id, {"removing"}, 30)
        assert count(await stack.outcomes(wave_id), OutcomeStatus.PLANNED) == 8, "every removal proven at the scan"
        # Right after the scan an admin disables SWAY in the second group; its members keep showing
        # SWAY enabled until Entra's processing reaches them.
        sim.tenant.set_group_license(extra, E3, ["SWAY"])
        await stack.enqueue({"command": "kill-switch", "on": False})

        async def held() -> bool:
            wave = await stack.get_wave(wave_id)
            return wave is not None and extra in wave.status_reason

        assert await stack.run_until(held, 10), "the wave says it holds for the relied-on group"
        assert sim.counters.writes == 0, "nothing removed while the relied-on group processes"
        wave = await completed(stack, wave_id, 60)
        rows = by_user(await stack.outcomes(wave_id))

    assert sim.tenant.group_processing_state(extra) == "ProcessingComplete"
    assert wave.status is WaveStatus.COMPLETED, wave.status_reason
    assert_all_final(list(rows.values()))
    # The oracle: nobody lost anything, whatever the cause.
    assert list(sim.oracle.losses) == []
    for user in covered:
        assert rows[user].status is OutcomeStatus.REMOVED, rows[user]
        assert {extra, wave_group} <= {g.group_id for g in rows[user].relied_on}
    for user in relying:
        assert rows[user].status is OutcomeStatus.BLOCKED
        assert rows[user].reason == "plans-would-be-lost"
    assert sim.counters.writes == len(covered)


async def test_remover_holds_when_the_relied_on_group_changes_after_enqueue(open_stack: OpenStack) -> None:
    """The scheduler saw every group complete; the change lands between enqueue and the remover's
    fresh read. The remover's own check of the relied-on groups must hold the user."""
    async with simulator(union_tenant(1, 0)) as sim:
        wave_group, extra = sim.scenario.id("wave"), sim.scenario.id("extra")
        (victim,) = users_of(sim, "rely")
        changed: list[str] = []

        class ChangeBeforeFreshRead:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

            async def user_licenses(self, user_id: str) -> Any:
                if user_id == victim and not changed:
                    changed.append(user_id)
                    sim.tenant.set_group_license(extra, E3, ["SWAY"])
                return await self._inner.user_licenses(user_id)

        async with open_stack(sim, graph_wrapper=ChangeBeforeFreshRead) as stack:
            wave_id = await stack.enqueue(start(wave_group, selection={"kind": "users", "users": [victim]}))
            wave = await completed(stack, wave_id, 60)
            rows = by_user(await stack.outcomes(wave_id))

    assert changed, "the change happened at the remover's fresh read"
    assert wave.status is WaveStatus.COMPLETED, wave.status_reason
    assert rows[victim].status is OutcomeStatus.BLOCKED
    assert rows[victim].reason == "plans-would-be-lost"
    assert list(sim.oracle.losses) == []
    assert sim.counters.writes == 0


async def test_settle_check_restores_after_relied_on_group_disables_plan(open_stack: OpenStack) -> None:
    overrides = {"LICSHIFT_SETTLE_SCHEDULE": "00:00:01"}
    async with simulator(union_tenant(3, 0)) as sim, open_stack(sim, overrides=overrides) as stack:
        wave_group, extra = sim.scenario.id("wave"), sim.scenario.id("extra")
        relying = users_of(sim, "rely")
        before = {u: sim.tenant.effective(sim.tenant.user(u)) for u in relying}
        wave_id = await stack.enqueue(start(wave_group, force=True))
        wave = await completed(stack, wave_id, 45)
        assert wave.status is WaveStatus.COMPLETED, wave.status_reason
        assert count(await stack.outcomes(wave_id), OutcomeStatus.REMOVED) == 3
        # After the migration an admin disables SWAY in the group the removals relied on.
        sim.tenant.set_group_license(extra, E3, ["SWAY"])
        await wait_processing_complete(sim, extra, 30)
        lost = [loss.user_id for loss in sim.oracle.losses]
        assert sorted(lost) == sorted(relying), "the change took SWAY from every migrated user"

        async def restored() -> bool:
            if not all(sim.tenant.effective(sim.tenant.user(u)) == before[u] for u in relying):
                return False
            rows = await stack.outcomes(wave_id)
            return count(rows, OutcomeStatus.RESTORED) == len(relying)

        assert await stack.run_until(restored, 30), "the settle check put the snapshots back"
        rows = by_user(await stack.outcomes(wave_id))
        alerts = [e for e in await stack.events([RESTORED]) if e.severity is Severity.ALERT]

    for user in relying:
        assert rows[user].status is OutcomeStatus.RESTORED
        assert "settle" in rows[user].detail
    assert {e.user_id for e in alerts} == set(relying)
    assert all(extra in e.message and "Sway users" in e.message for e in alerts), [e.message for e in alerts]
    # The oracle: the only losses are the admin's change; each user has every plan back.
    assert graph_losses(sim) == []
    assert {loss.source for loss in sim.oracle.losses} == {"scenario"}
    assert sim.counters.writes == 2 * len(relying), "one removal and one restore each"


async def test_settle_check_alert_only_leaves_the_user_and_alerts(open_stack: OpenStack) -> None:
    overrides = {"LICSHIFT_SETTLE_SCHEDULE": "00:00:01", "LICSHIFT_SETTLE_ACTION": "alert-only"}
    async with simulator(union_tenant(1, 0)) as sim, open_stack(sim, overrides=overrides) as stack:
        wave_group, extra = sim.scenario.id("wave"), sim.scenario.id("extra")
        (user,) = users_of(sim, "rely")
        wave_id = await stack.enqueue(start(wave_group, force=True))
        await completed(stack, wave_id, 45)
        sim.tenant.set_group_license(extra, E3, ["SWAY"])
        await wait_processing_complete(sim, extra, 30)

        async def alerted() -> bool:
            return any(e.user_id == user and e.severity is Severity.ALERT for e in await stack.events())

        assert await stack.run_until(alerted, 30)
        await stack.idle(3)
        events = [e for e in await stack.events() if e.user_id == user and e.severity is Severity.ALERT]
        row = by_user(await stack.outcomes(wave_id))[user]

    assert len(events) == 1, "one alert per change, not one per settle run"
    assert extra in events[0].message
    assert row.status is OutcomeStatus.REMOVED
    assert sim.counters.writes == 1, "alert-only writes nothing"
