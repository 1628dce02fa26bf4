"""LICSHIFT_DRIFT_REMOVE on the local stack: a legacy script re-adds direct licenses behind licshift's
back; the drift watch starts a follow-up wave of exactly those users, which removes them again with
the full rule (fresh read, decision, post-check); the drift rows clear. Off, nothing is removed. A
license that keeps coming back is held with an alert instead of looping."""

from __future__ import annotations

import asyncio
import json

import pytest

from graphsim.server import Simulator
from licshift.cli.main import run
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import SelectionKind, WaveStatus
from licshift.services.telemetry import DRIFT_REMOVE, DRIFT_REMOVE_HELD, WAVE_ACCEPTED
from licshift_local.stack import LocalStack

from .conftest import E3, OpenStack, completed, graph_losses, simulator, small_tenant, start
from .test_cli import use_stack_settings
from .test_drift_state import drift_later

ON = {"LICSHIFT_DRIFT_REMOVE": "true"}


def holds_directly(sim: Simulator, user_id: str) -> bool:
    sku = sim.tenant.sku_id(E3)
    return any(d.sku_id == sku for d in sim.tenant.user(user_id).direct)


async def migrated_then_readded(stack: LocalStack, sim: Simulator, users: int) -> tuple[str, list[str]]:
    """A completed wave over the whole group, then a legacy script re-adds E3 directly to `users` users."""
    group = sim.scenario.id("all")
    first = await completed(stack, await stack.enqueue(start(group, force=True)))
    assert first.status is WaveStatus.COMPLETED
    returned = sorted(u.id for u in sim.scenario.users[:users])
    for user_id in returned:
        sim.tenant.assign_direct(user_id, E3, cause="legacy:script")
    return first.wave_id, returned


async def test_drift_is_removed_again_by_a_follow_up_wave_of_exactly_those_users(
    open_stack: OpenStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with simulator(small_tenant(6)) as sim, open_stack(sim, overrides=ON) as stack:
        first_id, returned = await migrated_then_readded(stack, sim, 2)
        found = await stack.run_drift()
        assert found.removal is not None
        [(follow_id, follow)] = found.removal.started.items()
        during = {s.user_id: s async for s in stack.rt.ledger.iter_drift()}
        follow_up = await completed(stack, follow_id)
        outcomes = await stack.outcomes(follow_id)
        still_direct = [u for u in returned if holds_directly(sim, u)]
        cleared = await drift_later(stack, 60)
        quiet = await drift_later(stack, 120)
        events = await stack.events([DRIFT_REMOVE, WAVE_ACCEPTED])
        use_stack_settings(monkeypatch, stack)
        code = await asyncio.to_thread(run, ["drift", "--json", "--all"])
        listed = json.loads(capsys.readouterr().out)
        await asyncio.to_thread(run, ["status", follow_id])
        status_text = capsys.readouterr().out
        losses = graph_losses(sim)

    assert sorted(follow.users) == returned
    assert follow_up.selection.kind is SelectionKind.USERS
    assert sorted(follow_up.selection.users) == returned, "exactly the drifted users"
    assert follow_up.sku_ids == (sim.tenant.sku_id(E3),)
    assert follow_up.requested_by == "drift-watch"
    assert follow_up.status is WaveStatus.COMPLETED
    assert sorted(o.user_id for o in outcomes if o.status is OutcomeStatus.REMOVED) == returned
    assert still_direct == []
    assert losses == [], "the simulator's oracle saw no license or plan lost"
    assert {s.auto_wave_id for s in during.values()} == {follow_id}
    assert {s.auto_removals for s in during.values()} == {1}
    assert sorted(s.user_id for s in cleared.cleared) == returned
    assert all(follow_id in s.cleared_reason for s in cleared.cleared)
    assert cleared.removal is not None
    assert cleared.removal.started == {}, "nothing left to remove again"
    assert quiet.new == []
    assert quiet.cleared == []
    [started] = [e for e in events if e.kind == DRIFT_REMOVE]
    assert (started.wave_id, started.data["users"], started.data["removed_by"]) == (follow_id, 2, [first_id])
    assert any(e.kind == WAVE_ACCEPTED and e.wave_id == follow_id for e in events), "through intake"
    assert code == 0
    assert (listed["open"], listed["cleared"]) == (0, 2)
    assert {d["follow_up_wave"] for d in listed["drift"]} == {follow_id}
    assert "requested by drift-watch" in status_text
    assert "drift-remove" in status_text, "the timeline says why the wave was started"


async def test_with_the_setting_off_drift_is_only_reported(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(4)) as sim, open_stack(sim) as stack:
        _, returned = await migrated_then_readded(stack, sim, 2)
        found = await stack.run_drift()
        waves_after = await stack.rt.ledger.list_waves()
        await stack.idle(1.0)
        events = await stack.events([DRIFT_REMOVE])

    assert found.removal is None
    assert sorted(s.user_id for s in found.new) == returned
    assert len(waves_after) == 1, "no follow-up wave"
    assert all(holds_directly(sim, u) for u in returned)
    assert events == []


async def test_a_license_that_keeps_coming_back_is_held_with_an_alert(open_stack: OpenStack) -> None:
    overrides = {**ON, "LICSHIFT_DRIFT_REMOVE_MAX_REPEATS": "1"}
    async with simulator(small_tenant(4)) as sim, open_stack(sim, overrides=overrides) as stack:
        _, returned = await migrated_then_readded(stack, sim, 1)
        found = await stack.run_drift()
        assert found.removal is not None
        [follow_id] = found.removal.started
        await completed(stack, follow_id)
        sim.tenant.assign_direct(returned[0], E3, cause="legacy:script")  # the script runs again
        again = await drift_later(stack, 60)
        once_more = await drift_later(stack, 120)
        waves = await stack.rt.ledger.list_waves()
        alerts = await stack.events([DRIFT_REMOVE_HELD])
        [state] = [s async for s in stack.rt.ledger.iter_drift()]

    assert again.removal is not None
    assert again.removal.started == {}, "no second follow-up"
    assert [s.user_id for s in again.removal.held] == returned
    assert once_more.removal is not None
    assert once_more.removal.held == [], "held once, alerted once"
    assert len(waves) == 2
    assert [a.user_id for a in alerts] == returned
    assert alerts[0].severity.value == "alert"
    assert state.open
    assert state.held
    assert state.auto_removals == 1
    assert holds_directly(sim, returned[0])


async def test_a_follow_up_larger_than_a_canary_needs_a_clean_canary_like_any_wave(open_stack: OpenStack) -> None:
    # The first wave was forced over the whole group: it proves no canary, so intake refuses a follow-up
    # of more than LICSHIFT_CANARY_MAX_USERS users, and the refusal is recorded instead of a wave.
    overrides = {**ON, "LICSHIFT_CANARY_MAX_USERS": "2"}
    async with simulator(small_tenant(4)) as sim, open_stack(sim, overrides=overrides) as stack:
        _, returned = await migrated_then_readded(stack, sim, 3)
        found = await stack.run_drift()
        waves = await stack.rt.ledger.list_waves()
        events = await stack.events([DRIFT_REMOVE])
        states = [s async for s in stack.rt.ledger.iter_drift()]

    assert found.removal is not None
    assert found.removal.started == {}
    assert len(waves) == 1
    [refused] = events
    assert refused.data["users"] == 3
    assert "canary" in refused.data["refused"]
    assert sorted(s.user_id for s in states) == returned
    assert {s.auto_removals for s in states} == {0}, "a refused start is no re-removal"
    assert all(holds_directly(sim, u) for u in returned)
