"""A wave's counts and work index against Azurite: every status change of an outcome is one
transaction (row, index rows, move), a stale ETag changes nothing, the counts fold exactly, readers
of outcomes never see the rows beside them, and waves written before the index still work. Then the
scheduler's tick over them: it enqueues and re-sends what it finds by index, with exact counters.

Each test runs on a wave spread over shard partitions (what this version writes) and on a wave in
one partition (what versions before shards wrote, and still read the same way)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ServiceResponseError
from azure.data.tables.aio import TableClient

import factories
from licshift.adapters.entities import (
    COUNTS_ROW,
    OUTCOME_SHARDS,
    OUTCOMES,
    SHARDS_ROW,
    index_key,
    outcome_partition,
)
from licshift.adapters.ledger import Ledger
from licshift.ports.graph import GroupLicenseInfo
from licshift.ports.store import ConcurrencyConflict
from licshift.rules.census import WORK_STATUSES, empty_counts
from licshift.rules.decide import PROCESSING_COMPLETE
from licshift.rules.outcomes import Outcome, OutcomeStatus
from licshift.rules.waves import Selection, SelectionKind, Wave, WaveCounters, WaveStatus
from licshift.services import scheduler
from licshift.services.runtime import Runtime
from licshift.settings import Settings
from licshift_local.host_queues import HostQueues

pytestmark = pytest.mark.storage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
P, E, R = OutcomeStatus.PLANNED, OutcomeStatus.ENQUEUED, OutcomeStatus.REMOVING


def row(wave_id: str, n: int, status: OutcomeStatus = P, **changes: Any) -> Outcome:
    outcome = Outcome(
        wave_id=wave_id,
        user_id=f"{n:08d}-0000-4000-8000-000000000000",
        sku_id=E3,
        status=status,
        decision="remove",
        updated_at=T0,
    )
    return dataclasses.replace(outcome, **changes)


@pytest.fixture(params=[OUTCOME_SHARDS, 1], ids=["shards", "one-partition"])
async def ledger(request: pytest.FixtureRequest, storage_connection_string: str) -> AsyncIterator[Ledger]:
    """A ledger that writes new waves over shard partitions, or in one (as before shards)."""
    store = Ledger(storage_connection_string, prefix=f"t{uuid.uuid4().hex[:12]}", outcome_shards=request.param)
    await store.ensure_tables()
    try:
        yield store
    finally:
        await store.delete_tables()
        await store.aclose()


ONE_PARTITION = pytest.mark.parametrize("ledger", [1], indirect=True, ids=["one-partition"])
"""For waves as versions before the index wrote them: those never had shards either."""


async def raw(ledger: Ledger, wave_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every row of every partition of the wave, raw (outcomes, counts, journal, index and shards
    rows), by (PartitionKey, RowKey)."""
    client: TableClient = ledger._clients[OUTCOMES]
    query = client.query_entities(
        "PartitionKey ge @pk and PartitionKey le @last", parameters={"pk": wave_id, "last": wave_id + "|~"}
    )
    return {(str(e["PartitionKey"]), str(e["RowKey"])): dict(e) async for e in query}


async def partition(ledger: Ledger, wave_id: str) -> list[str]:
    """The RowKeys of the wave's rows, in every partition (a counts row once per partition)."""
    return sorted(row_key for _, row_key in await raw(ledger, wave_id))


async def consistent(ledger: Ledger, wave_id: str) -> dict[OutcomeStatus, int]:
    """Assert the counts and the index match the rows; return the counts."""
    rows = [o async for o in ledger.iter_outcomes(wave_id)]
    counts = await ledger.count_outcomes(wave_id)
    assert counts == {**empty_counts(), **Counter(o.status for o in rows)}
    index = {(pk, rk) for pk, rk in await raw(ledger, wave_id) if rk.startswith("~w|")}
    shards = await ledger._shards(wave_id)
    assert index == {
        (outcome_partition(wave_id, o.key, shards), index_key(o.status, o.key))
        for o in rows
        if o.status in WORK_STATUSES
    }
    for status in WORK_STATUSES:
        listed = [o.key async for o in ledger.iter_work(wave_id, status)]
        assert listed == sorted(o.key for o in rows if o.status is status)
    return counts


async def new_wave(ledger: Ledger, statuses: list[OutcomeStatus]) -> str:
    wave_id = str(uuid.uuid4())
    await ledger.put_outcomes([row(wave_id, n, s) for n, s in enumerate(statuses)])
    await ledger.index_outcomes(wave_id, Counter(statuses))
    return wave_id


async def test_a_status_change_moves_the_index_row_and_the_counts_in_one_transaction(ledger: Ledger) -> None:
    wave_id = await new_wave(ledger, [P, P, P, OutcomeStatus.BLOCKED, OutcomeStatus.SKIPPED])
    assert (await consistent(ledger, wave_id))[P] == 3
    loaded = await ledger.get_outcome(wave_id, row(wave_id, 1).user_id, E3)
    assert loaded is not None
    etag = await ledger.save_outcome(dataclasses.replace(loaded.value, status=E), loaded.etag)
    etag = await ledger.save_outcome(dataclasses.replace(loaded.value, status=R, attempts=1), etag)
    counts = await consistent(ledger, wave_id)
    assert (counts[P], counts[E], counts[R]) == (2, 0, 1)
    # A save that keeps the status refreshes the index row (the stale re-send reads its times).
    later = T0 + timedelta(minutes=5)
    await ledger.save_outcome(dataclasses.replace(loaded.value, status=R, updated_at=later), etag)
    (brief,) = [o async for o in ledger.iter_work(wave_id, R)]
    assert (brief.user_id, brief.sku_id, brief.updated_at) == (loaded.value.user_id, E3, later)
    await consistent(ledger, wave_id)
    # The moves were folded into the counts row and deleted.
    assert not [k for k in await partition(ledger, wave_id) if k.startswith("~j|")]


async def test_a_stale_etag_changes_nothing_at_all(ledger: Ledger) -> None:
    wave_id = await new_wave(ledger, [P, P])
    loaded = await ledger.get_outcome(wave_id, row(wave_id, 0).user_id, E3)
    assert loaded is not None
    await ledger.save_outcome(dataclasses.replace(loaded.value, status=E), loaded.etag)
    before = await raw(ledger, wave_id)
    for status in (OutcomeStatus.FAILED, E, P):
        with pytest.raises(ConcurrencyConflict):
            await ledger.save_outcome(dataclasses.replace(loaded.value, status=status), loaded.etag)
    with pytest.raises(ConcurrencyConflict):
        await ledger.save_outcome(row(wave_id, 1, OutcomeStatus.REMOVED), None)  # exists already
    assert await raw(ledger, wave_id) == before
    assert (await consistent(ledger, wave_id))[E] == 1


async def test_another_ledger_instance_learns_the_old_status_by_reading(
    ledger: Ledger, storage_connection_string: str
) -> None:
    wave_id = await new_wave(ledger, [P, P])
    loaded = await ledger.get_outcome(wave_id, row(wave_id, 0).user_id, E3)
    assert loaded is not None
    other = Ledger(storage_connection_string, prefix=ledger.prefix)
    try:
        etag = await other.save_outcome(dataclasses.replace(loaded.value, status=E), loaded.etag)
        with pytest.raises(ConcurrencyConflict):
            await other.save_outcome(dataclasses.replace(loaded.value, status=R), loaded.etag)
        await ledger.save_outcome(dataclasses.replace(loaded.value, status=R), etag)
    finally:
        await other.aclose()
    counts = await consistent(ledger, wave_id)
    assert (counts[P], counts[R]) == (1, 1)


async def test_a_missing_index_row_does_not_block_the_row_and_is_put_right(ledger: Ledger) -> None:
    wave_id = await new_wave(ledger, [P])
    loaded = await ledger.get_outcome(wave_id, row(wave_id, 0).user_id, E3)
    assert loaded is not None
    where = outcome_partition(wave_id, loaded.value.key, await ledger._shards(wave_id))
    await ledger._clients[OUTCOMES].delete_entity(where, index_key(P, loaded.value.key))  # a hand edit
    await ledger.save_outcome(dataclasses.replace(loaded.value, status=E), loaded.etag)
    assert (await consistent(ledger, wave_id))[E] == 1


async def test_readers_of_outcomes_never_see_the_rows_beside_them(ledger: Ledger) -> None:
    wave_id = await new_wave(ledger, [P, E, R, OutcomeStatus.REMOVED])
    loaded = await ledger.get_outcome(wave_id, row(wave_id, 0).user_id, E3)
    assert loaded is not None
    await ledger.save_outcome(dataclasses.replace(loaded.value, status=E), loaded.etag)  # a journal row
    row_keys = await partition(ledger, wave_id)
    assert COUNTS_ROW in row_keys
    assert {k[:3] for k in row_keys if k.startswith("~") and k not in (COUNTS_ROW, SHARDS_ROW)} == {"~w|", "~j|"}
    every = [o async for o in ledger.iter_outcomes(wave_id)]
    assert [o.user_id for o in every] == [row(wave_id, n).user_id for n in range(4)]
    assert [o async for o in ledger.iter_outcomes(wave_id, statuses=[E], fields=("user_id",))] != []
    assert [o async for o in ledger.iter_outcomes(wave_id, after_key=every[-1].key)] == []


async def test_the_stale_filter_and_the_cursor_read_only_what_they_ask_for(ledger: Ledger) -> None:
    wave_id = str(uuid.uuid4())
    old, new = T0, T0 + timedelta(minutes=30)
    rows = [row(wave_id, n, E, updated_at=old if n % 2 else new) for n in range(6)]
    await ledger.put_outcomes(rows)
    await ledger.index_outcomes(wave_id, {E: 6})
    stale = [o.user_id async for o in ledger.iter_work(wave_id, E, stale_before=T0 + timedelta(minutes=1))]
    assert stale == [rows[n].user_id for n in (1, 3, 5)]
    after = [o.user_id async for o in ledger.iter_work(wave_id, E, after_key=rows[2].key, limit=2)]
    assert after == [rows[3].user_id, rows[4].user_id]
    with pytest.raises(ValueError, match="not a work status"):
        [o async for o in ledger.iter_work(wave_id, OutcomeStatus.REMOVED)]


async def test_a_rescan_over_old_rows_is_reindexed_from_the_rows(ledger: Ledger) -> None:
    wave_id = str(uuid.uuid4())
    await ledger.put_outcomes([row(wave_id, n) for n in range(5)])
    await ledger.index_outcomes(wave_id, {P: 5})
    # A scan again (a crash before the wave moved on): two rows are now blocked, their old index rows stay.
    await ledger.put_outcomes([row(wave_id, n, OutcomeStatus.BLOCKED if n < 2 else P) for n in range(5)])
    counts = await ledger.index_outcomes(wave_id, {P: 3, OutcomeStatus.BLOCKED: 2})  # counts row exists: recount
    assert (counts[P], counts[OutcomeStatus.BLOCKED]) == (3, 2)
    await consistent(ledger, wave_id)


@ONE_PARTITION
async def test_a_wave_written_before_the_index_is_counted_and_searched_from_its_rows(ledger: Ledger) -> None:
    wave_id = str(uuid.uuid4())
    for n, status in enumerate([P, P, E, OutcomeStatus.REMOVED]):
        await ledger.save_outcome(row(wave_id, n, status, updated_at=T0 - timedelta(hours=n)), None)
    loaded = await ledger.get_outcome(wave_id, row(wave_id, 0).user_id, E3)
    assert loaded is not None
    await ledger.save_outcome(dataclasses.replace(loaded.value, status=E), loaded.etag)
    assert not [k for k in await partition(ledger, wave_id) if k.startswith("~")]
    counts = await ledger.count_outcomes(wave_id)
    assert (counts[P], counts[E], counts[OutcomeStatus.REMOVED]) == (1, 2, 1)
    assert [o.user_id async for o in ledger.iter_work(wave_id, P)] == [row(wave_id, 1).user_id]
    stale = [o.user_id async for o in ledger.iter_work(wave_id, E, stale_before=T0 - timedelta(minutes=1))]
    assert stale == [row(wave_id, 2).user_id]


async def test_a_batch_save_skips_a_changed_row_and_saves_every_other_one(ledger: Ledger) -> None:
    """60 rows in three transactions: one row changed since it was read fails its whole transaction,
    which changes nothing, and its other rows are then saved one by one; the other transactions go."""
    wave_id = await new_wave(ledger, [P] * 60)
    loaded = [await ledger.get_outcome(wave_id, row(wave_id, n).user_id, E3) for n in range(60)]
    current = [v for v in loaded if v is not None]
    raced = current[30]
    await ledger.save_outcome(dataclasses.replace(raced.value, status=R), raced.etag)  # another tick
    changes = [(dataclasses.replace(v.value, status=E, updated_at=T0 + timedelta(minutes=1)), v.etag) for v in current]
    saved = await ledger.save_outcomes(wave_id, changes)
    assert set(saved) == {v.value.key for v in current} - {raced.value.key}
    counts = await consistent(ledger, wave_id)
    assert (counts[P], counts[E], counts[R]) == (0, 59, 1)
    keys = [v.value.key for v in current]
    assert await ledger.get_outcomes(wave_id, keys, P) == {}
    assert list(await ledger.get_outcomes(wave_id, keys, R)) == [raced.value.key]
    enqueued = await ledger.get_outcomes(wave_id, keys[10:50], E)
    assert {k: v.etag for k, v in enqueued.items()} == {k: saved[k] for k in keys[10:50] if k != raced.value.key}
    # Saved again from the ETags they were read at: every row changed since, so nothing is saved.
    assert await ledger.save_outcomes(wave_id, changes) == {}
    assert await consistent(ledger, wave_id) == counts
    with pytest.raises(ValueError, match="only"):
        await ledger.save_outcomes(str(uuid.uuid4()), changes[:1])


async def test_random_status_walks_keep_counts_and_index_exact(ledger: Ledger) -> None:
    """Many moves (more than one fold transaction of 99), some from stale ETags, counted while
    they happen and by two counters at once: the counts always equal the rows."""
    rng = random.Random(8)
    wave_id = await new_wave(ledger, [P] * 12)
    statuses = list(OutcomeStatus)
    for step in range(160):
        n = rng.randrange(12)
        loaded = await ledger.get_outcome(wave_id, row(wave_id, n).user_id, E3)
        assert loaded is not None
        etag = loaded.etag if rng.random() > 0.1 else '"stale"'
        try:
            await ledger.save_outcome(dataclasses.replace(loaded.value, status=rng.choice(statuses)), etag)
        except ConcurrencyConflict:
            assert etag == '"stale"'
        if step in (40, 130):
            await consistent(ledger, wave_id)
    first, second = await asyncio.gather(ledger.count_outcomes(wave_id), ledger.count_outcomes(wave_id))
    assert first == second == await consistent(ledger, wave_id)


# --- the tick over the index ---------------------------------------------------------------------

PLANNED, REMOVED = 30, 20


class ProcessedGroup:
    """The only Graph call a removing tick makes: the group's processing state (complete)."""

    async def group_license_info(self, group_id: str) -> GroupLicenseInfo:
        return GroupLicenseInfo(group_id, "All users", PROCESSING_COMPLETE, ())

    def take_usage(self) -> float:
        return 0.0


def rows(wave_id: str, now: datetime) -> list[Outcome]:
    return [
        Outcome(
            wave_id=wave_id,
            user_id=f"{i:08d}-0000-4000-8000-000000000000",
            sku_id=E3,
            status=OutcomeStatus.REMOVED if i < REMOVED else OutcomeStatus.PLANNED,
            decision="remove",
            updated_at=now,
        )
        for i in range(REMOVED + PLANNED)
    ]


async def removing_wave(ledger: Ledger, now: datetime, *, indexed: bool) -> Wave:
    wave = factories.wave(
        WaveStatus.REMOVING,
        selection=Selection(SelectionKind.ALL),
        force=True,
        created_at=now,
        updated_at=now,
        counters=WaveCounters(members=50, selected=50, to_remove=50, planned=PLANNED, removed=REMOVED),
    )
    if indexed:
        await ledger.put_outcomes(rows(wave.wave_id, now))
        await ledger.index_outcomes(wave.wave_id, {OutcomeStatus.PLANNED: PLANNED, OutcomeStatus.REMOVED: REMOVED})
    else:  # as an older version wrote it: rows only
        for row in rows(wave.wave_id, now):
            await ledger.save_outcome(row, None)
    await ledger.create_wave(wave)
    return wave


@pytest.mark.parametrize(
    ("ledger", "indexed"),
    [(OUTCOME_SHARDS, True), (1, True), (1, False)],
    indirect=["ledger"],
    ids=["indexed-shards", "indexed-one-partition", "older-wave"],
)
async def test_a_tick_enqueues_by_index_resends_stuck_rows_and_counts_exactly(
    ledger: Ledger, work_queue: HostQueues, indexed: bool, storage_connection_string: str
) -> None:
    """The wave is written by `ledger` and ticked by another process of this version (set to shards,
    whatever layout the wave has)."""
    clock = [datetime(2026, 3, 1, 12, 0, tzinfo=UTC)]
    settings = Settings(tick_seconds=60, removals_queue=work_queue.removals_queue, waves_queue=work_queue.waves_queue)
    ticker = Ledger(storage_connection_string, prefix=ledger.prefix)
    rt = Runtime(settings, ProcessedGroup(), ticker, work_queue, clock=lambda: clock[0])  # type: ignore[arg-type]
    try:
        await _tick_and_check(rt, ledger, work_queue, clock, indexed=indexed)
    finally:
        await ticker.aclose()


async def _tick_and_check(
    rt: Runtime, ledger: Ledger, work_queue: HostQueues, clock: list[datetime], *, indexed: bool
) -> None:
    settings = rt.settings
    wave = await removing_wave(ledger, clock[0], indexed=indexed)

    report = await scheduler.tick(rt)
    assert report.enqueued == PLANNED
    after = await ledger.get_wave(wave.wave_id)
    assert after is not None
    counters = after.value.counters
    assert (counters.planned, counters.enqueued, counters.removed) == (0, PLANNED, REMOVED)
    assert await work_queue.approximate_count(work_queue.removals_queue) == PLANNED
    if indexed:
        assert (await consistent(ledger, wave.wave_id))[OutcomeStatus.ENQUEUED] == PLANNED
    else:
        assert not [k for k in await partition(ledger, wave.wave_id) if k.startswith("~")]

    # One row finishes; the others' messages are lost: past the stale window their tasks go out again.
    done = await ledger.get_outcome(wave.wave_id, f"{REMOVED:08d}-0000-4000-8000-000000000000", E3)
    assert done is not None
    await ledger.save_outcome(dataclasses.replace(done.value, status=OutcomeStatus.REMOVED), done.etag)
    await work_queue.clear(work_queue.removals_queue)
    clock[0] += scheduler.stale_after(settings.tick_seconds) + timedelta(seconds=1)
    await scheduler.tick(rt)
    assert await work_queue.approximate_count(work_queue.removals_queue) == PLANNED - 1
    after = await ledger.get_wave(wave.wave_id)
    assert after is not None
    assert (after.value.counters.enqueued, after.value.counters.removed) == (PLANNED - 1, REMOVED + 1)
    resent = [o async for o in ledger.iter_outcomes(wave.wave_id, statuses=[OutcomeStatus.ENQUEUED])]
    assert {o.updated_at for o in resent} == {clock[0]}
    if indexed:
        await consistent(ledger, wave.wave_id)


class LostAnswer:
    """The Outcomes table client, except that the first transaction's answer is lost: the
    connection breaks after Azurite applied it (`applied`) or before it reached Azurite."""

    def __init__(self, client: TableClient, *, applied: bool) -> None:
        self._client = client
        self._applied = applied
        self.broke = False
        self.lost: set[str] = set()
        """The outcome keys of the transaction whose answer was lost."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def submit_transaction(self, operations: Any, **kwargs: Any) -> Any:
        if self.broke:
            return await self._client.submit_transaction(operations, **kwargs)
        self.broke = True
        operations = list(operations)
        self.lost = {str(e["RowKey"]) for op, e, *_ in operations if op == "update"}
        if self._applied:
            await self._client.submit_transaction(operations, **kwargs)
        raise ServiceResponseError("Connection reset by peer")


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
async def test_a_batch_whose_answer_is_lost_saves_the_rest_and_never_claims_an_unknown_row(
    ledger: Ledger, applied: bool
) -> None:
    """A row is reported saved only with the ETag of a save known to have happened: a transaction
    applied without an answer leaves its rows out (they are in their new status; the caller treats
    them as after a crash), one that never arrived is saved row by row."""
    wave_id = await new_wave(ledger, [P] * 60)
    loaded = [await ledger.get_outcome(wave_id, row(wave_id, n).user_id, E3) for n in range(60)]
    current = [v for v in loaded if v is not None]
    changes = [(dataclasses.replace(v.value, status=E, updated_at=T0 + timedelta(minutes=1)), v.etag) for v in current]
    broken = LostAnswer(ledger._clients[OUTCOMES], applied=applied)
    ledger._clients[OUTCOMES] = broken  # type: ignore[assignment]
    try:
        saved = await ledger.save_outcomes(wave_id, changes)
    finally:
        ledger._clients[OUTCOMES] = broken._client
    assert broken.broke
    counts = await consistent(ledger, wave_id)
    assert counts[E] == 60, "every row ends ENQUEUED either way"
    enqueued = await ledger.get_outcomes(wave_id, [v.value.key for v in current], E)
    assert all(enqueued[k].etag == etag for k, etag in saved.items()), "a reported ETag is the row's"
    keys = {v.value.key for v in current}
    assert broken.lost, "the broken transaction changed rows"
    assert set(saved) == (keys - broken.lost if applied else keys), "only the broken transaction's rows are unknown"
