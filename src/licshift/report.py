"""Wave reports as CSV, JSON or HTML (pure: records in, text out).

An admin hands these to change boards and help desks, so every row says who, what, why, and the
state before and after; HTML is one self-contained file with no scripts and everything escaped.
"""

from __future__ import annotations

import csv
import enum
import html
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from licshift.outcomes import Outcome
from licshift.waves import Wave


class ReportFormat(enum.StrEnum):
    CSV = "csv"
    JSON = "json"
    HTML = "html"


COLUMNS: tuple[str, ...] = (
    "user_id",
    "user_principal_name",
    "sku_id",
    "status",
    "decision",
    "reason",
    "detail",
    "snapshot_disabled_plans",
    "before_plans",
    "after_plans",
    "attempts",
    "graph_error",
    "updated_at",
)


def outcome_row(outcome: Outcome) -> dict[str, str]:
    snapshot = "" if outcome.snapshot is None else " ".join(sorted(outcome.snapshot.disabled_plans))
    return {
        "user_id": outcome.user_id,
        "user_principal_name": outcome.user_principal_name,
        "sku_id": outcome.sku_id,
        "status": outcome.status.value,
        "decision": outcome.decision,
        "reason": outcome.reason,
        "detail": outcome.detail,
        "snapshot_disabled_plans": snapshot,
        "before_plans": " ".join(sorted(outcome.before_plans)),
        "after_plans": " ".join(sorted(outcome.after_plans)),
        "attempts": str(outcome.attempts),
        "graph_error": outcome.graph_error,
        "updated_at": outcome.updated_at.isoformat() if outcome.updated_at else "",
    }


def wave_summary(wave: Wave) -> dict[str, Any]:
    c = wave.counters
    return {
        "wave_id": wave.wave_id,
        "group_id": wave.group_id,
        "sku_ids": list(wave.sku_ids),
        "status": wave.status.value,
        "status_reason": wave.status_reason,
        "dry_run": wave.dry_run,
        "policy": wave.policy.value,
        "selection": wave.selection.kind.value,
        "requested_by": wave.requested_by,
        "created_at": wave.created_at.isoformat(),
        "updated_at": wave.updated_at.isoformat(),
        "counters": {name: getattr(c, name) for name in c.__dataclass_fields__},
    }


def _csv_safe(value: str) -> str:
    # A cell starting with = + - @ is a formula in Excel: UPNs and Graph messages are user-controlled.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def render(wave: Wave, outcomes: Iterable[Outcome], fmt: ReportFormat) -> str:
    rows = [outcome_row(o) for o in outcomes]
    if fmt is ReportFormat.CSV:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_safe(v) for k, v in row.items()})
        return buffer.getvalue()
    if fmt is ReportFormat.JSON:
        return json.dumps({"wave": wave_summary(wave), "outcomes": rows}, indent=2) + "\n"
    return _html(wave, rows)


def _html(wave: Wave, rows: Sequence[dict[str, str]]) -> str:
    summary = wave_summary(wave)
    by_status = Counter(r["status"] for r in rows)
    by_reason = Counter(f"{r['status']}: {r['reason']}" for r in rows if r["reason"])
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "\n".join("<tr>" + "".join(f"<td>{esc(r[c])}</td>" for c in COLUMNS) + "</tr>" for r in rows)
    facts = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in summary.items() if k != "counters")
    counts = "".join(f"<li>{esc(k)}: {v}</li>" for k, v in sorted(by_status.items()))
    reasons = "".join(f"<li>{esc(k)}: {v}</li>" for k, v in sorted(by_reason.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>licshift wave {esc(wave.wave_id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}}</style></head>
<body><h1>licshift wave {esc(wave.wave_id)}</h1>
<table>{facts}</table>
<h2>Outcomes</h2><ul>{counts}</ul>
<h2>Reasons</h2><ul>{reasons}</ul>
<h2>Users ({len(rows)})</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></body></html>
"""
