"""The HTML report in real headless Chromium: tiles count users, the reason chart says what to do,
search, filters, sort and paging work through the DOM, and hostile text stays text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from licshift.rules.decide import Policy
from licshift.rules.licenses import DirectAssignment
from licshift.rules.outcomes import Event, Outcome, OutcomeStatus
from licshift.rules.waves import Selection, Wave, WaveStatus
from licshift.services.report import ReportFormat, render
from licshift.services.wavenames import Names

from .chromium import CHROMIUM, Chromium

S = OutcomeStatus
E3, EMS = "6fd2c87f-b296-42f0-b197-1e91e994b900", "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
EXO, TEAMS, SWAY = (f"{n}{n}{n}{n}{n}{n}{n}{n}-0000-0000-0000-000000000000" for n in "123")
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOSTILE = '<img src=x onerror="document.title=1"></script><script>document.title=2</script>'
NAMES = Names(
    group="All users",
    skus={E3: "ENTERPRISEPACK", EMS: "EMS"},
    sku_plans={E3: frozenset({EXO, TEAMS, SWAY}), EMS: frozenset()},
    plans={EXO: "EXCHANGE_S_ENTERPRISE", TEAMS: "TEAMS1", SWAY: "SWAY"},
)
WAVE = Wave(
    wave_id="3f2a9c1e-0000-4000-8000-000000000001",
    group_id="11111111-1111-1111-1111-111111111111",
    sku_ids=(E3, EMS),
    selection=Selection(),
    policy=Policy.NO_LOSS,
    dry_run=False,
    force=False,
    requested_by="admin@contoso.com",
    status=WaveStatus.COMPLETED,
    created_at=NOW,
    updated_at=NOW + timedelta(minutes=30),
)


def row(n: int, upn: str, status: OutcomeStatus, sku: str = E3, **kw: object) -> Outcome:
    base: dict[str, object] = {
        "wave_id": WAVE.wave_id,
        "user_id": f"{n:08d}-2222-2222-2222-222222222222",
        "sku_id": sku,
        "status": status,
        "decision": "remove" if status in (S.REMOVED, S.FAILED, S.RESTORED) else "block",
        "user_principal_name": upn,
        "display_name": upn.split("@")[0].title(),
        "updated_at": NOW + timedelta(minutes=n % 20),
    }
    base.update(kw)
    return Outcome(**base)  # type: ignore[arg-type]


def outcomes() -> list[Outcome]:
    kept = DirectAssignment(E3, frozenset({SWAY}))
    exo_only = DirectAssignment(E3, frozenset({SWAY, TEAMS}))
    rows = [
        row(1, "failed@contoso.com", S.FAILED, graph_error="403 Authorization_RequestDenied"),
        row(2, "lost@contoso.com", S.BLOCKED, reason="plans-would-be-lost", detail="SWAY, TEAMS1"),
        row(3, "seats@contoso.com", S.BLOCKED, reason="inherited-error", detail="CountViolation"),
        row(4, "nodirect@contoso.com", S.SKIPPED, decision="skip", reason="no-direct-assignment"),
        row(5, "two@contoso.com", S.SKIPPED, decision="skip", reason="no-direct-assignment"),
        row(5, "two@contoso.com", S.SKIPPED, sku=EMS, decision="skip", reason="no-direct-assignment"),
        row(6, "restored@contoso.com", S.RESTORED, snapshot=kept, after_plans=frozenset({EXO})),
        row(7, "zoe@contoso.com", S.REMOVED, display_name="Zoë Ångström", detail=HOSTILE),
        row(8, "gains@contoso.com", S.REMOVED, snapshot=exo_only, after_plans=frozenset({EXO, TEAMS, SWAY})),
    ]
    rows += [row(100 + i, f"bulk{i:04d}@contoso.com", S.REMOVED) for i in range(250)]
    return rows


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Chromium]:
    assert Chromium.available(), f"{CHROMIUM} is missing: run `make setup` (it installs Debian's chromium)"
    events = [
        Event("wave-accepted", "wave accepted", wave_id=WAVE.wave_id, at=NOW),
        Event("wave-status", "scanning -> removing", wave_id=WAVE.wave_id, at=NOW + timedelta(minutes=1)),
    ]
    html = render(WAVE, outcomes(), ReportFormat.HTML, events=events, names=NAMES)
    path = tmp_path / "report.html"
    path.write_text(html, encoding="utf-8")
    async with Chromium.start() as browser:
        await browser.open(path.as_uri())
        yield browser


async def tile(page: Chromium, key: str) -> tuple[str, str]:
    found = await page.eval(
        f"(() => {{ const t = document.querySelector('[data-tile={key}]'); if (!t) return null;"
        " const lic = t.querySelector('.lic');"
        " return [t.querySelector('.n').textContent, lic ? lic.textContent : ''] })()"
    )
    assert found is not None, f"no {key} tile"
    return found[0], found[1]


async def table_upns(page: Chromium) -> list[str]:
    return list(
        await page.eval("[...document.querySelectorAll('#rows tbody tr td:first-child b')].map(b => b.textContent)")
    )


async def search(page: Chromium, text: str) -> None:
    await page.eval(
        f"(() => {{ document.getElementById('count').textContent = '';"
        f" const s = document.getElementById('search'); s.value = {text!r}; s.dispatchEvent(new Event('input')); }})()"
    )
    await page.wait_for("document.getElementById('count').textContent !== ''")


async def test_tiles_count_users_not_licenses(page: Chromium) -> None:
    assert await tile(page, "removed") == ("252", "")
    assert await tile(page, "blocked") == ("2", "")
    assert await tile(page, "failed") == ("1", "")
    assert await tile(page, "restored") == ("1", "")
    assert await tile(page, "skipped") == ("2", "3 licenses"), "the user with two SKUs counts once"
    assert await tile(page, "to-remove") == ("254", "")


async def test_reason_chart_names_each_reason_with_its_fix_and_filters_the_table(page: Chromium) -> None:
    reasons = await page.eval(
        "[...document.querySelectorAll('#reasons .reason')].map(r =>"
        " [r.dataset.status, r.dataset.reason, r.querySelector('.n').textContent, r.querySelector('.fix').textContent])"
    )
    by_reason = {r[1]: r for r in reasons}
    assert reasons[0][0] == "failed", "problems first"
    assert by_reason["inherited-error: CountViolation"][2] == "1"
    assert "seats" in by_reason["inherited-error: CountViolation"][3]
    assert "Enable the named service plans" in by_reason["plans-would-be-lost"][3]
    assert by_reason["no-direct-assignment"][2] == "2"
    assert all(r[3] for r in reasons), "every reason says what to do"
    await page.eval("document.querySelector('#reasons .reason[data-reason=\"plans-would-be-lost\"] .rname').click()")
    assert await table_upns(page) == ["lost@contoso.com"]
    plans = await page.eval("document.querySelector('#rows tbody details summary').textContent")
    assert plans == "+0 / -2"


async def test_problems_first_then_sort_and_page(page: Chromium) -> None:
    upns = await table_upns(page)
    assert upns[:4] == ["failed@contoso.com", "restored@contoso.com", "lost@contoso.com", "seats@contoso.com"]
    assert len(upns) == 100, "one page at a time"
    assert await page.eval("document.getElementById('count').textContent") == "rows 1-100 of 259"
    await page.eval("document.querySelector('th[data-sort=user]').click()")
    upns = await table_upns(page)
    assert upns == sorted(upns)
    assert upns[0] == "bulk0000@contoso.com"
    await page.eval("document.querySelector('th[data-sort=user]').click()")
    assert (await table_upns(page))[0] == "zoe@contoso.com"
    assert await page.eval("document.querySelector('th[data-sort=user]').getAttribute('aria-sort')") == "descending"
    await page.eval("document.querySelector('.pager [data-page=last]').click()")
    assert await page.eval("document.getElementById('count').textContent") == "rows 201-259 of 259"


async def test_search_finds_names_and_shows_hostile_text_as_text(page: Chromium) -> None:
    await search(page, "zoë ång")
    assert await table_upns(page) == ["zoe@contoso.com"]
    cell = await page.eval("document.querySelector('#rows tbody tr td:nth-child(4) small').textContent")
    assert cell == HOSTILE
    assert await page.eval("document.querySelectorAll('#rows img').length") == 0
    assert (await page.eval("document.title")).startswith("licshift wave")
    await search(page, "no such user anywhere")
    assert await table_upns(page) == []
    assert (await page.eval("document.getElementById('count').textContent")).startswith("no row matches")


async def test_plan_differences_by_name_expand(page: Chromium) -> None:
    await search(page, "gains@")
    summary = await page.eval("document.querySelector('#rows tbody details summary').textContent")
    assert summary == "+2 / -0"
    await page.eval("document.querySelector('#rows tbody details').open = true")
    items = await page.eval("[...document.querySelectorAll('#rows tbody details li')].map(li => li.textContent)")
    assert items == ["+ SWAY", "+ TEAMS1"], "plans by name, not id"
    await search(page, "restored@")
    assert await page.eval("document.querySelector('#rows tbody details summary').textContent") == "+0 / -1"
