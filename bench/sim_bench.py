"""Throughput of the Graph tenant simulator (graphsim), serving the `large` scenario (100,000 users).

  .venv/bin/python bench/sim_bench.py [--users 100000] [--out bench/results/sim.json]

The simulator runs in its own process (`python -m graphsim serve large --no-throttling`, so Graph's
quotas do not cap what is measured), the client (aiohttp) in this one. Cases:
- load:                  process start -> first answer (scenario generation + tenant build + listen).
- scan:                  the whole licensing group through /members/microsoft.graph.user in pages of
                         999 with $select=id,userPrincipalName,licenseAssignmentStates (time, users/s).
- get_user_sequential:   GET /users/{id}?$select=licenseAssignmentStates, one at a time.
- get_user_concurrent:   the same with 32 requests in flight.
- assign_sequential:     POST /users/{id}/assignLicense removing the direct E3 (inherited stays).
- assign_concurrent:     the same with 16 in flight.
- server_peak_rss_mb:    the simulator process's VmHWM at the end (Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
SELECT_STATES = "$select=licenseAssignmentStates"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def wait_ready(session: aiohttp.ClientSession, base: str, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.perf_counter() + timeout
    while True:
        try:
            async with session.get(f"{base}/users?$top=1&$select=id") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.perf_counter() > deadline:
            raise RuntimeError("the simulator did not start in time")
        await asyncio.sleep(0.05)


async def timed(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> dict[str, Any]:
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            await one(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return {
        "requests": count,
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "requests_per_s": round(count / seconds, 1),
    }


def start_server(users: int, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "graphsim", "serve", "large", "--users", str(users), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([*command, "--no-throttling"], stdout=subprocess.DEVNULL, env=env)


async def run(server: subprocess.Popen[bytes], port: int, spawned: float) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}/v1.0"
    report: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        await wait_ready(session, base, timeout=120)
        report["load_s"] = round(time.perf_counter() - spawned, 2)

        async with session.get(f"{base}/groups?$select=id,displayName") as response:
            group = (await response.json())["value"][0]["id"]
        url: str | None = (
            f"{base}/groups/{group}/members/microsoft.graph.user"
            "?$select=id,userPrincipalName,licenseAssignmentStates&$top=999"
        )
        ids: list[str] = []
        pages = 0
        started = time.perf_counter()
        while url:
            async with session.get(url) as response:
                body = await response.json()
            ids.extend(item["id"] for item in body["value"])
            pages += 1
            url = body.get("@odata.nextLink")
        seconds = time.perf_counter() - started
        report["scan"] = {
            "users": len(ids),
            "pages": pages,
            "page_size": 999,
            "seconds": round(seconds, 3),
            "users_per_s": round(len(ids) / seconds),
        }

        async def get_user(index: int) -> None:
            async with session.get(f"{base}/users/{ids[index % len(ids)]}?{SELECT_STATES}") as response:
                assert response.status == 200, response.status
                await response.read()

        report["get_user_sequential"] = await timed(3000, 1, get_user)
        report["get_user_concurrent"] = await timed(10000, 32, get_user)

        body = json.dumps({"addLicenses": [], "removeLicenses": [E3]}).encode()
        headers = {"Content-Type": "application/json"}
        writes = min(3000, len(ids) // 2)

        def remover(offset: int) -> Callable[[int], Awaitable[None]]:
            async def remove(index: int) -> None:
                user = ids[offset + index]
                async with session.post(f"{base}/users/{user}/assignLicense", data=body, headers=headers) as r:
                    assert r.status == 200, (r.status, await r.text())
                    await r.read()

            return remove

        report["assign_sequential"] = await timed(writes // 2, 1, remover(0))
        report["assign_concurrent"] = await timed(writes - writes // 2, 16, remover(writes // 2))
        async with session.get(f"http://127.0.0.1:{port}/_sim/oracle") as response:
            report["oracle_losses"] = (await response.json())["summary"]["losses"]
    report["server_peak_rss_mb"] = peak_rss_mb(server.pid)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sim.json")
    options = parser.parse_args()
    port = free_port()
    spawned = time.perf_counter()
    server = start_server(options.users, port)
    try:
        results = asyncio.run(run(server, port, spawned))
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = {
        "benchmark": "graphsim",
        "scenario": "large",
        "users": options.users,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **results,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
