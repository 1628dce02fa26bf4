"""Table Storage requests per removal: a wave run through the local stack with the remover's shared
reads of the wave and control rows off (LICSHIFT_STATE_CACHE_SECONDS=0, every check reads both, as
before issue 8) and on (the default 2 s), one after the other in one run.

  .venv/bin/python bench/table_trips_bench.py [--users 300] [--out bench/results/table_trips.json]

Every table request of the function app (the remover, the tick, intake) goes through a counting HTTP
proxy in front of Azurite (in memory); the bench's own polling reads Azurite directly, so it is not
counted. Requests are counted per table and kind: `get` (one entity), `query`, `write` (insert,
update, merge, delete, batch). The remover's checks are the `get`s of the Waves and Control tables;
the tick reads the control row too (once a second here), which both runs pay alike.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import platform
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from graphsim.scenario import parse
from graphsim.server import Simulator
from licshift.adapters.ledger import Ledger
from licshift.rules.outcomes import OutcomeStatus
from licshift.rules.waves import WaveStatus
from licshift_local.azurite import Azurite
from licshift_local.stack import LocalStack, StackOptions

E3 = "ENTERPRISEPACK"
TIME_SCALE = 0.01
"""Real seconds per simulated second: group license processing takes a blink."""
_ENTITY = re.compile(r"^/[^/]+/([A-Za-z0-9]+)\(PartitionKey=")
_TABLE = re.compile(r"^/[^/]+/([A-Za-z0-9$]+)")
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class CountingProxy:
    """Forwards every request to Azurite's table endpoint and counts it by (table, kind)."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _count(self, method: str, path: str) -> None:
        entity = _ENTITY.match(path)
        if entity:
            table, kind = entity.group(1), "get" if method == "GET" else "write"
        else:
            found = _TABLE.match(path)
            table = found.group(1) if found else "?"
            kind = "query" if method == "GET" else "write"
        # Tables are prefixed per run (t<namespace>Outcomes): count by their role.
        role = next((r for r in ("Waves", "Outcomes", "Control", "Events") if table.endswith(r)), table)
        self.counts[(role, kind)] += 1

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self._count(request.method, request.path)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        # The raw path, not re-quoted: the shared-key signature covers it as the SDK sent it.
        url = URL(self.target + request.raw_path, encoded=True)
        body = await request.read()
        # No body, no Content-Type: aiohttp would add one the SDK did not sign.
        async with self._session.request(
            request.method, url, headers=headers, data=body or None, skip_auto_headers=("Content-Type",)
        ) as answer:
            if answer.status == 403:
                self.counts[("refused", request.method + " " + request.raw_path[:60])] += 1
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            return web.Response(status=answer.status, headers=out, body=await answer.read())


def tenant(users: int) -> dict[str, Any]:
    return {
        "name": "trips",
        "skus": [{"catalog": E3, "seats": users + 50}],
        "users": [{"generate": {"count": users, "prefix": "user", "name": "pop", "direct": [{"sku": E3}]}}],
        "groups": [{"key": "all", "name": "All users", "members": ["@all"], "licenses": [{"sku": E3}]}],
    }


async def one_run(azurite: Azurite, users: int, cache_seconds: str) -> dict[str, Any]:
    table_endpoint = URL(azurite.connection_string.split("TableEndpoint=")[1].split(";")[0])
    proxy = CountingProxy(str(table_endpoint.origin()))
    await proxy.start()
    through_proxy = re.sub(
        r"TableEndpoint=http://127\.0\.0\.1:\d+/",
        f"TableEndpoint=http://127.0.0.1:{proxy.port}/",
        azurite.connection_string,
    )
    sim = await Simulator.start(parse(tenant(users)), time_scale=TIME_SCALE)
    namespace = f"trips{uuid.uuid4().hex[:8]}"
    options = StackOptions(namespace=namespace, overrides={"LICSHIFT_STATE_CACHE_SECONDS": cache_seconds})
    try:
        # The bench's own reads go to Azurite directly, uncounted.
        direct_ledger = Ledger(azurite.connection_string, prefix=f"t{namespace}")
        async with LocalStack(sim.base_url, through_proxy, options) as stack, direct_ledger as direct:
            proxy.counts.clear()
            started = time.monotonic()
            wave_id = await stack.enqueue(
                {
                    "command": "start",
                    "group": sim.scenario.id("all"),
                    "skus": [E3],
                    "selection": {"kind": "all"},
                    "requested_by": "bench@contoso.com",
                    "force": True,
                }
            )

            async def done() -> bool:
                wave = await direct.get_wave(wave_id)
                return wave is not None and wave.value.status in {WaveStatus.COMPLETED, WaveStatus.HALTED}

            assert await stack.run_until(done, 600), "the wave did not finish in 10 minutes"
            wall = time.monotonic() - started
            counts = dict(proxy.counts)
            rows = [o async for o in direct.iter_outcomes(wave_id)]
    finally:
        await sim.stop()
        await proxy.stop()
    removed = sum(1 for r in rows if r.status is OutcomeStatus.REMOVED)
    total = sum(counts.values())
    per = (lambda n: round(n / removed, 3)) if removed else (lambda n: None)
    return {
        "state_cache_seconds": float(cache_seconds),
        "removed": removed,
        "wall_s": round(wall, 1),
        "graph_writes": sim.counters.writes,
        "table_requests": total,
        "table_requests_per_removal": per(total),
        "wave_gets_per_removal": per(counts.get(("Waves", "get"), 0)),
        "control_gets_per_removal": per(counts.get(("Control", "get"), 0)),
        "by_table_and_kind": {f"{t}/{k}": n for (t, k), n in sorted(counts.items())},
    }


async def main_async(users: int) -> dict[str, Any]:
    azurite = await asyncio.to_thread(Azurite.start, in_memory=True)
    try:
        before = await one_run(azurite, users, "0")
        after = await one_run(azurite, users, "2")
    finally:
        azurite.stop()
    saved = before["table_requests_per_removal"] - after["table_requests_per_removal"]
    return {
        "benchmark": "table_trips",
        "users": users,
        "machine": {"python": platform.python_version()},
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "before": before,
        "after": after,
        "saved_per_removal": round(saved, 3),
        "ratio": round(after["table_requests_per_removal"] / before["table_requests_per_removal"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "table_trips.json")
    args = parser.parse_args()
    record = asyncio.run(main_async(args.users))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
