"""The pipeline end to end: licshift's functions on the local host (LocalStack), Azurite for storage,
the Graph tenant simulator over HTTP. Each test gets its own tables and queues on the session's Azurite
and its own simulated tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest

from graphsim.scenario import Scenario, load_scenario, parse
from graphsim.server import Simulator
from graphsim.throttle import ThrottleLimits
from licshift.ports.graph import LicenseGraph
from licshift.rules.outcomes import FINAL_OUTCOMES, Outcome, OutcomeStatus
from licshift.rules.waves import Wave
from licshift_local.stack import LocalStack, StackOptions

TIME_SCALE = 0.01
"""Real seconds per sim second (100x faster): group processing of a few hundred members takes a blink."""
E3 = "ENTERPRISEPACK"


def small_tenant(users: int = 20, **extra: Any) -> dict[str, Any]:
    """A tenant of `users` users with E3 assigned directly, all in "All users", which assigns E3 too."""
    doc: dict[str, Any] = {
        "name": "small",
        "skus": [{"catalog": E3, "seats": users + 50}],
        "users": [{"generate": {"count": users, "prefix": "user", "name": "pop", "direct": [{"sku": E3}]}}],
        "groups": [{"key": "all", "name": "All users", "members": ["@all"], "licenses": [{"sku": E3}]}],
    }
    doc.update(extra)
    return doc


@contextlib.asynccontextmanager
async def simulator(
    scenario: Scenario | Mapping[str, Any] | str, *, throttling: ThrottleLimits | None = None, users: int | None = None
) -> AsyncIterator[Simulator]:
    if isinstance(scenario, str):
        scenario = load_scenario(scenario, users=users)
    elif not isinstance(scenario, Scenario):
        scenario = parse(dict(scenario))
    sim = await Simulator.start(scenario, time_scale=TIME_SCALE, throttling=throttling)
    try:
        yield sim
    finally:
        await sim.stop()


OpenStack = Callable[..., contextlib.AbstractAsyncContextManager[LocalStack]]
"""The `open_stack` fixture's type: open_stack(sim, **options) -> an async context manager of a LocalStack."""


@pytest.fixture
def open_stack(storage_connection_string: str) -> OpenStack:
    """open_stack(sim, graph_wrapper=..., overrides=..., max_dequeue_count=...) -> a LocalStack on its own
    tables and queues."""

    def opener(
        sim: Simulator,
        *,
        graph_wrapper: Callable[[LicenseGraph], LicenseGraph] | None = None,
        overrides: Mapping[str, str] | None = None,
        max_dequeue_count: int | None = None,
    ) -> contextlib.AbstractAsyncContextManager[LocalStack]:
        options = StackOptions(
            namespace=f"it{uuid.uuid4().hex[:10]}",
            graph_wrapper=graph_wrapper,
            overrides=overrides,
            max_dequeue_count=max_dequeue_count,
        )
        return LocalStack(sim.base_url, storage_connection_string, options)

    return opener


async def wait_processing_complete(sim: Simulator, group_id: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sim.tenant.group_processing_state(group_id) != "ProcessingComplete":
        assert loop.time() < deadline, f"group {group_id} processing did not complete in {timeout} s"
        await asyncio.sleep(0.1)


def start(group: str, *, skus: tuple[str, ...] = (E3,), **fields: Any) -> dict[str, Any]:
    command: dict[str, Any] = {
        "command": "start",
        "group": group,
        "skus": list(skus),
        "selection": {"kind": "all"},
        "requested_by": "tests@contoso.com",
    }
    command.update(fields)
    return command


def by_user(rows: list[Outcome]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    for row in rows:
        assert row.user_id not in out, f"two outcome rows for {row.user_id}"
        out[row.user_id] = row
    return out


def assert_all_final(rows: list[Outcome]) -> None:
    open_rows = [(r.user_id, r.status) for r in rows if r.status not in FINAL_OUTCOMES]
    assert not open_rows, f"outcomes without a final status: {open_rows[:5]}"


def count(rows: list[Outcome], status: OutcomeStatus) -> int:
    return sum(1 for r in rows if r.status is status)


def graph_losses(sim: Simulator) -> list[Any]:
    """Losses the oracle attributes to Graph requests, i.e. to licshift."""
    return list(sim.oracle.losses(cause_prefix="graph:"))


class AfterRemove:
    """A LicenseGraph that runs `hook(user_id, sku_id)` right after a successful remove_direct: a
    legitimate race harness (the tenant changes between licshift's write and its post-check)."""

    def __init__(self, inner: LicenseGraph, hook: Callable[[str, str], Awaitable[None] | None]) -> None:
        self._inner = inner
        self._hook = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def remove_direct(self, user_id: str, sku_id: str) -> None:
        await self._inner.remove_direct(user_id, sku_id)
        result = self._hook(user_id, sku_id)
        if result is not None:
            await result


async def completed(stack: LocalStack, wave_id: str, timeout: float = 45.0) -> Wave:  # noqa: ASYNC109
    return await stack.wait_for_wave(wave_id, {"completed", "halted", "planned", "cancelled"}, timeout)
