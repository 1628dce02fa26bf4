"""`licshift host`: the local Functions host alone, running function_app.py's functions against the
Graph endpoint and storage the settings name (the simulator or another stand-in on loopback, and
Azurite), so waves can be enqueued with the CLI or straight onto the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

from licshift.settings import STORAGE_CONNECTION, Settings, SettingsError


def run_host(settings: Settings, *, timer_interval: float | None) -> int:
    from licshift.localhost import LocalHost
    from licshift.localrun import ROOT, function_app

    connection = settings.storage.connection_string
    if not connection:
        raise SettingsError(
            f"licshift host plays the Functions host on a storage emulator: set {STORAGE_CONNECTION} to a "
            "connection string (e.g. Azurite's UseDevelopmentStorage=true)"
        )

    async def main() -> None:
        from licshift.ledger import Ledger
        from licshift.workqueue import WorkQueue

        # The functions build their own Runtime from these same settings on first use; the tables and
        # queues are created up front so the first enqueue from the CLI finds them.
        async with Ledger.from_settings(settings) as ledger, WorkQueue.from_settings(settings) as queue:
            await ledger.ensure_tables()
            await queue.ensure_queues()
        host = LocalHost(
            function_app(),
            settings_env=dict(os.environ),
            host_json=ROOT / "host.json",
            connection_string=connection,
            timer_interval=timer_interval,
        )
        async with host:
            print(
                f"licshift host: {len(host.functions)} functions, Graph at {settings.graph_endpoint}; Ctrl+C stops",
                file=sys.stderr,
            )
            await host.run_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
