"""`licshift reprocess` as an admin runs it after freeing seats: the users a wave left blocked by
CountViolation are reprocessed through the function app, one Graph write each, on the removals'
write budget, each recorded in the ledger; refused (exit 3) while the deployment has it off."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from graphsim.faults import FaultRule
from licshift.adapters.ledger import Ledger
from licshift.rules.messages import Task, TaskKind, encode_task
from licshift.rules.outcomes import Event
from licshift.services import telemetry

from .conftest import E3, OpenStack, simulator, wait_processing_complete
from .test_cli_process import cli_env, licshift

MEMBERS = 14
EMS_SEATS = 4
CEILING = 2.0
WINDOW = 2.0
REPROCESS = "POST /users/{id}/reprocessLicenseAssignment"


def bundle_tenant(members: int = MEMBERS, ems_seats: int = EMS_SEATS) -> dict[str, Any]:
    """14 users with E3 directly, all in "Bundle", which assigns E3 and EMS; EMS has 4 seats, so 10
    members are in CountViolation on both of the group's SKUs and block at the wave."""
    return {
        "name": "seats",
        "skus": [{"catalog": E3, "seats": members + 10}, {"catalog": "EMS", "seats": ems_seats}],
        "users": [{"generate": {"count": members, "prefix": "user", "name": "pop", "direct": [{"sku": E3}]}}],
        "groups": [
            {
                "key": "bundle",
                "name": "Bundle",
                "members": ["@population:pop"],
                "licenses": [{"sku": E3}, {"sku": "EMS"}],
            }
        ],
    }


def license_errors(sim: Any, user_id: str) -> set[str]:
    return {s["error"] for s in sim.tenant.license_states(user_id) if s["error"] != "None"}


def members(sim: Any) -> list[str]:
    return sorted(sim.tenant.group(sim.scenario.id("bundle")).members)


def most_in_window(times: list[datetime], seconds: float) -> int:
    ordered = sorted(t.timestamp() for t in times)
    return max((sum(1 for u in ordered if t <= u < t + seconds) for t in ordered), default=0)


async def reprocess_events(env: dict[str, str], since: datetime) -> list[Event]:
    from licshift.settings import Settings

    async with Ledger.from_settings(Settings.from_env(env)) as ledger:
        kinds = [telemetry.REPROCESSED, telemetry.REPROCESS_ACCEPTED]
        return [e async for e in ledger.iter_events(since, kinds=kinds)]


async def test_reprocess_clears_count_violations_after_seats_are_freed(open_stack: OpenStack, tmp_path: Path) -> None:
    overrides = {
        "LICSHIFT_REPROCESS_ENABLED": "true",
        "LICSHIFT_WRITE_RATE_CEILING": str(CEILING),
        "LICSHIFT_WRITE_RATE_FLOOR": "0.5",
    }
    async with simulator(bundle_tenant()) as sim, open_stack(sim, overrides=overrides) as stack:
        env = cli_env(stack)
        await wait_processing_complete(sim, sim.scenario.id("bundle"))
        first = str(MEMBERS)  # the whole group as a canary-sized wave
        wave = await licshift(
            env, "wave", "start", "--group", "Bundle", "--sku", E3, "--first", first, "--wait", "--json", cwd=tmp_path
        )
        wave_id = wave.json()["wave_id"]
        blocked = [u for u in members(sim) if license_errors(sim, u)]
        # Not yet: the seats are still short, so every user is reprocessed and stays in error.
        sim.tenant.set_seats("EMS", MEMBERS)
        started = datetime.now().astimezone()
        sim.counters.reset()
        ran = await licshift(
            env, "reprocess", "--wave", wave_id[:8], "--reason", "countviolation", "--json", cwd=tmp_path
        )
        writes = [r for r in sim.counters.log if r.write]
        after = {u: license_errors(sim, u) for u in blocked}
        events = await reprocess_events(env, started)
        human = await licshift(env, "reprocess", "--users", sim.tenant.user(blocked[0]).upn, cwd=tmp_path)
        page = await licshift(env, "report", wave_id[:8], "--format", "html", cwd=tmp_path)

    assert wave.code == 4, str(wave)
    assert wave.json()["wave"]["counters"]["blocked"] == len(blocked) == MEMBERS - EMS_SEATS
    assert ran.code == 0, str(ran)
    result = ran.json()
    assert result["verdict"] == "accepted"
    assert result["wave_id"] == wave_id
    assert result["reason"] == "CountViolation"
    assert result["counts"] == {"cleared": len(blocked)}
    assert sorted(u["user_id"] for u in result["users"]) == sorted(blocked)
    assert all(u["errors_before"] == ["CountViolation"] and u["errors_after"] == [] for u in result["users"])
    assert all(u["user_principal_name"] for u in result["users"])
    assert after == {u: set() for u in blocked}, "every CountViolation cleared"
    # One Graph write per user, and only reprocessing: no license was added or removed.
    assert sorted(r.path.split("/")[-2] for r in writes) == sorted(blocked)
    assert {r.endpoint for r in writes} == {REPROCESS}
    # Paced by the write budget: more users than one tick's slots, so intake sent some later.
    peak = most_in_window([r.at for r in writes], WINDOW)
    assert peak <= CEILING * (WINDOW + 1), f"{peak} writes in {WINDOW:g} s with a ceiling of {CEILING}/s"
    span = (max(r.at for r in writes) - min(r.at for r in writes)).total_seconds()
    assert span >= len(blocked) / CEILING - 2 * WINDOW, f"{len(blocked)} writes in {span:.1f} s"
    done = [e for e in events if e.kind == telemetry.REPROCESSED and e.data["request_id"] in result["request_ids"]]
    assert sorted(e.user_id for e in done) == sorted(blocked)
    assert all(e.wave_id == wave_id and e.data["outcome"] == "cleared" for e in done)
    accepted = [e for e in events if e.kind == telemetry.REPROCESS_ACCEPTED]
    assert len(accepted) >= 2, "users beyond the first slots went on as a continuation"
    assert sum(e.data["sent"] for e in accepted) == len(blocked)
    assert page.code == 0, str(page)
    assert "reprocess accepted" in page.out, "the wave's report timeline shows the reprocessing"
    assert human.code == 0, str(human)
    assert "reprocessed 1 user(s): 1 reprocessed" in human.out
    assert "outcome" in human.out


async def test_a_throttled_reprocess_waits_for_retry_after_and_then_clears(
    open_stack: OpenStack, tmp_path: Path
) -> None:
    retry_after = 3
    async with (
        simulator(bundle_tenant(6, 2)) as sim,
        open_stack(sim, overrides={"LICSHIFT_REPROCESS_ENABLED": "true"}) as stack,
    ):
        env = cli_env(stack)
        await wait_processing_complete(sim, sim.scenario.id("bundle"))
        argv = ["wave", "start", "--group", "Bundle", "--sku", E3, "--first", "6", "--wait", "--json"]
        wave = await licshift(env, *argv, cwd=tmp_path)
        blocked = [u for u in members(sim) if license_errors(sim, u)]
        sim.tenant.set_seats("EMS", 6)
        storm = FaultRule.storm(retry_after, kind="write", count=2, path_contains="reprocessLicenseAssignment")
        sim.faults.add(storm)
        sim.counters.reset()
        started = datetime.now().astimezone()
        argv = ["reprocess", "--wave", wave.json()["wave_id"], "--reason", "CountViolation", "--json"]
        ran = await licshift(env, *argv, cwd=tmp_path)
        log = [r for r in sim.counters.log if r.endpoint == REPROCESS]
        events = await reprocess_events(env, started)
        throttled = [e for e in await stack.events([telemetry.THROTTLED]) if e.actor == "reprocess"]

    assert wave.code == 4, str(wave)
    assert ran.code == 0, str(ran)
    assert ran.json()["counts"] == {"cleared": len(blocked)}
    assert len(throttled) == 2
    assert all(e.data["retry_after"] == retry_after for e in throttled)
    for user in {e.user_id for e in throttled}:
        calls = [r for r in log if user in r.path]
        assert [r.status for r in calls] == [429, 200], "no hot retry; one write once Graph allowed it"
        gap = (calls[1].at - calls[0].at).total_seconds()
        assert gap >= retry_after - 0.1, f"called again {gap:.2f} s after a {retry_after} s Retry-After"
    assert sorted(r.path.split("/")[-2] for r in log if r.write) == sorted(blocked)
    assert len([e for e in events if e.kind == telemetry.REPROCESSED]) == len(blocked)


async def test_reprocess_is_refused_while_the_deployment_has_it_off(open_stack: OpenStack, tmp_path: Path) -> None:
    async with simulator(bundle_tenant()) as sim, open_stack(sim) as stack:
        env = cli_env(stack)
        user = members(sim)[0]
        ran = await licshift(env, "reprocess", "--users", user, "--json", cwd=tmp_path)
        text = await licshift(env, "reprocess", "--users", user, cwd=tmp_path)
        usage = await licshift(env, "reprocess", "--reason", "CountViolation", cwd=tmp_path)
        bad_reason = await licshift(
            env, "reprocess", "--users", user, "--wave", "c9e5", "--reason", "Seats", cwd=tmp_path
        )
        writes = sim.counters.writes

    assert ran.code == 3, str(ran)
    assert ran.json()["verdict"] == "rejected"
    assert "LICSHIFT_REPROCESS_ENABLED" in ran.json()["message"]
    assert text.code == 3
    assert "User.ReadWrite.All" in text.err
    assert usage.code == 2
    assert "add --wave" in usage.err
    assert bad_reason.code == 2
    assert "CountViolation" in bad_reason.err
    assert writes == 0


async def test_a_forged_reprocess_task_is_refused_without_a_graph_call(open_stack: OpenStack) -> None:
    """Anyone with queue access can put a task on the removals queue: a reprocess task that names no
    request intake accepted is one rejected-request event, and Graph sees nothing."""
    async with (
        simulator(bundle_tenant()) as sim,
        open_stack(sim, overrides={"LICSHIFT_REPROCESS_ENABLED": "true"}) as stack,
    ):
        victim = members(sim)[0]
        forged = Task(TaskKind.REPROCESS, "", victim, "", request_id=str(uuid.uuid4()))
        await stack.rt.queue.send(stack.settings.removals_queue, encode_task(forged))
        stack.host.nudge(stack.settings.removals_queue)

        async def recorded() -> bool:
            return bool(await stack.events([telemetry.REQUEST_REJECTED]))

        assert await stack.run_until(recorded, 20), "the forged task was recorded"
        await stack.idle(1.5)
        rejected = await stack.events([telemetry.REQUEST_REJECTED])
        writes = sim.counters.endpoint(REPROCESS).requests

    assert len(rejected) == 1
    assert "never accepted" in rejected[0].message
    assert writes == 0
