"""A wave's outcomes over shard partitions, against Azurite: where the rows land (each shard with
its own counts row, journal and index), that every LedgerStore method answers as it did with one
partition (key order, cursors and limits merged across shards), that the layout is decided once per
wave, and that a wave written in one partition (before shards) keeps working through this ledger."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from licshift.adapters.entities import (
    COUNTS_ROW,
    OUTCOME_SHARDS,
    OUTCOMES,
    SHARDS_ROW,
    counts_from_entity,
    index_key,
    outcome_partition,
)
from licshift.adapters.ledger import Ledger
from licshift.rules.census import WORK_STATUSES, empty_counts
from licshift.rules.outcomes import Outcome, OutcomeStatus

pytestmark = pytest.mark.storage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
P, E, R = OutcomeStatus.PLANNED, OutcomeStatus.ENQUEUED, OutcomeStatus.REMOVING
B, S = OutcomeStatus.BLOCKED, OutcomeStatus.SKIPPED


def row(wave_id: str, n: int, status: OutcomeStatus = P, **changes: Any) -> Outcome:
    # Users numbered in a scrambled order, so key order is not the order of writing.
    outcome = Outcome(
        wave_id=wave_id,
        user_id=f"{(n * 7919) % 100_003:08d}-0000-4000-8000-000000000000",
        sku_id=E3,
        status=status,
        decision="remove",
        updated_at=T0,
    )
    return dataclasses.replace(outcome, **changes)


async def raw(ledger: Ledger, wave_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Every row of every partition of the wave, by (PartitionKey, RowKey)."""
    client: TableClient = ledger._clients[OUTCOMES]
    query = client.query_entities(
        "PartitionKey ge @pk and PartitionKey le @last", parameters={"pk": wave_id, "last": wave_id + "|~"}
    )
    return {(str(e["PartitionKey"]), str(e["RowKey"])): dict(e) async for e in query}


@pytest.fixture
async def other(ledger: Ledger, storage_connection_string: str) -> AsyncIterator[Ledger]:
    """A second process on the same tables (its own caches), set to write new waves in one partition."""
    store = Ledger(storage_connection_string, prefix=ledger.prefix, outcome_shards=1)
    try:
        yield store
    finally:
        await store.aclose()


def test_the_shard_of_a_key_never_changes() -> None:
    # Rows already written are found by this function: a different hash would lose them.
    key = f"00000001-0000-4000-8000-000000000000_{E3}"
    assert outcome_partition("w", key, 16) == "w|15"
    assert outcome_partition("w", key, 1) == "w"
    assert {outcome_partition("w", f"{n}_{E3}", 16) for n in range(200)} == {f"w|{n:02d}" for n in range(16)}


async def test_a_new_waves_rows_spread_over_shards_each_with_its_own_counts_and_index(ledger: Ledger) -> None:
    wave_id = str(uuid.uuid4())
    statuses = [(P, B, S, P)[n % 4] for n in range(300)]
    await ledger.put_outcomes([row(wave_id, n, s) for n, s in enumerate(statuses)])
    assert await ledger.index_outcomes(wave_id, Counter(statuses)) == {**empty_counts(), **Counter(statuses)}
    loaded = await ledger.get_outcome(wave_id, row(wave_id, 0).user_id, E3)
    assert loaded is not None
    await ledger.save_outcome(dataclasses.replace(loaded.value, status=E), loaded.etag)  # a journal row

    rows = await raw(ledger, wave_id)
    assert [(k, v["shards"]) for k, v in rows.items() if k[0] == wave_id] == [((wave_id, SHARDS_ROW), OUTCOME_SHARDS)]
    outcomes = {k: v for k, v in rows.items() if not k[1].startswith("~")}
    assert len(outcomes) == 300
    assert {pk for pk, _ in outcomes} == {f"{wave_id}|{n:02d}" for n in range(OUTCOME_SHARDS)}
    for pk, key in outcomes:
        assert pk == outcome_partition(wave_id, key, OUTCOME_SHARDS)
        if outcomes[(pk, key)]["status"] in {s.value for s in WORK_STATUSES}:
            assert (pk, index_key(OutcomeStatus(outcomes[(pk, key)]["status"]), key)) in rows
    journal = [pk for pk, rk in rows if rk.startswith("~j|")]
    assert journal == [outcome_partition(wave_id, loaded.value.key, OUTCOME_SHARDS)]
    # Each shard's counts row counts the rows of its own partition (the scan's counts, split).
    for n in range(OUTCOME_SHARDS):
        pk = f"{wave_id}|{n:02d}"
        mine = Counter(OutcomeStatus(v["status"]) for (p, _), v in outcomes.items() if p == pk)
        if pk == outcome_partition(wave_id, loaded.value.key, OUTCOME_SHARDS):
            mine[E] -= 1  # the move is not folded yet
            mine[P] += 1
        assert counts_from_entity(rows[(pk, COUNTS_ROW)]) == {**empty_counts(), **mine}
    counts = await ledger.count_outcomes(wave_id)
    assert counts == {**empty_counts(), **Counter(statuses), P: statuses.count(P) - 1, E: 1}


async def test_work_and_outcomes_come_in_key_order_across_shards_with_cursor_and_limit(ledger: Ledger) -> None:
    wave_id = str(uuid.uuid4())
    old = T0 - timedelta(hours=1)
    plan = [row(wave_id, n, (P, P, E, B, R)[n % 5], updated_at=old if n % 3 == 0 else T0) for n in range(160)]
    await ledger.put_outcomes(plan)
    await ledger.index_outcomes(wave_id, Counter(o.status for o in plan))
    keys = {status: sorted(o.key for o in plan if o.status is status) for status in OutcomeStatus}

    assert [o.key async for o in ledger.iter_work(wave_id, P)] == keys[P]
    # The scheduler's walk: a page of slots after the cursor, again and again.
    walked: list[str] = []
    while True:
        page = [o.key async for o in ledger.iter_work(wave_id, P, after_key=walked[-1] if walked else "", limit=7)]
        if not page:
            break
        assert len(page) <= 7
        walked += page
    assert walked == keys[P]
    assert [o.key async for o in ledger.iter_work(wave_id, P, after_key=keys[P][20], limit=5)] == keys[P][21:26]
    assert [o.key async for o in ledger.iter_work(wave_id, E, limit=1)] == keys[E][:1]
    assert [o async for o in ledger.iter_work(wave_id, R, limit=0)] == []
    stale = [o.key async for o in ledger.iter_work(wave_id, R, stale_before=T0 - timedelta(minutes=1))]
    assert stale == sorted(o.key for o in plan if o.status is R and o.updated_at == old)
    brief = [o async for o in ledger.iter_work(wave_id, E)]
    assert {o.wave_id for o in brief} == {wave_id}

    every = [o async for o in ledger.iter_outcomes(wave_id)]
    assert every == sorted(plan, key=lambda o: o.key)
    two = {B, R}
    after = every[40].key
    page = [o.key async for o in ledger.iter_outcomes(wave_id, statuses=two, after_key=after, limit=9)]
    assert page == [o.key for o in every if o.status in two and o.key > after][:9]
    brief_rows = [o async for o in ledger.iter_outcomes(wave_id, statuses=[P], fields=("user_id", "sku_id"), limit=3)]
    assert [(o.wave_id, o.key, o.status) for o in brief_rows] == [(wave_id, k, P) for k in keys[P][:3]]
    assert [o async for o in ledger.iter_outcomes(wave_id, after_key=every[-1].key)] == []

    wanted = keys[P][::4] + keys[E][:3]
    found = await ledger.get_outcomes(wave_id, wanted, P)
    assert sorted(found) == keys[P][::4]
    assert all(v.value == next(o for o in plan if o.key == k) for k, v in found.items())
    assert await ledger.count_outcomes(wave_id) == {**empty_counts(), **Counter(o.status for o in plan)}


async def test_a_batch_save_over_shards_leaves_out_only_the_changed_row(ledger: Ledger) -> None:
    wave_id = str(uuid.uuid4())
    await ledger.put_outcomes([row(wave_id, n) for n in range(80)])
    await ledger.index_outcomes(wave_id, {P: 80})
    current = [v async for v in _loaded(ledger, wave_id, range(80))]
    raced = current[33]
    await ledger.save_outcome(dataclasses.replace(raced.value, status=R), raced.etag)
    changes = [(dataclasses.replace(v.value, status=E), v.etag) for v in current]
    saved = await ledger.save_outcomes(wave_id, changes)
    assert set(saved) == {v.value.key for v in current} - {raced.value.key}
    assert await ledger.count_outcomes(wave_id) == {**empty_counts(), E: 79, R: 1}
    assert [o.key async for o in ledger.iter_work(wave_id, E)] == sorted(saved)
    assert await ledger.save_outcomes(wave_id, changes) == {}


async def _loaded(ledger: Ledger, wave_id: str, numbers: range) -> AsyncIterator[Any]:
    for n in numbers:
        loaded = await ledger.get_outcome(wave_id, row(wave_id, n).user_id, E3)
        assert loaded is not None
        yield loaded


async def test_the_layout_is_decided_once_by_the_first_write_whoever_makes_it(
    ledger: Ledger, other: Ledger, storage_connection_string: str
) -> None:
    """Two processes write the first rows of a wave at once, even set to different shard counts:
    one of them records the layout, the other follows it, and neither loses a row. A process set to
    write one partition (as before shards) follows a layout already recorded too."""
    wave_id = str(uuid.uuid4())
    plan = [row(wave_id, n) for n in range(120)]
    eight = Ledger(storage_connection_string, prefix=ledger.prefix, outcome_shards=8)
    try:
        await asyncio.gather(ledger.put_outcomes(plan[:60]), eight.put_outcomes(plan[60:]))
        rows = await raw(ledger, wave_id)
        shards = int(rows[(wave_id, SHARDS_ROW)]["shards"])
        assert shards in (8, OUTCOME_SHARDS)
        written = {k for k in rows if not k[1].startswith("~")}
        assert written == {(outcome_partition(wave_id, o.key, shards), o.key) for o in plan}
        counts = await eight.index_outcomes(wave_id, {P: 120})  # not all of it written here: recounted
        assert counts[P] == 120
        more = [row(wave_id, n) for n in range(120, 130)]  # a scan's later page, by a third process
        await other.put_outcomes(more)
        for store in (ledger, eight, other):
            assert [o.key async for o in store.iter_outcomes(wave_id)] == sorted(o.key for o in plan + more)
            assert [o.key async for o in store.iter_work(wave_id, P, limit=4)] == sorted(o.key for o in plan + more)[:4]
        assert {pk for pk, _ in await raw(ledger, wave_id)} == {wave_id, *(f"{wave_id}|{n:02d}" for n in range(shards))}
    finally:
        await eight.aclose()


async def test_counts_a_scan_gives_that_do_not_match_its_rows_are_recounted(ledger: Ledger) -> None:
    wave_id = str(uuid.uuid4())
    await ledger.put_outcomes([row(wave_id, n, P if n % 2 else B) for n in range(40)])
    counts = await ledger.index_outcomes(wave_id, {P: 21, B: 20})
    assert (counts[P], counts[B]) == (20, 20)
    assert await ledger.count_outcomes(wave_id) == {**empty_counts(), P: 20, B: 20}


async def test_a_wave_written_in_one_partition_keeps_working_through_a_sharded_ledger(
    ledger: Ledger, other: Ledger
) -> None:
    """`other` writes as versions before shards did (one partition, with and without the index);
    this ledger, set to shards, then reads and changes them through every method, and they stay
    in their one partition."""
    indexed, older = str(uuid.uuid4()), str(uuid.uuid4())
    plan = [row(indexed, n, (P, P, B)[n % 3]) for n in range(45)]
    await other.put_outcomes(plan)
    await other.index_outcomes(indexed, Counter(o.status for o in plan))
    for n, status in enumerate([P, P, E, OutcomeStatus.REMOVED]):
        await other.save_outcome(row(older, n, status), None)

    planned = sorted(o.key for o in plan if o.status is P)
    assert [o.key async for o in ledger.iter_work(indexed, P, after_key=planned[3], limit=4)] == planned[4:8]
    assert [o.key async for o in ledger.iter_outcomes(indexed, statuses=[B])] == sorted(
        o.key for o in plan if o.status is B
    )
    first = await ledger.get_outcome(indexed, plan[0].user_id, E3)
    assert first is not None
    await ledger.save_outcome(dataclasses.replace(first.value, status=E), first.etag)
    batch = await ledger.get_outcomes(indexed, planned[:10], P)
    changes = [(dataclasses.replace(v.value, status=E), v.etag) for v in batch.values()]
    saved = await ledger.save_outcomes(indexed, changes)
    assert len(saved) == len(batch) == (10 if plan[0].key not in planned[:10] else 9)
    counts = await ledger.count_outcomes(indexed)
    assert (counts[P], counts[E], counts[B]) == (30 - 1 - len(saved), 1 + len(saved), 15)
    assert await ledger.index_outcomes(indexed) == counts  # a re-index covers the one partition
    await ledger.put_outcomes([dataclasses.replace(plan[1], detail="scanned again")])

    loaded = await ledger.get_outcome(older, row(older, 0).user_id, E3)
    assert loaded is not None
    await ledger.save_outcome(dataclasses.replace(loaded.value, status=E), loaded.etag)
    counts = await ledger.count_outcomes(older)
    assert (counts[P], counts[E], counts[OutcomeStatus.REMOVED]) == (1, 2, 1)
    assert [o.key async for o in ledger.iter_work(older, E)] == sorted([row(older, 0).key, row(older, 2).key])

    for wave_id in (indexed, older):
        assert {pk for pk, _ in await raw(ledger, wave_id)} == {wave_id}
        assert (wave_id, SHARDS_ROW) not in await raw(ledger, wave_id)
    assert not [k for k in await raw(ledger, older) if k[1].startswith("~")]
