"""The ledger on Azure Table Storage: waves, outcomes, the control row and events (S4, S6).

`Ledger` implements `LedgerStore` (licshift.ports.store) over azure-data-tables (async). It is the
only code that talks to tables; how records become entities is licshift.adapters.entities, and
docs/ledger.md documents every table, key and property.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from licshift.adapters.clients import OwnsClients, storage_credential
from licshift.adapters.entities import (
    ANSWER_PARTITION,
    CONTROL,
    CONTROL_PARTITION,
    CONTROL_ROW,
    DRIFT_PARTITION,
    EVENTS,
    LEASE_ROW,
    OUTCOMES,
    PACING_ROW,
    SWITCH_LOG_LIMIT,
    SWITCH_LOG_PARTITION,
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
    drift_from_entity,
    drift_to_entity,
    event_from_entity,
    event_to_entity,
    inverted_ticks,
    outcome_from_entity,
    outcome_to_entity,
    table_names,
    transaction_chunks,
    users_from_rows,
    wave_from_entity,
    wave_to_entity,
)
from licshift.ports.store import ConcurrencyConflict, Versioned
from licshift.rules.answers import Answer
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
    ) -> None:
        self._tables = table_names(prefix)
        self.prefix = prefix
        if connection_string:
            self._service = TableServiceClient.from_connection_string(connection_string)
        elif table_service_uri and credential is not None:
            self._service = TableServiceClient(endpoint=table_service_uri, credential=credential)
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
        limit = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def put(row: dict[str, Any]) -> None:
            async with limit:
                await self._clients[WAVES].upsert_entity(row, mode=UpdateMode.REPLACE)

        await asyncio.gather(*(put(row) for row in rows.rows))
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

    async def put_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        chunks = transaction_chunks([outcome_to_entity(o) for o in outcomes])
        limit = asyncio.Semaphore(WRITE_CONCURRENCY)
        client = self._clients[OUTCOMES]

        async def submit(chunk: list[dict[str, Any]]) -> None:
            async with limit:
                await client.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in chunk])

        await asyncio.gather(*(submit(chunk) for chunk in chunks))

    async def get_outcome(self, wave_id: str, user_id: str, sku_id: str) -> Versioned[Outcome] | None:
        key = check_key(outcome_key(user_id, sku_id), "outcome key")
        try:
            entity = await self._clients[OUTCOMES].get_entity(check_key(wave_id, "wave id"), key)
        except ResourceNotFoundError:
            return None
        return Versioned(outcome_from_entity(entity), str(entity.metadata["etag"]))

    async def save_outcome(self, outcome: Outcome, etag: str | None) -> str:
        entity = outcome_to_entity(outcome)
        what = f"outcome {outcome.wave_id}/{outcome.key}"
        if not etag:
            return await self._insert(OUTCOMES, entity, what)
        return await self._replace(OUTCOMES, entity, etag, what)

    async def iter_outcomes(
        self,
        wave_id: str,
        *,
        statuses: Collection[OutcomeStatus] | None = None,
        after_key: str = "",
        limit: int | None = None,
        fields: Collection[str] | None = None,
    ) -> AsyncIterator[Outcome]:
        """Streams page by page (1,000 rows at most in memory), in RowKey order. `fields` names the
        Outcome fields to read (the others keep their defaults): a tick that only counts statuses
        reads and parses a fraction of each row."""
        if limit is not None and limit <= 0:
            return
        params: dict[str, Any] = {"pk": check_key(wave_id, "wave id")}
        clauses = ["PartitionKey eq @pk"]
        if after_key:
            params["after"] = after_key
            clauses.append("RowKey gt @after")
        if statuses is not None:
            wanted = sorted({OutcomeStatus(s).value for s in statuses})
            if not wanted:
                return
            clauses.append(_or_equals("status", wanted, "s", params))
        page = PAGE_SIZE if limit is None else min(limit, PAGE_SIZE)
        count = 0
        select = None if fields is None else sorted({"PartitionKey", "RowKey", "status", *fields} - {"wave_id"})
        query = self._clients[OUTCOMES].query_entities(
            " and ".join(clauses), parameters=params, results_per_page=page, select=select
        )
        async for entity in query:
            yield outcome_from_entity(entity)
            count += 1
            if limit is not None and count >= limit:
                return

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
