"""Embedding the simulator: in the caller's loop, in a thread for sync code, as `python -m graphsim
serve`; the admin paths; $batch; clean start and stop on free ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable

import httpx
import pytest
from msgraph import GraphServiceClient

from graphsim import Simulator, SimulatorThread, load_scenario

SimStarter = Callable[..., Awaitable[tuple[Simulator, GraphServiceClient]]]
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_start_on_a_free_port_and_stop_cleanly() -> None:
    sim = await Simulator.start(load_scenario("seed-example", users=3), port=0)
    assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1.0"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{sim.base_url}/users")).status_code == 200
    await sim.stop()
    assert port_is_free(sim.port)


def test_simulator_thread_for_sync_code() -> None:
    scenario = load_scenario("seed-example", users=4)
    with SimulatorThread(scenario, frozen_clock=True) as sim:
        group = scenario.wave.group
        user = scenario.users[0].id
        sim.call(lambda tenant: tenant.set_group_license(group, "ENTERPRISEPACK"))
        state = httpx.get(f"{sim.base_url}/groups/{group}?$select=licenseProcessingState").json()
        assert state["licenseProcessingState"]["state"] == "QueuedForProcessing"
        sim.call_sim(lambda s: s.advance(30))
        assert sim.call(lambda tenant: tenant.group_processing_state(group)) == "ProcessingComplete"
        states = httpx.get(f"{sim.base_url}/users/{user}?$select=licenseAssignmentStates").json()
        assert [(s["skuId"], s["assignedByGroup"]) for s in states["licenseAssignmentStates"]] == [
            (E3, None),
            (E3, group),
        ]
        assert sim.call_sim(lambda s: s.counters.reads) == 2
        port = sim.sim.port
    assert port_is_free(port)


def test_simulator_thread_reports_a_bad_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with (
            pytest.raises(OSError, match=r"(?i)address already in use|bind"),
            SimulatorThread(load_scenario("seed-example", users=2), port=busy),
        ):
            pass


async def test_admin_paths(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, _ = await sim_start("seed-example", users=3, frozen_clock=True)
    admin = sim.admin_url
    group, user = sim.scenario.wave.group, sim.scenario.users[0].id
    described = (await sim_http.get(f"{admin}/scenario")).json()
    assert described["waves"][0]["group"] == group
    assert described["waves"][0]["expected"][user] == "remove"
    applied = await sim_http.post(
        f"{admin}/events", json={"action": "set_group_license", "group": group, "sku": "ENTERPRISEPACK"}
    )
    assert applied.json() == {"applied": 1}
    state = (await sim_http.get(f"{admin}/state")).json()
    assert state["groups"]["All users"]["processing"] == "QueuedForProcessing"
    moved = (await sim_http.post(f"{admin}/clock/advance", json={"seconds": 60})).json()
    assert moved["now"] == 60
    assert (await sim_http.get(f"{admin}/clock")).json()["frozen"] is True
    state = (await sim_http.get(f"{admin}/state")).json()
    assert state["groups"]["All users"]["processing"] == "ProcessingComplete"
    assert state["skus"]["ENTERPRISEPACK"]["consumed"] == 3
    await sim_http.get(f"{sim.base_url}/users")
    counters = (await sim_http.get(f"{admin}/counters")).json()
    assert counters["endpoints"]["GET /users"]["reads"] == 1
    assert counters["total"]["requests"] == 1, "admin calls are not counted"
    await sim_http.post(f"{admin}/counters/reset")
    assert (await sim_http.get(f"{admin}/counters")).json()["total"]["requests"] == 0
    bad = await sim_http.post(f"{admin}/events", json={"action": "remove_member", "group": group, "member": "nobody"})
    assert bad.status_code == 400
    assert (await sim_http.get(f"{admin}/nothing-here")).status_code == 404


async def test_batch(sim_start: SimStarter, sim_http: httpx.AsyncClient) -> None:
    sim, _ = await sim_start("seed-example", users=3)
    users = [u.id for u in sim.scenario.users]
    body = {
        "requests": [
            {"id": "1", "method": "GET", "url": f"/users/{users[0]}?$select=id,licenseAssignmentStates"},
            {"id": "2", "method": "GET", "url": "/users/00000000-0000-4000-8000-000000000000"},
            {
                "id": "3",
                "method": "POST",
                "url": f"/users/{users[1]}/assignLicense",
                "headers": {"Content-Type": "application/json"},
                "body": {"addLicenses": [], "removeLicenses": [E3]},
            },
        ]
    }
    answer = await sim_http.post(f"{sim.base_url}/$batch", json=body)
    assert answer.status_code == 200
    responses = {r["id"]: r for r in answer.json()["responses"]}
    assert responses["1"]["status"] == 200
    assert responses["1"]["body"]["licenseAssignmentStates"][0]["skuId"] == E3
    assert responses["2"]["status"] == 404
    assert responses["2"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert responses["3"]["status"] == 200
    assert sim.tenant.user(users[1]).direct == ()
    assert sim.counters.endpoint("POST /users/{id}/assignLicense").writes == 1

    sequential = {
        "requests": [
            {"id": "a", "method": "GET", "url": "/users/00000000-0000-4000-8000-000000000000"},
            {"id": "b", "method": "GET", "url": f"/users/{users[2]}", "dependsOn": ["a"]},
        ]
    }
    chained = {
        r["id"]: r["status"]
        for r in (await sim_http.post(f"{sim.base_url}/$batch", json=sequential)).json()["responses"]
    }
    assert chained == {"a": 404, "b": 424}
    too_many = {"requests": [{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)]}
    assert (await sim_http.post(f"{sim.base_url}/$batch", json=too_many)).status_code == 400
    duplicate = {"requests": [{"id": "x", "method": "GET", "url": "/users"}] * 2}
    assert (await sim_http.post(f"{sim.base_url}/$batch", json=duplicate)).status_code == 400


def _as_a_background_job() -> None:
    """What a shell does to a job started with `&`: SIGINT ignored, inherited across exec."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_python_m_graphsim_serve_runs_until_interrupted(stop_signal: signal.Signals) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "graphsim", "serve", "seed-example", "--users", "5", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_as_a_background_job,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1.0" in first
        assert httpx.get(f"http://127.0.0.1:{port}/v1.0/users?$select=id").json()["value"]
    finally:
        process.send_signal(stop_signal)
        process.wait(timeout=20)
    assert process.returncode == 0
    assert port_is_free(port)


def test_unknown_scenario_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "graphsim", "serve", "nonexistent"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "unknown scenario 'nonexistent'" in done.stderr
