"""Whole migrations through the local host: Microsoft's example tenant (dry run, canary, the rest)
and the adversarial tenant, where the decision rule must block exactly the users it must block."""

from __future__ import annotations

from typing import Any

from graphsim.scenario import Scenario
from graphsim.server import Simulator
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import WaveStatus

from .conftest import (
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


async def assign_wave_licenses(sim: Simulator) -> tuple[str, list[str]]:
    """Microsoft's step 3: the group assigns the wave's SKU(s); then wait for processing (step 4)."""
    wave = sim.scenario.wave
    for sku_id, disabled in wave.group_license:
        if sim.tenant.group(wave.group).licenses.get(sku_id) != disabled:
            sim.tenant.set_group_license(wave.group, sku_id, disabled)
    await wait_processing_complete(sim, wave.group)
    return wave.group, list(wave.skus)


def has_direct(sim: Simulator, user_id: str, sku_id: str) -> bool:
    return any(s["skuId"] == sku_id and s.get("assignedByGroup") is None for s in sim.tenant.license_states(user_id))


def selection_of(scenario: Scenario) -> dict[str, Any]:
    sel = scenario.wave.selection
    if sel.kind == "users":
        return {"kind": "users", "users": sorted(sel.users)}
    if sel.kind == "first":
        return {"kind": "first", "count": sel.count}
    if sel.kind == "percent":
        return {"kind": "percent", "percent": sel.percent}
    return {"kind": "all"}


async def test_seed_example_dry_run_canary_then_the_rest(open_stack: OpenStack) -> None:
    async with simulator("seed-example", users=200) as sim, open_stack(sim) as stack:
        group, skus = await assign_wave_licenses(sim)
        (e3,) = skus
        members = [u.id for u in sim.tenant.user_members(sim.tenant.group(group))]
        assert len(members) == 200

        dry = await completed(stack, await stack.enqueue(start(group, skus=(e3,), dry_run=True)))
        plan = await stack.outcomes(dry.wave_id)
        assert dry.status is WaveStatus.PLANNED
        assert sim.counters.writes == 0, "a dry run writes nothing to Graph (S2)"
        assert count(plan, OutcomeStatus.PLANNED) == 200
        assert all(r.decision == "remove" and r.snapshot is not None for r in plan)

        canary = await completed(
            stack, await stack.enqueue(start(group, skus=(e3,), selection={"kind": "first", "count": 5}))
        )
        assert canary.status is WaveStatus.COMPLETED
        assert canary.counters.removed == 5
        # The rest goes through the canary gate (no force): it is larger than a canary.
        rest = await completed(stack, await stack.enqueue(start(group, skus=(e3,))), timeout=90)
        canary_rows, rest_rows = await stack.outcomes(canary.wave_id), await stack.outcomes(rest.wave_id)
        adapter_writes = stack.graph_counters["writes"]

    assert rest.status is WaveStatus.COMPLETED
    for rows in (canary_rows, rest_rows):
        assert_all_final(rows)
        by_user(rows)  # one row per user and SKU
    assert len(rest_rows) == 200
    assert count(rest_rows, OutcomeStatus.REMOVED) == 195
    assert {r.reason for r in rest_rows if r.status is OutcomeStatus.SKIPPED} == {"no-direct-assignment"}
    assert not any(has_direct(sim, u, e3) for u in members), "every safe user migrated"
    assert graph_losses(sim) == []
    assert sim.counters.writes == 200, "Graph writes are exactly the removals"
    assert adapter_writes == 200


async def test_adversarial_tenant_blocks_exactly_what_the_rule_must_block(open_stack: OpenStack) -> None:
    async with simulator("adversarial") as sim, open_stack(sim) as stack:
        group, skus = await assign_wave_licenses(sim)
        wave_spec = sim.scenario.wave
        wave = await completed(
            stack,
            await stack.enqueue(start(group, skus=tuple(skus), selection=selection_of(sim.scenario), force=True)),
            timeout=60,
        )
        rows = await stack.outcomes(wave.wave_id)

    assert wave.status is WaveStatus.COMPLETED, wave.status_reason
    assert_all_final(rows)
    outcome = {(r.user_id, r.sku_id): r for r in rows}
    mismatches: list[tuple[str, str, str | None, str]] = []
    for user_id, expected in wave_spec.expected.items():
        for sku_id in skus:
            row = outcome.get((user_id, sku_id))
            if expected == "not-selected":
                if row is not None:
                    mismatches.append((user_id, expected, row.status.value, ""))
                continue
            got = "remove" if row is not None and row.status is OutcomeStatus.REMOVED else (row.reason if row else None)
            if got != expected:
                mismatches.append((user_id, expected, got, row.detail if row else ""))
    for user_id, allowed in wave_spec.timing_dependent.items():
        row = outcome[(user_id, skus[0])]
        got = "remove" if row.status is OutcomeStatus.REMOVED else row.reason
        assert got in allowed, (user_id, got, allowed)
    assert mismatches == []
    blocked = [r for r in rows if r.status is OutcomeStatus.BLOCKED]
    assert blocked, "the adversarial tenant has users that must be blocked"
    assert all(r.reason and r.detail for r in blocked), "every block says why"
    assert graph_losses(sim) == []
    assert sim.counters.writes == count(rows, OutcomeStatus.REMOVED)
