"""The composition root: the one place that builds the adapters the functions use.

A `Runtime` is built once per process, lazily, on the first invocation (so importing function_app.py
stays cheap for cold start: msgraph, the table and queue SDKs are imported only then). Tests, the
local host and the demo `install` their own Runtime instead; nothing else reaches into the adapters.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from licshift.decide import PROCESSING_COMPLETE
from licshift.graphport import GroupLicenseInfo, LicenseGraph, NotFound
from licshift.licenses import Sku
from licshift.settings import Settings
from licshift.storeport import LedgerStore, WorkQueue


def utc_now() -> datetime:
    return datetime.now(UTC)


class UnknownSku(LookupError):
    """The tenant does not subscribe to a SKU a wave names."""


class SkuCatalog:
    """The tenant's subscribed SKUs and their plans, cached per process for a few minutes: every
    removal needs the SKU's plan list, and it changes only when Microsoft adds a service to a product.
    """

    def __init__(self, ttl: timedelta = timedelta(minutes=10)) -> None:
        self._ttl = ttl
        self._skus: tuple[Sku, ...] = ()
        self._loaded_at: datetime | None = None
        self._lock = asyncio.Lock()

    async def all(self, graph: LicenseGraph, now: datetime, *, fresh: bool = False) -> tuple[Sku, ...]:
        async with self._lock:
            stale = self._loaded_at is None or now - self._loaded_at > self._ttl
            if fresh or stale:
                self._skus = await graph.subscribed_skus()
                self._loaded_at = now
            return self._skus

    async def get(self, graph: LicenseGraph, sku_id: str, now: datetime) -> Sku:
        for sku in await self.all(graph, now):
            if sku.sku_id == sku_id:
                return sku
        for sku in await self.all(graph, now, fresh=True):
            if sku.sku_id == sku_id:
                return sku
        raise UnknownSku(f"SKU {sku_id} is not among the tenant's subscribed SKUs")


GROUP_GONE = "GroupNotFound"
"""The processing state a deleted group reads as: not complete, so nothing relies on it."""


class GroupStates:
    """Groups' license info (licenseProcessingState, options), cached per process for a few seconds.

    The remover needs the processing state of every group a removal relies on (docs/safety.md, S1).
    Read per user, that would add a Graph read per group to every removal; cached for `ttl`, a wave
    costs one read per group every few seconds whatever its size. The price is a window of `ttl` in
    which a change of a group's options is not seen; verification and the settle check cover it.
    """

    def __init__(self, ttl: timedelta = timedelta(seconds=5)) -> None:
        self._ttl = ttl
        self._seen: dict[str, tuple[datetime, GroupLicenseInfo | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def info(
        self, graph: LicenseGraph, group_id: str, now: datetime, *, fresh: bool = False
    ) -> GroupLicenseInfo | None:
        """The group's license info, None if the group does not exist.

        `fresh` (the scheduler, once per tick) reads Graph whatever is cached and passes only bad
        news on to the cache: a group seen processing holds removals at once, but a Complete seen by
        someone else never extends how long the remover trusts its own, older reading."""
        lock = self._locks.setdefault(group_id, asyncio.Lock())
        async with lock:  # concurrent removals of one wave share one read
            seen = self._seen.get(group_id)
            if not fresh and seen is not None and timedelta(0) <= now - seen[0] <= self._ttl:
                return seen[1]
            try:
                found: GroupLicenseInfo | None = await graph.group_license_info(group_id)
            except NotFound:
                found = None
            if not fresh or found is None or found.processing_state != PROCESSING_COMPLETE:
                self._seen[group_id] = (now, found)
            return found

    async def states(
        self, graph: LicenseGraph, group_ids: Iterable[str], now: datetime, *, fresh: bool = False
    ) -> dict[str, str]:
        """group id -> licenseProcessingState ("" if Graph gives none, GROUP_GONE if deleted)."""
        group_ids = list(dict.fromkeys(group_ids))
        infos = await asyncio.gather(*(self.info(graph, g, now, fresh=fresh) for g in group_ids))
        return {
            g: GROUP_GONE if info is None else (info.processing_state or "")
            for g, info in zip(group_ids, infos, strict=True)
        }


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    graph: LicenseGraph
    ledger: LedgerStore
    queue: WorkQueue
    clock: Callable[[], datetime] = utc_now
    skus: SkuCatalog = field(default_factory=SkuCatalog)
    groups: GroupStates = field(default_factory=GroupStates)
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """This process's runtime, e.g. as the holder of the tick lease (lease.py)."""

    def now(self) -> datetime:
        return self.clock()


_installed: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Use `runtime` for every function invocation of this process (None: build from the
    environment again on next use)."""
    global _installed
    _installed = runtime


def installed() -> Runtime | None:
    return _installed


def current() -> Runtime:
    """The process's Runtime, built from the environment (Settings.from_env) on first use."""
    global _installed
    if _installed is None:
        _installed = build(Settings.from_env())
    return _installed


def build(settings: Settings) -> Runtime:
    """Production adapters for `settings` (imported here, not at module level: cold start)."""
    from licshift.graph import GraphAdapter
    from licshift.ledger import Ledger
    from licshift.workqueue import WorkQueue as QueueAdapter

    return Runtime(
        settings=settings,
        graph=GraphAdapter.from_settings(settings),
        ledger=Ledger.from_settings(settings),
        queue=QueueAdapter.from_settings(settings),
    )
