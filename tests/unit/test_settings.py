"""Typed settings from the environment: defaults, parsing, and a clear error for every bad value."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licshift.rules.decide import Policy
from licshift.settings import (
    DEFAULT_GRAPH_ENDPOINT,
    SETTINGS_TABLE,
    SPECS,
    STORAGE_CONNECTION,
    Settings,
    SettingsError,
    SettleAction,
    StorageSettings,
)

GROUP_A = "1132b215-826f-42a9-8cfe-1643d19d17fd"
GROUP_B = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
CLIENT_ID = "7c1a0e3d-5b8f-4e2a-9d6c-3f1b2a4c5d6e"
QUEUE_URI = "https://stlicshift.queue.core.windows.net"
TABLE_URI = "https://stlicshift.table.core.windows.net"


def read(**env: str) -> Settings:
    return Settings.from_env(env)


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.graph_endpoint == DEFAULT_GRAPH_ENDPOINT
    assert not s.graph_is_loopback
    assert s.storage == StorageSettings()
    assert s.storage.uses_identity
    assert s.policy is Policy.NO_LOSS
    assert s.group_allowlist == frozenset()
    assert s.group_allowed(GROUP_A)
    assert s.kill_switch is False
    assert (s.write_rate_floor, s.write_rate_ceiling, s.write_quota_share) == (0.5, 20.0, 0.97)
    assert (s.canary_max_users, s.max_wave_users, s.failure_halt_threshold) == (25, 100_000, 5)


def test_defaults_match_the_documented_table() -> None:
    documented = {name: default for name, default, _ in SETTINGS_TABLE}
    s = Settings()
    assert documented["LICSHIFT_GRAPH_ENDPOINT"] == s.graph_endpoint
    assert documented["LICSHIFT_WAVES_QUEUE"] == s.waves_queue
    assert documented["LICSHIFT_REMOVALS_QUEUE"] == s.removals_queue
    assert documented["LICSHIFT_TABLE_PREFIX"] == s.table_prefix
    assert documented["LICSHIFT_TICK_SCHEDULE"] == s.tick_schedule
    assert documented["LICSHIFT_DRIFT_SCHEDULE"] == s.drift_schedule
    assert documented["LICSHIFT_POLICY"] == s.policy.value
    assert float(documented["LICSHIFT_TICK_SECONDS"]) == s.tick_seconds
    assert float(documented["LICSHIFT_WRITE_RATE_CEILING"]) == s.write_rate_ceiling
    assert float(documented["LICSHIFT_WRITE_RATE_FLOOR"]) == s.write_rate_floor
    assert float(documented["LICSHIFT_WRITE_QUOTA_SHARE"]) == s.write_quota_share
    assert int(documented["LICSHIFT_CANARY_MAX_USERS"]) == s.canary_max_users
    assert int(documented["LICSHIFT_MAX_WAVE_USERS"]) == s.max_wave_users
    assert float(documented["LICSHIFT_PROCESSING_TIMEOUT_MINUTES"]) == s.processing_timeout_minutes
    assert int(documented["LICSHIFT_FAILURE_HALT_THRESHOLD"]) == s.failure_halt_threshold
    assert documented["LICSHIFT_KILL_SWITCH"] == str(s.kill_switch).lower()
    assert float(documented["LICSHIFT_SETTLE_HOURS"]) == s.settle_hours
    assert documented["LICSHIFT_SETTLE_ACTION"] == s.settle_action.value
    assert documented["LICSHIFT_SETTLE_SCHEDULE"] == s.settle_schedule
    assert len(documented) == len(SETTINGS_TABLE), "a setting is listed twice"


# --- each setting parsed ------------------------------------------------------------------------

PARSED: list[tuple[str, str, Callable[[Settings], Any], Any]] = [
    (
        "LICSHIFT_GRAPH_ENDPOINT",
        "https://graph.microsoft.us/v1.0/",
        lambda s: s.graph_endpoint,
        "https://graph.microsoft.us/v1.0",
    ),
    (
        STORAGE_CONNECTION,
        "UseDevelopmentStorage=true",
        lambda s: s.storage.connection_string,
        "UseDevelopmentStorage=true",
    ),
    (f"{STORAGE_CONNECTION}__clientId", CLIENT_ID, lambda s: s.storage.client_id, CLIENT_ID),
    ("AZURE_CLIENT_ID", f" {CLIENT_ID} ", lambda s: s.managed_identity_client_id, CLIENT_ID),
    ("LICSHIFT_WAVES_QUEUE", "w2-waves", lambda s: s.waves_queue, "w2-waves"),
    ("LICSHIFT_REMOVALS_QUEUE", "w2-removals", lambda s: s.removals_queue, "w2-removals"),
    ("LICSHIFT_TABLE_PREFIX", "contoso", lambda s: s.table_prefix, "contoso"),
    ("LICSHIFT_TICK_SCHEDULE", "*/30 * * * * *", lambda s: s.tick_schedule, "*/30 * * * * *"),
    ("LICSHIFT_TICK_SECONDS", "30", lambda s: s.tick_seconds, 30.0),
    ("LICSHIFT_DRIFT_SCHEDULE", "0 30 2 * * *", lambda s: s.drift_schedule, "0 30 2 * * *"),
    ("LICSHIFT_DRIFT_REMOVE", "true", lambda s: s.drift_remove, True),
    ("LICSHIFT_DRIFT_REMOVE_MAX_USERS", "50", lambda s: s.drift_remove_max_users, 50),
    ("LICSHIFT_DRIFT_REMOVE_MAX_REPEATS", "5", lambda s: s.drift_remove_max_repeats, 5),
    ("LICSHIFT_WRITE_RATE_CEILING", "18.5", lambda s: s.write_rate_ceiling, 18.5),
    ("LICSHIFT_WRITE_RATE_FLOOR", "0.25", lambda s: s.write_rate_floor, 0.25),
    ("LICSHIFT_WRITE_QUOTA_SHARE", "1", lambda s: s.write_quota_share, 1.0),
    ("LICSHIFT_POLICY", "identical", lambda s: s.policy, Policy.IDENTICAL),
    ("LICSHIFT_GROUP_ALLOWLIST", GROUP_A.upper(), lambda s: s.group_allowlist, frozenset({GROUP_A})),
    ("LICSHIFT_CANARY_MAX_USERS", "10", lambda s: s.canary_max_users, 10),
    ("LICSHIFT_MAX_WAVE_USERS", "5000", lambda s: s.max_wave_users, 5000),
    ("LICSHIFT_PROCESSING_TIMEOUT_MINUTES", "1440", lambda s: s.processing_timeout_minutes, 1440.0),
    ("LICSHIFT_FAILURE_HALT_THRESHOLD", "1", lambda s: s.failure_halt_threshold, 1),
    ("LICSHIFT_KILL_SWITCH", "TRUE", lambda s: s.kill_switch, True),
    ("LICSHIFT_SETTLE_HOURS", "48", lambda s: s.settle_hours, 48.0),
    ("LICSHIFT_SETTLE_ACTION", "alert-only", lambda s: s.settle_action, SettleAction.ALERT_ONLY),
    ("LICSHIFT_SETTLE_SCHEDULE", "0 0 * * * *", lambda s: s.settle_schedule, "0 0 * * * *"),
    ("LICSHIFT_REPROCESS_ENABLED", "true", lambda s: s.reprocess_enabled, True),
]


@pytest.mark.parametrize(("name", "value", "field", "expected"), PARSED, ids=[p[0] for p in PARSED])
def test_each_setting_is_parsed(name: str, value: str, field: Callable[[Settings], Any], expected: Any) -> None:
    assert field(Settings.from_env({name: value})) == expected
    assert field(Settings.from_env({name: "  "})) == field(Settings())  # blank means default


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("On", True), ("0", False), ("off", False)])
def test_kill_switch_spellings(raw: str, expected: bool) -> None:
    assert read(LICSHIFT_KILL_SWITCH=raw).kill_switch is expected


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LICSHIFT_POLICY", "identical")
    monkeypatch.setenv("LICSHIFT_CANARY_MAX_USERS", "7")
    s = Settings.from_env()
    assert s.policy is Policy.IDENTICAL
    assert s.canary_max_users == 7


# --- storage --------------------------------------------------------------------------------------


def test_connection_string_storage() -> None:
    storage = Settings.from_env({STORAGE_CONNECTION: "UseDevelopmentStorage=true"}).storage
    assert not storage.uses_identity


def test_identity_based_storage_needs_both_service_uris() -> None:
    storage = Settings.from_env(
        {
            f"{STORAGE_CONNECTION}__queueServiceUri": QUEUE_URI,
            f"{STORAGE_CONNECTION}__tableServiceUri": TABLE_URI,
            f"{STORAGE_CONNECTION}__clientId": CLIENT_ID,
        }
    ).storage
    assert storage == StorageSettings(None, QUEUE_URI, TABLE_URI, CLIENT_ID)
    assert storage.uses_identity


@pytest.mark.parametrize(
    ("given", "missing"), [("queueServiceUri", "tableServiceUri"), ("tableServiceUri", "queueServiceUri")]
)
def test_only_one_storage_uri_is_an_error_naming_both(given: str, missing: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({f"{STORAGE_CONNECTION}__{given}": QUEUE_URI})
    message = str(caught.value)
    assert f"{STORAGE_CONNECTION}__{missing}" in message
    assert f"{STORAGE_CONNECTION}__{given}" in message
    assert "set both" in message


def test_a_connection_string_makes_a_lone_uri_harmless() -> None:
    env = {STORAGE_CONNECTION: "UseDevelopmentStorage=true", f"{STORAGE_CONNECTION}__queueServiceUri": QUEUE_URI}
    assert Settings.from_env(env).storage.connection_string == "UseDevelopmentStorage=true"


# --- Graph endpoint ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://127.0.0.1:8080/v1.0/", "http://127.0.0.1:8080/v1.0"),
        ("http://localhost:5000/v1.0", "http://localhost:5000/v1.0"),
        ("http://[::1]:8443/v1.0", "http://[::1]:8443/v1.0"),
    ],
)
def test_loopback_http_endpoint_is_allowed(raw: str, expected: str) -> None:
    s = read(LICSHIFT_GRAPH_ENDPOINT=raw)
    assert s.graph_endpoint == expected
    assert s.graph_is_loopback


@pytest.mark.parametrize(
    "raw",
    [
        "http://graph.microsoft.com/v1.0",
        "http://localhost.attacker.example/v1.0",
        "http://127.0.0.1.nip.io/v1.0",
        "http://10.0.0.5:8080/v1.0",
        "ftp://127.0.0.1/v1.0",
        "graph.microsoft.com/v1.0",
        "https://",
        "https:///v1.0",
        "http://[::1",
    ],
)
def test_non_loopback_http_or_hostless_endpoint_is_rejected(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        read(LICSHIFT_GRAPH_ENDPOINT=raw)
    message = str(caught.value)
    assert message.startswith("LICSHIFT_GRAPH_ENDPOINT=")
    assert "https" in message


# --- numbers, policy, switch, allowlist: bad values name the setting and the fix ------------------

# (name, low, high, whole number only, how the range reads in the message)
NUMBERS = [
    ("LICSHIFT_TICK_SECONDS", 1, 3600, False, "from 1 to 3600"),
    ("LICSHIFT_WRITE_RATE_CEILING", 0.01, 20, False, "from 0.01 to 20"),
    ("LICSHIFT_WRITE_RATE_FLOOR", 0.01, 20, False, "from 0.01 to 20"),
    ("LICSHIFT_WRITE_QUOTA_SHARE", 0.05, 1, False, "from 0.05 to 1"),
    ("LICSHIFT_CANARY_MAX_USERS", 1, 1000, True, "from 1 to 1000"),
    ("LICSHIFT_MAX_WAVE_USERS", 1, 1_000_000, True, "from 1 to 1000000"),
    ("LICSHIFT_PROCESSING_TIMEOUT_MINUTES", 1, 10_080, False, "from 1 to 10080"),
    ("LICSHIFT_FAILURE_HALT_THRESHOLD", 1, 100_000, True, "from 1 to 100000"),
]
NUMBER_IDS = [n[0] for n in NUMBERS]


def _expect_error(env: dict[str, str], *fragments: str) -> str:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("spec", NUMBERS, ids=NUMBER_IDS)
@pytest.mark.parametrize("raw", ["ten", "1,5", "nan", "inf", "-inf", "0x10", "5 users"])
def test_a_non_number_names_the_setting_and_the_range(spec: tuple[str, float, float, bool, str], raw: str) -> None:
    name, _, _, _, bounds = spec
    _expect_error({name: raw}, name, repr(raw), f"set it to a value {bounds}")


@pytest.mark.parametrize("spec", NUMBERS, ids=NUMBER_IDS)
def test_out_of_range_names_the_setting_and_the_range(spec: tuple[str, float, float, bool, str]) -> None:
    name, low, high, _, bounds = spec
    for raw in (str(low / 2), str(high * 2), "-1"):
        env = {name: raw}
        if name == "LICSHIFT_WRITE_RATE_FLOOR":
            env["LICSHIFT_WRITE_RATE_CEILING"] = "20"
        _expect_error(env, name, "out of range", f"set it to a value {bounds}")


@pytest.mark.parametrize("spec", [n for n in NUMBERS if n[3]], ids=[n[0] for n in NUMBERS if n[3]])
def test_whole_numbers_reject_fractions(spec: tuple[str, float, float, bool, str]) -> None:
    name, low, high, _, _ = spec
    _expect_error({name: "2.5"}, name, "whole number", f"from {low} to {high}")


@settings(max_examples=300)
@given(st.sampled_from(NUMBERS), st.data())
def test_any_number_in_range_is_read_exactly_and_any_outside_rejected(
    spec: tuple[str, float, float, bool, str], data: st.DataObject
) -> None:
    name, low, high, whole, _ = spec
    value: float = (
        data.draw(st.integers(int(low), int(high)))
        if whole
        else data.draw(st.floats(low, high, allow_nan=False, allow_infinity=False))
    )
    env = {name: repr(value)}
    if name == "LICSHIFT_WRITE_RATE_FLOOR":
        env["LICSHIFT_WRITE_RATE_CEILING"] = "20"
    if name == "LICSHIFT_WRITE_RATE_CEILING":
        env["LICSHIFT_WRITE_RATE_FLOOR"] = "0.01"
    field = name.removeprefix("LICSHIFT_").lower()
    assert getattr(Settings.from_env(env), field) == value
    outside = data.draw(
        st.one_of(
            st.floats(max_value=low, exclude_max=True, allow_nan=False),
            st.floats(min_value=high, exclude_min=True, allow_nan=False),
        )
    )
    assert not math.isnan(outside)
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**env, name: repr(outside)})


def test_floor_above_ceiling_is_rejected_naming_both() -> None:
    _expect_error(
        {"LICSHIFT_WRITE_RATE_FLOOR": "5", "LICSHIFT_WRITE_RATE_CEILING": "2"},
        "LICSHIFT_WRITE_RATE_FLOOR",
        "LICSHIFT_WRITE_RATE_CEILING",
    )


@pytest.mark.parametrize("raw", ["strict", "IDENTICAL", "no_loss", "noloss"])
def test_bad_policy_names_the_setting_and_the_choices(raw: str) -> None:
    _expect_error({"LICSHIFT_POLICY": raw}, "LICSHIFT_POLICY", repr(raw), "no-loss", "identical")


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled"])
def test_bad_switch_names_the_setting_and_the_fix(raw: str) -> None:
    _expect_error({"LICSHIFT_KILL_SWITCH": raw}, "LICSHIFT_KILL_SWITCH", "true or false")


@settings(max_examples=300)
@given(
    st.lists(st.uuids(), min_size=1, max_size=6),
    st.lists(st.sampled_from([",", ";", " , ", ";\t", ",,"]), min_size=6, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_allowlist_is_normalised_whatever_the_separators_and_case(
    ids: list[uuid.UUID], separators: list[str], upper: list[bool]
) -> None:
    parts = [str(u).upper() if up else str(u) for u, up in zip(ids, upper, strict=False)]
    raw = " " + "".join(p + sep for p, sep in zip(parts, separators, strict=False))
    s = read(LICSHIFT_GROUP_ALLOWLIST=raw)
    assert s.group_allowlist == {str(u) for u in ids}
    assert all(s.group_allowed(str(u)) for u in ids)
    outsider = "ffffffff-ffff-4fff-bfff-ffffffffffff"
    assert s.group_allowed(outsider) == (outsider in s.group_allowlist)


@pytest.mark.parametrize(
    "entry",
    ["sales-licensing", "x' or 1 eq 1", f"{GROUP_B}/../users", f"{{{GROUP_B}}}", GROUP_B.replace("-", "")],
)
def test_non_guid_allowlist_entry_names_the_setting_and_the_fix(entry: str) -> None:
    _expect_error({"LICSHIFT_GROUP_ALLOWLIST": f"{GROUP_A},{entry}"}, "LICSHIFT_GROUP_ALLOWLIST", "must be a GUID like")


def test_allowlist_limits_groups() -> None:
    s = read(LICSHIFT_GROUP_ALLOWLIST=f"{GROUP_A}")
    assert s.group_allowed(GROUP_A)
    assert not s.group_allowed(GROUP_B)


# --- every documented setting is really read --------------------------------------------------

# For each name in SETTINGS_TABLE, a value that either must be rejected or must change the result.
# A new setting without a probe fails the first assertion below, so the table cannot outgrow from_env.
PROBES: dict[str, str] = {
    "LICSHIFT_GRAPH_ENDPOINT": "http://graph.microsoft.com/v1.0",
    STORAGE_CONNECTION: "UseDevelopmentStorage=true",
    f"{STORAGE_CONNECTION}__queueServiceUri": QUEUE_URI,
    f"{STORAGE_CONNECTION}__tableServiceUri": TABLE_URI,
    f"{STORAGE_CONNECTION}__clientId": CLIENT_ID,
    "AZURE_CLIENT_ID": CLIENT_ID,
    "LICSHIFT_WAVES_QUEUE": "other-waves",
    "LICSHIFT_REMOVALS_QUEUE": "other-removals",
    "LICSHIFT_TABLE_PREFIX": "other",
    "LICSHIFT_TICK_SCHEDULE": "*/10 * * * * *",
    "LICSHIFT_TICK_SECONDS": "0",
    "LICSHIFT_DRIFT_SCHEDULE": "0 0 3 * * *",
    "LICSHIFT_DRIFT_REMOVE": "sometimes",
    "LICSHIFT_DRIFT_REMOVE_MAX_USERS": "0",
    "LICSHIFT_DRIFT_REMOVE_MAX_REPEATS": "1.5",
    "LICSHIFT_WRITE_RATE_CEILING": "not-a-rate",
    "LICSHIFT_WRITE_RATE_FLOOR": "99",
    "LICSHIFT_WRITE_QUOTA_SHARE": "1.5",
    "LICSHIFT_POLICY": "lossy",
    "LICSHIFT_GROUP_ALLOWLIST": "all",
    "LICSHIFT_CANARY_MAX_USERS": "0",
    "LICSHIFT_MAX_WAVE_USERS": "many",
    "LICSHIFT_PROCESSING_TIMEOUT_MINUTES": "0",
    "LICSHIFT_FAILURE_HALT_THRESHOLD": "1.5",
    "LICSHIFT_KILL_SWITCH": "perhaps",
    "LICSHIFT_STATE_CACHE_SECONDS": "6",
    "LICSHIFT_SETTLE_HOURS": "0",
    "LICSHIFT_SETTLE_ACTION": "ignore",
    "LICSHIFT_SETTLE_SCHEDULE": "0 0 * * * *",
    "LICSHIFT_REPROCESS_ENABLED": "true",
}


def test_every_documented_setting_has_a_probe() -> None:
    assert set(PROBES) == {name for name, _, _ in SETTINGS_TABLE}
    for name, default, meaning in SETTINGS_TABLE:
        assert default.strip(), name
        assert meaning.strip(), name


@pytest.mark.parametrize("name", [name for name, _, _ in SETTINGS_TABLE])
def test_every_documented_setting_is_read_by_from_env(name: str) -> None:
    baseline = Settings.from_env({})
    error: str | None = None
    try:
        probed = Settings.from_env({name: PROBES[name]})
    except SettingsError as exc:
        probed, error = baseline, str(exc)
    if error is None:
        assert probed != baseline, f"{name}={PROBES[name]!r} was not read"
    else:
        assert name in error


def test_an_unknown_variable_changes_nothing() -> None:
    assert Settings.from_env({"LICSHIFT_POLICYY": "identical", "LICSHIFT_UNKNOWN": "x"}) == Settings()


def test_every_field_is_read_from_exactly_one_setting_and_defaults_come_from_the_table() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)} - {"storage"}
    read = [spec.field for spec in SPECS if spec.field]
    assert sorted(read) == sorted(fields), "a Settings field without its one row in SPECS (or two rows)"
    assert all(getattr(Settings(), spec.field) == spec.default for spec in SPECS if spec.field)
