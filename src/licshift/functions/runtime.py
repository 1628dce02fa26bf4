"""The composition root: the one place that builds the adapters the functions use.

A `Runtime` is built once per process, lazily, on the first invocation (so importing function_app.py
stays cheap for cold start: msgraph, the table and queue SDKs are imported only then). Tests, the
local host and the demo `install` their own Runtime instead; nothing else reaches into the adapters.
"""

from __future__ import annotations

from licshift.services.runtime import Runtime
from licshift.settings import Settings

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
    from licshift.adapters.queues import StorageQueues

    return Runtime(
        settings=settings,
        graph=GraphAdapter.from_settings(settings),
        ledger=Ledger.from_settings(settings),
        queue=StorageQueues.from_settings(settings),
    )
