"""Every message leaves a record (S6, S7): bytes that are not base64, not UTF-8 or not JSON, and
oversized messages, on any of licshift's queues or poison queues, end as exactly one rejected-request
event with a safe, bounded excerpt. Nothing is retried, nothing moves on to a `-poison-poison` queue,
nothing reaches Graph, and the host keeps running."""

from __future__ import annotations

import base64
import json

from azure.core.exceptions import ResourceNotFoundError

from licshift.adapters.queues import StorageQueues, poison_queue
from licshift.rules.outcomes import Severity
from licshift.services.telemetry import RAW_LIMIT, REQUEST_REJECTED

from .conftest import OpenStack, simulator, small_tenant


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


HUGE_FIELD = "x" * 46_000  # base64 of the message stays just under a queue message's 64 KiB
BAD = {
    # Control characters cannot be in a queue message at all (the service speaks XML 1.0).
    "not base64": '{"command": "start"} \u00e9 <not> base64 & not JSON either',
    "not UTF-8": b64(b"\xff\xfe\xfa not UTF-8 \x80"),
    "not JSON": b64(b"not json {"),
    "oversized, not base64": "%" * 60_000,
    "oversized JSON": b64(json.dumps({"command": "kill-switch", "on": True, "requested_by": HUGE_FIELD}).encode()),
    "oversized task": b64(json.dumps({"task": "remove", "wave_id": HUGE_FIELD}).encode()),
}


async def test_undecodable_and_oversized_messages_on_every_queue_are_recorded_once(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(2)) as sim, open_stack(sim) as stack:
        settings = stack.settings
        sending = stack.rt.queue
        assert isinstance(sending, StorageQueues)  # the one adapter that can send raw, undecodable text
        queues = [settings.waves_queue, settings.removals_queue]
        queues += [poison_queue(q) for q in queues]
        for queue in queues:
            for text in BAD.values():
                await sending.send_text(queue, text)
            stack.host.nudge(queue)
        expected = len(queues) * len(BAD)

        async def all_recorded() -> bool:
            return len(await stack.events([REQUEST_REJECTED])) >= expected

        assert await stack.run_until(all_recorded, 40), "every message was recorded"
        await stack.idle(2)  # a second record, a retry or a poison move would show now
        rejected = await stack.events([REQUEST_REJECTED])
        every_event = await stack.events()
        stats = stack.host.stats
        leftovers = {}
        for queue in [*queues, *(poison_queue(q) for q in queues[2:])]:
            try:
                leftovers[queue] = await stack.host.queues.approximate_count(queue)
            except ResourceNotFoundError:
                leftovers[queue] = 0

    assert len(rejected) == expected, [e.data["reason"] for e in rejected]
    assert len(every_event) == expected, "nothing else was recorded (no poison alert, no wave)"
    reasons = [e.data["reason"] for e in rejected]
    assert sum("not base64" in r for r in reasons) == 2 * len(queues)
    assert sum("not UTF-8" in r for r in reasons) == len(queues)
    assert sum("not valid JSON" in r for r in reasons) == len(queues)
    for event in rejected:
        assert event.severity is Severity.WARNING
        raw = event.data["raw"]
        assert raw, "an excerpt of the message is kept"
        assert len(raw) <= RAW_LIMIT + 50, "bounded"
        assert raw.isprintable(), "control characters escaped"
    assert all(count == 0 for count in leftovers.values()), leftovers
    for name in ("wave_intake", "remove_direct_license", "waves_poison", "removals_poison"):
        assert stats[name].failures == 0, name
        assert stats[name].poisoned == 0, name
    assert sim.counters.total().requests == 0, "nothing reached Graph"
