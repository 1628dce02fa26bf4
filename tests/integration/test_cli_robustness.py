"""No input ends in a traceback: thirty-odd malformed invocations end with exit 1 or 2 and one line
saying what to do; a closed pipe ends quietly; `licshift host` runs on the README's defaults and
local.settings.json; `licshift dev up` brings the whole local stack up in one command.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from licshift.adapters.ledger import Ledger

from .conftest import E3, simulator, small_tenant, wait_processing_complete
from .test_cli_process import CLI, base_env, licshift

GROUP = "0b8e4f4e-4a3f-4a59-9c55-1d2f1f3a0a77"
PLAN = ["plan", "--group", GROUP, "--sku", E3]
CLOSED = "http://127.0.0.1:9/v1.0"  # the discard port: nothing listens on loopback

MALFORMED: list[tuple[list[str], dict[str, str]]] = [
    ([], {}),
    (["nonsense"], {}),
    (["status", "a/b"], {}),
    (["report", "x#y"], {}),
    (["report", "abcdef12", "--out", "/nonexistent/x"], {}),
    (["report", "abcdef12", "--out", "/"], {}),
    (["report", "abcdef12", "--format", "pdf"], {}),
    (["drift", "--hours", "nan"], {}),
    (["drift", "--fail-on-drift=yes"], {}),
    (["skus", "extra"], {}),
    (["status", "abc", "--watch", "--timeout", "inf"], {}),
    (["plan"], {}),
    (["plan", "--group", GROUP], {}),
    (["plan", "--group", GROUP, "--sku", "E3 or 1 eq 1"], {}),
    ([*PLAN, "--first", "0"], {}),
    ([*PLAN, "--percent", "250"], {}),
    ([*PLAN, "--percent", "nan"], {}),
    ([*PLAN, "--first", "3", "--percent", "5"], {}),
    ([*PLAN, "--users", "not a upn"], {}),
    ([*PLAN, "--users", "@/nonexistent/users.txt"], {}),
    ([*PLAN, "--users", ","], {}),
    ([*PLAN, "--wave-id", "123"], {}),
    ([*PLAN, "--wait", "-5"], {}),
    ([*PLAN, "--policy", "yolo"], {}),
    (["plan", "--group", "x" * 300, "--sku", E3], {}),
    (["wave", "pause", "zz"], {}),
    (["wave", "frobnicate", "abc"], {}),
    (["wave", "resume"], {}),
    (["kill-switch", "maybe"], {}),
    (["status", "é/ü"], {}),
    (["status", "--timeout", "1e400"], {}),
    (["sim", "serve", "--port", "70000"], {}),
    (["groups"], {}),
    (["status"], {"LicshiftStorage": "this is not a connection string"}),
    (["status"], {"LICSHIFT_TICK_SECONDS": "soon"}),
    (["status"], {"LicshiftStorage": "", "LicshiftStorage__queueServiceUri": "https://q.example"}),
    (["status"], {"LICSHIFT_TABLE_PREFIX": "neverused"}),
]


@pytest.fixture
async def cli_settings(storage_connection_string: str) -> dict[str, str]:
    """A storage account the function app has run against (its tables exist), Graph unreachable."""
    ns = f"rb{uuid.uuid4().hex[:8]}"
    async with Ledger(storage_connection_string, prefix=f"t{ns}") as ledger:
        await ledger.ensure_tables()
    return {
        **base_env(),
        "LicshiftStorage": storage_connection_string,
        "LICSHIFT_GRAPH_ENDPOINT": CLOSED,
        "LICSHIFT_TABLE_PREFIX": f"t{ns}",
        "LICSHIFT_WAVES_QUEUE": f"{ns}-waves",
        "LICSHIFT_REMOVALS_QUEUE": f"{ns}-removals",
    }


async def test_malformed_invocations_end_with_1_or_2_and_one_line(cli_settings: dict[str, str], tmp_path: Path) -> None:
    assert len(MALFORMED) >= 30
    limit = asyncio.Semaphore(4)

    async def one(argv: list[str], extra: dict[str, str]):  # type: ignore[no-untyped-def]
        async with limit:
            return await licshift({**cli_settings, **extra}, *argv, cwd=tmp_path, limit=120)

    for ran in await asyncio.gather(*(one(argv, extra) for argv, extra in MALFORMED)):
        assert ran.code in (1, 2), str(ran)
        lines = ran.err.strip().splitlines()
        assert len(lines) == 1, str(ran)
        assert lines[0].startswith("licshift: "), str(ran)
        assert ran.out == "", str(ran)


async def test_debug_shows_the_traceback(cli_settings: dict[str, str], tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "status", "--debug", env={**cli_settings, "LicshiftStorage": "garbage"}, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "Traceback" in err.decode()
    assert err.decode().strip().splitlines()[-1].startswith("licshift: ")


async def test_a_broken_local_settings_file_is_named(cli_settings: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text("{ nope")
    ran = await licshift(cli_settings, "status", cwd=tmp_path)
    assert ran.code == 1, str(ran)
    assert "local.settings.json is not valid JSON" in ran.err, str(ran)


def test_a_closed_pipe_ends_quietly(cli_settings: dict[str, str], tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written (`licshift ... | head` after head exits)
    try:
        for argv in (["--help"], ["drift"]):
            proc = subprocess.run(
                [str(CLI), *argv], env=cli_settings, cwd=tmp_path, stdout=write, stderr=subprocess.PIPE, timeout=120
            )
            assert proc.returncode == 0, proc.stderr.decode()
            assert proc.stderr.decode() == ""
    finally:
        os.close(write)


async def test_host_runs_on_the_readme_defaults_and_local_settings(
    storage_connection_string: str, tmp_path: Path
) -> None:
    async with simulator(small_tenant(6)) as sim:
        group = sim.scenario.id("all")
        await wait_processing_complete(sim, group)
        ns = f"ho{uuid.uuid4().hex[:8]}"
        # What `func start` would read: only the storage, the Graph endpoint and our own names here;
        # the queue names' and schedules' defaults come from the README.
        values = {
            "LicshiftStorage": storage_connection_string,
            "LICSHIFT_GRAPH_ENDPOINT": sim.base_url,
            "LICSHIFT_TABLE_PREFIX": f"t{ns}",
            "LICSHIFT_WAVES_QUEUE": f"{ns}-waves",
        }
        (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        env = base_env()
        host = await asyncio.create_subprocess_exec(
            str(CLI), "host", "--timer-interval", "1", env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert host.stderr is not None
        try:
            # The host creates the tables and queues, then says it is up.
            started = ""
            while "licshift host:" not in started:
                line = (await asyncio.wait_for(host.stderr.readline(), 120)).decode()
                assert line, f"the host ended: {started}"
                started += line
            refused = await licshift(env, "plan", "--group", GROUP, "--sku", E3, "--timeout", "90", cwd=tmp_path)
            assert refused.code == 3, str(refused)
            assert "does not exist" in refused.err, str(refused)
            plan = await licshift(env, "plan", "--group", "All users", "--sku", E3, "--json", cwd=tmp_path)
            assert plan.code == 0, str(plan)
            assert len(plan.json()["outcomes"]) == 6
        finally:
            host.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(host.communicate(), 60)
        assert host.returncode == 0, err.decode()
        assert "Traceback" not in err.decode()


async def test_dev_up_brings_up_the_local_stack_in_one_command(tmp_path: Path) -> None:
    env_file = tmp_path / "dev.env"
    dev = await asyncio.create_subprocess_exec(
        str(CLI), "dev", "up", "--users", "20", "--time-scale", "0.05", "--tick-seconds", "1",
        "--env-file", str(env_file), env=base_env(), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert dev.stderr is not None
    assert dev.stdout is not None
    seen: list[str] = []
    try:
        while not any("ready" in line for line in seen):
            line = (await asyncio.wait_for(dev.stderr.readline(), 120)).decode()
            assert line, f"dev up ended early: {''.join(seen)}"
            seen.append(line)
        shown = "".join(seen)
        assert "All users" in shown
        assert "ENTERPRISEPACK" in shown
        assert "6fd2c87f-b296-42f0-b197-1e91e994b900" in shown
        exports = env_file.read_text().splitlines()
        assert any(e.startswith("export LicshiftStorage=") for e in exports)
        assert any(e.startswith("export LICSHIFT_GRAPH_ENDPOINT=") for e in exports)
        env = base_env()
        for line in exports:
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        groups = await licshift(env, "groups", "--json", cwd=tmp_path)
        assert groups.code == 0, str(groups)
        (all_users,) = groups.json()["groups"]
        assert all_users["display_name"] == "All users", "dev up did step 3"
        assert all_users["skus"] == [E3], "dev up did step 3"
        plan = await licshift(env, "plan", "--group", "All users", "--sku", E3, "--json", cwd=tmp_path)
        assert plan.code == 0, str(plan)
        assert len(plan.json()["outcomes"]) == 20
    finally:
        dev.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(dev.communicate(), 60)
    assert dev.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    assert out.decode().splitlines() == exports, "stdout holds only the export lines"
