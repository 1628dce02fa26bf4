"""The one place that turns what licshift decides and does into telemetry and audit rows (S6).

Every event becomes a ledger Event row (the durable audit trail the CLI reads) and a log record on
the "licshift" logger with structured attributes. With host.json telemetryMode OpenTelemetry and the
Azure Monitor distro, those attributes land in Application Insights customDimensions; alert rules key
on `licshift_severity == "alert"` (logged at ERROR) for restores, halts, processing timeouts and
poison messages.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from licshift.ports.store import LedgerStore
from licshift.rules.outcomes import Event, Outcome, Severity

log = logging.getLogger("licshift")

# Event kinds: a closed set, so workbook queries and the CLI can rely on them.
REQUEST_REJECTED = "request-rejected"
WAVE_ACCEPTED = "wave-accepted"
WAVE_STATUS = "wave-status"
KILL_SWITCH = "kill-switch"
THROTTLED = "throttled"
RESTORED = "restored"
ROLLED_BACK = "rolled-back"
HALTED = "wave-halted"
PROCESSING_TIMEOUT = "processing-timeout"
REMOVAL_FAILED = "removal-failed"
POISON = "poison-message"
DRIFT = "drift"
DRIFT_SUMMARY = "drift-summary"
DRIFT_CLEARED = "drift-cleared"
DRIFT_REMOVE = "drift-remove"
"""The drift watch started a follow-up wave to remove drifted direct licenses again, or could not."""
DRIFT_REMOVE_HELD = "drift-remove-held"
"""A drifted license came back too often: licshift stops removing it again and alerts."""
SETTLE_LOSS = "settle-loss"
"""A migrated user lost plans inside the settle window and was not restored (alert-only, S3)."""
RATE = "write-rate"
QUOTA_USAGE = "quota-usage"
"""Graph reported a quota above 80 % in use (x-ms-throttle-limit-percentage); the scheduler reads it."""
REPROCESS_ACCEPTED = "reprocess-accepted"
"""`licshift reprocess` accepted: how many users, paced over which slots."""
REPROCESSED = "reprocessed"
"""One user's reprocessLicenseAssignment: the outcome and the license errors before and after."""

RAW_LIMIT = 2_000
"""Characters of a rejected message kept in its event: enough to recognise it, bounded in size."""

_LEVEL = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING, Severity.ALERT: logging.ERROR}


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def truncate(text: str, limit: int = RAW_LIMIT) -> str:
    """Untrusted text made safe to store and show: bounded, control characters and lone surrogates
    escaped (a rejected request must still be recordable whatever it contains)."""
    cut = text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"
    cut = cut.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", cut)


def _attributes(event: Event) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "licshift_kind": event.kind,
        "licshift_severity": event.severity.value,
        "licshift_actor": event.actor,
    }
    for name in ("wave_id", "user_id", "sku_id"):
        value = getattr(event, name)
        if value:
            attrs[f"licshift_{name}"] = value
    if event.data:
        attrs["licshift_data"] = json.dumps(event.data, default=str, sort_keys=True)
    return attrs


class _AboutOneUser(Protocol):
    @property
    def wave_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def sku_id(self) -> str: ...


def event_for(
    subject: _AboutOneUser,
    kind: str,
    message: str,
    *,
    severity: Severity = Severity.INFO,
    actor: str,
    data: dict[str, Any] | None = None,
) -> Event:
    """An event about one user and SKU of a wave (an outcome row or a removals-queue task)."""
    return Event(
        kind=kind,
        message=message,
        severity=severity,
        wave_id=subject.wave_id,
        user_id=subject.user_id,
        sku_id=subject.sku_id,
        actor=actor,
        data=data or {},
    )


def rejected_request(reason: str, raw: str, *, prefix: str = "", wave_id: str = "", actor: str) -> Event:
    """A request licshift refused (S7): the reason, who sent it, and the raw text (truncated)."""
    return Event(
        kind=REQUEST_REJECTED,
        message=f"{prefix}rejected: {reason}",
        severity=Severity.WARNING,
        wave_id=wave_id,
        actor=actor,
        data={"reason": reason, "raw": truncate(raw)},
    )


def poison_message(
    message: str,
    raw: str,
    dequeue_count: int,
    *,
    actor: str,
    wave_id: str = "",
    user_id: str = "",
    sku_id: str = "",
) -> Event:
    """A queue message the host gave up on after maxDequeueCount deliveries: an alert, with the count
    and the raw text (truncated)."""
    return Event(
        kind=POISON,
        message=message,
        severity=Severity.ALERT,
        wave_id=wave_id,
        user_id=user_id,
        sku_id=sku_id,
        actor=actor,
        data={"dequeue_count": dequeue_count, "raw": truncate(raw)},
    )


async def emit(ledger: LedgerStore, event: Event, now: datetime) -> Event:
    """Log the event and record it in the ledger. Returns it with its timestamp set."""
    stamped = event if event.at is not None else replace(event, at=now)
    log.log(_LEVEL[stamped.severity], stamped.message, extra=_attributes(stamped))
    await ledger.record_event(stamped)
    return stamped


def outcome_recorded(outcome: Outcome) -> None:
    """Log one outcome row as it is written (the row itself is the ledger record)."""
    attrs: dict[str, Any] = {
        "licshift_kind": "outcome",
        "licshift_wave_id": outcome.wave_id,
        "licshift_user_id": outcome.user_id,
        "licshift_sku_id": outcome.sku_id,
        "licshift_status": outcome.status.value,
        "licshift_decision": outcome.decision,
    }
    if outcome.user_principal_name:
        attrs["licshift_upn"] = outcome.user_principal_name
    if outcome.reason:
        attrs["licshift_reason"] = outcome.reason
    if outcome.detail:
        attrs["licshift_detail"] = outcome.detail
    if outcome.graph_error:
        attrs["licshift_graph_error"] = outcome.graph_error
    log.info(
        "outcome %s for user %s sku %s in wave %s",
        outcome.status.value,
        outcome.user_id,
        outcome.sku_id,
        outcome.wave_id,
        extra=attrs,
    )
