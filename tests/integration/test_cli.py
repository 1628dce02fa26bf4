"""The admin CLI against the running pipeline: what an admin types, what they see, what lands.

The CLI runs in a worker thread (it has its own event loop, as in a terminal) while the local host
runs the functions in the test's loop; both use the same storage and queues.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from licshift.cli.main import run
from licshift.rules.waves import WaveStatus
from licshift_local.stack import LocalStack

from .conftest import E3, OpenStack, completed, simulator, small_tenant, wait_processing_complete


def use_stack_settings(monkeypatch: pytest.MonkeyPatch, stack: LocalStack) -> None:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(run, list(argv))


def test_bad_input_is_refused_before_anything_is_queued(capsys: pytest.CaptureFixture[str]) -> None:
    # No storage is configured at all: validation must come first and say what to fix.
    assert run(["wave", "start", "--group", "11111111-1111-1111-1111-111111111111", "--sku", "E3 or 1"]) == 2
    assert "skuPartNumber" in capsys.readouterr().err
    assert run(["wave", "pause", "not-a-wave"]) == 2
    assert "is not a wave id" in capsys.readouterr().err
    group = "11111111-1111-1111-1111-111111111111"
    assert run(["wave", "start", "--group", group, "--sku", E3, "--percent", "250"]) == 2
    assert "percent" in capsys.readouterr().err


def test_without_storage_settings_the_cli_says_which_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("LicshiftStorage", "LicshiftStorage__queueServiceUri", "LicshiftStorage__tableServiceUri"):
        monkeypatch.delenv(name, raising=False)
    assert run(["status"]) == 1
    assert "LicshiftStorage" in capsys.readouterr().err


async def test_plan_then_wave_status_and_report(
    open_stack: OpenStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with simulator(small_tenant(12)) as sim, open_stack(sim) as stack:
        use_stack_settings(monkeypatch, stack)
        group = sim.scenario.id("all")
        await wait_processing_complete(sim, group)

        assert await cli("plan", "--group", group, "--sku", E3, "--wait", "60", "--requested-by", "ops@contoso") == 0
        shown = capsys.readouterr().out
        assert "planned: 12 to remove, 0 blocked" in shown
        assert shown.count("remove") >= 12, "one plan row per user"
        assert sim.counters.writes == 0

        wave_id = "22222222-2222-2222-2222-222222222222"
        code = await cli("wave", "start", "--group", group, "--sku", E3, "--first", "3", "--wave-id", wave_id)
        assert code == 0
        wave = await completed(stack, wave_id)
        assert wave.status is WaveStatus.COMPLETED
        assert wave.counters.removed == 3
        capsys.readouterr()

        assert await cli("status") == 0
        listing = capsys.readouterr().out
        assert wave_id[:8] in listing
        assert "completed" in listing

        assert await cli("status", wave_id[:8]) == 0
        assert "removed 3" in capsys.readouterr().out

        report = tmp_path / "wave.csv"
        assert await cli("report", wave_id, "--format", "csv", "--out", str(report)) == 0
        assert f"wrote {report}" in capsys.readouterr().err
        rows = list(csv.DictReader(io.StringIO(report.read_text())))
        assert sorted(r["status"] for r in rows) == ["removed"] * 3
        assert all(r["user_principal_name"] for r in rows), "the report names every user"

        assert await cli("report", wave_id, "--format", "json") == 0
        data = json.loads(capsys.readouterr().out)
        assert data["wave"]["counters"]["removed"] == 3

        # The kill switch is written by the CLI itself and read back.
        assert await cli("kill-switch", "on", "--yes") == 0
        assert await _kill_switch_on(stack)()
        assert await cli("status") == 0
        assert "kill switch: ON" in capsys.readouterr().out


def _kill_switch_on(stack: LocalStack):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return (await stack.rt.ledger.get_control()).value.kill_switch

    return check
