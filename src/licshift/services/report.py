"""Wave reports as CSV, JSON or HTML (pure: records in, text out).

An admin hands these to change boards and help desks, so every row says who, what, why, and the
state before and after. The HTML page (licshift.services.reportpage) is one self-contained file.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from licshift.rules.outcomes import Event, Outcome
from licshift.rules.waves import Wave
from licshift.services.reportpage import page
from licshift.services.wavenames import Names


class ReportFormat(enum.StrEnum):
    CSV = "csv"
    JSON = "json"
    HTML = "html"


COLUMNS: tuple[str, ...] = (
    "user_id",
    "user_principal_name",
    "display_name",
    "sku_id",
    "sku",
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


def outcome_row(outcome: Outcome, names: Names) -> dict[str, str]:
    snapshot = "" if outcome.snapshot is None else " ".join(sorted(outcome.snapshot.disabled_plans))
    return {
        "user_id": outcome.user_id,
        "user_principal_name": outcome.user_principal_name,
        "display_name": outcome.display_name,
        "sku_id": outcome.sku_id,
        "sku": names.sku(outcome.sku_id),
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


def wave_summary(wave: Wave, names: Names | None = None) -> dict[str, Any]:
    c = wave.counters
    names = names or Names()
    return {
        "wave_id": wave.wave_id,
        "group_id": wave.group_id,
        "group": names.group,
        "sku_ids": list(wave.sku_ids),
        "skus": [names.sku(s) for s in wave.sku_ids],
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


def render(
    wave: Wave,
    outcomes: Iterable[Outcome],
    fmt: ReportFormat,
    *,
    events: Sequence[Event] = (),
    names: Names | None = None,
) -> str:
    """The report of one wave. `events` are the wave's events (the HTML timeline); `names` default
    to the names its scan recorded among them."""
    names = names or Names.from_events(events)
    if fmt is ReportFormat.HTML:
        return page(wave, list(outcomes), events, names)
    rows = [outcome_row(o, names) for o in outcomes]
    if fmt is ReportFormat.CSV:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_safe(v) for k, v in row.items()})
        return buffer.getvalue()
    return json.dumps({"wave": wave_summary(wave, names), "outcomes": rows}, indent=2) + "\n"
