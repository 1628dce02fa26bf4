"""The composition root: the one place that builds the adapters the functions use.

A `Runtime` is built once per process, lazily, on the first invocation (so importing function_app.py
stays cheap for cold start: msgraph and the table SDK are imported only then). The queue client is
built later still, on the first message sent: a removal sends none unless Graph throttles it, and
azure-storage-queue brings its own sync transport and crypto (bench/coldstart.py measures it). Tests,
the local host and the demo `install` their own Runtime instead; nothing else reaches into the adapters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from licshift.services.runtime import Runtime
from licshift.settings import Settings

if TYPE_CHECKING:
    from licshift.adapters.queues import StorageQueues

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
    from licshift.adapters.graph import GraphAdapter
    from licshift.adapters.ledger import Ledger

    return Runtime(
        settings=settings,
        graph=GraphAdapter.from_settings(settings),
        ledger=Ledger.from_settings(settings),
        queue=QueueOnFirstUse(settings),
    )


class QueueOnFirstUse:
    """The WorkQueue port, its StorageQueues adapter built on the first call (cold start: see above).
    A queue setting the adapter refuses is reported by that first call."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queues: StorageQueues | None = None

    def adapter(self) -> StorageQueues:
        if self._queues is None:
            from licshift.adapters.queues import StorageQueues

            self._queues = StorageQueues.from_settings(self._settings)
        return self._queues

    async def ensure_queues(self) -> None:
        await self.adapter().ensure_queues()

    async def send(self, queue: str, body: str, *, delay_seconds: float = 0.0) -> None:
        await self.adapter().send(queue, body, delay_seconds=delay_seconds)

    async def aclose(self) -> None:
        if self._queues is not None:
            await self._queues.aclose()
