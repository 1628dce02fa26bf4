"""The HTML report of a real wave on the adversarial tenant, written by the CLI and opened in headless
Chromium: tiles match the ledger's outcomes counted by user, every reason has its fix, and names
(group, SKU part numbers, display names) replace GUIDs.

  LICSHIFT_REPORT_SCREENSHOT=docs/report-adversarial.png .venv/bin/pytest tests/integration/test_report_page.py

refreshes the screenshot in docs/.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from browser.chromium import Chromium
from licshift.cli.main import run
from licshift.rules.outcomes import OutcomeStatus
from licshift.services.reportpage import TILES
from licshift.services.telemetry import WAVE_STATUS

from .conftest import OpenStack, completed, simulator, start
from .test_cli import use_stack_settings
from .test_migrations import assign_wave_licenses, selection_of


async def test_report_of_the_adversarial_wave_in_a_browser(
    open_stack: OpenStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with simulator("adversarial") as sim, open_stack(sim) as stack:
        group, skus = await assign_wave_licenses(sim)
        command = start(group, skus=tuple(skus), selection=selection_of(sim.scenario), force=True)
        wave = await completed(stack, await stack.enqueue(command), timeout=60)
        rows = await stack.outcomes(wave.wave_id)
        scanned = [e for e in await stack.events([WAVE_STATUS]) if e.wave_id == wave.wave_id and "names" in e.data]
        use_stack_settings(monkeypatch, stack)
        out = tmp_path / "report.html"
        assert await asyncio.to_thread(run, ["report", wave.wave_id, "--format", "html", "--out", str(out)]) == 0
    group_name = sim.tenant.group(group).display_name

    async with Chromium.start() as page:
        await page.open(out.as_uri())
        tiles = await page.eval(
            "Object.fromEntries([...document.querySelectorAll('#tiles .tile')]"
            ".map(t => [t.dataset.tile, t.querySelector('.n').textContent]))"
        )
        reasons = await page.eval(
            "[...document.querySelectorAll('#reasons .reason')]"
            ".map(r => [r.dataset.status, r.dataset.reason, r.querySelector('.fix').textContent])"
        )
        title = await page.eval("document.title")
        skus_shown = await page.eval(
            "[...document.querySelectorAll('#rows tbody td:nth-child(2)')].map(t => t.textContent)"
        )
        names_shown = await page.eval(
            "[...document.querySelectorAll('#rows tbody td:first-child small')].map(t => t.textContent)"
        )
        if target := os.environ.get("LICSHIFT_REPORT_SCREENSHOT"):
            png = await page.screenshot()
            await asyncio.to_thread(Path(target).write_bytes, png)
        assert page.errors() == []

    for tile in TILES:
        users = len({r.user_id for r in rows if r.status in tile.statuses})
        if tile.always or users:
            assert tiles[tile.key] == f"{users:,}", tile.key
    blocked = {(r.status.value, r.reason) for r in rows if r.status is OutcomeStatus.BLOCKED}
    charted = {(s, reason.split(": ")[0]) for s, reason, _ in reasons}
    assert blocked, "the adversarial tenant blocks users"
    assert blocked <= charted, "every block reason is in the chart"
    assert all(fix for _, _, fix in reasons), "every reason says what to do"
    assert group_name in title
    assert skus_shown
    assert not any(len(s) == 36 and s.count("-") == 4 for s in skus_shown), "SKUs by part number"
    assert any(names_shown), "display names recorded at the scan"
    # The workbook's progress grid reads the scan's user counts: the same users as the report's tile.
    (scan,) = scanned
    assert f"{scan.data['users']['to_remove']:,}" == tiles["to-remove"]
    assert scan.data["names"]["group"] == group_name
