"""Drift as current state: one row per (user, SKU), the alert once per new drift, cleared when a later
wave removes the license again or the wave is rolled back; `licshift drift` lists it by group and SKU."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta

import pytest

from licshift.cli.main import run
from licshift.rules.waves import WaveStatus
from licshift.services import drift as drift_module
from licshift.services.telemetry import DRIFT, DRIFT_CLEARED
from licshift_local.stack import LocalStack

from .conftest import E3, OpenStack, completed, simulator, small_tenant, start
from .test_cli import use_stack_settings


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(run, list(argv))
    return code, capsys.readouterr().out


async def drift_later(stack: LocalStack, minutes: float) -> drift_module.DriftReport:
    later = stack.rt.now() + timedelta(minutes=minutes)
    return await drift_module.drift_watch(replace(stack.rt, clock=lambda: later))


async def test_drift_is_one_row_per_user_alerted_once_and_cleared_by_a_later_wave(
    open_stack: OpenStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with simulator(small_tenant(6)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        first = await completed(stack, await stack.enqueue(start(group, force=True)))
        assert first.status is WaveStatus.COMPLETED
        returned = sorted(u.id for u in sim.scenario.users[:2])
        for user_id in returned:
            sim.tenant.assign_direct(user_id, E3, cause="legacy:script")

        found = await stack.run_drift()
        again = await drift_later(stack, 60)
        states = {s.user_id: s async for s in stack.rt.ledger.iter_drift()}
        alerts = await stack.events([DRIFT])
        use_stack_settings(monkeypatch, stack)
        code, text = await cli(capsys, "drift")
        fail_code, _ = await cli(capsys, "drift", "--fail-on-drift")
        _, raw = await cli(capsys, "drift", "--json")
        listed = json.loads(raw)

        second = await completed(stack, await stack.enqueue(start(group, force=True)))
        cleared = await drift_later(stack, 120)
        cleared_events = await stack.events([DRIFT_CLEARED])
        _, after = await cli(capsys, "drift", "--json", "--all")
        quiet_code, _ = await cli(capsys, "drift", "--fail-on-drift")

    assert sorted(s.user_id for s in found.new) == returned
    assert again.new == [], "known drift is not new drift"
    assert sorted(f.user_id for f in again.findings) == returned
    assert sorted(e.user_id for e in alerts) == returned, "one alert per drifted user, not one per run"
    assert sorted(states) == returned
    for state in states.values():
        assert state.wave_id == first.wave_id
        assert state.last_seen - state.first_seen >= timedelta(minutes=59)
        assert state.open
    assert code == 0
    assert fail_code == 4
    assert "All users / ENTERPRISEPACK: 2 user(s)" in text
    assert sim.scenario.users[0].upn in text or sim.scenario.users[1].upn in text
    assert listed["open"] == 2
    assert listed["summary"] == [
        {"group_id": group, "group": "All users", "sku_id": sim.tenant.sku_id(E3), "sku": "ENTERPRISEPACK", "users": 2}
    ]
    assert {d["removed_by_wave"] for d in listed["drift"]} == {first.wave_id}

    assert second.counters.removed == 2, "the later wave migrated exactly the drifted users"
    assert sorted(s.user_id for s in cleared.cleared) == returned
    assert all(second.wave_id in s.cleared_reason for s in cleared.cleared)
    assert sorted(e.user_id for e in cleared_events) == returned
    gone = json.loads(after)
    assert (gone["open"], gone["cleared"]) == (0, 2)
    assert all(d["cleared_at"] for d in gone["drift"])
    assert quiet_code == 0


async def test_a_rollback_clears_the_drift_of_its_wave(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(3)) as sim, open_stack(sim) as stack:
        group = sim.scenario.id("all")
        wave = await completed(stack, await stack.enqueue(start(group, force=True)))
        returned = sim.scenario.users[0].id
        sim.tenant.assign_direct(returned, E3, cause="legacy:script")
        found = await stack.run_drift()
        await stack.enqueue({"command": "rollback", "wave_id": wave.wave_id})
        await stack.wait_for_wave(wave.wave_id, {"rolled-back"}, 30)
        cleared = await drift_later(stack, 10)
        states = [s async for s in stack.rt.ledger.iter_drift()]

    assert [s.user_id for s in found.new] == [returned]
    assert [s.user_id for s in cleared.cleared] == [returned]
    assert "rolled back" in cleared.cleared[0].cleared_reason
    assert [s.open for s in states] == [False]
