"""Reports render every outcome, parse back, and neutralise user-controlled text."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from licshift.rules.decide import Policy
from licshift.rules.licenses import DirectAssignment
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.rules.waves import Selection, Wave, WaveStatus
from licshift.services.report import COLUMNS, ReportFormat, render

SKU = "6fd2c87f-b296-42f0-b197-1e91e994b900"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WAVE = Wave(
    wave_id="w1",
    group_id="11111111-1111-1111-1111-111111111111",
    sku_ids=(SKU,),
    selection=Selection(),
    policy=Policy.NO_LOSS,
    dry_run=False,
    force=False,
    requested_by="admin@contoso.com",
    status=WaveStatus.COMPLETED,
    created_at=NOW,
    updated_at=NOW,
)


def outcome(upn: str, status: OutcomeStatus = OutcomeStatus.REMOVED, detail: str = "") -> Outcome:
    return Outcome(
        wave_id="w1",
        user_id="22222222-2222-2222-2222-222222222222",
        sku_id=SKU,
        status=status,
        decision="remove",
        reason="",
        detail=detail,
        user_principal_name=upn,
        snapshot=DirectAssignment(SKU, frozenset({"33333333-3333-3333-3333-333333333333"})),
        updated_at=NOW,
    )


def test_csv_has_one_row_per_outcome_and_all_columns() -> None:
    text = render(WAVE, [outcome("a@contoso.com"), outcome("b@contoso.com", OutcomeStatus.BLOCKED)], ReportFormat.CSV)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["user_principal_name"] for r in rows] == ["a@contoso.com", "b@contoso.com"]
    assert tuple(rows[0]) == COLUMNS
    assert rows[1]["status"] == "blocked"
    assert rows[0]["snapshot_disabled_plans"] == "33333333-3333-3333-3333-333333333333"


def test_csv_neutralises_formulas() -> None:
    text = render(WAVE, [outcome('=HYPERLINK("http://x")@contoso.com')], ReportFormat.CSV)
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["user_principal_name"].startswith("'=")


def test_json_round_trips() -> None:
    data = json.loads(render(WAVE, [outcome("a@contoso.com")], ReportFormat.JSON))
    assert data["wave"]["status"] == "completed"
    assert data["wave"]["counters"]["removed"] == 0
    assert data["outcomes"][0]["user_principal_name"] == "a@contoso.com"


def embedded_rows(page: str) -> list[list[object]]:
    start = page.index('<script type="application/json" id="data">') + len('<script type="application/json" id="data">')
    end = page.index("</script>", start)
    return list(json.loads(page[start:end])["rows"])


@given(st.text(max_size=60))
def test_html_embeds_user_text_once_and_it_cannot_close_the_script(text: str) -> None:
    page = render(WAVE, [outcome("u@contoso.com", detail=text)], ReportFormat.HTML)
    (row,) = embedded_rows(page)
    assert row[6] == text
    data = page.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data, "no user text can open or close an element inside the data"


@given(st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=60))
def test_html_summary_escapes_wave_text(text: str) -> None:
    wave = replace(WAVE, status_reason=text, requested_by=text)
    page = render(wave, [outcome("u@contoso.com")], ReportFormat.HTML)
    facts = page.split('<dl id="facts">', 1)[1].split("</dl>", 1)[0]
    parser = _Text()
    parser.feed(facts)
    assert text in "".join(parser.parts)
    assert parser.tags == 18, "wave text added no element (9 facts: dt + dd each)"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags += 1

    def handle_data(self, data: str) -> None:
        self.parts.append(data)
