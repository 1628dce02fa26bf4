"""What a service is given: the settings, the ports (Graph, the ledger, the work queue), the
clock and the SKU catalog. Built by licshift.functions.runtime for the function app; tests and
the local stack build their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from licshift.ports.graph import LicenseGraph
from licshift.ports.store import LedgerStore, WorkQueue
from licshift.services.groups import GroupStates
from licshift.services.skus import SkuCatalog
from licshift.services.stopreads import StopReads
from licshift.settings import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    graph: LicenseGraph
    ledger: LedgerStore
    queue: WorkQueue
    clock: Callable[[], datetime] = utc_now
    skus: SkuCatalog = field(default_factory=SkuCatalog)
    groups: GroupStates = field(default_factory=GroupStates)
    stops: StopReads = field(default_factory=StopReads)
    """The wave and control rows the remover checks, shared for LICSHIFT_STATE_CACHE_SECONDS."""
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """This process's runtime, e.g. as the holder of the tick lease (lease.py)."""

    def now(self) -> datetime:
        return self.clock()
