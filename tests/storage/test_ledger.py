"""The ledger against Azurite: tables, exact round trips, ETag concurrency, batching, paging, events."""

from __future__ import annotations

import dataclasses
import inspect
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from azure.data.tables.aio import TableServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licshift.adapters.entities import (
    MAX_STRING_UNITS,
    TRUNCATION_MARK,
    LedgerCorrupt,
    outcome_to_entity,
    transaction_chunks,
    users_rows,
)
from licshift.adapters.ledger import Ledger
from licshift.ports.store import ConcurrencyConflict, LedgerStore
from licshift.rules.decide import Policy
from licshift.rules.licenses import DirectAssignment, GroupOptions
from licshift.rules.outcomes import Control, DriftState, Event, Outcome, OutcomeStatus, Severity
from licshift.rules.waves import Selection, SelectionKind, Wave, WaveCounters, WaveStatus
from licshift.settings import Settings, SettingsError

T0 = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def guid() -> str:
    return str(uuid.uuid4())


def make_wave(**changes: object) -> Wave:
    wave = Wave(
        wave_id=guid(),
        group_id=guid(),
        sku_ids=(guid(), guid()),
        selection=Selection(kind=SelectionKind.FIRST, count=25),
        policy=Policy.NO_LOSS,
        dry_run=False,
        force=False,
        requested_by="admin@contoso.example",
        status=WaveStatus.WAITING,
        created_at=T0,
        updated_at=T0,
    )
    return dataclasses.replace(wave, **changes)  # type: ignore[arg-type]


def make_outcome(wave_id: str, index: int, status: OutcomeStatus = OutcomeStatus.PLANNED) -> Outcome:
    return Outcome(
        wave_id=wave_id,
        user_id=f"{index:08d}-0000-4000-8000-000000000000",
        sku_id="6fd2c87f-b296-42f0-b197-1e91e994b900",
        status=status,
        decision="remove",
        updated_at=T0,
    )


def protocol_methods(protocol: type) -> list[str]:
    return [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]


@pytest.mark.parametrize("name", protocol_methods(LedgerStore))
def test_ledger_offers_every_protocol_method_with_its_parameters(name: str) -> None:
    wanted = inspect.signature(getattr(LedgerStore, name)).parameters
    offered = inspect.signature(getattr(Ledger, name)).parameters
    assert list(offered)[: len(wanted)] == list(wanted)
    assert all(offered[p].kind == wanted[p].kind and offered[p].default == wanted[p].default for p in wanted)
    extra = list(offered)[len(wanted) :]
    assert all(offered[p].default is not inspect.Parameter.empty for p in extra)


@pytest.mark.parametrize("prefix", ["lic-shift", "1abc", "with space", "x" * 60])
def test_bad_table_prefix_is_rejected_with_the_fix(prefix: str) -> None:
    with pytest.raises(SettingsError, match="letters and digits only"):
        Ledger("UseDevelopmentStorage=true", prefix=prefix)


def test_from_settings_without_storage_says_what_to_set() -> None:
    with pytest.raises(SettingsError, match="LicshiftStorage"):
        Ledger.from_settings(Settings())


async def test_tables_are_created_idempotently(ledger: Ledger, storage_connection_string: str) -> None:
    await ledger.ensure_tables()
    await ledger.ensure_tables()
    async with TableServiceClient.from_connection_string(storage_connection_string) as service:
        names = {t.name async for t in service.list_tables()}
    assert set(ledger.table_names.values()) <= names
    assert sorted(ledger.table_names) == ["Control", "Events", "Outcomes", "Waves"]


async def test_wave_round_trip_create_get_save(ledger: Ledger) -> None:
    wave = make_wave(
        selection=Selection(kind=SelectionKind.USERS, users=frozenset({guid(), guid()})),
        policy=Policy.IDENTICAL,
        dry_run=True,
        force=True,
        status=WaveStatus.REMOVING,
        counters=WaveCounters(members=10, selected=9, to_remove=8, enqueued=7, removed=6, restored=1, failed=2),
        status_reason="canary passed",
        enqueue_cursor="abc_def",
    )
    etag = await ledger.create_wave(wave)
    got = await ledger.get_wave(wave.wave_id)
    assert got is not None
    assert got.value == wave
    assert got.etag == etag
    later = dataclasses.replace(
        wave, status=WaveStatus.VERIFYING, updated_at=T0 + timedelta(minutes=5), counters=WaveCounters(removed=8)
    )
    new_etag = await ledger.save_wave(later, etag)
    assert new_etag != etag
    again = await ledger.get_wave(wave.wave_id)
    assert again is not None
    assert again.value == later
    assert again.etag == new_etag
    assert await ledger.get_wave(guid()) is None


async def test_duplicate_wave_create_is_a_conflict(ledger: Ledger) -> None:
    wave = make_wave()
    await ledger.create_wave(wave)
    with pytest.raises(ConcurrencyConflict, match="already exists"):
        await ledger.create_wave(dataclasses.replace(wave, requested_by="someone else"))
    got = await ledger.get_wave(wave.wave_id)
    assert got is not None
    assert got.value.requested_by == wave.requested_by


async def test_stale_save_loses_to_the_first_writer(ledger: Ledger) -> None:
    wave = make_wave()
    await ledger.create_wave(wave)
    first = await ledger.get_wave(wave.wave_id)
    second = await ledger.get_wave(wave.wave_id)
    assert first is not None
    assert second is not None
    await ledger.save_wave(dataclasses.replace(first.value, status=WaveStatus.PAUSED), first.etag)
    with pytest.raises(ConcurrencyConflict, match="changed since it was read"):
        await ledger.save_wave(dataclasses.replace(second.value, status=WaveStatus.SCANNING), second.etag)
    final = await ledger.get_wave(wave.wave_id)
    assert final is not None
    assert final.value.status is WaveStatus.PAUSED


async def test_save_of_a_wave_that_was_never_created_is_a_conflict(ledger: Ledger) -> None:
    wave = make_wave()
    etag = await ledger.create_wave(wave)
    with pytest.raises(ConcurrencyConflict, match="no longer exists"):
        await ledger.save_wave(make_wave(), etag)
    with pytest.raises(ConcurrencyConflict):
        await ledger.save_wave(wave, "")


async def test_naive_datetimes_are_refused_with_the_fix(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await ledger.create_wave(make_wave(created_at=datetime(2026, 1, 1)))


async def test_other_timezones_are_stored_as_the_same_instant(ledger: Ledger) -> None:
    local = T0.astimezone(timezone(timedelta(hours=-5)))
    wave = make_wave(created_at=local)
    await ledger.create_wave(wave)
    got = await ledger.get_wave(wave.wave_id)
    assert got is not None
    assert got.value.created_at == T0
    assert got.value.created_at.tzinfo == UTC


async def test_a_large_explicit_user_list_round_trips(ledger: Ledger, storage_connection_string: str) -> None:
    users = frozenset(guid() for _ in range(12_000))  # ~470k characters of JSON: 15 properties over 2 rows
    wave = make_wave(selection=Selection(kind=SelectionKind.USERS, users=users))
    assert len(users_rows(wave.wave_id, users).rows) == 2
    etag = await ledger.create_wave(wave)
    got = await ledger.get_wave(wave.wave_id)
    assert got is not None
    assert got.value == wave
    # A fresh reader (no cache) sees the same, and so does list_waves.
    async with Ledger(storage_connection_string, prefix=ledger.prefix) as other:
        again = await other.get_wave(wave.wave_id)
    assert again is not None
    assert again.value.selection.users == users
    assert [w for w in await ledger.list_waves() if w.wave_id == wave.wave_id] == [wave]
    # Saving with a changed list replaces it; the old wave row's ETag no longer works.
    fewer = frozenset(sorted(users)[:3000])  # still too long for one property
    changed = dataclasses.replace(wave, selection=Selection(kind=SelectionKind.USERS, users=fewer))
    await ledger.save_wave(changed, etag)
    saved = await ledger.get_wave(wave.wave_id)
    assert saved is not None
    assert saved.value.selection.users == fewer


async def test_a_rejected_duplicate_create_does_not_touch_the_stored_user_list(ledger: Ledger) -> None:
    users = frozenset(guid() for _ in range(2000))
    wave = make_wave(selection=Selection(kind=SelectionKind.USERS, users=users))
    await ledger.create_wave(wave)
    impostor = dataclasses.replace(
        wave, selection=Selection(kind=SelectionKind.USERS, users=frozenset({guid()} | users))
    )
    with pytest.raises(ConcurrencyConflict):
        await ledger.create_wave(impostor)
    got = await ledger.get_wave(wave.wave_id)
    assert got is not None
    assert got.value.selection.users == users


async def test_list_waves_is_oldest_first(ledger: Ledger) -> None:
    waves = [make_wave(created_at=T0 + timedelta(minutes=m)) for m in (5, 1, 3)]
    for wave in waves:
        await ledger.create_wave(wave)
    listed = await ledger.list_waves()
    assert [w.created_at for w in listed] == sorted(w.created_at for w in waves)


def test_transactions_hold_at_most_100_rows_of_one_partition() -> None:
    a, b = guid(), guid()
    entities = [outcome_to_entity(make_outcome(a, i)) for i in range(250)]
    entities += [outcome_to_entity(make_outcome(b, i)) for i in range(30)]
    entities.append(outcome_to_entity(make_outcome(a, 7, OutcomeStatus.REMOVED)))  # same row again: last wins
    chunks = transaction_chunks(entities)
    assert [len(c) for c in chunks] == [100, 100, 50, 30]
    assert all(len({e["PartitionKey"] for e in c}) == 1 for c in chunks)
    row7 = next(e for c in chunks for e in c if e["PartitionKey"] == a and e["RowKey"].startswith("00000007"))
    assert row7["status"] == "removed"


def test_transactions_also_respect_the_payload_limit() -> None:
    wave_id = guid()
    big = [dataclasses.replace(make_outcome(wave_id, i), detail="é" * 20_000) for i in range(200)]
    chunks = transaction_chunks([outcome_to_entity(o) for o in big])
    assert len(chunks) > 2
    assert sum(len(c) for c in chunks) == 200


async def test_put_and_iterate_outcomes(ledger: Ledger) -> None:
    wave_id = guid()
    statuses = [OutcomeStatus.PLANNED, OutcomeStatus.BLOCKED, OutcomeStatus.SKIPPED]
    outcomes = [make_outcome(wave_id, i, statuses[i % 3]) for i in range(250)]
    await ledger.put_outcomes(list(reversed(outcomes)))
    await ledger.put_outcomes([make_outcome(guid(), 1)])  # another wave's row is never listed

    every = [o async for o in ledger.iter_outcomes(wave_id)]
    assert every == outcomes  # RowKey order, exact round trip

    planned = [o async for o in ledger.iter_outcomes(wave_id, statuses={OutcomeStatus.PLANNED})]
    assert planned == [o for o in outcomes if o.status is OutcomeStatus.PLANNED]

    two = {OutcomeStatus.BLOCKED, OutcomeStatus.SKIPPED}
    after = outcomes[100].key
    page = [o async for o in ledger.iter_outcomes(wave_id, statuses=two, after_key=after, limit=20)]
    assert page == [o for o in outcomes if o.status in two and o.key > after][:20]

    assert [o async for o in ledger.iter_outcomes(wave_id, limit=0)] == []
    assert [o async for o in ledger.iter_outcomes(wave_id, statuses=[])] == []
    assert [o async for o in ledger.iter_outcomes(wave_id, after_key=outcomes[-1].key)] == []

    # Upsert replaces the whole row: a re-written row carries no stale properties.
    snap = DirectAssignment("6fd2c87f-b296-42f0-b197-1e91e994b900", frozenset())
    await ledger.put_outcomes([dataclasses.replace(outcomes[0], status=OutcomeStatus.REMOVED, snapshot=snap)])
    await ledger.put_outcomes([outcomes[0]])
    first = await ledger.get_outcome(wave_id, outcomes[0].user_id, outcomes[0].sku_id)
    assert first is not None
    assert first.value == outcomes[0]


async def test_untrusted_filter_values_are_parameters_not_odata(ledger: Ledger) -> None:
    wave_id = guid()
    await ledger.put_outcomes([make_outcome(wave_id, i) for i in range(3)])
    hostile = "' or PartitionKey ne '"
    assert [o async for o in ledger.iter_outcomes(wave_id, after_key=hostile)] != []
    assert [o async for o in ledger.iter_outcomes(wave_id, after_key="~" + hostile)] == []
    with pytest.raises(ValueError, match="cannot be a table key"):
        [o async for o in ledger.iter_outcomes("a/b")]


async def test_outcome_etags(ledger: Ledger) -> None:
    outcome = make_outcome(guid(), 1, OutcomeStatus.ENQUEUED)
    etag = await ledger.save_outcome(outcome, None)
    with pytest.raises(ConcurrencyConflict, match="already exists"):
        await ledger.save_outcome(outcome, None)
    read = await ledger.get_outcome(outcome.wave_id, outcome.user_id, outcome.sku_id)
    assert read is not None
    assert read.value == outcome
    assert read.etag == etag
    removing = dataclasses.replace(
        outcome,
        status=OutcomeStatus.REMOVING,
        snapshot=DirectAssignment("6fd2c87f-b296-42f0-b197-1e91e994b900", frozenset({guid()})),
        attempts=1,
    )
    newer = await ledger.save_outcome(removing, read.etag)
    with pytest.raises(ConcurrencyConflict, match="changed since it was read"):
        await ledger.save_outcome(dataclasses.replace(outcome, status=OutcomeStatus.FAILED), read.etag)
    final = await ledger.get_outcome(outcome.wave_id, outcome.user_id, outcome.sku_id)
    assert final is not None
    assert final.value == removing
    assert final.etag == newer
    assert await ledger.get_outcome(outcome.wave_id, guid(), outcome.sku_id) is None


async def test_free_text_is_truncated_visibly_and_structured_text_is_refused(ledger: Ledger) -> None:
    long = "é" * (MAX_STRING_UNITS + 500)
    outcome = dataclasses.replace(make_outcome(guid(), 1), detail=long, graph_error=long)
    await ledger.save_outcome(outcome, None)
    read = await ledger.get_outcome(outcome.wave_id, outcome.user_id, outcome.sku_id)
    assert read is not None
    assert read.value.detail.startswith("é" * 1000)
    assert read.value.detail.endswith(TRUNCATION_MARK.format(n=len(long) - len(read.value.detail.split(" …")[0])))
    assert len(read.value.detail) <= MAX_STRING_UNITS
    with pytest.raises(ValueError, match="user principal name"):
        await ledger.save_outcome(dataclasses.replace(outcome, user_principal_name="u" * 40_000), None)


async def test_control_defaults_then_saves_with_etags(ledger: Ledger) -> None:
    default = await ledger.get_control()
    assert default.value == Control()
    assert default.etag == ""
    on = Control(kill_switch=True, write_rate=7.5, updated_by="admin@contoso.example", updated_at=T0)
    etag = await ledger.save_control(on, default.etag)
    with pytest.raises(ConcurrencyConflict):
        await ledger.save_control(Control(write_rate=1.0), None)
    read = await ledger.get_control()
    assert read.value == on
    assert read.etag == etag
    off = dataclasses.replace(on, kill_switch=False)
    await ledger.save_control(off, read.etag)
    with pytest.raises(ConcurrencyConflict):
        await ledger.save_control(on, read.etag)
    assert (await ledger.get_control()).value == off


async def test_events_newest_first_since_and_kinds(ledger: Ledger) -> None:
    now = datetime.now(UTC)
    times = [now - timedelta(days=3), now - timedelta(days=1, hours=2), now - timedelta(hours=1), now]
    kinds = ["wave-started", "throttled", "restore", "throttled"]
    events = [
        Event(
            kind=k, message=f"event {i}", severity=Severity.WARNING, wave_id="w1", data={"i": i, "list": [1, "x"]}, at=t
        )
        for i, (k, t) in enumerate(zip(kinds, times, strict=True))
    ]
    for event in events:
        await ledger.record_event(event)
    await ledger.record_event(Event(kind="stamped", message="no time given"))

    recent = [e async for e in ledger.iter_events(now - timedelta(days=2))]
    assert [e.message for e in recent] == ["no time given", "event 3", "event 2", "event 1"]
    assert recent[1] == events[3]
    assert recent[0].at is not None
    assert recent[0].at >= now

    everything = [e async for e in ledger.iter_events(now - timedelta(days=400))]
    assert [e.message for e in everything][-1] == "event 0"

    exact = [e async for e in ledger.iter_events(times[2])]
    assert [e.message for e in exact] == ["no time given", "event 3", "event 2"]

    throttled = [e async for e in ledger.iter_events(now - timedelta(days=30), kinds={"throttled"})]
    assert [e.message for e in throttled] == ["event 3", "event 1"]
    assert [e async for e in ledger.iter_events(now - timedelta(days=30), kinds=[])] == []


async def test_an_oversized_event_is_recorded_shortened(ledger: Ledger) -> None:
    payload = {"body": "x" * 100_000}
    await ledger.record_event(Event(kind="rejected-request", message="y" * 50_000, data=payload))
    [event] = [e async for e in ledger.iter_events(datetime.now(UTC) - timedelta(minutes=5))]
    assert "truncated" in event.message
    assert "_truncated" in event.data


async def test_a_hand_edited_row_is_reported_not_misread(ledger: Ledger, storage_connection_string: str) -> None:
    wave = make_wave()
    await ledger.create_wave(wave)
    async with TableServiceClient.from_connection_string(storage_connection_string) as service:
        table = service.get_table_client(ledger.table_names["Waves"])
        entity = await table.get_entity("wave", wave.wave_id)
        entity["status"] = "exploded"
        await table.upsert_entity(entity)
    with pytest.raises(LedgerCorrupt, match="exploded"):
        await ledger.get_wave(wave.wave_id)


# Exact round trips of every field, over generated records --------------------------------------------

guids = st.uuids().map(str)
texts = st.text(max_size=40)
moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC))
counts = st.integers(min_value=0, max_value=2**40)
waves = st.builds(
    Wave,
    wave_id=guids,
    group_id=guids,
    sku_ids=st.lists(guids, max_size=4).map(tuple),
    selection=st.builds(
        Selection,
        kind=st.sampled_from(SelectionKind),
        count=counts,
        percent=st.floats(min_value=0, max_value=100, allow_nan=False),
        users=st.frozensets(texts, max_size=20),
    ),
    policy=st.sampled_from(Policy),
    dry_run=st.booleans(),
    force=st.booleans(),
    requested_by=texts,
    status=st.sampled_from(WaveStatus),
    created_at=moments,
    updated_at=moments,
    counters=st.builds(WaveCounters, **{f.name: counts for f in dataclasses.fields(WaveCounters)}),
    status_reason=texts,
    enqueue_cursor=texts,
    status_since=st.none() | moments,
    resume_to=st.sampled_from(["", *(s.value for s in WaveStatus)]),
)
WAVE_STRATEGY_FIELDS = (
    "wave_id", "group_id", "sku_ids", "selection", "policy", "dry_run", "force", "requested_by", "status",
    "created_at", "updated_at", "counters", "status_reason", "enqueue_cursor", "status_since", "resume_to",
)  # fmt: skip
outcomes = st.builds(
    Outcome,
    wave_id=guids,
    user_id=guids,
    sku_id=guids,
    status=st.sampled_from(OutcomeStatus),
    decision=st.sampled_from(["remove", "skip", "block"]),
    reason=texts,
    detail=texts,
    user_principal_name=texts,
    snapshot=st.none() | st.builds(DirectAssignment, sku_id=guids, disabled_plans=st.frozensets(guids, max_size=5)),
    before_plans=st.frozensets(guids, max_size=8),
    after_plans=st.frozensets(texts, max_size=8),
    attempts=counts,
    graph_error=texts,
    actor=texts,
    updated_at=st.none() | moments,
    relied_on=st.lists(
        st.builds(GroupOptions, group_id=guids, disabled_plans=st.frozensets(guids, max_size=4)), max_size=3
    ).map(tuple),
    removed_at=st.none() | moments,
)
ROUND_TRIP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@ROUND_TRIP
@given(wave=waves)
async def test_every_wave_field_round_trips(ledger: Ledger, wave: Wave) -> None:
    # The strategy must name every field, or a new one would silently round-trip only its default.
    assert set(WAVE_STRATEGY_FIELDS) == {f.name for f in dataclasses.fields(Wave)}
    wave = dataclasses.replace(wave, wave_id=guid())  # examples share the table; ids must not repeat
    etag = await ledger.create_wave(wave)
    got = await ledger.get_wave(wave.wave_id)
    assert got is not None
    assert got.value == wave
    assert got.etag == etag


@ROUND_TRIP
@given(outcome=outcomes)
async def test_every_outcome_field_round_trips(ledger: Ledger, outcome: Outcome) -> None:
    await ledger.put_outcomes([outcome])
    got = await ledger.get_outcome(outcome.wave_id, outcome.user_id, outcome.sku_id)
    assert got is not None
    assert got.value == outcome


@ROUND_TRIP
@given(
    control=st.builds(
        Control,
        kill_switch=st.booleans(),
        write_rate=st.floats(min_value=0, max_value=20, allow_nan=False),
        updated_by=texts,
        updated_at=st.none() | moments,
    )
)
async def test_every_control_field_round_trips(ledger: Ledger, control: Control) -> None:
    current = await ledger.get_control()
    await ledger.save_control(control, current.etag)
    assert (await ledger.get_control()).value == control


drift_states = st.builds(
    DriftState,
    user_id=guids,
    sku_id=guids,
    group_id=guids,
    wave_id=guids,
    first_seen=moments,
    last_seen=moments,
    user_principal_name=texts,
    group_name=texts,
    sku_name=texts,
    cleared_at=st.none() | moments,
    cleared_reason=texts,
    auto_removals=counts,
    auto_wave_id=st.sampled_from(["", guid()]),
    held=texts,
)


@ROUND_TRIP
@given(state=drift_states)
async def test_every_drift_field_round_trips(ledger: Ledger, state: DriftState) -> None:
    await ledger.put_drift([state])
    assert [s async for s in ledger.iter_drift() if s.key == state.key] == [state]
