"""The work queue against Azurite: base64 on the wire, delays, leases, poison copies."""

from __future__ import annotations

import asyncio
import base64
import inspect

import pytest
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from licshift.adapters.queues import (
    MAX_DELAY_SECONDS,
    StorageQueues,
    check_queue_name,
    delay_to_visibility,
)
from licshift.functions.runtime import QueueOnFirstUse
from licshift.ports.store import WorkQueue as WorkQueuePort
from licshift.settings import Settings, SettingsError
from licshift_local.host_queues import HostQueues, MessageGone


async def receive_within(queues: HostQueues, queue: str, seconds: float) -> list[str]:
    """Poll until something arrives (or give up): the bodies, decoded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        got = await queues.receive(queue, visibility_timeout=30)
        if got:
            return [m.body.decode() for m in got if m.body is not None]
        await asyncio.sleep(0.1)
    return []


@pytest.mark.parametrize("name", ["ensure_queues", "send"])
def test_work_queue_offers_the_protocol_methods_with_their_parameters(name: str) -> None:
    wanted = inspect.signature(getattr(WorkQueuePort, name)).parameters
    offered = inspect.signature(getattr(StorageQueues, name)).parameters
    assert [(p, offered[p].kind, offered[p].default) for p in offered] == [
        (p, wanted[p].kind, wanted[p].default) for p in wanted
    ]


@pytest.mark.parametrize("name", ["ab", "Upper", "double--hyphen", "-start", "end-", "x" * 64, "under_score"])
def test_bad_queue_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(SettingsError, match="lower-case letters, digits and single hyphens"):
        check_queue_name(name)


def test_a_queue_whose_poison_queue_name_would_be_too_long_is_refused() -> None:
    with pytest.raises(SettingsError, match="-poison"):
        StorageQueues("UseDevelopmentStorage=true", removals_queue="r" * 60)


def test_from_settings_without_storage_says_what_to_set() -> None:
    with pytest.raises(SettingsError, match="LicshiftStorage"):
        StorageQueues.from_settings(Settings())


def test_delays_round_up_to_whole_seconds_and_clamp_to_seven_days() -> None:
    assert delay_to_visibility(0) == 0
    assert delay_to_visibility(-5) == 0
    assert delay_to_visibility(0.01) == 1
    assert delay_to_visibility(2.0) == 2
    assert delay_to_visibility(2.5) == 3
    assert delay_to_visibility(10 * 24 * 3600) == MAX_DELAY_SECONDS
    with pytest.raises(ValueError, match="NaN"):
        delay_to_visibility(float("nan"))


async def test_ensure_queues_creates_the_work_and_poison_queues(
    work_queue: HostQueues, storage_connection_string: str
) -> None:
    await work_queue.ensure_queues()  # idempotent
    async with QueueServiceClient.from_connection_string(storage_connection_string) as service:
        names = {q.name async for q in service.list_queues()}
    for queue in (work_queue.waves_queue, work_queue.removals_queue):
        assert queue in names
        assert f"{queue}-poison" in names


async def test_messages_are_base64_on_the_wire(work_queue: HostQueues, storage_connection_string: str) -> None:
    body = '{"wave": "w1", "note": "Zoë ✓"}'
    await work_queue.send(work_queue.removals_queue, body)
    plain = QueueClient.from_connection_string(storage_connection_string, work_queue.removals_queue)
    async with plain:
        [raw] = await plain.peek_messages(max_messages=5)
    assert raw.content == base64.b64encode(body.encode("utf-8")).decode("ascii")
    [message] = await work_queue.receive(work_queue.removals_queue)
    assert message.body is not None
    assert message.body.decode("utf-8") == body
    assert message.dequeue_count == 1
    assert message.inserted_on is not None
    assert await work_queue.delete(message)
    assert await work_queue.approximate_count(work_queue.removals_queue) == 0


async def test_a_delayed_message_stays_invisible_until_its_delay(work_queue: HostQueues) -> None:
    queue = work_queue.removals_queue
    await work_queue.send(queue, "later", delay_seconds=1.5)  # visible after 2 s (rounded up)
    await work_queue.send(queue, "now")
    assert [m.body for m in await work_queue.receive(queue)] == [b"now"]
    assert await work_queue.receive(queue) == []
    assert await work_queue.approximate_count(queue) == 2  # invisible, not gone
    assert await receive_within(work_queue, queue, 10) == ["later"]


async def test_send_many_sends_everything(work_queue: HostQueues) -> None:
    queue = work_queue.waves_queue
    sent = await work_queue.send_many(queue, [(f"m{i}", 0.0) for i in range(40)], concurrency=8)
    assert sent == 40
    got: list[bytes] = []
    while batch := await work_queue.receive(queue):
        got.extend(m.body for m in batch if m.body is not None)
    assert sorted(got) == sorted(f"m{i}".encode() for i in range(40))


async def test_a_message_that_is_not_base64_is_reported_not_fatal(
    work_queue: HostQueues, storage_connection_string: str
) -> None:
    queue = work_queue.waves_queue
    async with QueueClient.from_connection_string(storage_connection_string, queue) as plain:
        await plain.send_message("{not base64}")
    await work_queue.send(queue, "fine")
    received = await work_queue.receive(queue)
    assert sorted((m.text, m.body) for m in received) == [
        ("ZmluZQ==", b"fine"),
        ("{not base64}", None),
    ]
    bad = next(m for m in received if m.body is None)
    assert "TextBase64EncodePolicy" in bad.decode_error


async def test_release_and_poison_copy_keep_the_original_text(work_queue: HostQueues) -> None:
    queue = work_queue.removals_queue
    await work_queue.send(queue, "payload")
    [first] = await work_queue.receive(queue, visibility_timeout=60)
    receipt = await work_queue.set_visibility(first, first.pop_receipt, 0)  # give it back at once
    with pytest.raises(MessageGone):
        await work_queue.set_visibility(first, first.pop_receipt, 0)  # the old receipt no longer holds
    assert not await work_queue.delete(first)  # nor does delete with it
    assert receipt != first.pop_receipt
    [second] = await work_queue.receive(queue)
    assert second.id == first.id
    assert second.dequeue_count == 2
    await work_queue.move_to_poison(second)
    assert await work_queue.receive(queue) == []
    assert await work_queue.peek_texts(f"{queue}-poison") == [second.text]


async def test_the_function_apps_queue_is_built_on_the_first_send_and_sends_like_the_adapter(
    storage_connection_string: str, work_queue: HostQueues
) -> None:
    """runtime.build leaves the queue SDK for the first message (cold start); that message then goes
    out base64-encoded on the settings' queue, as StorageQueues sends it, and aclose releases it."""
    settings = Settings.from_env(
        {
            "LicshiftStorage": storage_connection_string,
            "LICSHIFT_WAVES_QUEUE": work_queue.waves_queue,
            "LICSHIFT_REMOVALS_QUEUE": work_queue.removals_queue,
        }
    )
    queue = QueueOnFirstUse(settings)
    await queue.aclose()  # nothing built yet: nothing to close
    await queue.send(settings.removals_queue, '{"kind": "remove"}', delay_seconds=0)
    assert await receive_within(work_queue, work_queue.removals_queue, 5) == ['{"kind": "remove"}']
    await queue.aclose()
