"""Typed settings, read once from the environment (app settings in Azure, local.settings.json or the
shell locally).

One table says everything about a setting: `SPECS` gives its environment name, the `Settings` field
it fills, its default, how it is read (a bad value stops the app with a message that names the
setting and the fix) and its README row. `Settings`' defaults and the README's settings table
(`SETTINGS_TABLE`, kept identical to the README by a test) are made from it.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from licshift.rules.decide import Policy
from licshift.rules.licenses import InvalidId, guid

DEFAULT_GRAPH_ENDPOINT = "https://graph.microsoft.com/v1.0"
STORAGE_CONNECTION = "LicshiftStorage"
"""Name of the storage connection used by the bindings (`connection=`) and by the ledger."""


class SettleAction(enum.StrEnum):
    RESTORE = "restore"
    """Put the recorded direct assignment back and alert."""
    ALERT_ONLY = "alert-only"
    """Alert only; the admin decides."""


class SettingsError(ValueError):
    """A setting has a value licshift cannot use; the message names the setting and the fix."""


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Either a connection string (Azurite, local) or identity-based service URIs (Azure)."""

    connection_string: str | None = None
    queue_service_uri: str | None = None
    table_service_uri: str | None = None
    client_id: str | None = None
    """Client id of a user-assigned managed identity; None = system-assigned / developer identity."""

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


# --- how a value is read ---------------------------------------------------------------------------

Parse = Callable[[Mapping[str, str], str, Any], Any]
"""(environment, setting name, default) -> the typed value; SettingsError if it cannot be used."""


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _optional(env: Mapping[str, str], name: str, default: None) -> str | None:
    return env.get(name, "").strip() or default


def _shown(value: float) -> str:
    """1000000 rather than 1e+06 in messages an admin reads."""
    return str(int(value)) if value == int(value) else f"{value:g}"


def _number(low: float, high: float) -> Parse:
    def read(env: Mapping[str, str], name: str, default: float) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        bounds = f"set it to a value from {_shown(low)} to {_shown(high)}"
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number; {bounds}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name}={raw!r} is out of range; {bounds}")
        return value

    return read


def _integer(low: int, high: int) -> Parse:
    def read(env: Mapping[str, str], name: str, default: int) -> int:
        value = _number(low, high)(env, name, default)
        if value != int(value):
            raise SettingsError(f"{name}={env.get(name)!r} must be a whole number from {low} to {high}")
        return int(value)

    return read


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise SettingsError(f"{name}={raw!r} is not a switch; set it to true or false")


def _choice(kind: type[enum.StrEnum]) -> Parse:
    def read(env: Mapping[str, str], name: str, default: enum.StrEnum) -> enum.StrEnum:
        raw = _text(env, name, default.value)
        try:
            return kind(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: use {' or '.join(v.value for v in kind)}") from None

    return read


def _graph_endpoint(env: Mapping[str, str], name: str, default: str) -> str:
    endpoint = _text(env, name, default).rstrip("/")
    not_a_url = SettingsError(
        f"{name}={endpoint!r} is not a URL with a host; "
        f"set it to a URL like {DEFAULT_GRAPH_ENDPOINT} (or http://127.0.0.1:PORT/v1.0 for a local stand-in)"
    )
    try:
        parsed = urlparse(endpoint)
        host = parsed.hostname or ""
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        raise not_a_url from None
    if not host:
        raise not_a_url
    loopback = host in {"localhost", "127.0.0.1", "::1"}
    if parsed.scheme != "https" and not (parsed.scheme == "http" and loopback):
        raise SettingsError(f"{name}={endpoint!r}: use https (plain http only for localhost/127.0.0.1)")
    return endpoint


def _allowlist(env: Mapping[str, str], name: str, default: frozenset[str]) -> frozenset[str]:
    ids = [part.strip() for part in env.get(name, "").replace(";", ",").split(",") if part.strip()]
    try:
        return frozenset(guid(i, f"{name} entry") for i in ids) or default
    except InvalidId as exc:
        raise SettingsError(str(exc)) from None


def _documented(env: Mapping[str, str], name: str, default: None) -> None:
    """Read with the others of its group (the storage connection, see `_storage`)."""
    return default


# --- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: its environment name, the `Settings` field it fills ("" when it is read with
    others into one field), its default, how it is read, and its README row."""

    name: str
    field: str
    default: Any
    parse: Parse
    meaning: str
    shown: str = ""
    """The README's default column, when the default itself does not say it."""

    @property
    def readme_default(self) -> str:
        if self.shown:
            return self.shown
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, int | float):
            return _shown(self.default)
        return str(self.default)


SPECS: tuple[Spec, ...] = (
    Spec(
        "LICSHIFT_GRAPH_ENDPOINT",
        "graph_endpoint",
        DEFAULT_GRAPH_ENDPOINT,
        _graph_endpoint,
        "Graph base URL. http is accepted only for loopback (the simulator or another local stand-in).",
    ),
    Spec(
        STORAGE_CONNECTION,
        "",
        None,
        _documented,
        "Storage connection string (Azurite locally: `UseDevelopmentStorage=true`).",
        "(none)",
    ),
    Spec(
        f"{STORAGE_CONNECTION}__queueServiceUri",
        "",
        None,
        _documented,
        "Identity-based storage in Azure: queue endpoint, used when no connection string is set.",
        "(none)",
    ),
    Spec(
        f"{STORAGE_CONNECTION}__tableServiceUri",
        "",
        None,
        _documented,
        "Identity-based storage in Azure: table endpoint.",
        "(none)",
    ),
    Spec(
        f"{STORAGE_CONNECTION}__clientId",
        "",
        None,
        _documented,
        "Client id of the user-assigned managed identity used for storage.",
        "(none)",
    ),
    Spec(
        "AZURE_CLIENT_ID",
        "managed_identity_client_id",
        None,
        _optional,
        "Client id of the user-assigned managed identity used for Graph (unset: system-assigned or CLI login).",
        "(none)",
    ),
    Spec(
        "LICSHIFT_WAVES_QUEUE",
        "waves_queue",
        "licshift-waves",
        _text,
        "Queue the admin CLI puts wave commands on (wave_intake reads it).",
    ),
    Spec(
        "LICSHIFT_REMOVALS_QUEUE",
        "removals_queue",
        "licshift-removals",
        _text,
        "Queue of per-user removal and restore work.",
    ),
    Spec(
        "LICSHIFT_TABLE_PREFIX",
        "table_prefix",
        "licshift",
        _text,
        "Prefix of the ledger tables (Waves, Outcomes, Control, Events).",
    ),
    Spec("LICSHIFT_TICK_SCHEDULE", "tick_schedule", "0 * * * * *", _text, "NCRONTAB (UTC) of the scheduler tick."),
    Spec(
        "LICSHIFT_TICK_SECONDS",
        "tick_seconds",
        60.0,
        _number(1, 3600),
        "Seconds between ticks: the window one tick spreads its writes over.",
    ),
    Spec("LICSHIFT_DRIFT_SCHEDULE", "drift_schedule", "0 0 * * * *", _text, "NCRONTAB (UTC) of the drift watch."),
    Spec(
        "LICSHIFT_DRIFT_REMOVE",
        "drift_remove",
        False,
        _flag,
        "`true`: the drift watch removes drifted direct licenses again through a follow-up wave of exactly "
        "those users (full rule, canary gate); off: it only reports them.",
    ),
    Spec(
        "LICSHIFT_DRIFT_REMOVE_MAX_USERS",
        "drift_remove_max_users",
        500,
        _integer(1, 100_000),
        "Most users the drift watch puts into follow-up waves per run; the rest wait for the next run.",
    ),
    Spec(
        "LICSHIFT_DRIFT_REMOVE_MAX_REPEATS",
        "drift_remove_max_repeats",
        3,
        _integer(1, 100),
        "Follow-up waves per user and SKU; when the license keeps coming back, licshift holds it and alerts.",
    ),
    Spec(
        "LICSHIFT_WRITE_QUOTA_SHARE",
        "write_quota_share",
        0.97,
        _number(0.05, 1),
        "Share of Graph's write quota (3,000 per 150 s per app and tenant) licshift fills in any 150 s window, "
        "0.05 to 1; the rest is headroom for delivery jitter and restores.",
    ),
    Spec(
        "LICSHIFT_WRITE_RATE_CEILING",
        "write_rate_ceiling",
        20.0,
        _number(0.01, 20),
        "Graph writes per second licshift may use at most (Graph allows 20/s per app and tenant); "
        "lower it to leave room for other apps.",
    ),
    Spec(
        "LICSHIFT_WRITE_RATE_FLOOR",
        "write_rate_floor",
        0.5,
        _number(0.01, 20),
        "Lowest write rate the back-off after throttling goes down to (it recovers within 150 s).",
    ),
    Spec("LICSHIFT_POLICY", "policy", Policy.NO_LOSS, _choice(Policy), "Decision policy: `no-loss` or `identical`."),
    Spec(
        "LICSHIFT_GROUP_ALLOWLIST",
        "group_allowlist",
        frozenset(),
        _allowlist,
        "Comma-separated group ids waves may target; a wave for any other group is rejected.",
        "(empty: any group)",
    ),
    Spec(
        "LICSHIFT_CANARY_MAX_USERS",
        "canary_max_users",
        25,
        _integer(1, 1000),
        "Largest wave allowed without a completed, clean canary on the same group and SKUs.",
    ),
    Spec(
        "LICSHIFT_MAX_WAVE_USERS",
        "max_wave_users",
        100_000,
        _integer(1, 1_000_000),
        "Largest wave: a bigger explicit size is rejected at intake; all/percent waves halt at the scan.",
    ),
    Spec(
        "LICSHIFT_PROCESSING_TIMEOUT_MINUTES",
        "processing_timeout_minutes",
        240.0,
        _number(1, 10_080),
        "How long a wave waits for group license processing before it halts with an alert.",
    ),
    Spec(
        "LICSHIFT_FAILURE_HALT_THRESHOLD",
        "failure_halt_threshold",
        5,
        _integer(1, 100_000),
        "Failed removals (not throttling) that halt a wave.",
    ),
    Spec(
        "LICSHIFT_KILL_SWITCH",
        "kill_switch",
        False,
        _flag,
        "`true` stops every removal at once (the control table's switch does the same at run time, within "
        "LICSHIFT_STATE_CACHE_SECONDS).",
    ),
    Spec(
        "LICSHIFT_STATE_CACHE_SECONDS",
        "state_cache_seconds",
        2.0,
        _number(0, 5),
        "How old (0 to 5 s) the wave and kill-switch state a removal checks may be: the removals on one instance "
        "share one read per this span, so a pause, cancel or the control table's kill switch stops removals "
        "within it plus the removals already in flight; 0 reads them for every check.",
    ),
    Spec(
        "LICSHIFT_SETTLE_HOURS",
        "settle_hours",
        24.0,
        _number(1, 720),
        "Settle window: for this long after a removal, the settle check watches the groups it relied on.",
    ),
    Spec(
        "LICSHIFT_SETTLE_ACTION",
        "settle_action",
        SettleAction.RESTORE,
        _choice(SettleAction),
        "What the settle check does when a relied-on group's change took a plan: `restore` the "
        "snapshot (and alert) or `alert-only`.",
    ),
    Spec(
        "LICSHIFT_SETTLE_SCHEDULE",
        "settle_schedule",
        "0 */5 * * * *",
        _text,
        "NCRONTAB (UTC) of the settle check.",
    ),
    Spec(
        "LICSHIFT_REPROCESS_ENABLED",
        "reprocess_enabled",
        False,
        _flag,
        "`true` lets `licshift reprocess` call reprocessLicenseAssignment (paced like removals); needs the "
        "Graph permission User.ReadWrite.All (infra: `reprocessEnabled`).",
    ),
)
"""Every setting, in README order."""

SETTINGS_TABLE: tuple[tuple[str, str, str], ...] = tuple((s.name, s.readme_default, s.meaning) for s in SPECS)
"""(name, default shown in the README, meaning): the README's settings table."""

_DEFAULTS = {s.field: s.default for s in SPECS if s.field}


def _default(name: str) -> Any:
    return _DEFAULTS[name]


@dataclass(frozen=True, slots=True)
class Settings:
    graph_endpoint: str = _default("graph_endpoint")
    storage: StorageSettings = field(default_factory=StorageSettings)
    managed_identity_client_id: str | None = _default("managed_identity_client_id")
    waves_queue: str = _default("waves_queue")
    removals_queue: str = _default("removals_queue")
    table_prefix: str = _default("table_prefix")
    tick_schedule: str = _default("tick_schedule")
    tick_seconds: float = _default("tick_seconds")
    drift_schedule: str = _default("drift_schedule")
    drift_remove: bool = _default("drift_remove")
    drift_remove_max_users: int = _default("drift_remove_max_users")
    drift_remove_max_repeats: int = _default("drift_remove_max_repeats")
    write_quota_share: float = _default("write_quota_share")
    write_rate_ceiling: float = _default("write_rate_ceiling")
    write_rate_floor: float = _default("write_rate_floor")
    policy: Policy = field(default=_default("policy"))
    group_allowlist: frozenset[str] = _default("group_allowlist")
    canary_max_users: int = _default("canary_max_users")
    max_wave_users: int = _default("max_wave_users")
    processing_timeout_minutes: float = _default("processing_timeout_minutes")
    failure_halt_threshold: int = _default("failure_halt_threshold")
    kill_switch: bool = _default("kill_switch")
    state_cache_seconds: float = _default("state_cache_seconds")
    settle_hours: float = _default("settle_hours")
    settle_action: SettleAction = field(default=_default("settle_action"))
    settle_schedule: str = _default("settle_schedule")
    reprocess_enabled: bool = _default("reprocess_enabled")

    @property
    def graph_is_loopback(self) -> bool:
        host = urlparse(self.graph_endpoint).hostname or ""
        return host in {"localhost", "127.0.0.1", "::1"}

    def group_allowed(self, group_id: str) -> bool:
        return not self.group_allowlist or group_id in self.group_allowlist

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> Settings:
        return _read(os.environ if env is None else env)


def _storage(env: Mapping[str, str]) -> StorageSettings:
    prefix = STORAGE_CONNECTION
    conn = env.get(prefix, "").strip() or None
    queue_uri = env.get(f"{prefix}__queueServiceUri", "").strip() or None
    table_uri = env.get(f"{prefix}__tableServiceUri", "").strip() or None
    client_id = env.get(f"{prefix}__clientId", "").strip() or None
    if conn is None and (queue_uri is None) != (table_uri is None):
        raise SettingsError(
            f"set both {prefix}__queueServiceUri and {prefix}__tableServiceUri (or a connection string in {prefix})"
        )
    return StorageSettings(conn, queue_uri, table_uri, client_id)


def _read(env: Mapping[str, str]) -> Settings:
    values = {spec.field: spec.parse(env, spec.name, spec.default) for spec in SPECS if spec.field}
    if values["write_rate_floor"] > values["write_rate_ceiling"]:
        raise SettingsError("LICSHIFT_WRITE_RATE_FLOOR must not exceed LICSHIFT_WRITE_RATE_CEILING")
    return Settings(storage=_storage(env), **values)
