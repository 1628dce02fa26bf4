"""Answers to admin requests (pure): what intake decided about one waves-queue command.

A command may carry a `request_id` (the CLI always sends one). Intake records its verdict against
that id in the ledger, so the sender learns within seconds whether the command was accepted or
refused, and why, instead of guessing from the wave's status later.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime

from licshift.rules.licenses import guid, is_guid


class Verdict(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    """The same command was handled before (redelivery or resend): nothing more to do."""
    REJECTED = "rejected"
    FAILED = "failed"
    """Graph or storage kept failing; the command went to the poison queue and was not carried out."""


@dataclass(frozen=True, slots=True)
class Answer:
    request_id: str
    verdict: Verdict
    message: str
    wave_id: str = ""
    at: datetime | None = None


MAX_SCANNED_CHARS = 64 * 1024


def request_id_in(text: str) -> str:
    """The request id of a message, read leniently (the message may be refused as malformed, and its
    sender still deserves the answer); "" when there is no usable one."""
    if not isinstance(text, str) or len(text) > MAX_SCANNED_CHARS:
        return ""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return ""
    value = payload.get("request_id") if isinstance(payload, dict) else None
    return guid(value) if is_guid(value) else ""
