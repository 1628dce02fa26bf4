"""The consumer side of the storage queues, for the local Functions host only: in Azure the Functions
host consumes the queues itself, so none of this is deployed. Leases (receive), deletes, releases
(visibility), poison copies and counts, on the same message encoding the producer uses.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from licshift.adapters.queues import Encoding, StorageQueues, delay_to_visibility, poison_queue

MAX_RECEIVE: Final = 32
"""Azure returns at most 32 messages per receive."""


def decode(text: str, encoding: Encoding = "base64") -> bytes:
    """The body bytes of a message's text; ValueError if it is not what `encoding` says."""
    if encoding == "none":
        return text.encode("utf-8")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError(
            "message is not base64: producers must encode messages as base64 (TextBase64EncodePolicy), "
            "as the Functions host expects"
        ) from None


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message leased from a queue. `text` is the stored text exactly (what a poison copy keeps);
    `body` is its decoded bytes, None when it could not be decoded (`decode_error` says why).
    """

    queue: str
    id: str
    pop_receipt: str
    dequeue_count: int
    text: str
    body: bytes | None
    decode_error: str
    inserted_on: datetime | None
    expires_on: datetime | None
    next_visible_on: datetime | None


class MessageGone(Exception):
    """The message was deleted, or its lease expired and someone else holds it now."""


class HostQueues(StorageQueues):
    """StorageQueues with what a host needs to consume them."""

    async def receive(
        self, queue: str, *, max_messages: int = MAX_RECEIVE, visibility_timeout: float = 30.0
    ) -> list[ReceivedMessage]:
        """Lease up to `max_messages` (1-32) visible messages for `visibility_timeout` seconds."""
        count = min(max(1, max_messages), MAX_RECEIVE)
        lease = max(1, delay_to_visibility(visibility_timeout))
        pager = self._client(queue).receive_messages(
            max_messages=count, messages_per_page=count, visibility_timeout=lease
        )
        received = []
        async for m in pager:
            text = str(m.content or "")
            try:
                body: bytes | None = decode(text, self.encoding)
                error = ""
            except ValueError as exc:
                body, error = None, str(exc)
            received.append(
                ReceivedMessage(
                    queue=queue,
                    id=str(m.id),
                    pop_receipt=str(m.pop_receipt),
                    dequeue_count=int(m.dequeue_count or 0),
                    text=text,
                    body=body,
                    decode_error=error,
                    inserted_on=m.inserted_on,
                    expires_on=m.expires_on,
                    next_visible_on=m.next_visible_on,
                )
            )
        return received

    async def delete(self, message: ReceivedMessage, pop_receipt: str | None = None) -> bool:
        """Delete a leased message; False if it was already gone or its lease moved on."""
        try:
            await self._client(message.queue).delete_message(message.id, pop_receipt or message.pop_receipt)
        except ResourceNotFoundError:
            return False
        except HttpResponseError as exc:
            if exc.status_code in (400, 404):  # PopReceiptMismatch / MessageNotFound
                return False
            raise
        return True

    async def set_visibility(self, message: ReceivedMessage, pop_receipt: str, visibility_timeout: float) -> str:
        """Extend or end a lease: the message becomes visible after `visibility_timeout` seconds.
        Returns the new pop receipt; MessageGone if the lease was lost.
        """
        try:
            updated = await self._client(message.queue).update_message(
                message.id, pop_receipt, visibility_timeout=delay_to_visibility(visibility_timeout)
            )
        except ResourceNotFoundError:
            raise MessageGone(f"message {message.id} on {message.queue} is gone") from None
        except HttpResponseError as exc:
            if exc.status_code in (400, 404):
                raise MessageGone(f"message {message.id} on {message.queue}: lease lost ({exc.reason})") from None
            raise
        return str(updated.pop_receipt)

    async def move_to_poison(self, message: ReceivedMessage, pop_receipt: str | None = None) -> None:
        """Copy the original text to `<queue>-poison` (created if needed), then delete the original,
        as the Functions host does after maxDequeueCount failed deliveries.
        """
        target = poison_queue(message.queue)
        await self.create_queue(target)
        await self.send_text(target, message.text)
        await self.delete(message, pop_receipt)

    async def approximate_count(self, queue: str) -> int:
        properties = await self._client(queue).get_queue_properties()
        return int(properties.approximate_message_count or 0)

    async def peek_texts(self, queue: str, max_messages: int = MAX_RECEIVE) -> list[str]:
        """The text of up to 32 visible messages, without leasing them (diagnostics and tests)."""
        peeked = await self._client(queue).peek_messages(max_messages=min(max(1, max_messages), MAX_RECEIVE))
        return [str(m.content or "") for m in peeked]

    async def clear(self, queue: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            await self._client(queue).clear_messages()
