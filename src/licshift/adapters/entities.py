"""The ledger's records as Table Storage entities, both ways (pure: no I/O).

Encoding rules:
- enums as their string values, booleans and numbers natively, datetimes as Edm.DateTime in UTC;
- sets and tuples as JSON arrays (sets sorted), so any string round-trips exactly;
- free text (messages, details, Graph errors) longer than one property allows is truncated with a
  marker, because an audit row that cannot be written is worse than a shortened one; every other
  value that does not fit is rejected with a ValueError naming the field;
- a wave's explicit user list is stored inline when it fits one property, else in content-addressed
  rows of the Waves table (see `users_rows`), written before the wave row so the wave row stays the
  single commit point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import secrets
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from azure.data.tables import EdmType, EntityProperty

from licshift.rules.answers import Answer, Verdict
from licshift.rules.census import WORK_STATUSES, Move
from licshift.rules.decide import Policy
from licshift.rules.licenses import DirectAssignment, GroupOptions
from licshift.rules.outcomes import (
    Control,
    DriftState,
    Event,
    Outcome,
    OutcomeStatus,
    Severity,
    outcome_key,
)
from licshift.rules.waves import Selection, SelectionKind, Wave, WaveCounters, WaveStatus
from licshift.settings import SettingsError

WAVES, OUTCOMES, CONTROL, EVENTS = "Waves", "Outcomes", "Control", "Events"
TABLE_SUFFIXES: Final = (WAVES, OUTCOMES, CONTROL, EVENTS)
WAVE_PARTITION: Final = "wave"
USERS_PARTITION_PREFIX: Final = "users-"
CONTROL_PARTITION: Final = "control"
CONTROL_ROW: Final = "global"
DRIFT_PARTITION: Final = "drift"
"""Drift state lives in the Control table: current state overwritten in place, like the kill switch,
one row per (user, SKU), RowKey user_sku."""
PACING_ROW: Final = "pacing"
LEASE_ROW: Final = "tick-lease"
ANSWER_PARTITION: Final = "answer"
SWITCH_LOG_PARTITION: Final = "kill-switch-log"
"""Who turned the kill switch on or off from the CLI, beside the switch itself: an operator may write
the Control table but only read the Events table."""
SWITCH_LOG_LIMIT: Final = 100
SCHEMA_VERSION: Final = 1
MAX_STRING_UNITS: Final = 32_000
"""A string property may hold 64 KiB of UTF-16, i.e. 32,768 code units; keep a margin."""
USERS_PIECES_PER_ROW: Final = 12
"""Pieces of MAX_STRING_UNITS per user-list row: 12 x 64 KB stays well under the 1 MiB entity limit."""
TRANSACTION_OPERATIONS: Final = 100
TRANSACTION_BYTES: Final = 3_500_000
"""A batch request may carry at most 4 MiB; keep room for the multipart framing."""
TRUNCATION_MARK: Final = " …[truncated {n} characters]"
_MAX_TICKS: Final = 3_155_378_975_999_999_999
""".NET DateTime.MaxValue.Ticks: inverted ticks make RowKeys sort newest first, as in Azure's own tables."""
_EPOCH: Final = datetime(1, 1, 1, tzinfo=UTC)
LEDGER_ROWS: Final = "~"
"""Rows of an Outcomes partition that are not outcomes have RowKeys from here on ("~" sorts after
every character of a user id or SKU id): readers of outcomes stop before it."""
COUNTS_ROW: Final = "~c"
SHARDS_ROW: Final = "~s"
"""In partition `<wave id>` of a wave whose outcomes are spread over shard partitions: how many."""
OUTCOME_SHARDS: Final = 16
"""Shard partitions per new wave: 100,000 rows keep each under ~6,300 outcome rows and within a
partition's throughput target while the scan writes them (docs/ledger.md)."""
JOURNAL_PREFIX: Final = "~j|"
INDEX_PREFIX: Final = "~w|"
_INDEXED_FIELDS: Final = ("PartitionKey", "user_id", "sku_id", "status", "relied_on", "updated_at", "not_before")
INDEX_SELECT: Final = ("RowKey", *_INDEXED_FIELDS)
"""What an index row holds, and what a re-index reads of each row."""
_PREFIX = re.compile(r"^(?:[A-Za-z][A-Za-z0-9]*)?$")
_KEY_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def table_names(prefix: str) -> dict[str, str]:
    """The four table names for `prefix`, or SettingsError saying how to fix the prefix."""
    longest = max(len(s) for s in TABLE_SUFFIXES)
    if not _PREFIX.match(prefix) or len(prefix) + longest > 63:
        raise SettingsError(
            f"LICSHIFT_TABLE_PREFIX={prefix!r} cannot name tables: use letters and digits only, "
            f"starting with a letter, at most {63 - longest} characters (e.g. 'licshift')"
        )
    return {suffix: f"{prefix}{suffix}" for suffix in TABLE_SUFFIXES}


def check_key(value: str, what: str) -> str:
    """A PartitionKey/RowKey part: Table Storage forbids / \\ # ? and control characters, max 1 KiB."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if _KEY_FORBIDDEN.search(value) or _utf16_units(value) > 512:
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise ValueError(f"{what} {shown!r} cannot be a table key: no / \\ # ? or control characters, max 512")
    return value


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fit(value: str, what: str) -> str:
    """A structured string that must round-trip exactly: reject rather than cut it."""
    if _utf16_units(value) > MAX_STRING_UNITS:
        raise ValueError(
            f"{what} is {_utf16_units(value)} UTF-16 units long; Table Storage allows {MAX_STRING_UNITS} per property"
        )
    return value


def _free_text(value: str) -> str:
    """Human text: shortened with a visible marker when it would not fit one property."""
    if _utf16_units(value) <= MAX_STRING_UNITS:
        return value
    keep = MAX_STRING_UNITS - 64
    cut = value[:keep]
    while _utf16_units(cut) > keep:
        cut = cut[:-1]
    return cut + TRUNCATION_MARK.format(n=len(value) - len(cut))


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (use datetime.now(UTC)), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _read_datetime(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"expected a DateTime property, got {value!r}")
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    v = aware.astimezone(UTC)
    # The SDK hands back its own datetime subclass; records hold plain datetimes.
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=UTC)


def _write_int(value: int) -> int | EntityProperty:
    # Python ints go out as Edm.Int32 unless marked; larger values need Edm.Int64 explicitly.
    if -(2**31) <= value < 2**31:
        return value
    return EntityProperty(value, EdmType.INT64)


def _read_int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, EntityProperty):
        value = value.value
    return int(value)


def _read_float(value: Any, default: float = 0.0) -> float:
    if value is None:
        return default
    if isinstance(value, EntityProperty):
        value = value.value
    return float(value)


def _json_list(values: Iterable[str], what: str) -> str:
    return _fit(json.dumps(list(values), ensure_ascii=False, separators=(",", ":")), what)


def _read_json_list(value: Any) -> list[str]:
    if not value:
        return []
    parsed = json.loads(str(value))
    if not isinstance(parsed, list):
        raise ValueError(f"expected a JSON array, got {value!r}")
    return [str(v) for v in parsed]


def _text(entity: Mapping[str, Any], name: str, default: str = "") -> str:
    value = entity.get(name)
    return default if value is None else str(value)


@dataclasses.dataclass(frozen=True, slots=True)
class UsersRows:
    """A user list too long for one property: where its rows live in the Waves table."""

    partition: str
    digest: str
    rows: tuple[dict[str, Any], ...]


def users_json(users: frozenset[str]) -> str:
    # ensure_ascii makes characters = UTF-16 units = bytes, so pieces can be cut anywhere.
    return json.dumps(sorted(users), ensure_ascii=True, separators=(",", ":"))


def users_rows(wave_id: str, users: frozenset[str]) -> UsersRows:
    """Content-addressed rows for a long user list: PartitionKey `users-<wave id>`, RowKey
    `<digest>-<index>`, properties part_000.. holding consecutive pieces of the JSON array.

    Keyed by content so that writing them before the wave row can never clobber the list of another
    version of the wave (a duplicate create, a stale save): the wave row names the digest it uses.
    """
    text = users_json(users)
    digest = hashlib.sha256(text.encode("ascii")).hexdigest()[:32]
    pieces = [text[i : i + MAX_STRING_UNITS] for i in range(0, len(text), MAX_STRING_UNITS)]
    partition = USERS_PARTITION_PREFIX + wave_id
    rows = []
    for index, start in enumerate(range(0, len(pieces), USERS_PIECES_PER_ROW)):
        row: dict[str, Any] = {"PartitionKey": partition, "RowKey": f"{digest}-{index:04d}"}
        for j, piece in enumerate(pieces[start : start + USERS_PIECES_PER_ROW]):
            row[f"part_{j:03d}"] = piece
        rows.append(row)
    return UsersRows(partition, digest, tuple(rows))


def users_from_rows(
    rows: Sequence[Mapping[str, Any]], expected_rows: int, expected_count: int, what: str
) -> frozenset[str]:
    if len(rows) != expected_rows:
        raise LedgerCorrupt(f"{what}: expected {expected_rows} user-list rows, found {len(rows)}")
    text = "".join(
        str(row[name])
        for row in sorted(rows, key=lambda r: str(r["RowKey"]))
        for name in sorted(row)
        if name.startswith("part_")
    )
    users = frozenset(_read_json_list(text))
    if len(users) != expected_count:
        raise LedgerCorrupt(f"{what}: expected {expected_count} users in the stored list, found {len(users)}")
    return users


class LedgerCorrupt(RuntimeError):
    """A ledger row cannot be read back as a record (edited by hand, or written by another version)."""


def wave_to_entity(wave: Wave) -> tuple[dict[str, Any], UsersRows | None]:
    """The wave row, and the user-list rows to write first when the list does not fit inline."""
    wave_id = check_key(wave.wave_id, "wave id")
    selection = wave.selection
    entity: dict[str, Any] = {
        "PartitionKey": WAVE_PARTITION,
        "RowKey": wave_id,
        "schema": SCHEMA_VERSION,
        "group_id": _fit(wave.group_id, "group id"),
        "sku_ids": _json_list(wave.sku_ids, "sku ids"),
        "selection_kind": selection.kind.value,
        "selection_count": _write_int(selection.count),
        "selection_percent": float(selection.percent),
        "selection_users_count": _write_int(len(selection.users)),
        "policy": wave.policy.value,
        "dry_run": wave.dry_run,
        "force": wave.force,
        "requested_by": _fit(wave.requested_by, "requested_by"),
        "status": wave.status.value,
        "status_reason": _free_text(wave.status_reason),
        "enqueue_cursor": _fit(wave.enqueue_cursor, "enqueue cursor"),
        "created_at": _utc(wave.created_at, "created_at"),
        "updated_at": _utc(wave.updated_at, "updated_at"),
        "resume_to": _fit(wave.resume_to, "resume_to"),
    }
    if wave.status_since is not None:
        entity["status_since"] = _utc(wave.status_since, "status_since")
    for counter in dataclasses.fields(WaveCounters):
        entity[f"count_{counter.name}"] = _write_int(getattr(wave.counters, counter.name))
    rows: UsersRows | None = None
    text = users_json(selection.users)
    if len(text) <= MAX_STRING_UNITS:
        entity["selection_users"] = text
    else:
        rows = users_rows(wave_id, selection.users)
        entity["selection_users_ref"] = rows.digest
        entity["selection_users_rows"] = len(rows.rows)
    return entity, rows


def wave_from_entity(entity: Mapping[str, Any], users: frozenset[str] | None = None) -> Wave:
    """Decode a wave row; `users` must be given when the row refers to user-list rows."""
    wave_id = str(entity["RowKey"])
    if "selection_users_ref" in entity:
        if users is None:
            raise ValueError(f"wave {wave_id}: the user list is stored in separate rows; read them first")
        selected = users
    else:
        selected = frozenset(_read_json_list(entity.get("selection_users")))
    try:
        counters = WaveCounters(
            **{f.name: _read_int(entity.get(f"count_{f.name}")) for f in dataclasses.fields(WaveCounters)}
        )
        return Wave(
            wave_id=wave_id,
            group_id=_text(entity, "group_id"),
            sku_ids=tuple(_read_json_list(entity.get("sku_ids"))),
            selection=Selection(
                kind=SelectionKind(_text(entity, "selection_kind", SelectionKind.ALL.value)),
                count=_read_int(entity.get("selection_count")),
                percent=_read_float(entity.get("selection_percent")),
                users=selected,
            ),
            policy=Policy(_text(entity, "policy", Policy.NO_LOSS.value)),
            dry_run=bool(entity.get("dry_run", False)),
            force=bool(entity.get("force", False)),
            requested_by=_text(entity, "requested_by"),
            status=WaveStatus(_text(entity, "status")),
            created_at=_read_datetime(entity.get("created_at")),
            updated_at=_read_datetime(entity.get("updated_at")),
            counters=counters,
            status_reason=_text(entity, "status_reason"),
            enqueue_cursor=_text(entity, "enqueue_cursor"),
            status_since=_read_datetime(entity["status_since"]) if entity.get("status_since") else None,
            resume_to=_text(entity, "resume_to"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise LedgerCorrupt(f"wave row {wave_id!r} cannot be read: {exc}") from exc


def outcome_partition(wave_id: str, key: str, shards: int) -> str:
    """The partition of outcome `key` in a wave spread over `shards` partitions (1: the wave id
    itself, as before shards). CRC-32 rather than hash(): every process must agree, forever."""
    if shards == 1:
        return wave_id
    return f"{wave_id}|{zlib.crc32(key.encode('utf-8')) % shards:02d}"


def outcome_partitions(wave_id: str, shards: int) -> list[str]:
    """Every partition holding outcomes of the wave, in order."""
    return [wave_id] if shards == 1 else [f"{wave_id}|{n:02d}" for n in range(shards)]


def shards_to_entity(wave_id: str, shards: int) -> dict[str, Any]:
    return {"PartitionKey": wave_id, "RowKey": SHARDS_ROW, "schema": SCHEMA_VERSION, "shards": shards}


def shards_from_entity(entity: Mapping[str, Any]) -> int:
    shards = _read_int(entity.get("shards"))
    if not 1 <= shards <= 100:
        raise LedgerCorrupt(f"shards row of wave {entity.get('PartitionKey')!r} names {shards} partitions")
    return shards


def outcome_to_entity(outcome: Outcome, shards: int = 1) -> dict[str, Any]:
    wave_id = check_key(outcome.wave_id, "wave id")
    key = check_key(outcome_key(outcome.user_id, outcome.sku_id), "outcome key")
    entity: dict[str, Any] = {
        "PartitionKey": outcome_partition(wave_id, key, shards),
        "RowKey": key,
        "user_id": _fit(outcome.user_id, "user id"),
        "sku_id": _fit(outcome.sku_id, "sku id"),
        "status": outcome.status.value,
        "decision": _fit(outcome.decision, "decision"),
        "reason": _fit(outcome.reason, "reason"),
        "detail": _free_text(outcome.detail),
        "user_principal_name": _fit(outcome.user_principal_name, "user principal name"),
        "display_name": _free_text(outcome.display_name),
        "snapshot": "" if outcome.snapshot is None else json.dumps(outcome.snapshot.to_json(), separators=(",", ":")),
        "before_plans": _json_list(sorted(outcome.before_plans), "before_plans"),
        "after_plans": _json_list(sorted(outcome.after_plans), "after_plans"),
        "attempts": _write_int(outcome.attempts),
        "graph_error": _free_text(outcome.graph_error),
        "actor": _fit(outcome.actor, "actor"),
        "loss_found_by": _fit(outcome.loss_found_by, "loss found by"),
        "relied_on": _fit(json.dumps([g.to_json() for g in outcome.relied_on], separators=(",", ":")), "relied_on"),
    }
    if outcome.updated_at is not None:
        entity["updated_at"] = _utc(outcome.updated_at, "updated_at")
    if outcome.not_before is not None:
        entity["not_before"] = _utc(outcome.not_before, "not_before")
    if outcome.removed_at is not None:
        entity["removed_at"] = _utc(outcome.removed_at, "removed_at")
    return entity


def outcome_from_entity(entity: Mapping[str, Any], wave_id: str | None = None) -> Outcome:
    """`wave_id` must be given for a row of a shard partition (`<wave id>|<nn>`)."""
    where = f"outcome row {entity.get('PartitionKey')!r}/{entity.get('RowKey')!r}"
    try:
        snapshot_text = _text(entity, "snapshot")
        updated = entity.get("updated_at")
        not_before = entity.get("not_before")
        removed = entity.get("removed_at")
        relied_text = _text(entity, "relied_on")
        return Outcome(
            wave_id=str(entity["PartitionKey"]) if wave_id is None else wave_id,
            user_id=_text(entity, "user_id"),
            sku_id=_text(entity, "sku_id"),
            status=OutcomeStatus(_text(entity, "status")),
            decision=_text(entity, "decision"),
            reason=_text(entity, "reason"),
            detail=_text(entity, "detail"),
            user_principal_name=_text(entity, "user_principal_name"),
            display_name=_text(entity, "display_name"),
            snapshot=DirectAssignment.from_json(json.loads(snapshot_text)) if snapshot_text else None,
            before_plans=frozenset(_read_json_list(entity.get("before_plans"))),
            after_plans=frozenset(_read_json_list(entity.get("after_plans"))),
            attempts=_read_int(entity.get("attempts")),
            graph_error=_text(entity, "graph_error"),
            actor=_text(entity, "actor", "licshift"),
            updated_at=None if updated is None else _read_datetime(updated),
            not_before=None if not_before is None else _read_datetime(not_before),
            loss_found_by=_text(entity, "loss_found_by"),
            relied_on=tuple(GroupOptions.from_json(g) for g in json.loads(relied_text)) if relied_text else (),
            removed_at=None if removed is None else _read_datetime(removed),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise LedgerCorrupt(f"{where} cannot be read: {exc}") from exc


def index_key(status: OutcomeStatus, key: str) -> str:
    """RowKey of the index row of outcome `key` while it is in a work status (`~w|<status>|<key>`)."""
    return f"{INDEX_PREFIX}{status.value}|{key}"


def index_range(status: OutcomeStatus) -> tuple[str, str]:
    """The RowKeys of every index row of `status`: `low < RowKey < high`."""
    prefix = index_key(status, "")
    return prefix, prefix[:-1] + "}"  # "}" sorts right after "|"


def index_entity(outcome_entity: Mapping[str, Any]) -> dict[str, Any]:
    """The index row of an outcome in a work status: what the scheduler needs to pick and hold it
    (keys, status, relied-on groups, times), without reading the outcome row."""
    status = OutcomeStatus(str(outcome_entity["status"]))
    assert status in WORK_STATUSES, status
    entity = {k: outcome_entity[k] for k in _INDEXED_FIELDS if k in outcome_entity}
    entity["RowKey"] = index_key(status, str(outcome_entity["RowKey"]))
    return entity


def journal_entity(wave_id: str, move: Move, at: datetime) -> dict[str, Any]:
    """One status change, to be folded into the counts row (`~j|<ticks>|<random>`: unique, about
    in time order)."""
    ticks = int((_utc(at, "at") - _EPOCH).total_seconds() * 10_000_000)
    return {
        "PartitionKey": wave_id,
        "RowKey": f"{JOURNAL_PREFIX}{ticks:019d}|{secrets.token_hex(6)}",
        "before": "" if move.before is None else move.before.value,
        "after": "" if move.after is None else move.after.value,
    }


def move_from_entity(entity: Mapping[str, Any]) -> Move:
    try:
        before, after = _text(entity, "before"), _text(entity, "after")
        return Move(OutcomeStatus(before) if before else None, OutcomeStatus(after) if after else None)
    except ValueError as exc:
        raise LedgerCorrupt(f"journal row {entity.get('RowKey')!r} cannot be read: {exc}") from exc


def _count_property(status: OutcomeStatus) -> str:
    return "n_" + status.value.replace("-", "_")


def counts_to_entity(wave_id: str, counts: Mapping[OutcomeStatus, int]) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": wave_id, "RowKey": COUNTS_ROW, "schema": SCHEMA_VERSION}
    for status in OutcomeStatus:
        entity[_count_property(status)] = _write_int(counts.get(status, 0))
    return entity


def counts_from_entity(entity: Mapping[str, Any]) -> dict[OutcomeStatus, int]:
    try:
        return {status: _read_int(entity.get(_count_property(status))) for status in OutcomeStatus}
    except (ValueError, TypeError) as exc:
        raise LedgerCorrupt(f"counts row of wave {entity.get('PartitionKey')!r} cannot be read: {exc}") from exc


def control_to_entity(control: Control) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": CONTROL_PARTITION,
        "RowKey": CONTROL_ROW,
        "kill_switch": control.kill_switch,
        "write_rate": float(control.write_rate),
        "updated_by": _fit(control.updated_by, "updated_by"),
    }
    if control.updated_at is not None:
        entity["updated_at"] = _utc(control.updated_at, "updated_at")
    return entity


def control_from_entity(entity: Mapping[str, Any]) -> Control:
    updated = entity.get("updated_at")
    return Control(
        kill_switch=bool(entity.get("kill_switch", False)),
        write_rate=_read_float(entity.get("write_rate")),
        updated_by=_text(entity, "updated_by"),
        updated_at=None if updated is None else _read_datetime(updated),
    )


def drift_to_entity(state: DriftState) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": DRIFT_PARTITION,
        "RowKey": check_key(state.key, "drift key"),
        "user_id": _fit(state.user_id, "user id"),
        "sku_id": _fit(state.sku_id, "sku id"),
        "group_id": _fit(state.group_id, "group id"),
        "wave_id": _fit(state.wave_id, "wave id"),
        "first_seen": _utc(state.first_seen, "first_seen"),
        "last_seen": _utc(state.last_seen, "last_seen"),
        "user_principal_name": _fit(state.user_principal_name, "user principal name"),
        "group_name": _free_text(state.group_name),
        "sku_name": _fit(state.sku_name, "sku name"),
        "cleared_reason": _free_text(state.cleared_reason),
        "auto_removals": _write_int(state.auto_removals),
        "auto_wave_id": _fit(state.auto_wave_id, "wave id"),
        "held": _free_text(state.held),
    }
    if state.cleared_at is not None:
        entity["cleared_at"] = _utc(state.cleared_at, "cleared_at")
    return entity


def drift_from_entity(entity: Mapping[str, Any]) -> DriftState:
    try:
        cleared = entity.get("cleared_at")
        return DriftState(
            user_id=_text(entity, "user_id"),
            sku_id=_text(entity, "sku_id"),
            group_id=_text(entity, "group_id"),
            wave_id=_text(entity, "wave_id"),
            first_seen=_read_datetime(entity["first_seen"]),
            last_seen=_read_datetime(entity["last_seen"]),
            user_principal_name=_text(entity, "user_principal_name"),
            group_name=_text(entity, "group_name"),
            sku_name=_text(entity, "sku_name"),
            cleared_at=None if cleared is None else _read_datetime(cleared),
            cleared_reason=_text(entity, "cleared_reason"),
            auto_removals=_read_int(entity.get("auto_removals")),
            auto_wave_id=_text(entity, "auto_wave_id"),
            held=_text(entity, "held"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise LedgerCorrupt(f"drift row {entity.get('RowKey')!r} cannot be read: {exc}") from exc


def answer_to_entity(answer: Answer) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": ANSWER_PARTITION,
        "RowKey": check_key(answer.request_id, "request id"),
        "verdict": answer.verdict.value,
        "message": _free_text(answer.message),
        "wave_id": _fit(answer.wave_id, "wave id"),
    }
    if answer.at is not None:
        entity["at"] = _utc(answer.at, "answer time")
    return entity


def answer_from_entity(entity: Mapping[str, Any]) -> Answer:
    try:
        at = entity.get("at")
        return Answer(
            request_id=str(entity["RowKey"]),
            verdict=Verdict(_text(entity, "verdict")),
            message=_text(entity, "message"),
            wave_id=_text(entity, "wave_id"),
            at=None if at is None else _read_datetime(at),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise LedgerCorrupt(f"answer row {entity.get('RowKey')!r} cannot be read: {exc}") from exc


def event_partition(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%d")


def inverted_ticks(at: datetime) -> int:
    """.NET ticks (100 ns since 0001-01-01 UTC) subtracted from their maximum: newer = smaller."""
    micros = (at.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    return _MAX_TICKS - micros * 10


def event_to_entity(event: Event, now: datetime | None = None) -> dict[str, Any]:
    at = _utc(event.at, "event time") if event.at is not None else (now or datetime.now(UTC))
    data_text = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str)
    truncated = _utf16_units(data_text) > MAX_STRING_UNITS
    entity: dict[str, Any] = {
        "PartitionKey": event_partition(at),
        "RowKey": f"{inverted_ticks(at):019d}_{secrets.token_hex(4)}",
        "kind": _fit(event.kind, "event kind"),
        "message": _free_text(event.message),
        "severity": event.severity.value,
        "wave_id": _fit(event.wave_id, "wave id"),
        "user_id": _fit(event.user_id, "user id"),
        "sku_id": _fit(event.sku_id, "sku id"),
        "actor": _fit(event.actor, "actor"),
        "data": _free_text(data_text),
        "at": at,
    }
    if truncated:
        entity["data_truncated"] = True
    return entity


def event_from_entity(entity: Mapping[str, Any]) -> Event:
    data_text = _text(entity, "data")
    data: dict[str, Any]
    try:
        if entity.get("data_truncated"):
            data = {"_truncated": data_text}
        else:
            parsed = json.loads(data_text) if data_text else {}
            data = parsed if isinstance(parsed, dict) else {"_value": parsed}
        return Event(
            kind=_text(entity, "kind"),
            message=_text(entity, "message"),
            severity=Severity(_text(entity, "severity", Severity.INFO.value)),
            wave_id=_text(entity, "wave_id"),
            user_id=_text(entity, "user_id"),
            sku_id=_text(entity, "sku_id"),
            actor=_text(entity, "actor", "licshift"),
            data=data,
            at=_read_datetime(entity.get("at")),
        )
    except (ValueError, TypeError) as exc:
        where = f"event row {entity.get('PartitionKey')!r}/{entity.get('RowKey')!r}"
        raise LedgerCorrupt(f"{where} cannot be read: {exc}") from exc


def transaction_chunks(entities: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group entities into transactions Table Storage accepts: one PartitionKey each, at most 100
    operations and about 3.5 MB of payload. A later entity with the same keys replaces an earlier
    one (a transaction may not touch a row twice), keeping the order of first appearance.
    """
    by_partition: dict[str, dict[str, dict[str, Any]]] = {}
    for entity in entities:
        by_partition.setdefault(str(entity["PartitionKey"]), {})[str(entity["RowKey"])] = entity
    chunks: list[list[dict[str, Any]]] = []
    for rows in by_partition.values():
        chunk: list[dict[str, Any]] = []
        size = 0
        for entity in rows.values():
            weight = len(json.dumps(entity, default=str).encode("utf-8")) + 512
            if chunk and (len(chunk) >= TRANSACTION_OPERATIONS or size + weight > TRANSACTION_BYTES):
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(entity)
            size += weight
        if chunk:
            chunks.append(chunk)
    return chunks
