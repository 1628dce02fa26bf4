"""S7 through the waves queue: bad input is rejected with a clear, recorded reason and nothing else
happens (no wave, no Graph write, no retry into the poison queue); a redelivered start is a no-op."""

from __future__ import annotations

import json
import uuid

from licshift.rules.outcomes import OutcomeStatus, Severity
from licshift.services.telemetry import REQUEST_REJECTED, WAVE_ACCEPTED
from licshift_local.stack import LocalStack

from .conftest import OpenStack, simulator, small_tenant, start

OTHER_GROUP = "00000000-0000-4000-8000-0000000000aa"


async def test_bad_commands_are_rejected_recorded_and_do_nothing(open_stack: OpenStack) -> None:
    doc = small_tenant(6)
    doc["groups"].append({"key": "bare", "name": "No licenses", "members": ["@all"]})
    async with simulator(doc) as sim, open_stack(sim) as stack:
        group, bare = sim.scenario.id("all"), sim.scenario.id("bare")
        bad = [
            ("not json at all", "not valid JSON"),
            (json.dumps(start(f"{group}' or true", wave_id=str(uuid.uuid4()))), "group must be a GUID"),
            (json.dumps(start(group, wave_id=str(uuid.uuid4()), skus=("E3')/x",))), "skuPartNumber"),
            (
                json.dumps(start(group, wave_id=str(uuid.uuid4()), selection={"kind": "percent", "percent": 0})),
                "above 0",
            ),
            (json.dumps(start(group, wave_id=str(uuid.uuid4()), surprise=True)), "unknown field"),
            (json.dumps(start(OTHER_GROUP, wave_id=str(uuid.uuid4()), force=True)), "does not exist"),
            (json.dumps(start(group, wave_id=str(uuid.uuid4()), skus=("EMS",), force=True)), "not subscribed"),
            (json.dumps(start(bare, wave_id=str(uuid.uuid4()), force=True)), "does not assign ENTERPRISEPACK"),
            (json.dumps(start(group, wave_id=str(uuid.uuid4()))), "run a canary first"),
            (json.dumps({"command": "pause", "wave_id": str(uuid.uuid4())}), "does not exist"),
        ]
        for text, _ in bad:
            await stack.send_raw(text)

        async def all_rejected() -> bool:
            return len(await stack.events([REQUEST_REJECTED])) >= len(bad)

        assert await stack.run_until(all_rejected, 20)
        rejected = await stack.events([REQUEST_REJECTED])
        waves = await stack.rt.ledger.list_waves()
        stats = stack.host.stats

    reasons = [e.data["reason"] for e in rejected]
    for _, expected in bad:
        assert any(expected in r for r in reasons), (expected, reasons)
    assert all(e.severity is Severity.WARNING for e in rejected)
    assert all(e.data["raw"] for e in rejected), "the raw request is kept (truncated)"
    assert waves == []
    assert sim.counters.writes == 0
    assert stats["wave_intake"].failures == 0, "a bad message is never retried"
    assert stats["waves_poison"].deliveries == 0


async def test_allowlist_and_redelivered_start(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(4)) as sim:
        group = sim.scenario.id("all")
        allow = {"LICSHIFT_GROUP_ALLOWLIST": OTHER_GROUP}
        async with open_stack(sim, overrides=allow) as stack:
            await stack.enqueue(start(group, force=True))
            assert await stack.run_until(lambda: _has(stack, REQUEST_REJECTED), 10)
            (rejected,) = await stack.events([REQUEST_REJECTED])
            assert "LICSHIFT_GROUP_ALLOWLIST" in rejected.message
        async with open_stack(sim) as stack:
            command = start(group, wave_id=str(uuid.uuid4()), dry_run=True)
            for _ in range(3):
                await stack.enqueue(command)
            await stack.wait_for_wave(command["wave_id"], {"planned"}, 20)
            # The same wave id for a different wave is refused, not silently taken as a duplicate.
            await stack.enqueue({**command, "dry_run": False, "force": True})
            assert await stack.run_until(lambda: _has(stack, REQUEST_REJECTED), 10)
            await stack.idle(1)
            accepted = await stack.events([WAVE_ACCEPTED])
            (reused,) = await stack.events([REQUEST_REJECTED])
            waves = await stack.rt.ledger.list_waves()
    assert len(waves) == 1
    assert waves[0].dry_run
    assert len(accepted) == 1
    assert "already used by a different wave" in reused.message


async def _has(stack: LocalStack, kind: str) -> bool:
    return bool(await stack.events([kind]))


async def test_a_selection_larger_than_the_limit_halts_at_the_scan_before_any_write(open_stack: OpenStack) -> None:
    async with simulator(small_tenant(6)) as sim:
        group = sim.scenario.id("all")
        async with open_stack(sim, overrides={"LICSHIFT_MAX_WAVE_USERS": "4"}) as stack:
            wave_id = await stack.enqueue(start(group, force=True))
            wave = await stack.wait_for_wave(wave_id, {"halted"}, 30)
            await stack.idle(2)
            rows = await stack.outcomes(wave_id)

    assert "LICSHIFT_MAX_WAVE_USERS" in wave.status_reason
    assert sim.counters.writes == 0
    assert all(r.status is OutcomeStatus.NOT_ATTEMPTED for r in rows)
