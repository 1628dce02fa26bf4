"""The local stack: licshift's real functions on the local host, against a Graph endpoint on loopback
(the tenant simulator, or any Graph-compatible stand-in) and Azure Storage (Azurite).

Used by the integration tests and by `licshift demo` / `licshift host`:

    async with LocalStack(graph_url, connection_string) as stack:
        wave_id = await stack.enqueue({"command": "start", "group": ..., "skus": ["ENTERPRISEPACK"], ...})
        wave = await stack.wait_for_wave(wave_id, {"completed", "halted"}, timeout=60)
        rows = await stack.outcomes(wave_id)
        stack.graph_counters   # {"reads": ..., "writes": ..., "throttled": ...} as licshift saw them

It builds the settings env with a compressed tick (LICSHIFT_TICK_SECONDS, timer_interval), installs a
Runtime (GraphAdapter without credential, Ledger, StorageQueues), creates the tables and queues, and runs
FunctionsHost over function_app.app with host.json's queue settings, time-compressed the same way.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func

from licshift.adapters.graph import GraphAdapter
from licshift.adapters.ledger import Ledger
from licshift.adapters.queues import StorageQueues
from licshift.functions import runtime
from licshift.ports.graph import LicenseGraph
from licshift.rules.messages import parse_waves_message
from licshift.rules.outcomes import Event, Outcome
from licshift.rules.waves import Wave, WaveStatus
from licshift.services.drift import DriftReport, drift_watch
from licshift.services.runtime import Runtime
from licshift.settings import STORAGE_CONNECTION, Settings
from licshift_local.functions_host import FunctionsHost

ROOT = Path(__file__).resolve().parents[2]
"""The project root: function_app.py and host.json live here."""


def load_function_app(root: Path = ROOT) -> ModuleType:
    """function_app.py as a module (it sits at the project root, outside any package)."""
    existing = sys.modules.get("function_app")
    if existing is not None:
        return existing
    path = root / "function_app.py"
    spec = importlib.util.spec_from_file_location("function_app", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path} not found: run licshift from a checkout of the project")
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app"] = module
    spec.loader.exec_module(module)
    return module


def function_app() -> func.FunctionApp:
    app = load_function_app().app
    assert isinstance(app, func.FunctionApp)
    return app


def settings_env(
    graph_url: str,
    connection_string: str,
    *,
    namespace: str = "",
    tick_seconds: float = 1.0,
    drift_seconds: float | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """App settings for a local run. `namespace` (letters and digits) prefixes tables and queues so
    that several runs can share one Azurite."""
    ns = namespace.lower()
    if not re.fullmatch(r"[a-z0-9]{0,40}", ns):
        raise ValueError(f"namespace {namespace!r} must be up to 40 letters and digits (it prefixes tables and queues)")
    tick_schedule = timespan(tick_seconds)
    env = {
        "AzureWebJobsStorage": connection_string,
        STORAGE_CONNECTION: connection_string,
        "LICSHIFT_GRAPH_ENDPOINT": graph_url.rstrip("/"),
        "LICSHIFT_WAVES_QUEUE": f"{ns}-waves" if ns else "licshift-waves",
        "LICSHIFT_REMOVALS_QUEUE": f"{ns}-removals" if ns else "licshift-removals",
        "LICSHIFT_TABLE_PREFIX": f"t{ns}" if ns else "licshift",
        "LICSHIFT_TICK_SECONDS": str(int(tick_seconds)),
        # A TimeSpan schedule (the local host plays it; Azure accepts it on dedicated plans only).
        "LICSHIFT_TICK_SCHEDULE": tick_schedule,
        "LICSHIFT_DRIFT_SCHEDULE": timespan(drift_seconds) if drift_seconds else "0 0 * * * *",
        # Hourly, like the drift watch: a local run fires it only when it lasts that long (tests set it).
        "LICSHIFT_SETTLE_SCHEDULE": "0 0 * * * *",
        # Graph's own per-app limit: the simulator enforces the real quotas, so go as fast as Graph allows.
        "LICSHIFT_WRITE_RATE_CEILING": "20",
        "LICSHIFT_WRITE_RATE_FLOOR": "2",
    }
    env.update(overrides or {})
    return env


def timespan(seconds: float) -> str:
    """A TimeSpan timer schedule (hh:mm:ss): whole seconds, at least one."""
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"a local tick or drift interval must be a whole number of seconds >= 1, got {seconds:g}")
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def compressed_host_json(
    host_json: Path, *, visibility_timeout: str = "00:00:01", max_dequeue_count: int | None = None
) -> dict[str, Any]:
    """host.json with the retry back-off shortened, so a redelivery takes a second, not 30."""
    data: dict[str, Any] = json.loads(host_json.read_text())
    queues = data.setdefault("extensions", {}).setdefault("queues", {})
    queues["visibilityTimeout"] = visibility_timeout
    if max_dequeue_count is not None:
        queues["maxDequeueCount"] = max_dequeue_count
    queues["maxPollingInterval"] = "00:00:00.200"
    return data


@dataclass(frozen=True)
class StackOptions:
    tick_seconds: float = 1.0
    namespace: str = ""
    overrides: Mapping[str, str] | None = None
    graph_wrapper: Callable[[LicenseGraph], LicenseGraph] | None = None
    """Wraps the GraphAdapter (tests use it as a race harness)."""
    visibility_timeout: str = "00:00:01"
    max_dequeue_count: int | None = None
    """Deliveries before a message goes to its poison queue; None: host.json's."""
    drift_seconds: float | None = None
    """Seconds between drift_watch firings; None: hourly, i.e. only when called (`run_drift`)."""


class LocalStack:
    def __init__(self, graph_url: str, connection_string: str, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.env = settings_env(
            graph_url,
            connection_string,
            namespace=self.options.namespace,
            tick_seconds=self.options.tick_seconds,
            drift_seconds=self.options.drift_seconds,
            overrides=self.options.overrides,
        )
        self.settings = Settings.from_env(self.env)
        self.connection_string = connection_string
        self._adapter: GraphAdapter | None = None
        self._host: FunctionsHost | None = None
        self.runtime: Runtime | None = None

    async def __aenter__(self) -> LocalStack:
        self._adapter = GraphAdapter.create(self.settings.graph_endpoint, credential=None)
        graph: LicenseGraph = self._adapter
        if self.options.graph_wrapper is not None:
            graph = self.options.graph_wrapper(graph)
        ledger = Ledger.from_settings(self.settings)
        queue = StorageQueues.from_settings(self.settings)
        self.runtime = Runtime(settings=self.settings, graph=graph, ledger=ledger, queue=queue)
        await ledger.ensure_tables()
        await queue.ensure_queues()
        runtime.install(self.runtime)
        host_json = compressed_host_json(
            ROOT / "host.json",
            visibility_timeout=self.options.visibility_timeout,
            max_dequeue_count=self.options.max_dequeue_count,
        )
        self._host = FunctionsHost(
            function_app(),
            settings_env=self.env,
            host_json=host_json,
            connection_string=self.connection_string,
        )
        try:
            await self._host.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._host is not None:
            await self._host.aclose()
            self._host = None
        if runtime.installed() is self.runtime:
            runtime.install(None)
        if self.runtime is not None:
            for closable in (self.runtime.ledger, self.runtime.queue):
                close = getattr(closable, "aclose", None)
                if close is not None:
                    await close()
        if self._adapter is not None:
            await self._adapter.aclose()
            self._adapter = None

    @property
    def rt(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the local stack is not started: use `async with LocalStack(...)`")
        return self.runtime

    @property
    def host(self) -> FunctionsHost:
        """The FunctionsHost (stats per function: deliveries, failures, poisoned ...)."""
        if self._host is None:
            raise RuntimeError("the local stack is not started: use `async with LocalStack(...)`")
        return self._host

    @property
    def graph_counters(self) -> dict[str, int]:
        """Graph calls licshift made (reads, writes, throttled), as the adapter counted them."""
        if self._adapter is None:
            return {"reads": 0, "writes": 0, "throttled": 0}
        return self._adapter.counters.as_dict()

    async def enqueue(self, command: Mapping[str, Any]) -> str:
        """Put a waves-queue command on the queue (a start without wave_id gets a new one) and return
        the wave id. The command is checked locally first, so a caller's typo fails here, loudly."""
        body = dict(command)
        if body.get("command") == "start" and "wave_id" not in body:
            body["wave_id"] = str(uuid.uuid4())
        text = json.dumps(body)
        parse_waves_message(text, max_wave_users=self.settings.max_wave_users)
        await self.send_raw(text)
        return str(body.get("wave_id", ""))

    async def send_raw(self, text: str) -> None:
        """Put text on the waves queue as is (tests of malformed input)."""
        await self.rt.queue.send(self.settings.waves_queue, text)
        if self._host is not None:
            self._host.nudge(self.settings.waves_queue)

    async def get_wave(self, wave_id: str) -> Wave | None:
        found = await self.rt.ledger.get_wave(wave_id)
        return found.value if found else None

    async def wait_for_wave(
        self,
        wave_id: str,
        statuses: Collection[str | WaveStatus],
        timeout: float = 60.0,  # noqa: ASYNC109 - a deadline for the host loop, not a cancellation scope
    ) -> Wave:
        """Run the host until the wave reaches one of `statuses`; TimeoutError says where it is."""
        wanted = {WaveStatus(s) for s in statuses}
        seen: list[Wave | None] = [None]

        async def reached() -> bool:
            seen[0] = await self.get_wave(wave_id)
            return seen[0] is not None and seen[0].status in wanted

        if not await self.host.run_until(reached, timeout=timeout):
            last = seen[0]
            where = f"{last.status} ({last.status_reason})" if last else "not created (rejected? see events)"
            raise TimeoutError(f"wave {wave_id} did not reach {sorted(wanted)} in {timeout:g} s; it is {where}")
        assert seen[0] is not None
        return seen[0]

    async def run_until(self, predicate: Callable[[], Any], timeout: float = 30.0) -> bool:  # noqa: ASYNC109
        return await self.host.run_until(predicate, timeout=timeout)

    async def outcomes(self, wave_id: str) -> list[Outcome]:
        return [o async for o in self.rt.ledger.iter_outcomes(wave_id)]

    async def events(self, kinds: Collection[str] | None = None, since_minutes: float = 60) -> list[Event]:
        since = self.rt.now() - timedelta(minutes=since_minutes)
        return [e async for e in self.rt.ledger.iter_events(since, kinds=kinds)]

    async def run_drift(self) -> DriftReport:
        return await drift_watch(self.rt)

    async def idle(self, seconds: float) -> None:
        """Let the host run for `seconds` (ticks and deliveries continue)."""
        await self.host.run_until(None, timeout=seconds)


async def run_forever(stack: LocalStack) -> None:
    """`licshift host`: serve until interrupted."""
    async with stack:
        await stack.host.run_forever()
