"""Storage queues: sending work with visibility delays.

`StorageQueues` implements the `WorkQueue` port over azure-storage-queue (async); the consumer side,
which only the local host needs, is licshift_local.host_queues. Message text is base64 of
the UTF-8 body, the Functions host's default format; the encoding is done here rather than by an SDK
policy so that a message that is not valid base64 can be reported per message instead of failing a
whole receive. licshift's own host.json sets `extensions.queues.messageEncoding: none`: the host then
hands the stored text over unchanged and licshift's handlers decode it (messages.queue_text), so a
message that is not base64 is recorded by the handler rather than poisoned by the host.

Messages are sent with an infinite time-to-live: work that silently expires after the default 7 days
would leave an outcome stuck as enqueued. Visibility delays are whole seconds (rounded up) and capped
at Azure's maximum of 7 days.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import re
from collections.abc import Iterable
from typing import Final, Literal

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from licshift.adapters.clients import OwnsClients, environment_settings, storage_credential
from licshift.settings import Settings, SettingsError

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS: Final = 7 * 24 * 3600
"""Azure rejects a visibility timeout above 7 days."""
MAX_MESSAGE_BYTES: Final = 64 * 1024
"""A queue message holds at most 64 KiB of text (after base64 encoding)."""
POISON_SUFFIX: Final = "-poison"
SEND_CONCURRENCY: Final = 16

Encoding = Literal["base64", "none"]
_QUEUE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")


def check_queue_name(name: str, what: str = "queue name") -> str:
    """Azure queue names: 3-63 lower-case letters, digits and single hyphens, starting and ending alnum."""
    if not _QUEUE_NAME.match(name):
        raise SettingsError(
            f"{what} {name!r} is not a valid queue name: use 3-63 lower-case letters, digits and single "
            "hyphens, starting and ending with a letter or digit (e.g. 'licshift-removals')"
        )
    return name


def poison_queue(name: str) -> str:
    return name + POISON_SUFFIX


def delay_to_visibility(delay_seconds: float) -> int:
    """Whole seconds, rounded up so a message is never visible early, clamped to [0, 7 days]."""
    if math.isnan(delay_seconds):
        raise ValueError("delay_seconds is NaN")
    if delay_seconds <= 0:
        return 0
    if delay_seconds >= MAX_DELAY_SECONDS:
        return MAX_DELAY_SECONDS
    return math.ceil(delay_seconds)


def encode(body: str | bytes, encoding: Encoding = "base64") -> str:
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if encoding == "none":
        return raw.decode("utf-8")
    return base64.b64encode(raw).decode("ascii")


class StorageQueues(OwnsClients):
    """The WorkQueue port over Azure Storage queues (async). One instance per event loop; `aclose()` it."""

    _service: QueueServiceClient
    _clients: dict[str, QueueClient]

    def __init__(
        self,
        connection_string: str | None = None,
        *,
        queue_service_uri: str | None = None,
        credential: AsyncTokenCredential | None = None,
        owns_credential: bool = False,
        waves_queue: str = "licshift-waves",
        removals_queue: str = "licshift-removals",
        encoding: Encoding = "base64",
    ) -> None:
        if connection_string:
            self._service = QueueServiceClient.from_connection_string(connection_string, **environment_settings())
        elif queue_service_uri and credential is not None:
            self._service = QueueServiceClient(
                account_url=queue_service_uri, credential=credential, **environment_settings()
            )
        else:
            raise SettingsError(
                "no queue storage configured: set LicshiftStorage to a connection string, or "
                "LicshiftStorage__queueServiceUri (with a managed identity) in Azure"
            )
        self._credential = credential if owns_credential else None
        self.waves_queue = check_queue_name(waves_queue, "LICSHIFT_WAVES_QUEUE")
        self.removals_queue = check_queue_name(removals_queue, "LICSHIFT_REMOVALS_QUEUE")
        for name, setting in ((waves_queue, "LICSHIFT_WAVES_QUEUE"), (removals_queue, "LICSHIFT_REMOVALS_QUEUE")):
            check_queue_name(poison_queue(name), f"{setting} + '{POISON_SUFFIX}'")
        self.encoding: Encoding = encoding
        self._clients: dict[str, QueueClient] = {}

    @staticmethod
    def from_settings(
        settings: Settings, credential: AsyncTokenCredential | None = None, *, encoding: Encoding = "base64"
    ) -> StorageQueues:
        storage = settings.storage
        waves, removals = settings.waves_queue, settings.removals_queue
        if storage.connection_string:
            return StorageQueues(
                storage.connection_string, encoding=encoding, waves_queue=waves, removals_queue=removals
            )
        if not storage.queue_service_uri:
            raise SettingsError(
                "no queue storage configured: set LicshiftStorage (connection string) or "
                "LicshiftStorage__queueServiceUri and LicshiftStorage__tableServiceUri"
            )
        credential, owns = storage_credential(storage, credential)
        return StorageQueues(
            queue_service_uri=storage.queue_service_uri,
            credential=credential,
            owns_credential=owns,
            encoding=encoding,
            waves_queue=waves,
            removals_queue=removals,
        )

    def _client(self, queue: str) -> QueueClient:
        client = self._clients.get(queue)
        if client is None:
            client = self._service.get_queue_client(check_queue_name(queue))
            self._clients[queue] = client
        return client

    # Producer side (the WorkQueue port) -------------------------------------------

    async def ensure_queues(self) -> None:
        """The waves and removals queues and their poison queues (idempotent)."""
        names = [self.waves_queue, self.removals_queue]
        await asyncio.gather(*(self.create_queue(n) for n in [*names, *map(poison_queue, names)]))

    async def create_queue(self, queue: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self._client(queue).create_queue()

    async def delete_queue(self, queue: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self._client(queue).delete_queue()

    async def send(self, queue: str, body: str, *, delay_seconds: float = 0.0) -> None:
        await self.send_text(queue, encode(body, self.encoding), delay_seconds=delay_seconds)

    async def send_many(
        self, queue: str, items: Iterable[tuple[str, float]], *, concurrency: int = SEND_CONCURRENCY
    ) -> int:
        """Send (body, delay_seconds) pairs with bounded concurrency (about 2x faster than one by one
        on Azurite). Returns how many were sent; the first failure is raised after the others finish.
        """
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(body: str, delay: float) -> None:
            async with limit:
                await self.send(queue, body, delay_seconds=delay)

        results = await asyncio.gather(*(one(b, d) for b, d in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(results)

    async def send_text(self, queue: str, text: str, *, delay_seconds: float = 0.0) -> None:
        """Put already-encoded message text as is (a poison copy keeps the original text exactly)."""
        if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            raise ValueError(
                f"message for {queue} is {len(text.encode('utf-8'))} bytes encoded; a queue message holds at "
                f"most {MAX_MESSAGE_BYTES}: put large data in the ledger and send its key"
            )
        visibility = delay_to_visibility(delay_seconds)
        if delay_seconds > MAX_DELAY_SECONDS:
            log.warning("delay of %.0f s for %s capped at Azure's maximum of 7 days", delay_seconds, queue)
        await self._client(queue).send_message(text, visibility_timeout=visibility, time_to_live=-1)
