"""The ledger tells the truth (S6): a direct assignment the scan saw and the fresh read no longer shows
is recorded as "gone before removal", with what the read showed, not as "no direct assignment"; and a
rollback still restores only what licshift itself removed."""

from __future__ import annotations

from typing import Any

from licshift.ports.graph import LicenseGraph, UserLicenses
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift.services.remover import GONE_BEFORE_REMOVAL

from .conftest import E3, OpenStack, by_user, completed, count, graph_losses, simulator, small_tenant, start


def direct_of(sim: Any, user_id: str) -> list[dict[str, Any]]:
    sku_id = sim.tenant.sku_id(E3)
    return [s for s in sim.tenant.license_states(user_id) if s["skuId"] == sku_id and s.get("assignedByGroup") is None]


class RemovedByAnAdminFirst:
    """A LicenseGraph where an admin removes the victim's direct assignment by hand right before
    licshift's fresh read of that user (the scan, which reads the group's members, saw it)."""

    def __init__(self, inner: LicenseGraph, sim: Any, victim: str) -> None:
        self._inner, self._sim, self._victim, self.fired = inner, sim, victim, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def user_licenses(self, user_id: str) -> UserLicenses:
        if user_id == self._victim and not self.fired:
            self.fired = True
            self._sim.tenant.remove_direct(user_id, E3, cause="admin:portal")
        return await self._inner.user_licenses(user_id)


async def test_a_direct_assignment_gone_before_removal_is_recorded_as_such_and_not_rolled_back(
    open_stack: OpenStack,
) -> None:
    async with simulator(small_tenant(4)) as sim:
        victim = sim.scenario.users[2].id
        harness: list[RemovedByAnAdminFirst] = []

        def wrap(inner: LicenseGraph) -> LicenseGraph:
            harness.append(RemovedByAnAdminFirst(inner, sim, victim))
            return harness[0]

        async with open_stack(sim, graph_wrapper=wrap) as stack:
            group = sim.scenario.id("all")
            wave = await completed(stack, await stack.enqueue(start(group, force=True)))
            rows = by_user(await stack.outcomes(wave.wave_id))
            writes = sim.counters.writes
            await stack.enqueue({"command": "rollback", "wave_id": wave.wave_id})
            rolled = await stack.wait_for_wave(wave.wave_id, {"rolled-back"}, 30)
            after_rollback = by_user(await stack.outcomes(wave.wave_id))

    assert harness[0].fired
    assert wave.status is WaveStatus.COMPLETED
    row = rows[victim]
    assert row.status is OutcomeStatus.SKIPPED
    assert row.reason == GONE_BEFORE_REMOVAL, (row.reason, row.detail)
    assert "the scan saw a direct assignment" in row.detail
    assert f"group {group} (Active)" in row.detail, "what the fresh read showed"
    assert row.snapshot is not None, "the scan's view stays on record"
    assert count(list(rows.values()), OutcomeStatus.REMOVED) == 3
    assert writes == 3, "licshift wrote only its own three removals"
    # Rollback puts back what licshift removed, and only that.
    assert rolled.counters.rolled_back == 3
    assert after_rollback[victim].status is OutcomeStatus.SKIPPED
    assert direct_of(sim, victim) == [], "the admin's removal is not undone by licshift's rollback"
    for user in sim.scenario.users:
        if user.id != victim:
            assert len(direct_of(sim, user.id)) == 1
    assert sim.counters.writes == 6
    assert graph_losses(sim) == []
