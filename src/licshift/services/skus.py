"""The tenant's SKU catalog: subscribed SKUs and their service plans, read from Graph through the
port and cached per process for a few minutes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from licshift.ports.graph import LicenseGraph
from licshift.rules.licenses import Sku


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
