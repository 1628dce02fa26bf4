"""The ledger on Azure Table Storage: waves, outcomes, the control row and events (S4, S6).

`Ledger` implements `LedgerStore` (licshift.ports.store) over azure-data-tables (async). It is the
only code that talks to tables; how records become entities is licshift.adapters.entities, and
docs/ledger.md documents every table, key and property.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, TypeVar

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableEntity, TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from licshift.adapters.clients import OwnsClients, environment_settings, storage_credential
from licshift.adapters.entities import (
    ANSWER_PARTITION,
    CONTROL,
    CONTROL_PARTITION,
    CONTROL_ROW,
    COUNTS_ROW,
    DRIFT_PARTITION,
    EVENTS,
    INDEX_PREFIX,
    INDEX_SELECT,
    JOURNAL_PREFIX,
    LEASE_ROW,
    LEDGER_ROWS,
    OUTCOME_SHARDS,
    OUTCOMES,
    PACING_ROW,
    SHARDS_ROW,
    SWITCH_LOG_LIMIT,
    SWITCH_LOG_PARTITION,
    TRANSACTION_BYTES,
    TRANSACTION_OPERATIONS,
    USERS_PARTITION_PREFIX,
    WAVE_PARTITION,
    WAVES,
    UsersRows,
    _fit,
    _read_datetime,
    _read_int,
    _text,
    _utc,
    answer_from_entity,
    answer_to_entity,
    check_key,
    control_from_entity,
    control_to_entity,
    counts_from_entity,
    counts_to_entity,
    drift_from_entity,
    drift_to_entity,
    event_from_entity,
    event_to_entity,
    index_entity,
    index_key,
    index_range,
    inverted_ticks,
    journal_entity,
    move_from_entity,
    outcome_from_entity,
    outcome_partition,
    outcome_partitions,
    outcome_to_entity,
    shards_from_entity,
    shards_to_entity,
    table_names,
    transaction_chunks,
    users_from_rows,
    wave_from_entity,
    wave_to_entity,
)
from licshift.ports.store import ConcurrencyConflict, Versioned
from licshift.rules.answers import Answer
from licshift.rules.census import WORK_STATUSES, empty_counts, fold, move_of
from licshift.rules.outcomes import (
    Control,
    DriftState,
    Event,
    Outcome,
    OutcomeStatus,
    TickLease,
    outcome_key,
)
from licshift.rules.waves import Wave
from licshift.settings import Settings, SettingsError

log = logging.getLogger(__name__)
WRITE_CONCURRENCY: Final = 4
PAGE_SIZE: Final = 1000


def _or_equals(field: str, values: Sequence[str], prefix: str, params: dict[str, Any]) -> str:
    names = []
    for i, value in enumerate(values):
        params[f"{prefix}{i}"] = value
        names.append(f"{field} eq @{prefix}{i}")
    # The SDK substitutes @names in words split on spaces: keep the parentheses apart from them.
    return "( " + " or ".join(names) + " )"


def _indexes_current(row_key: str, working: Mapping[str, OutcomeStatus]) -> bool:
    """Whether index row `row_key` (`~w|<status>|<key>`) names the status its outcome has."""
    _, status, key = row_key.split("|", 2)
    return key in working and working[key].value == status


Operation = tuple[str, dict[str, Any], dict[str, Any]]


def _row_operations(entity: dict[str, Any], before: OutcomeStatus | None, etag: str | None) -> list[Operation]:
    """The operations that save one outcome row in a wave with counts: the row (on its ETag), its
    old index row out, its new one in, and the move for the counts."""
    after = OutcomeStatus(entity["status"])
    wave_id, key = str(entity["PartitionKey"]), str(entity["RowKey"])
    ops: list[Operation] = [
        (
            "update",
            entity,
            {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
        )
        if etag
        else ("create", entity, {})
    ]
    if before in WORK_STATUSES and before is not after:
        ops.append(("delete", {"PartitionKey": wave_id, "RowKey": index_key(before, key)}, {}))
    if after in WORK_STATUSES:
        ops.append(("upsert", index_entity(entity), {"mode": UpdateMode.REPLACE}))
    move = move_of(before, after)
    if move is not None:
        ops.append(("create", journal_entity(wave_id, move, datetime.now(UTC)), {}))
    return ops


@dataclass(frozen=True)
class _RowChange:
    outcome: Outcome
    etag: str
    ops: list[Operation]


def _change_chunks(rows: Sequence[_RowChange]) -> list[list[_RowChange]]:
    """Rows grouped into transactions Table Storage accepts: at most 100 operations and about
    3.5 MB of payload, a row's operations never split."""
    chunks: list[list[_RowChange]] = []
    chunk: list[_RowChange] = []
    count = size = 0
    for row in rows:
        weight = len(json.dumps(row.ops[0][1], default=str).encode("utf-8")) + 512 * len(row.ops)
        if chunk and (count + len(row.ops) > TRANSACTION_OPERATIONS or size + weight > TRANSACTION_BYTES):
            chunks.append(chunk)
            chunk, count, size = [], 0, 0
        chunk.append(row)
        count += len(row.ops)
        size += weight
    if chunk:
        chunks.append(chunk)
    return chunks


_T = TypeVar("_T")


async def _bounded(calls: Iterable[Awaitable[_T]]) -> list[_T]:
    """Await `calls` with at most WRITE_CONCURRENCY of them in flight, results in their order."""
    gate = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def one(call: Awaitable[_T]) -> _T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


def _summed(parts: Iterable[Mapping[OutcomeStatus, int]]) -> dict[OutcomeStatus, int]:
    """A wave's counts from its partitions' counts."""
    totals = empty_counts()
    for counts in parts:
        for status, n in counts.items():
            totals[status] += n
    return totals


class _StatusMemo:
    """The status of the rows this ledger read or wrote, by (wave, key, ETag): an ETag names one
    version of a row, so an entry is a fact that never goes stale. Bounded (oldest dropped first);
    a miss costs one read."""

    LIMIT: Final = 50_000

    def __init__(self) -> None:
        self._known: OrderedDict[tuple[str, str, str], OutcomeStatus] = OrderedDict()

    def remember(self, wave_id: str, key: str, etag: str, status: OutcomeStatus) -> None:
        self._known[(wave_id, key, etag)] = status
        if len(self._known) > self.LIMIT:
            self._known.popitem(last=False)

    def get(self, wave_id: str, key: str, etag: str) -> OutcomeStatus | None:
        return self._known.get((wave_id, key, etag))


class Ledger(OwnsClients):
    """LedgerStore over Azure Table Storage (async). Use one instance per event loop; `aclose()` it."""

    _service: TableServiceClient
    _clients: dict[str, TableClient]

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        prefix: str = "licshift",
        table_service_uri: str | None = None,
        credential: AsyncTokenCredential | None = None,
        owns_credential: bool = False,
        outcome_shards: int = OUTCOME_SHARDS,
    ) -> None:
        if not 1 <= outcome_shards <= 100:
            raise ValueError(f"outcome_shards must be 1 to 100, got {outcome_shards}")
        self._outcome_shards = outcome_shards
        """Partitions for the outcomes of a wave this ledger writes first (1: one, as before shards)."""
        self._tables = table_names(prefix)
        self.prefix = prefix
        if connection_string:
            self._service = TableServiceClient.from_connection_string(connection_string, **environment_settings())
        elif table_service_uri and credential is not None:
            self._service = TableServiceClient(
                endpoint=table_service_uri, credential=credential, **environment_settings()
            )
        else:
            raise SettingsError(
                "no table storage configured: set LicshiftStorage to a connection string, or "
                "LicshiftStorage__tableServiceUri (with a managed identity) in Azure"
            )
        self._credential = credential if owns_credential else None
        self._clients: dict[str, TableClient] = {
            suffix: self._service.get_table_client(name) for suffix, name in self._tables.items()
        }
        self._users_written: set[tuple[str, str]] = set()
        self._statuses = _StatusMemo()
        self._counted: set[str] = set()
        """Outcomes partitions known to keep counts (a partition never stops keeping them)."""
        self._layouts: dict[str, int] = {}
        """Partitions per wave, once decided (never changes for a wave)."""
        self._scanned: dict[str, dict[str, Counter[OutcomeStatus]]] = {}
        """Rows per partition and status `put_outcomes` wrote of a sharded wave not indexed yet."""

    @staticmethod
    def from_settings(settings: Settings, credential: AsyncTokenCredential | None = None) -> Ledger:
        storage = settings.storage
        if storage.connection_string:
            return Ledger(storage.connection_string, prefix=settings.table_prefix)
        if not storage.table_service_uri:
            raise SettingsError(
                "no table storage configured: set LicshiftStorage (connection string) or "
                "LicshiftStorage__tableServiceUri and LicshiftStorage__queueServiceUri"
            )
        credential, owns = storage_credential(storage, credential)
        return Ledger(
            prefix=settings.table_prefix,
            table_service_uri=storage.table_service_uri,
            credential=credential,
            owns_credential=owns,
        )

    @property
    def table_names(self) -> dict[str, str]:
        return dict(self._tables)

    async def ensure_tables(self) -> None:
        async def create(name: str) -> None:
            # Another instance may create the same table between the check and the create.
            with contextlib.suppress(ResourceExistsError):
                await self._service.create_table_if_not_exists(name)

        await asyncio.gather(*(create(name) for name in self._tables.values()))

    async def delete_tables(self) -> None:
        """Drop the four tables (tests and demo resets; never called by the pipeline)."""
        await asyncio.gather(*(self._service.delete_table(name) for name in self._tables.values()))

    # Waves ---------------------------------------------------------------------------------------

    async def create_wave(self, wave: Wave) -> str:
        entity, rows = wave_to_entity(wave)
        await self._write_users(wave.wave_id, rows)
        try:
            meta = await self._clients[WAVES].create_entity(entity)
        except ResourceExistsError:
            raise ConcurrencyConflict(f"wave {wave.wave_id} already exists") from None
        return str(meta["etag"])

    async def get_wave(self, wave_id: str) -> Versioned[Wave] | None:
        try:
            entity = await self._clients[WAVES].get_entity(WAVE_PARTITION, check_key(wave_id, "wave id"))
        except ResourceNotFoundError:
            return None
        return Versioned(await self._decode_wave(entity), str(entity.metadata["etag"]))

    async def save_wave(self, wave: Wave, etag: str) -> str:
        if not etag:
            raise ConcurrencyConflict(f"wave {wave.wave_id}: save_wave needs the ETag it was read at; use create_wave")
        entity, rows = wave_to_entity(wave)
        await self._write_users(wave.wave_id, rows)
        return await self._replace(WAVES, entity, etag, f"wave {wave.wave_id}")

    async def list_waves(self) -> list[Wave]:
        """Every wave, oldest first (created_at, then id)."""
        entities = [
            e
            async for e in self._clients[WAVES].query_entities(
                "PartitionKey eq @pk", parameters={"pk": WAVE_PARTITION}, results_per_page=PAGE_SIZE
            )
        ]
        waves = await asyncio.gather(*(self._decode_wave(e) for e in entities))
        return sorted(waves, key=lambda w: (w.created_at, w.wave_id))

    async def _write_users(self, wave_id: str, rows: UsersRows | None) -> None:
        if rows is None or (wave_id, rows.digest) in self._users_written:
            return
        await _bounded(self._clients[WAVES].upsert_entity(row, mode=UpdateMode.REPLACE) for row in rows.rows)
        self._users_written.add((wave_id, rows.digest))

    async def _decode_wave(self, entity: TableEntity) -> Wave:
        digest = entity.get("selection_users_ref")
        if not digest:
            return wave_from_entity(entity)
        wave_id = str(entity["RowKey"])
        low, high = f"{digest}-", f"{digest}."
        rows = [
            r
            async for r in self._clients[WAVES].query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                parameters={"pk": USERS_PARTITION_PREFIX + wave_id, "low": low, "high": high},
            )
        ]
        users = users_from_rows(
            rows,
            _read_int(entity.get("selection_users_rows")),
            _read_int(entity.get("selection_users_count")),
            f"wave {wave_id}",
        )
        self._users_written.add((wave_id, str(digest)))
        return wave_from_entity(entity, users)

    # Outcomes ------------------------------------------------------------------------------------

    async def _shards(self, wave_id: str, *, writing: bool = False) -> int:
        """How many partitions hold the wave's outcomes: what its shards row says, else 1 (a wave
        an older version wrote, all in partition `<wave id>`). The first write of a wave that has
        no row yet decides it for good and records it; until then a reader sees one empty partition."""
        known = self._layouts.get(wave_id)
        if known is not None:
            return known
        while True:
            # One read decides: partition `<wave id>` holds either the shards row alone or rows of a
            # wave written before shards (which sort before "~s"), so its first row says which.
            first = [
                e
                async for e in self._query(OUTCOMES, ["PartitionKey eq @pk"], {"pk": wave_id}, 1, ["RowKey", "shards"])
            ]
            if first:
                shards = shards_from_entity(first[0]) if first[0]["RowKey"] == SHARDS_ROW else 1
                break
            if not writing or self._outcome_shards == 1:
                return 1  # nothing written yet: not decided, so not remembered
            try:
                await self._clients[OUTCOMES].create_entity(shards_to_entity(wave_id, self._outcome_shards))
            except ResourceExistsError:
                continue  # another writer decided first: read what it recorded
            shards = self._outcome_shards
            break
        self._layouts[wave_id] = shards
        return shards

    async def _partitions(self, wave_id: str) -> list[str]:
        return outcome_partitions(wave_id, await self._shards(wave_id))

    async def put_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """The scan's rows (and the index rows of those in a work status), upserted in transactions
        of at most 100 operations, one partition each. Before `index_outcomes` only: an upsert
        records no move (what each shard got is remembered, for its counts row)."""
        if not outcomes:
            return
        shards: dict[str, int] = {}
        for wave_id in sorted({o.wave_id for o in outcomes}):
            shards[wave_id] = await self._shards(check_key(wave_id, "wave id"), writing=True)
        entities = []
        for outcome in outcomes:
            entity = outcome_to_entity(outcome, shards[outcome.wave_id])
            entities.append(entity)
            if shards[outcome.wave_id] > 1:
                scanned = self._scanned.setdefault(outcome.wave_id, {})
                scanned.setdefault(str(entity["PartitionKey"]), Counter())[outcome.status] += 1
            if outcome.status in WORK_STATUSES:
                entities.append(index_entity(entity))
        client = self._clients[OUTCOMES]
        await _bounded(
            client.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in chunk])
            for chunk in transaction_chunks(entities)
        )

    async def get_outcome(self, wave_id: str, user_id: str, sku_id: str) -> Versioned[Outcome] | None:
        key = check_key(outcome_key(user_id, sku_id), "outcome key")
        shards = await self._shards(check_key(wave_id, "wave id"))
        try:
            entity = await self._clients[OUTCOMES].get_entity(outcome_partition(wave_id, key, shards), key)
        except ResourceNotFoundError:
            return None
        outcome, etag = outcome_from_entity(entity, wave_id), str(entity.metadata["etag"])
        self._statuses.remember(wave_id, key, etag, outcome.status)
        return Versioned(outcome, etag)

    async def get_outcomes(
        self, wave_id: str, keys: Collection[str], status: OutcomeStatus
    ) -> dict[str, Versioned[Outcome]]:
        """The rows named by `keys` that are in `status`, by key, with their ETags: one query per
        partition over the range of its keys, filtered by status on the server (the host parses
        only matches)."""
        wave_id = check_key(wave_id, "wave id")
        wanted = {check_key(k, "outcome key") for k in keys}
        if not wanted:
            return {}
        shards = await self._shards(wave_id)
        by_partition: dict[str, set[str]] = {}
        for key in wanted:
            by_partition.setdefault(outcome_partition(wave_id, key, shards), set()).add(key)
        found: dict[str, Versioned[Outcome]] = {}

        async def read(partition: str, mine: set[str]) -> None:
            params: dict[str, Any] = {"pk": partition, "low": min(mine), "high": max(mine), "status": status.value}
            clauses = ["PartitionKey eq @pk", "RowKey ge @low", "RowKey le @high", "status eq @status"]
            async for entity in self._query(OUTCOMES, clauses, params, None, None):
                key, etag = str(entity["RowKey"]), str(entity.metadata["etag"])
                if key in mine:
                    outcome = outcome_from_entity(entity, wave_id)
                    self._statuses.remember(wave_id, key, etag, outcome.status)
                    found[key] = Versioned(outcome, etag)

        await asyncio.gather(*(read(p, mine) for p, mine in sorted(by_partition.items())))
        return found

    async def save_outcome(self, outcome: Outcome, etag: str | None) -> str:
        """In a wave with counts (`index_outcomes`), one entity-group transaction: the row (with
        its ETag), its index rows and the move, so the counts and the index never drift from the
        rows. The status the row had at `etag` comes from this ledger's own reads and writes (an
        ETag names one version of a row, so that never goes stale), else from one read."""
        wave_id = check_key(outcome.wave_id, "wave id")
        entity = outcome_to_entity(outcome, await self._shards(wave_id, writing=True))
        partition, key = str(entity["PartitionKey"]), str(entity["RowKey"])
        what = f"outcome {outcome.wave_id}/{outcome.key}"
        if not await self._has_counts(partition):
            new_etag = await (
                self._replace(OUTCOMES, entity, etag, what) if etag else self._insert(OUTCOMES, entity, what)
            )
        else:
            before = await self._status_at(wave_id, partition, key, etag, what) if etag else None
            new_etag = await self._save_indexed(entity, before, etag, what)
        self._statuses.remember(wave_id, key, new_etag, outcome.status)
        return new_etag

    async def _save_indexed(
        self, entity: dict[str, Any], before: OutcomeStatus | None, etag: str | None, what: str
    ) -> str:
        ops = _row_operations(entity, before, etag)
        if len(ops) == 1:
            return await (self._replace(OUTCOMES, entity, etag, what) if etag else self._insert(OUTCOMES, entity, what))
        while True:
            try:
                done = await self._clients[OUTCOMES].submit_transaction([(op, e, kw) for op, e, kw in ops])
            except TableTransactionError as exc:
                failed = ops[exc.index] if 0 <= exc.index < len(ops) else ops[0]
                if failed[0] == "delete" and exc.status_code == 404:
                    # The index row is already gone (a hand edit, a re-index): nothing to delete.
                    log.warning("%s: index row %s was missing", what, failed[1]["RowKey"])
                    ops.remove(failed)
                    continue
                if failed is ops[0] and exc.status_code in (404, 409, 412):
                    raise ConcurrencyConflict(
                        f"{what} changed since it was read (or already exists): read it again and re-decide"
                    ) from None
                raise
            return str(done[0]["etag"])

    async def save_outcomes(self, wave_id: str, changes: Sequence[tuple[Outcome, str]]) -> dict[str, str]:
        """Changes of existing rows of one wave, each with the ETag it was read at, in entity-group
        transactions of up to 25 rows (4 operations each) of one partition. A transaction that fails
        (a row changed since it was read) changes nothing, so its rows are then saved one by one and
        the others still go. The keys of the rows saved, with their new ETags; a row that changed is
        left out."""
        wave_id = check_key(wave_id, "wave id")
        if any(o.wave_id != wave_id for o, _ in changes):
            raise ValueError(f"save_outcomes takes rows of wave {wave_id} only")
        if not changes:
            return {}
        shards = await self._shards(wave_id, writing=True)
        by_partition: dict[str, list[tuple[Outcome, str, dict[str, Any]]]] = {}
        for outcome, etag in changes:
            entity = outcome_to_entity(outcome, shards)
            by_partition.setdefault(str(entity["PartitionKey"]), []).append((outcome, etag, entity))
        plain: list[tuple[Outcome, str]] = []
        chunks: list[list[_RowChange]] = []
        for partition, mine in by_partition.items():
            if not await self._has_counts(partition):
                plain += [(outcome, etag) for outcome, etag, _ in mine]
                continue
            rows: list[_RowChange] = []
            for outcome, etag, entity in mine:
                with contextlib.suppress(ConcurrencyConflict):
                    what = f"outcome {wave_id}/{outcome.key}"
                    before = await self._status_at(wave_id, partition, outcome.key, etag, what)
                    rows.append(_RowChange(outcome, etag, _row_operations(entity, before, etag)))
            chunks += _change_chunks(rows)
        saved = await self._save_each(plain)
        for done in await _bounded(self._save_chunk(wave_id, chunk) for chunk in chunks):
            saved |= done
        return saved

    async def _save_chunk(self, wave_id: str, chunk: list[_RowChange]) -> dict[str, str]:
        try:
            done = await self._clients[OUTCOMES].submit_transaction([op for row in chunk for op in row.ops])
        except TableTransactionError:
            # Nothing in the transaction was written: one row changed, or an index row was missing.
            return await self._save_each([(row.outcome, row.etag) for row in chunk])
        except (ServiceRequestError, ServiceResponseError) as exc:
            # The connection broke with the answer unknown (Azurite resets connections under load;
            # the SDK's retries gave up): the transaction may or may not have been applied. Saved
            # one by one from the same ETags, the rows it applied conflict and are left out (their
            # change is in place; the caller treats them as not saved, as after a crash), the others go.
            log.warning(
                "a transaction of %d outcome rows of wave %s got no answer (%s); saving them one by one",
                len(chunk),
                wave_id,
                exc,
            )
            return await self._save_each([(row.outcome, row.etag) for row in chunk])
        saved: dict[str, str] = {}
        at = 0
        for row in chunk:
            etag = str(done[at]["etag"])
            self._statuses.remember(wave_id, row.outcome.key, etag, row.outcome.status)
            saved[row.outcome.key] = etag
            at += len(row.ops)
        return saved

    async def _save_each(self, changes: Sequence[tuple[Outcome, str]]) -> dict[str, str]:
        saved: dict[str, str] = {}
        for outcome, etag in changes:
            with contextlib.suppress(ConcurrencyConflict):
                saved[outcome.key] = await self.save_outcome(outcome, etag)
        return saved

    async def _status_at(self, wave_id: str, partition: str, key: str, etag: str, what: str) -> OutcomeStatus:
        known = self._statuses.get(wave_id, key, etag)
        if known is not None:
            return known
        try:
            entity = await self._clients[OUTCOMES].get_entity(partition, key, select=["status"])
        except ResourceNotFoundError:
            raise ConcurrencyConflict(f"{what} no longer exists") from None
        if str(entity.metadata["etag"]) != etag:
            raise ConcurrencyConflict(f"{what} changed since it was read: read it again and re-decide")
        return OutcomeStatus(str(entity["status"]))

    async def _has_counts(self, partition: str) -> bool:
        """Whether the partition keeps counts and a work index (every partition of a wave scanned by
        this version does; a wave written by an older one does not, and is counted by reading it)."""
        if partition in self._counted:
            return True
        try:
            await self._clients[OUTCOMES].get_entity(partition, COUNTS_ROW, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        self._counted.add(partition)
        return True

    async def index_outcomes(
        self, wave_id: str, counts: Mapping[OutcomeStatus, int] | None = None
    ) -> dict[OutcomeStatus, int]:
        """Start the wave's counts: `counts` as given if the scan vouches that it wrote every row of a
        fresh wave with `put_outcomes` (split over the shards as this ledger's `put_outcomes` wrote
        them), else (or if a counts row exists already) a full pass over every partition that makes
        the index and the counts match the rows. Only while no one else writes the wave's outcomes
        (its scan)."""
        wave_id = check_key(wave_id, "wave id")
        partitions = await self._partitions(wave_id)
        scanned = self._scanned.pop(wave_id, None)
        if counts is not None:
            given = fold(counts, ())
            split: dict[str, dict[OutcomeStatus, int]] | None = None
            if len(partitions) == 1:
                split = {partitions[0]: given}
            elif scanned is not None and fold(sum(scanned.values(), Counter()), ()) == given:
                split = {p: fold(scanned.get(p, {}), ()) for p in partitions}
            if split is not None:
                client = self._clients[OUTCOMES]
                created = await asyncio.gather(
                    *(client.create_entity(counts_to_entity(p, c)) for p, c in split.items()), return_exceptions=True
                )
                failed = [r for r in created if isinstance(r, BaseException)]
                if not failed:
                    self._counted.update(partitions)
                    return given
                if not all(isinstance(r, ResourceExistsError) for r in failed):
                    raise failed[0]
        return await self._reindex(partitions)

    async def _reindex(self, partitions: Sequence[str]) -> dict[OutcomeStatus, int]:
        return _summed(await _bounded(self._reindex_partition(p) for p in partitions))

    async def _reindex_partition(self, partition: str) -> dict[OutcomeStatus, int]:
        client = self._clients[OUTCOMES]
        counts = empty_counts()
        working: dict[str, OutcomeStatus] = {}
        pending: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

        async def flush(at_least: int) -> None:
            while len(pending) >= max(1, at_least):
                chunk = pending[:TRANSACTION_OPERATIONS]
                del pending[:TRANSACTION_OPERATIONS]
                await client.submit_transaction(chunk)

        query = client.query_entities(
            "PartitionKey eq @pk", parameters={"pk": partition}, results_per_page=PAGE_SIZE, select=[*INDEX_SELECT]
        )
        async for entity in query:
            row_key = str(entity["RowKey"])
            if row_key < LEDGER_ROWS:
                status = OutcomeStatus(str(entity["status"]))
                counts[status] += 1
                if status in WORK_STATUSES:
                    working[row_key] = status
                    pending.append(("upsert", index_entity(entity), {"mode": UpdateMode.REPLACE}))
            elif row_key.startswith(JOURNAL_PREFIX) or (
                row_key.startswith(INDEX_PREFIX) and not _indexes_current(row_key, working)
            ):
                pending.append(("delete", {"PartitionKey": partition, "RowKey": row_key}, {}))
            await flush(TRANSACTION_OPERATIONS)
        await flush(1)
        await client.upsert_entity(counts_to_entity(partition, counts), mode=UpdateMode.REPLACE)
        self._counted.add(partition)
        return counts

    async def count_outcomes(self, wave_id: str) -> dict[OutcomeStatus, int]:
        """The wave's rows per status, exactly: the sum over its partitions (read concurrently) of
        each one's counts row plus the moves recorded since, which are folded into it (one
        transaction per 99 moves, conditional on the counts row's ETag). A partition without counts
        (a wave written by an older version) is counted by reading every row."""
        partitions = await self._partitions(check_key(wave_id, "wave id"))
        return _summed(await asyncio.gather(*(self._count_partition(p) for p in partitions)))

    async def _count_partition(self, partition: str) -> dict[OutcomeStatus, int]:
        client = self._clients[OUTCOMES]
        for _ in range(3):
            try:
                row = await client.get_entity(partition, COUNTS_ROW)
            except ResourceNotFoundError:
                return await self._census(partition)
            self._counted.add(partition)
            low, high = JOURNAL_PREFIX, JOURNAL_PREFIX[:-1] + "}"
            journal = [
                e
                async for e in client.query_entities(
                    "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                    parameters={"pk": partition, "low": low, "high": high},
                    results_per_page=PAGE_SIZE,
                )
            ]
            counts, etag = counts_from_entity(row), str(row.metadata["etag"])
            try:
                for start in range(0, len(journal), TRANSACTION_OPERATIONS - 1):
                    chunk = journal[start : start + TRANSACTION_OPERATIONS - 1]
                    counts = fold(counts, (move_from_entity(e) for e in chunk))
                    etag = await self._fold(partition, counts, etag, chunk)
            except ConcurrencyConflict:
                continue  # another tick folded some of them: read again
            return counts
        raise ConcurrencyConflict(
            f"partition {partition}: its counts kept changing while being folded; the next tick retries"
        )

    async def _fold(
        self, partition: str, counts: Mapping[OutcomeStatus, int], etag: str, moves: Sequence[TableEntity]
    ) -> str:
        ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            (
                "update",
                counts_to_entity(partition, counts),
                {"mode": UpdateMode.REPLACE, "etag": etag, "match_condition": MatchConditions.IfNotModified},
            )
        ]
        ops += [("delete", {"PartitionKey": partition, "RowKey": str(e["RowKey"])}, {}) for e in moves]
        try:
            done = await self._clients[OUTCOMES].submit_transaction(ops)
        except TableTransactionError as exc:
            if exc.status_code in (404, 412):
                raise ConcurrencyConflict(f"partition {partition}: counts changed while folding") from None
            raise
        return str(done[0]["etag"])

    async def _census(self, partition: str) -> dict[OutcomeStatus, int]:
        counts = empty_counts()
        clauses, params = ["PartitionKey eq @pk", "RowKey lt @end"], {"pk": partition, "end": LEDGER_ROWS}
        async for entity in self._query(OUTCOMES, clauses, params, None, ["status"]):
            counts[OutcomeStatus(str(entity["status"]))] += 1
        return counts

    async def iter_work(
        self,
        wave_id: str,
        status: OutcomeStatus,
        *,
        after_key: str = "",
        limit: int | None = None,
        stale_before: datetime | None = None,
    ) -> AsyncIterator[Outcome]:
        """Rows in a work status, in key order after `after_key`, optionally only those unchanged
        since `stale_before`, in brief (keys, status, relied_on, times): from the index, so the
        cost is the rows returned, not the wave (merged across the wave's partitions). Without
        counts (an older wave) from the rows."""
        wave_id = check_key(wave_id, "wave id")
        if status not in WORK_STATUSES:
            raise ValueError(f"{status} is not a work status")
        sources = []
        for partition in await self._partitions(wave_id):
            params: dict[str, Any] = {"pk": partition}
            clauses = ["PartitionKey eq @pk"]
            if stale_before is not None:
                params["stale"] = _utc(stale_before, "stale_before")
                clauses.append("updated_at lt @stale")
            if await self._has_counts(partition):
                low, high = index_range(status)
                params |= {"low": low + after_key, "high": high}
                clauses += ["RowKey gt @low", "RowKey lt @high"]
            else:
                params |= {"low": after_key, "end": LEDGER_ROWS, "status": status.value}
                clauses += ["RowKey gt @low", "RowKey lt @end", "status eq @status"]
            sources.append((clauses, params))
        async for entity in self._merged(sources, limit, [*INDEX_SELECT], by_key=True):
            yield outcome_from_entity(entity, wave_id)

    async def _merged(
        self,
        sources: Sequence[tuple[list[str], dict[str, Any]]],
        limit: int | None,
        select: list[str] | None,
        *,
        by_key: bool = False,
    ) -> AsyncIterator[TableEntity]:
        """The Outcomes rows the (clauses, parameters) queries find, each in RowKey order, merged
        into one stream in order of the outcome key (`by_key`: of index rows, the key after
        `~w|<status>|`) and cut at `limit`. Each query reads one page at a time, sized so a small
        `limit` does not read a page per partition it will not use."""
        if limit is not None and limit <= 0:
            return
        if len(sources) == 1:
            async for entity in self._query(OUTCOMES, sources[0][0], sources[0][1], limit, select):
                yield entity
            return
        page = None if limit is None else min(PAGE_SIZE, limit, max(10, 2 * -(-limit // len(sources))))
        streams = [self._query(OUTCOMES, clauses, params, limit, select, page) for clauses, params in sources]

        def order(entity: TableEntity) -> str:
            row_key = str(entity["RowKey"])
            return row_key.split("|", 2)[2] if by_key and row_key.startswith(INDEX_PREFIX) else row_key

        try:
            heads = await asyncio.gather(*(anext(s, None) for s in streams))
            heap = [(order(e), n, e) for n, e in enumerate(heads) if e is not None]
            heapq.heapify(heap)
            count = 0
            while heap and (limit is None or count < limit):
                _, n, entity = heap[0]
                yield entity
                count += 1
                following = await anext(streams[n], None)
                if following is None:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, (order(following), n, following))
        finally:
            for stream in streams:
                await stream.aclose()

    async def _query(
        self,
        table: str,
        clauses: list[str],
        params: dict[str, Any],
        limit: int | None,
        select: list[str] | None,
        page: int | None = None,
    ) -> AsyncGenerator[TableEntity, None]:
        if limit is not None and limit <= 0:
            return
        if page is None:
            page = PAGE_SIZE if limit is None else min(limit, PAGE_SIZE)
        count = 0
        query = self._clients[table].query_entities(
            " and ".join(clauses), parameters=params, results_per_page=page, select=select
        )
        async for entity in query:
            yield entity
            count += 1
            if limit is not None and count >= limit:
                return

    async def iter_outcomes(
        self,
        wave_id: str,
        *,
        statuses: Collection[OutcomeStatus] | None = None,
        after_key: str = "",
        limit: int | None = None,
        fields: Collection[str] | None = None,
    ) -> AsyncIterator[Outcome]:
        """Streams page by page (1,000 rows at most in memory per partition), in RowKey order
        (merged across the wave's partitions). `fields` names the Outcome fields to read (the others
        keep their defaults): a tick that only counts statuses reads and parses a fraction of each
        row. The index, journal and counts rows of a partition are never returned (their RowKeys
        start at "~")."""
        wave_id = check_key(wave_id, "wave id")
        params: dict[str, Any] = {"end": LEDGER_ROWS}
        clauses = ["PartitionKey eq @pk", "RowKey lt @end"]
        if after_key:
            params["after"] = after_key
            clauses.append("RowKey gt @after")
        if statuses is not None:
            wanted = sorted({OutcomeStatus(s).value for s in statuses})
            if not wanted:
                return
            clauses.append(_or_equals("status", wanted, "s", params))
        select = None if fields is None else sorted({"PartitionKey", "RowKey", "status", *fields} - {"wave_id"})
        sources = [(clauses, params | {"pk": p}) for p in await self._partitions(wave_id)]
        async for entity in self._merged(sources, limit, select):
            yield outcome_from_entity(entity, wave_id)

    # Control -------------------------------------------------------------------------------------

    async def get_control(self) -> Versioned[Control]:
        try:
            entity = await self._clients[CONTROL].get_entity(CONTROL_PARTITION, CONTROL_ROW)
        except ResourceNotFoundError:
            return Versioned(Control(), "")
        return Versioned(control_from_entity(entity), str(entity.metadata["etag"]))

    async def save_control(self, control: Control, etag: str | None) -> str:
        entity = control_to_entity(control)
        if not etag:
            return await self._insert(CONTROL, entity, "control row")
        return await self._replace(CONTROL, entity, etag, "control row")

    # Drift state -----------------------------------------------------------------------------------

    async def put_drift(self, rows: Sequence[DriftState]) -> None:
        """Upsert drift state rows (drift_watch is their only writer: a singleton timer)."""
        client = self._clients[CONTROL]
        for chunk in transaction_chunks([drift_to_entity(r) for r in rows]):
            await client.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in chunk])

    async def iter_drift(self) -> AsyncIterator[DriftState]:
        query = self._clients[CONTROL].query_entities(
            "PartitionKey eq @pk", parameters={"pk": DRIFT_PARTITION}, results_per_page=PAGE_SIZE
        )
        async for entity in query:
            yield drift_from_entity(entity)

    # The tick lease (lease.py) ---------------------------------------------------------------

    async def get_lease(self) -> Versioned[TickLease]:
        try:
            entity = await self._clients[CONTROL].get_entity(CONTROL_PARTITION, LEASE_ROW)
        except ResourceNotFoundError:
            return Versioned(TickLease(), "")
        expires = entity.get("expires_at")
        lease = TickLease(_text(entity, "holder"), None if expires is None else _read_datetime(expires))
        return Versioned(lease, str(entity.metadata["etag"]))

    async def save_lease(self, lease: TickLease, etag: str | None) -> str:
        entity: dict[str, Any] = {
            "PartitionKey": CONTROL_PARTITION,
            "RowKey": LEASE_ROW,
            "holder": _fit(lease.holder, "lease holder"),
        }
        if lease.expires_at is not None:
            entity["expires_at"] = _utc(lease.expires_at, "expires_at")
        if not etag:
            return await self._insert(CONTROL, entity, "tick lease row")
        return await self._replace(CONTROL, entity, etag, "tick lease row")

    # Pacing: the scheduler's model of Graph's write window (pacing.py) --------------------------

    async def get_pacing(self) -> Versioned[str]:
        """The stored model as its JSON text ("" if never written), with its ETag."""
        try:
            entity = await self._clients[CONTROL].get_entity(CONTROL_PARTITION, PACING_ROW)
        except ResourceNotFoundError:
            return Versioned("", "")
        return Versioned(_text(entity, "model"), str(entity.metadata["etag"]))

    async def save_pacing(self, model: str, etag: str | None, now: datetime) -> str:
        entity = {
            "PartitionKey": CONTROL_PARTITION,
            "RowKey": PACING_ROW,
            "model": _fit(model, "pacing model"),
            "updated_at": _utc(now, "updated_at"),
        }
        if not etag:
            return await self._insert(CONTROL, entity, "pacing row")
        return await self._replace(CONTROL, entity, etag, "pacing row")

    # Answers to requests (rows of the Control table) -------------------------------------------

    async def record_answer(self, answer: Answer) -> None:
        # Upsert: a redelivered command answers again with the same (or a duplicate) verdict.
        await self._clients[CONTROL].upsert_entity(answer_to_entity(answer), mode=UpdateMode.REPLACE)

    async def record_switch_change(self, event: Event) -> None:
        """A kill-switch change made from the CLI, as an event row in the Control table (newest first)."""
        entity = event_to_entity(event)
        entity["PartitionKey"] = SWITCH_LOG_PARTITION
        await self._clients[CONTROL].create_entity(entity)

    async def iter_switch_changes(self, limit: int = SWITCH_LOG_LIMIT) -> AsyncIterator[Event]:
        """The CLI's kill-switch changes, newest first (at most `limit`)."""
        query = self._clients[CONTROL].query_entities(
            "PartitionKey eq @pk", parameters={"pk": SWITCH_LOG_PARTITION}, results_per_page=min(limit, PAGE_SIZE)
        )
        count = 0
        async for entity in query:
            yield event_from_entity(entity)
            count += 1
            if count >= limit:
                return

    async def get_answer(self, request_id: str) -> Answer | None:
        try:
            entity = await self._clients[CONTROL].get_entity(ANSWER_PARTITION, check_key(request_id, "request id"))
        except ResourceNotFoundError:
            return None
        return answer_from_entity(entity)

    # Events --------------------------------------------------------------------------------------

    async def record_event(self, event: Event) -> None:
        # Two events in the same 100 ns with the same random suffix are unlikely; never lose one to it.
        for attempt in range(3):
            try:
                await self._clients[EVENTS].create_entity(event_to_entity(event))
                return
            except ResourceExistsError:
                if attempt == 2:
                    raise

    async def iter_events(
        self, since: datetime, kinds: Collection[str] | None = None, *, until: datetime | None = None
    ) -> AsyncIterator[Event]:
        """Events at or after `since`, newest first, one date partition at a time (streamed)."""
        since = _utc(since, "since")
        newest = (until.astimezone(UTC) if until is not None else datetime.now(UTC)) + timedelta(days=1)
        params: dict[str, Any] = {"upper": f"{inverted_ticks(since) + 1:019d}"}
        clauses = ["PartitionKey eq @pk", "RowKey lt @upper"]
        if kinds is not None:
            wanted = sorted(set(kinds))
            if not wanted:
                return
            clauses.append(_or_equals("kind", wanted, "k", params))
        query_filter = " and ".join(clauses)
        oldest = await self._oldest_event_day(since.date(), newest.date())
        if oldest is None:
            return
        day: date = newest.date()
        while day >= oldest:
            params["pk"] = day.strftime("%Y%m%d")
            async for entity in self._clients[EVENTS].query_entities(
                query_filter, parameters=dict(params), results_per_page=PAGE_SIZE
            ):
                yield event_from_entity(entity)
            day -= timedelta(days=1)

    async def _oldest_event_day(self, low: date, high: date) -> date | None:
        """The first date partition holding events in [low, high]: bounds the day-by-day walk to where
        events exist, so a `since` years back costs one query, not one per day.
        """
        query = self._clients[EVENTS].query_entities(
            "PartitionKey ge @low and PartitionKey le @high",
            parameters={"low": low.strftime("%Y%m%d"), "high": high.strftime("%Y%m%d")},
            select=["PartitionKey"],
            results_per_page=1,
        )
        async for entity in query:
            return datetime.strptime(str(entity["PartitionKey"]), "%Y%m%d").date()
        return None

    # Conditional writes --------------------------------------------------------------------------

    async def _insert(self, table: str, entity: dict[str, Any], what: str) -> str:
        try:
            meta = await self._clients[table].create_entity(entity)
        except ResourceExistsError:
            raise ConcurrencyConflict(f"{what} already exists: read it and save with its ETag") from None
        return str(meta["etag"])

    async def _replace(self, table: str, entity: dict[str, Any], etag: str, what: str) -> str:
        try:
            meta = await self._clients[table].update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError:
            raise ConcurrencyConflict(f"{what} changed since it was read: read it again and re-decide") from None
        except ResourceNotFoundError:
            raise ConcurrencyConflict(f"{what} no longer exists") from None
        return str(meta["etag"])
