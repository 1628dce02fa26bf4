"""The JSON messages on licshift's two queues, and their strict parsers (S7) (pure).

Waves queue (admin CLI, HTTP API, or anyone with queue access), one command per message:

    {"command": "start", "wave_id": "<guid>", "group": "<guid>", "skus": ["<guid>" | "ENTERPRISEPACK", ...],
     "selection": {"kind": "all"} | {"kind": "first", "count": 5} | {"kind": "percent", "percent": 10}
                | {"kind": "users", "users": ["<guid>", ...]},
     "dry_run": false, "force": false, "policy": "no-loss" | "identical" | null, "requested_by": "alice@contoso.com"}
    {"command": "pause" | "resume" | "cancel" | "rollback", "wave_id": "<guid>", "requested_by": "..."}
    {"command": "kill-switch", "on": true, "requested_by": "..."}
    {"command": "reprocess", "wave_id": "<guid>" | null, "users": ["<guid>", ...], "reason": "CountViolation",
     "requested_by": "..."}

Every command may carry "request_id": "<guid>"; intake records its answer (accepted / refused and
why) against it in the ledger, so the sender can wait for it (licshift.rules.answers).
The client chooses wave_id (a GUID), so a redelivered or resent start is recognised and ignored.

Removals queue (written only by licshift itself), one user and SKU per message:

    {"task": "remove" | "restore" | "rollback-restore", "wave_id": "<guid>", "user_id": "<guid>", "sku_id": "<guid>"}
    {"task": "reprocess", "wave_id": "<guid>" | "", "user_id": "<guid>", "request_id": "<guid>"}

Everything is checked before anything else happens: unknown fields, wrong types, ids that are not
GUIDs (nothing else ever reaches a Graph URL or filter), SKU part numbers outside a strict alphabet,
absurd sizes. Parsers raise MalformedMessage with a message that says what to fix; they never raise
anything else, whatever the input.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from licshift.rules.decide import Policy
from licshift.rules.licenses import guid, is_guid
from licshift.rules.waves import Selection, SelectionKind

MAX_MESSAGE_CHARS = 64 * 1024
"""Azure Storage queues cap a message at 64 KiB; anything longer did not come from a queue."""
MAX_SKUS = 20
MAX_REQUESTED_BY = 256
# skuPartNumber values are short identifiers such as ENTERPRISEPACK, SPE_E3, Microsoft_365_E5,
# O365_BUSINESS_PREMIUM or FLOW_FREE; quotes, parentheses, spaces, $ and / never occur in them.
_PART_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]*")


class MalformedMessage(ValueError):
    """A queue message licshift will not act on; the text says what is wrong and how to fix it."""


class Command(enum.StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    ROLLBACK = "rollback"
    KILL_SWITCH = "kill-switch"
    REPROCESS = "reprocess"


class TaskKind(enum.StrEnum):
    REMOVE = "remove"
    RESTORE = "restore"
    """Put back the recorded snapshot of one removed user and SKU (the wave's own restore)."""
    ROLLBACK_RESTORE = "rollback-restore"
    """Put back the recorded snapshot because the admin rolls the wave back."""
    REPROCESS = "reprocess"
    """reprocessLicenseAssignment for one user (services/reprocess.py); no SKU, no outcome row."""


@dataclass(frozen=True, slots=True)
class StartWave:
    wave_id: str
    group_id: str
    skus: tuple[str, ...]
    """Lower-case GUIDs, or skuPartNumbers as given (resolved against subscribedSkus at intake)."""
    selection: Selection
    dry_run: bool
    force: bool
    policy: Policy | None
    """None: the deployment's default policy (LICSHIFT_POLICY)."""
    requested_by: str
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class WaveCommand:
    command: Command
    """pause, resume, cancel or rollback."""
    wave_id: str
    requested_by: str
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class KillSwitch:
    on: bool
    requested_by: str
    request_id: str = ""


MAX_REPROCESS_USERS = 1000
"""Users per reprocess command: 1,000 GUIDs fit a queue message; the CLI sends more as several."""
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")


@dataclass(frozen=True, slots=True)
class Reprocess:
    """reprocessLicenseAssignment for named users (of a wave, when wave_id is set), paced like removals."""

    wave_id: str
    """"" when the users were named without a wave."""
    users: tuple[str, ...]
    reason: str
    """The license error the users were picked by (e.g. CountViolation); "" when named one by one."""
    requested_by: str
    request_id: str = ""
    batch_id: str = ""
    """Set on the continuation licshift itself sends for users that found no write slot yet: the
    request the users belong to (no request_id, so intake answers nobody a second time)."""


WavesMessage = StartWave | WaveCommand | KillSwitch | Reprocess


@dataclass(frozen=True, slots=True)
class Task:
    kind: TaskKind
    wave_id: str
    """"" only for a reprocess task sent without a wave."""
    user_id: str
    sku_id: str
    """"" for a reprocess task (it is about the user, every group assignment)."""
    request_id: str = ""
    """Reprocess tasks only: the accepted command they belong to (its answer is in the ledger)."""


# --- what the host hands over ---------------------------------------------------------------------


def queue_text(stored: bytes) -> str:
    """The JSON text of a queue message from its stored bytes, as the Functions host hands them over
    (host.json messageEncoding "none"). licshift writes base64 of UTF-8, the host's default format; the
    handlers decode it themselves so that a message that is not base64 reaches them and is recorded
    (S7), where the host would move it to the poison queue, whose trigger cannot decode it either."""
    if len(stored) > MAX_MESSAGE_CHARS:
        raise MalformedMessage(f"message is {len(stored)} bytes; a queue message holds at most {MAX_MESSAGE_CHARS}")
    try:
        decoded = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessage("message is not base64: licshift's queues carry base64 of UTF-8 JSON") from None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"message is not UTF-8 text once base64-decoded (byte {exc.start})") from None


def stored_text(stored: bytes) -> str:
    """The stored bytes as text for the record, whatever they are (undecodable bytes escaped)."""
    return stored.decode("utf-8", "backslashreplace")


# --- parsing helpers -----------------------------------------------------------------------------


def _load(text: str, what: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise MalformedMessage(f"{what} must be text, got {type(text).__name__}")
    if len(text) > MAX_MESSAGE_CHARS:
        raise MalformedMessage(f"{what} is {len(text)} characters; a queue message holds at most {MAX_MESSAGE_CHARS}")
    try:
        payload = json.loads(text)
    except RecursionError:
        raise MalformedMessage(f"{what} nests JSON too deeply") from None
    except ValueError as exc:
        raise MalformedMessage(f"{what} is not valid JSON ({exc}); send one JSON object") from None
    if not isinstance(payload, dict):
        raise MalformedMessage(f"{what} must be a JSON object, got {type(payload).__name__}")
    return payload


def _only(payload: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        shown = ", ".join(repr(k)[:40] for k in unknown[:5])
        raise MalformedMessage(f"{what}: unknown field(s) {shown}; allowed: {', '.join(sorted(allowed))}")


def _required(payload: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in payload:
        raise MalformedMessage(f"{what}: field {name!r} is required")
    return payload[name]


def _guid(value: Any, name: str) -> str:
    if not is_guid(value):
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise MalformedMessage(f"{name} must be a GUID like 6fd2c87f-b296-42f0-b197-1e91e994b900, got {shown}")
    return guid(value)


def _bool(payload: Mapping[str, Any], name: str, default: bool, what: str) -> bool:
    value = payload.get(name, default)
    if not isinstance(value, bool):
        raise MalformedMessage(f"{what}: {name} must be true or false, got {type(value).__name__}")
    return value


def _requested_by(payload: Mapping[str, Any], what: str) -> str:
    value = payload.get("requested_by", "")
    if not isinstance(value, str):
        raise MalformedMessage(f"{what}: requested_by must be a string (who asked, e.g. an email address)")
    if len(value) > MAX_REQUESTED_BY or not _PRINTABLE.fullmatch(value) or not _encodable(value):
        raise MalformedMessage(
            f"{what}: requested_by must be at most {MAX_REQUESTED_BY} printable characters without control codes"
        )
    return value.strip()


def _encodable(value: str) -> bool:
    """JSON may carry lone surrogates (\\ud800) that no store can write as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sku_ref(value: Any) -> str:
    if is_guid(value):
        return guid(value)
    if isinstance(value, str) and _PART_NUMBER.fullmatch(value):
        return value
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise MalformedMessage(
        f"skus: {shown} is neither a skuId GUID nor a skuPartNumber (letters, digits, _ . + -, e.g. ENTERPRISEPACK)"
    )


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedMessage(f"selection: {name} must be a whole number, got {type(value).__name__}")
    return value


def _selection(value: Any, max_users: int) -> Selection:
    what = "selection"
    if not isinstance(value, dict):
        raise MalformedMessage(
            'selection must be an object such as {"kind": "first", "count": 5}; kinds: all, first, percent, users'
        )
    kind_raw = _required(value, "kind", what)
    try:
        kind = SelectionKind(kind_raw)
    except (ValueError, TypeError):
        raise MalformedMessage(
            f"selection: kind {str(kind_raw)[:40]!r} is not one of all, first, percent, users"
        ) from None
    if kind is SelectionKind.ALL:
        _only(value, {"kind"}, what)
        return Selection(kind)
    if kind is SelectionKind.FIRST:
        _only(value, {"kind", "count"}, what)
        count = _int(_required(value, "count", what), "count")
        if not 1 <= count <= max_users:
            raise MalformedMessage(f"selection: count must be from 1 to {max_users} (LICSHIFT_MAX_WAVE_USERS)")
        return Selection(kind, count=count)
    if kind is SelectionKind.PERCENT:
        _only(value, {"kind", "percent"}, what)
        percent = _required(value, "percent", what)
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent):
            raise MalformedMessage("selection: percent must be a number")
        if not 0 < percent <= 100:
            raise MalformedMessage(f"selection: percent must be above 0 and at most 100, got {percent}")
        return Selection(kind, percent=float(percent))
    _only(value, {"kind", "users"}, what)
    users = _required(value, "users", what)
    if not isinstance(users, list):
        raise MalformedMessage("selection: users must be a list of user id GUIDs")
    if not users:
        raise MalformedMessage("selection: users is empty; list at least one user id")
    if len(users) > max_users:
        raise MalformedMessage(f"selection: {len(users)} users is more than {max_users} (LICSHIFT_MAX_WAVE_USERS)")
    return Selection(kind, users=frozenset(_guid(u, "selection user id") for u in users))


# --- waves queue ---------------------------------------------------------------------------------

_START_FIELDS = {
    "command", "wave_id", "group", "skus", "selection", "dry_run", "force", "policy", "requested_by", "request_id"
}  # fmt: skip
_WAVE_FIELDS = {"command", "wave_id", "requested_by", "request_id"}
_KILL_FIELDS = {"command", "on", "requested_by", "request_id"}
_REPROCESS_FIELDS = {"command", "wave_id", "users", "reason", "requested_by", "request_id", "batch_id"}


def _request_id(payload: Mapping[str, Any]) -> str:
    value = payload.get("request_id")
    return "" if value is None else _guid(value, "request_id")


def parse_waves_message(text: str, *, max_wave_users: int) -> WavesMessage:
    """Parse one waves-queue message; raise MalformedMessage saying what to fix."""
    what = "wave command"
    payload = _load(text, what)
    raw = _required(payload, "command", what)
    try:
        command = Command(raw)
    except (ValueError, TypeError):
        allowed = ", ".join(c.value for c in Command)
        raise MalformedMessage(f"{what}: command {str(raw)[:40]!r} is not one of {allowed}") from None
    what = f"{command} command"
    if command is Command.KILL_SWITCH:
        _only(payload, _KILL_FIELDS, what)
        on = _required(payload, "on", what)
        if not isinstance(on, bool):
            raise MalformedMessage(f"{what}: on must be true or false")
        return KillSwitch(on, _requested_by(payload, what), _request_id(payload))
    if command is Command.REPROCESS:
        return _reprocess(payload, what)
    if command is not Command.START:
        _only(payload, _WAVE_FIELDS, what)
        wave_id = _guid(_required(payload, "wave_id", what), "wave_id")
        return WaveCommand(command, wave_id, _requested_by(payload, what), _request_id(payload))
    _only(payload, _START_FIELDS, what)
    wave_id = _guid(_required(payload, "wave_id", what), "wave_id")
    group_id = _guid(_required(payload, "group", what), "group")
    skus_raw = _required(payload, "skus", what)
    if not isinstance(skus_raw, list) or not skus_raw:
        raise MalformedMessage(f"{what}: skus must be a non-empty list of skuId GUIDs or skuPartNumbers")
    if len(skus_raw) > MAX_SKUS:
        raise MalformedMessage(f"{what}: {len(skus_raw)} SKUs is more than {MAX_SKUS}; split the wave")
    skus = tuple(dict.fromkeys(_sku_ref(s) for s in skus_raw))
    selection = _selection(payload.get("selection", {"kind": "all"}), max_wave_users)
    policy_raw = payload.get("policy")
    policy: Policy | None = None
    if policy_raw is not None:
        try:
            policy = Policy(policy_raw)
        except (ValueError, TypeError):
            raise MalformedMessage(f"{what}: policy {str(policy_raw)[:40]!r} is not no-loss or identical") from None
    return StartWave(
        wave_id=wave_id,
        group_id=group_id,
        skus=skus,
        selection=selection,
        dry_run=_bool(payload, "dry_run", False, what),
        force=_bool(payload, "force", False, what),
        policy=policy,
        requested_by=_requested_by(payload, what),
        request_id=_request_id(payload),
    )


def _reprocess(payload: Mapping[str, Any], what: str) -> Reprocess:
    _only(payload, _REPROCESS_FIELDS, what)
    wave_raw = payload.get("wave_id")
    wave_id = "" if wave_raw is None else _guid(wave_raw, "wave_id")
    users = _required(payload, "users", what)
    if not isinstance(users, list) or not users:
        raise MalformedMessage(f"{what}: users must be a non-empty list of user id GUIDs")
    if len(users) > MAX_REPROCESS_USERS:
        raise MalformedMessage(f"{what}: {len(users)} users is more than {MAX_REPROCESS_USERS}; send several commands")
    reason = payload.get("reason", "")
    if not isinstance(reason, str) or (reason and not _ERROR_CODE.fullmatch(reason)):
        raise MalformedMessage(f"{what}: reason must be a license error code such as CountViolation")
    ids = tuple(dict.fromkeys(_guid(u, "user id") for u in users))
    batch = payload.get("batch_id")
    batch_id = "" if batch is None else _guid(batch, "batch_id")
    return Reprocess(wave_id, ids, reason, _requested_by(payload, what), _request_id(payload), batch_id)


def selection_json(selection: Selection) -> dict[str, Any]:
    if selection.kind is SelectionKind.FIRST:
        return {"kind": "first", "count": selection.count}
    if selection.kind is SelectionKind.PERCENT:
        return {"kind": "percent", "percent": selection.percent}
    if selection.kind is SelectionKind.USERS:
        return {"kind": "users", "users": sorted(selection.users)}
    return {"kind": "all"}


def waves_message_json(message: WavesMessage) -> dict[str, Any]:
    body = _message_body(message)
    if message.request_id:
        body["request_id"] = message.request_id
    return body


def _message_body(message: WavesMessage) -> dict[str, Any]:
    if isinstance(message, Reprocess):
        return {
            "command": Command.REPROCESS.value,
            "wave_id": message.wave_id or None,
            "users": list(message.users),
            "reason": message.reason,
            "requested_by": message.requested_by,
        } | ({"batch_id": message.batch_id} if message.batch_id else {})
    if isinstance(message, KillSwitch):
        return {"command": Command.KILL_SWITCH.value, "on": message.on, "requested_by": message.requested_by}
    if isinstance(message, WaveCommand):
        return {"command": message.command.value, "wave_id": message.wave_id, "requested_by": message.requested_by}
    return {
        "command": Command.START.value,
        "wave_id": message.wave_id,
        "group": message.group_id,
        "skus": list(message.skus),
        "selection": selection_json(message.selection),
        "dry_run": message.dry_run,
        "force": message.force,
        "policy": message.policy.value if message.policy else None,
        "requested_by": message.requested_by,
    }


def encode_waves_message(message: WavesMessage) -> str:
    return json.dumps(waves_message_json(message), separators=(",", ":"))


# --- removals queue ------------------------------------------------------------------------------

_TASK_FIELDS = {"task", "wave_id", "user_id", "sku_id"}
_REPROCESS_TASK_FIELDS = {"task", "wave_id", "user_id", "request_id"}


def parse_task(text: str) -> Task:
    what = "removal task"
    payload = _load(text, what)
    raw = _required(payload, "task", what)
    try:
        kind = TaskKind(raw)
    except (ValueError, TypeError):
        allowed = ", ".join(k.value for k in TaskKind)
        raise MalformedMessage(f"{what}: task {str(raw)[:40]!r} is not one of {allowed}") from None
    if kind is TaskKind.REPROCESS:
        _only(payload, _REPROCESS_TASK_FIELDS, "reprocess task")
        wave_raw = payload.get("wave_id", "")
        return Task(
            kind=kind,
            wave_id="" if wave_raw == "" else _guid(wave_raw, "wave_id"),
            user_id=_guid(_required(payload, "user_id", what), "user_id"),
            sku_id="",
            request_id=_guid(_required(payload, "request_id", what), "request_id"),
        )
    _only(payload, _TASK_FIELDS, what)
    return Task(
        kind=kind,
        wave_id=_guid(_required(payload, "wave_id", what), "wave_id"),
        user_id=_guid(_required(payload, "user_id", what), "user_id"),
        sku_id=_guid(_required(payload, "sku_id", what), "sku_id"),
    )


def encode_task(task: Task) -> str:
    if task.kind is TaskKind.REPROCESS:
        body = {"task": task.kind.value, "wave_id": task.wave_id, "user_id": task.user_id}
        return json.dumps(body | {"request_id": task.request_id}, separators=(",", ":"))
    return json.dumps(
        {"task": task.kind.value, "wave_id": task.wave_id, "user_id": task.user_id, "sku_id": task.sku_id},
        separators=(",", ":"),
    )
