"""Fixtures for the storage adapters: each test gets its own tables / queues on the session's Azurite,
so tests never see each other's rows or messages.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from licshift.adapters.ledger import Ledger
from licshift_local.host_queues import HostQueues


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def ledger(storage_connection_string: str) -> AsyncIterator[Ledger]:
    store = Ledger(storage_connection_string, prefix=unique("t"))
    await store.ensure_tables()
    try:
        yield store
    finally:
        await store.delete_tables()
        await store.aclose()


@pytest.fixture
async def work_queue(storage_connection_string: str) -> AsyncIterator[HostQueues]:
    name = unique("q")
    queues = HostQueues(storage_connection_string, waves_queue=f"{name}-waves", removals_queue=f"{name}-removals")
    await queues.ensure_queues()
    try:
        yield queues
    finally:
        for queue in (queues.waves_queue, queues.removals_queue):
            await queues.delete_queue(queue)
            await queues.delete_queue(f"{queue}-poison")
        await queues.aclose()
