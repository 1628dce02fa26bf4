"""The HTML report of a wave: one self-contained file an admin opens in any browser (pure).

The summary (tiles, reasons with their fix, removals over time, timeline) is server-rendered HTML, so
it paints before any script runs. The per-user table is drawn by a small script from data embedded
once as compact JSON (rows as arrays, names interned), one page of rows at a time: a 100,000-user
wave stays a file of a few MB that opens in about a second (bench/report_bench.py measures it).

Tiles count users, not (user, SKU) rows: a user with two SKUs counts once per tile, and a tile shows
the number of licenses beside it when the two differ.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from licshift.rules.decide import BlockReason
from licshift.rules.fixes import fix_for
from licshift.rules.outcomes import Event, Outcome, OutcomeStatus
from licshift.rules.waves import Wave
from licshift.services.wavenames import Names

S = OutcomeStatus
STATUS_ORDER: tuple[OutcomeStatus, ...] = (
    S.FAILED,
    S.RESTORED,
    S.BLOCKED,
    S.NOT_ATTEMPTED,
    S.REMOVING,
    S.ENQUEUED,
    S.PLANNED,
    S.REMOVED,
    S.ROLLED_BACK,
    S.SKIPPED,
)
"""Problems first: the default sort of the table and the order of the reasons."""

REMOVAL_PATH = frozenset({S.PLANNED, S.ENQUEUED, S.REMOVING, S.REMOVED, S.RESTORED, S.FAILED, S.NOT_ATTEMPTED})
REMOVAL_PATH_ROLLED = REMOVAL_PATH | {S.ROLLED_BACK}


@dataclass(frozen=True)
class Tile:
    key: str
    label: str
    hint: str
    statuses: frozenset[OutcomeStatus]
    always: bool = True


TILES: tuple[Tile, ...] = (
    Tile("to-remove", "To remove", "users the scan found safe to migrate", REMOVAL_PATH_ROLLED),
    Tile("removed", "Removed", "direct license removed, every plan kept", frozenset({S.REMOVED})),
    Tile("blocked", "Blocked", "the rule kept their direct license", frozenset({S.BLOCKED})),
    Tile("failed", "Failed", "Graph refused; direct license still in place", frozenset({S.FAILED})),
    Tile("restored", "Restored", "a plan was lost and put back at once", frozenset({S.RESTORED})),
    Tile("skipped", "Skipped", "nothing to do", frozenset({S.SKIPPED})),
    Tile("pending", "In progress", "planned or queued", frozenset({S.PLANNED, S.ENQUEUED, S.REMOVING}), False),
    Tile("not-attempted", "Not attempted", "the wave stopped first", frozenset({S.NOT_ATTEMPTED}), False),
    Tile("rolled-back", "Rolled back", "direct license put back", frozenset({S.ROLLED_BACK}), False),
)

_MARKER = re.compile(r"@@(TITLE|SUMMARY|TIMELINE|DATA)@@")

MIN_SLOTS = 24
"""Bars the removals chart has room for at least: a short wave shows narrow bars, not one block."""

TIMELINE_USER_EVENTS = 200
"""Per-user events shown in the timeline (warnings and alerts); the rest are counted."""


def reason_key(outcome: Outcome) -> str:
    """The reason chart's bucket: the rule's reason, Graph's error code for inherited errors."""
    if outcome.status is S.BLOCKED and outcome.reason == BlockReason.INHERITED_ERROR and outcome.detail:
        return f"{outcome.reason}: {outcome.detail}"
    if outcome.reason:
        return outcome.reason
    if outcome.status in (S.FAILED, S.RESTORED, S.NOT_ATTEMPTED, S.ROLLED_BACK):
        return outcome.status.value
    return ""


def plan_difference(outcome: Outcome, names: Names) -> tuple[list[str], list[str]]:
    """(+ plans the user gains, - plans the user loses) against their direct license, by name.

    From the recorded plan sets where there are some (after the removal; at the scan for a plan),
    else from the rule's own detail for the two plan reasons (it names the plans).
    """
    if outcome.reason == BlockReason.PLANS_WOULD_BE_LOST:
        return [], sorted(filter(None, outcome.detail.split(", ")))
    if outcome.reason == BlockReason.PLANS_DIFFER:
        return sorted(filter(None, outcome.detail.split(", "))), []
    catalog = names.sku_plans.get(outcome.sku_id)
    if outcome.snapshot is None or not catalog:
        return [], []
    direct = catalog - outcome.snapshot.disabled_plans
    other = outcome.after_plans or outcome.before_plans
    if not other:
        return [], []
    return sorted(names.plan(p) for p in other - direct), sorted(names.plan(p) for p in direct - other)


class _Interned:
    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, value: str) -> int:
        found = self._index.get(value)
        if found is None:
            found = self._index[value] = len(self.values)
            self.values.append(value)
        return found


def table_data(outcomes: Sequence[Outcome], names: Names) -> dict[str, Any]:
    """The rows as the page's script reads them: arrays, trailing empty fields dropped, names interned.

    Row: [upn, display name, user id, sku, status, reason, detail, +plans, -plans, updated (epoch s),
    graph error]; sku/status/reason/plans are indexes into the lists beside the rows.
    """
    skus, statuses, reasons, plans = _Interned(), _Interned(), _Interned(), _Interned()
    for status in STATUS_ORDER:
        statuses(status.value)
    rows: list[list[Any]] = []
    for o in outcomes:
        plus, minus = plan_difference(o, names)
        row: list[Any] = [
            o.user_principal_name,
            o.display_name,
            o.user_id,
            skus(names.sku(o.sku_id)),
            statuses(o.status.value),
            reasons(reason_key(o)),
            o.detail,
            [plans(p) for p in plus],
            [plans(p) for p in minus],
            int(o.updated_at.timestamp()) if o.updated_at else 0,
            o.graph_error,
        ]
        while row and row[-1] in ("", [], 0):
            row.pop()
        rows.append(row)
    return {
        "skus": skus.values,
        "statuses": statuses.values,
        "reasons": reasons.values,
        "plans": plans.values,
        "rows": rows,
    }


def embedded_json(data: Any) -> str:
    """JSON safe inside <script type="application/json">: no "<" can close the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- the server-rendered summary ------------------------------------------------------------------


def _users_by(outcomes: Iterable[Outcome], key: Any) -> dict[Any, tuple[set[str], int]]:
    found: dict[Any, tuple[set[str], int]] = {}
    for o in outcomes:
        k = key(o)
        if k is None:
            continue
        users, licenses = found.get(k, (set(), 0))
        users.add(o.user_id)
        found[k] = (users, licenses + 1)
    return found


def tiles_html(outcomes: Sequence[Outcome]) -> str:
    esc = html.escape
    parts = []
    for tile in TILES:
        hits = [o for o in outcomes if o.status in tile.statuses]
        users = len({o.user_id for o in hits})
        if not users and not tile.always:
            continue
        licenses = "" if len(hits) == users else f'<span class="lic">{len(hits):,} licenses</span>'
        parts.append(
            f'<div class="tile t-{tile.key}" data-tile="{tile.key}"><span class="n">{users:,}</span>'
            f'<span class="l">{esc(tile.label)}</span>{licenses}<span class="h">{esc(tile.hint)}</span></div>'
        )
    return '<section id="tiles" aria-label="Summary">' + "".join(parts) + "</section>"


def reasons_html(outcomes: Sequence[Outcome]) -> str:
    esc = html.escape
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    buckets = _users_by(outcomes, lambda o: (o.status, reason_key(o)) if reason_key(o) else None)
    if not buckets:
        none = '<p class="none">No user was blocked, skipped or failed.</p>'
        return f'<section id="reasons"><h2>Outcomes by reason (users)</h2>{none}</section>'
    top = max(len(u) for u, _ in buckets.values())
    rows = []
    for (status, reason), (users, licenses) in sorted(
        buckets.items(), key=lambda kv: (order[kv[0][0]], -len(kv[1][0]))
    ):
        detail = reason.split(": ", 1)[1] if ": " in reason else ""
        fix = fix_for(status.value, reason.split(": ", 1)[0], detail)
        width = max(1.0, 100.0 * len(users) / top)
        lic = "" if licenses == len(users) else f" ({licenses:,} licenses)"
        rows.append(
            f'<div class="reason s-{status.value}" data-reason="{esc(reason)}" data-status="{status.value}">'
            f'<button type="button" class="rname" title="Show these users in the table">'
            f"{esc(status.value if reason == status.value else f'{status.value}: {reason}')}</button>"
            f'<span class="bar"><span style="width:{width:.1f}%"></span></span>'
            f'<span class="n">{len(users):,}</span><span class="lic">{esc(lic)}</span>'
            f'<span class="fix">{esc(fix)}</span></div>'
        )
    return '<section id="reasons"><h2>Outcomes by reason (users)</h2>' + "".join(rows) + "</section>"


def _bin_seconds(span: timedelta) -> int:
    for seconds in (10, 60, 300, 900, 3600, 4 * 3600, 86400):
        if span.total_seconds() / seconds <= 60:
            return seconds
    return 7 * 86400


def removals_svg(outcomes: Sequence[Outcome]) -> str:
    times = sorted(o.updated_at for o in outcomes if o.status is S.REMOVED and o.updated_at)
    if not times:
        return '<section id="timechart"><h2>Removals over time</h2><p class="none">No removal yet.</p></section>'
    size = _bin_seconds(times[-1] - times[0])
    start = int(times[0].timestamp()) // size * size
    counts: dict[int, int] = {}
    for t in times:
        b = (int(t.timestamp()) - start) // size
        counts[b] = counts.get(b, 0) + 1
    n_bins = max(max(counts) + 1, MIN_SLOTS)
    top = max(counts.values())
    width, height = 720, 120
    bar = width / n_bins
    bars = []
    for b, c in sorted(counts.items()):
        h = height * c / top
        at = datetime.fromtimestamp(start + b * size, UTC)
        bars.append(
            f'<rect x="{b * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 1, 1):.1f}" height="{h:.1f}">'
            f"<title>{at:%Y-%m-%d %H:%M}: {c:,} removed</title></rect>"
        )
    label = f"{times[0]:%Y-%m-%d %H:%M} to {times[-1]:%H:%M} UTC, {_bin_label(size)} bars, peak {top:,}"
    return (
        f'<section id="timechart"><h2>Removals over time</h2><svg viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="none" role="img" aria-label="removals over time">{"".join(bars)}</svg>'
        f'<p class="axis">{html.escape(label)}</p></section>'
    )


def _bin_label(seconds: int) -> str:
    return (
        f"{seconds}-second"
        if seconds < 60
        else f"{seconds // 60}-minute"
        if seconds < 3600
        else f"{seconds // 3600}-hour"
    )


def timeline_html(events: Sequence[Event], wave_id: str) -> str:
    esc = html.escape
    mine = sorted((e for e in events if e.wave_id == wave_id), key=lambda e: e.at or datetime.min)
    wave_level = [e for e in mine if not e.user_id]
    per_user = [e for e in mine if e.user_id and e.severity.value != "info"]
    shown = sorted(wave_level + per_user[:TIMELINE_USER_EVENTS], key=lambda e: e.at or datetime.min)
    if not shown:
        return '<section id="timeline"><h2>Timeline</h2><p class="none">No event recorded for this wave.</p></section>'
    items = "".join(
        f'<li class="sev-{e.severity.value}"><time>{e.at:%Y-%m-%d %H:%M:%S}</time> '
        f'<span class="kind">{esc(e.kind)}</span> {esc(e.message)}</li>'
        for e in shown
    )
    more = len(per_user) - TIMELINE_USER_EVENTS
    tail = (
        f'<p class="none">and {more:,} more per-user warnings (licshift status {esc(wave_id)}).</p>' if more > 0 else ""
    )
    return f'<section id="timeline"><h2>Timeline</h2><ol>{items}</ol>{tail}</section>'


def facts_html(wave: Wave, names: Names) -> str:
    esc = html.escape
    group = f"{names.group} ({wave.group_id})" if names.group else wave.group_id
    skus = ", ".join(names.sku(s) for s in wave.sku_ids)
    facts = [
        ("Status", f"{wave.status.value}" + (f": {wave.status_reason}" if wave.status_reason else "")),
        ("Group", group),
        ("SKUs", skus),
        ("Kind", "dry run (plan only, nothing written to Graph)" if wave.dry_run else "migration"),
        ("Selection", wave.selection.kind.value),
        ("Policy", wave.policy.value),
        ("Requested by", wave.requested_by),
        ("Created", f"{wave.created_at:%Y-%m-%d %H:%M} UTC"),
        ("Last update", f"{wave.updated_at:%Y-%m-%d %H:%M} UTC"),
    ]
    cells = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f'<dl id="facts">{cells}</dl>'


def page(wave: Wave, outcomes: Sequence[Outcome], events: Sequence[Event], names: Names) -> str:
    template = resources.files("licshift.services").joinpath("report_page.html").read_text(encoding="utf-8")
    title = f"licshift wave {wave.wave_id}" + (f" — {names.group}" if names.group else "")
    summary = "".join((facts_html(wave, names), tiles_html(outcomes), reasons_html(outcomes), removals_svg(outcomes)))
    parts = {
        "TITLE": html.escape(title),
        "SUMMARY": summary,
        "TIMELINE": timeline_html(events, wave.wave_id),
        "DATA": embedded_json(table_data(outcomes, names)),
    }
    # One pass: a marker inside a filled-in part (a group named "@@DATA@@") stays text.
    return _MARKER.sub(lambda m: parts[m.group(1)], template)
