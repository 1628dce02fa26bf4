"""The narrow interfaces the core uses for durable state (Table Storage) and work (Storage queues).

Pure: no Azure SDK import. `licshift.adapters.ledger.Ledger` and `licshift.adapters.queues.StorageQueues` implement them
over azure-data-tables and azure-storage-queue; tests run those against Azurite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from licshift.rules.answers import Answer
from licshift.rules.outcomes import Control, DriftState, Event, Outcome, OutcomeStatus, TickLease
from licshift.rules.waves import Wave

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A record with the ETag it was read at, for optimistic concurrency."""

    value: T
    etag: str


class ConcurrencyConflict(Exception):
    """The record changed since it was read (ETag mismatch) or already exists: read again, re-decide."""


class LedgerStore(Protocol):
    async def ensure_tables(self) -> None: ...

    # Waves: PartitionKey "wave", RowKey wave_id.
    async def create_wave(self, wave: Wave) -> str:
        """Insert; raises ConcurrencyConflict if the id exists. Returns the ETag."""
        ...

    async def get_wave(self, wave_id: str) -> Versioned[Wave] | None: ...

    async def save_wave(self, wave: Wave, etag: str) -> str:
        """Replace if unchanged since `etag`, else ConcurrencyConflict. Returns the new ETag."""
        ...

    async def list_waves(self) -> list[Wave]: ...

    # Outcomes: RowKey outcome_key(user_id, sku_id), PartitionKey one of the wave's shard partitions
    # (a hash of the key; a wave written before shards: the wave id). Beside them in each partition
    # (RowKeys from "~" on, never returned by iter_outcomes): the partition's counts row, a journal of
    # status moves not folded into it yet, and an index row per row in a work status. Callers see
    # one wave: the methods below group, sum and merge (in key order) over its partitions.
    async def put_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Upsert the scan's rows in transactions of at most 100, one partition each, with the index
        rows of those in a work status. Only before `index_outcomes` (an upsert records no move).
        The first write of a wave decides how many partitions hold its rows."""
        ...

    async def index_outcomes(
        self, wave_id: str, counts: Mapping[OutcomeStatus, int] | None = None
    ) -> dict[OutcomeStatus, int]:
        """Start the wave's counts once its scan wrote its rows: `counts` as given when the scan wrote
        every row of an empty wave (split by partition as this ledger wrote them), else counted (and
        the index repaired) in one full pass over every partition."""
        ...

    async def get_outcome(self, wave_id: str, user_id: str, sku_id: str) -> Versioned[Outcome] | None: ...

    async def get_outcomes(
        self, wave_id: str, keys: Collection[str], status: OutcomeStatus
    ) -> dict[str, Versioned[Outcome]]:
        """The rows named by `keys` (outcome keys) still in `status`, by key, with their ETags, in
        one query per partition over the range of its keys."""
        ...

    async def save_outcome(self, outcome: Outcome, etag: str | None) -> str:
        """Replace if unchanged since `etag` (insert if etag is None and absent), else ConcurrencyConflict.
        In a wave with counts, the row, its index rows and the status move are one transaction."""
        ...

    async def save_outcomes(self, wave_id: str, changes: Sequence[tuple[Outcome, str]]) -> dict[str, str]:
        """Existing rows of one wave, each replaced if unchanged since its ETag, in few transactions
        (with their index rows and moves); a row that changed is left out and the others still go.
        The keys of the rows saved, with their new ETags."""
        ...

    async def count_outcomes(self, wave_id: str) -> dict[OutcomeStatus, int]:
        """The wave's rows per status, exactly; the cost is the moves since the last count (a wave
        written before counts existed is counted by reading it)."""
        ...

    def iter_work(
        self,
        wave_id: str,
        status: OutcomeStatus,
        *,
        after_key: str = "",
        limit: int | None = None,
        stale_before: datetime | None = None,
    ) -> AsyncIterator[Outcome]:
        """Rows in `status` (a work status: planned, enqueued, removing) in RowKey order after
        `after_key`, optionally only those not updated since `stale_before`, in brief (keys, status,
        relied_on, updated_at, not_before): from the index, at the cost of the rows returned."""
        ...

    def iter_outcomes(
        self,
        wave_id: str,
        *,
        statuses: Collection[OutcomeStatus] | None = None,
        after_key: str = "",
        limit: int | None = None,
        fields: Collection[str] | None = None,
    ) -> AsyncIterator[Outcome]:
        """Outcomes of a wave in RowKey order, optionally only some statuses, after a RowKey, and only
        the named Outcome `fields` (the rest left at their defaults; never save such a row)."""
        ...

    # Control: one row.
    async def get_control(self) -> Versioned[Control]: ...

    async def save_control(self, control: Control, etag: str | None) -> str: ...

    # The tick lease: one row beside the control row (lease.py).
    async def get_lease(self) -> Versioned[TickLease]: ...

    async def save_lease(self, lease: TickLease, etag: str | None) -> str:
        """Conditional on `etag` (None: create); ConcurrencyConflict if someone else changed it."""
        ...

    # Pacing: one row beside the control row, the scheduler's write-window model as JSON text.
    async def get_pacing(self) -> Versioned[str]: ...

    async def save_pacing(self, model: str, etag: str | None, now: datetime) -> str:
        """Replace if unchanged since `etag` (insert if etag is empty), else ConcurrencyConflict."""
        ...

    # Answers: Control table, PartitionKey "answer", RowKey request_id.
    async def record_answer(self, answer: Answer) -> None: ...

    async def get_answer(self, request_id: str) -> Answer | None: ...

    # Events: PartitionKey = UTC date (yyyymmdd), RowKey = inverted time + random (newest first).
    async def record_event(self, event: Event) -> None: ...

    def iter_events(self, since: datetime, kinds: Collection[str] | None = None) -> AsyncIterator[Event]: ...

    async def put_drift(self, rows: Sequence[DriftState]) -> None:
        """Upsert drift state rows, one per (user, SKU)."""
        ...

    def iter_drift(self) -> AsyncIterator[DriftState]:
        """Every drift state row, open and cleared."""
        ...


class WorkQueue(Protocol):
    async def ensure_queues(self) -> None: ...

    async def send(self, queue: str, body: str, *, delay_seconds: float = 0.0) -> None:
        """Put a message (base64 text, as the Functions host expects) visible after `delay_seconds`."""
        ...
