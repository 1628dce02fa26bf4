"""Reports render every outcome, parse back, and neutralise user-controlled text."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from licshift.decide import Policy
from licshift.licenses import DirectAssignment
from licshift.outcomes import Outcome, OutcomeStatus
from licshift.report import COLUMNS, ReportFormat, render
from licshift.waves import Selection, Wave, WaveStatus

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


class _Cells(HTMLParser):
    """Collects the text of every <td> of the users table, as a browser would read it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@given(st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=60))
def test_html_shows_user_text_as_text(text: str) -> None:
    page = render(WAVE, [outcome("u@contoso.com", detail=text)], ReportFormat.HTML)
    parser = _Cells()
    parser.feed(page.split("<tbody>", 1)[1])
    rows = [r for r in parser.rows if r]
    assert len(rows) == 1
    assert len(rows[0]) == len(COLUMNS)
    assert rows[0][COLUMNS.index("detail")] == text
