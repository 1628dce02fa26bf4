"""Typed settings, read once from the environment (app settings in Azure, local.settings.json or the
shell locally). Every setting is documented in the README's settings table; `SETTINGS_TABLE` below
is the source of that table and a test keeps the two in step.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Settings:
    graph_endpoint: str = DEFAULT_GRAPH_ENDPOINT
    storage: StorageSettings = field(default_factory=StorageSettings)
    managed_identity_client_id: str | None = None
    waves_queue: str = "licshift-waves"
    removals_queue: str = "licshift-removals"
    table_prefix: str = "licshift"
    tick_schedule: str = "0 * * * * *"
    tick_seconds: float = 60.0
    drift_schedule: str = "0 0 * * * *"
    write_quota_share: float = 0.97
    write_rate_ceiling: float = 20.0
    write_rate_floor: float = 0.5
    policy: Policy = Policy.NO_LOSS
    group_allowlist: frozenset[str] = frozenset()
    canary_max_users: int = 25
    max_wave_users: int = 100_000
    processing_timeout_minutes: float = 240.0
    failure_halt_threshold: int = 5
    kill_switch: bool = False
    settle_hours: float = 24.0
    settle_action: SettleAction = SettleAction.RESTORE
    settle_schedule: str = "0 */5 * * * *"

    @property
    def graph_is_loopback(self) -> bool:
        host = urlparse(self.graph_endpoint).hostname or ""
        return host in {"localhost", "127.0.0.1", "::1"}

    def group_allowed(self, group_id: str) -> bool:
        return not self.group_allowlist or group_id in self.group_allowlist

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> Settings:
        return _read(os.environ if env is None else env)


# (name, default shown in the README, meaning). Order = README order.
SETTINGS_TABLE: tuple[tuple[str, str, str], ...] = (
    (
        "LICSHIFT_GRAPH_ENDPOINT",
        DEFAULT_GRAPH_ENDPOINT,
        "Graph base URL. http is accepted only for loopback (the simulator or another local stand-in).",
    ),
    (
        STORAGE_CONNECTION,
        "(none)",
        "Storage connection string (Azurite locally: `UseDevelopmentStorage=true`).",
    ),
    (
        f"{STORAGE_CONNECTION}__queueServiceUri",
        "(none)",
        "Identity-based storage in Azure: queue endpoint, used when no connection string is set.",
    ),
    (f"{STORAGE_CONNECTION}__tableServiceUri", "(none)", "Identity-based storage in Azure: table endpoint."),
    (
        f"{STORAGE_CONNECTION}__clientId",
        "(none)",
        "Client id of the user-assigned managed identity used for storage.",
    ),
    (
        "AZURE_CLIENT_ID",
        "(none)",
        "Client id of the user-assigned managed identity used for Graph (unset: system-assigned or CLI login).",
    ),
    ("LICSHIFT_WAVES_QUEUE", "licshift-waves", "Queue the admin CLI puts wave commands on (wave_intake reads it)."),
    ("LICSHIFT_REMOVALS_QUEUE", "licshift-removals", "Queue of per-user removal and restore work."),
    ("LICSHIFT_TABLE_PREFIX", "licshift", "Prefix of the ledger tables (Waves, Outcomes, Control, Events)."),
    ("LICSHIFT_TICK_SCHEDULE", "0 * * * * *", "NCRONTAB (UTC) of the scheduler tick."),
    ("LICSHIFT_TICK_SECONDS", "60", "Seconds between ticks: the window one tick spreads its writes over."),
    ("LICSHIFT_DRIFT_SCHEDULE", "0 0 * * * *", "NCRONTAB (UTC) of the drift watch."),
    (
        "LICSHIFT_WRITE_QUOTA_SHARE",
        "0.97",
        "Share of Graph's write quota (3,000 per 150 s per app and tenant) licshift fills in any 150 s window, "
        "0.05 to 1; the rest is headroom for delivery jitter and restores.",
    ),
    (
        "LICSHIFT_WRITE_RATE_CEILING",
        "20",
        "Graph writes per second licshift may use at most (Graph allows 20/s per app and tenant); "
        "lower it to leave room for other apps.",
    ),
    (
        "LICSHIFT_WRITE_RATE_FLOOR",
        "0.5",
        "Lowest write rate the back-off after throttling goes down to (it recovers within 150 s).",
    ),
    ("LICSHIFT_POLICY", "no-loss", "Decision policy: `no-loss` or `identical`."),
    (
        "LICSHIFT_GROUP_ALLOWLIST",
        "(empty: any group)",
        "Comma-separated group ids waves may target; a wave for any other group is rejected.",
    ),
    (
        "LICSHIFT_CANARY_MAX_USERS",
        "25",
        "Largest wave allowed without a completed, clean canary on the same group and SKUs.",
    ),
    (
        "LICSHIFT_MAX_WAVE_USERS",
        "100000",
        "Largest wave: a bigger explicit size is rejected at intake; all/percent waves halt at the scan.",
    ),
    (
        "LICSHIFT_PROCESSING_TIMEOUT_MINUTES",
        "240",
        "How long a wave waits for group license processing before it halts with an alert.",
    ),
    ("LICSHIFT_FAILURE_HALT_THRESHOLD", "5", "Failed removals (not throttling) that halt a wave."),
    (
        "LICSHIFT_KILL_SWITCH",
        "false",
        "`true` stops every removal at once (the control table's switch does the same at run time).",
    ),
    (
        "LICSHIFT_SETTLE_HOURS",
        "24",
        "Settle window: for this long after a removal, the settle check watches the groups it relied on.",
    ),
    (
        "LICSHIFT_SETTLE_ACTION",
        "restore",
        "What the settle check does when a relied-on group's change took a plan: `restore` the "
        "snapshot (and alert) or `alert-only`.",
    ),
    ("LICSHIFT_SETTLE_SCHEDULE", "0 */5 * * * *", "NCRONTAB (UTC) of the settle check."),
)


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _shown(value: float) -> str:
    """1000000 rather than 1e+06 in messages an admin reads."""
    return str(int(value)) if value == int(value) else f"{value:g}"


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
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


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _number(env, name, default, low, high)
    if value != int(value):
        raise SettingsError(f"{name}={env.get(name)!r} must be a whole number from {low} to {high}")
    return int(value)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise SettingsError(f"{name}={raw!r} is not a switch; set it to true or false")


def _graph_endpoint(env: Mapping[str, str]) -> str:
    endpoint = _text(env, "LICSHIFT_GRAPH_ENDPOINT", DEFAULT_GRAPH_ENDPOINT).rstrip("/")
    not_a_url = SettingsError(
        f"LICSHIFT_GRAPH_ENDPOINT={endpoint!r} is not a URL with a host; "
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
        raise SettingsError(
            f"LICSHIFT_GRAPH_ENDPOINT={endpoint!r}: use https (plain http only for localhost/127.0.0.1)"
        )
    return endpoint


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


def _allowlist(env: Mapping[str, str]) -> frozenset[str]:
    raw = env.get("LICSHIFT_GROUP_ALLOWLIST", "")
    ids = [part.strip() for part in raw.replace(";", ",").split(",") if part.strip()]
    try:
        return frozenset(guid(i, "LICSHIFT_GROUP_ALLOWLIST entry") for i in ids)
    except InvalidId as exc:
        raise SettingsError(str(exc)) from None


def _read(env: Mapping[str, str]) -> Settings:
    policy_raw = _text(env, "LICSHIFT_POLICY", Policy.NO_LOSS.value)
    try:
        policy = Policy(policy_raw)
    except ValueError:
        raise SettingsError(f"LICSHIFT_POLICY={policy_raw!r}: use no-loss or identical") from None
    floor = _number(env, "LICSHIFT_WRITE_RATE_FLOOR", 0.5, 0.01, 20)
    ceiling = _number(env, "LICSHIFT_WRITE_RATE_CEILING", 20.0, 0.01, 20)
    if floor > ceiling:
        raise SettingsError("LICSHIFT_WRITE_RATE_FLOOR must not exceed LICSHIFT_WRITE_RATE_CEILING")
    client_id = env.get("AZURE_CLIENT_ID", "").strip() or None
    return Settings(
        graph_endpoint=_graph_endpoint(env),
        storage=_storage(env),
        managed_identity_client_id=client_id,
        waves_queue=_text(env, "LICSHIFT_WAVES_QUEUE", "licshift-waves"),
        removals_queue=_text(env, "LICSHIFT_REMOVALS_QUEUE", "licshift-removals"),
        table_prefix=_text(env, "LICSHIFT_TABLE_PREFIX", "licshift"),
        tick_schedule=_text(env, "LICSHIFT_TICK_SCHEDULE", "0 * * * * *"),
        tick_seconds=_number(env, "LICSHIFT_TICK_SECONDS", 60.0, 1, 3600),
        drift_schedule=_text(env, "LICSHIFT_DRIFT_SCHEDULE", "0 0 * * * *"),
        write_quota_share=_number(env, "LICSHIFT_WRITE_QUOTA_SHARE", 0.97, 0.05, 1),
        write_rate_ceiling=ceiling,
        write_rate_floor=floor,
        policy=policy,
        group_allowlist=_allowlist(env),
        canary_max_users=_integer(env, "LICSHIFT_CANARY_MAX_USERS", 25, 1, 1000),
        max_wave_users=_integer(env, "LICSHIFT_MAX_WAVE_USERS", 100_000, 1, 1_000_000),
        processing_timeout_minutes=_number(env, "LICSHIFT_PROCESSING_TIMEOUT_MINUTES", 240.0, 1, 10_080),
        failure_halt_threshold=_integer(env, "LICSHIFT_FAILURE_HALT_THRESHOLD", 5, 1, 100_000),
        kill_switch=_flag(env, "LICSHIFT_KILL_SWITCH"),
        settle_hours=_number(env, "LICSHIFT_SETTLE_HOURS", 24.0, 1, 720),
        settle_action=_settle_action(env),
        settle_schedule=_text(env, "LICSHIFT_SETTLE_SCHEDULE", "0 */5 * * * *"),
    )


def _settle_action(env: Mapping[str, str]) -> SettleAction:
    raw = _text(env, "LICSHIFT_SETTLE_ACTION", SettleAction.RESTORE.value)
    try:
        return SettleAction(raw)
    except ValueError:
        raise SettingsError(f"LICSHIFT_SETTLE_ACTION={raw!r}: use restore or alert-only") from None
