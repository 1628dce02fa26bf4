"""The simulator as an HTTP server on loopback (aiohttp), embeddable in tests.

- `await Simulator.start(scenario, port=0, time_scale=...)` in the caller's event loop,
- `SimulatorThread(scenario, ...)` runs its own loop in a daemon thread (sync code, CLI, demo),
- `serve(scenario, host, port)` runs until interrupted (`licshift sim serve`).

Graph lives under /v1.0; the admin paths (oracle, counters, faults, legacy actor, clock, events) live
under /_sim and are neither throttled nor counted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from graphsim.api import JSON_TYPE, ApiRequest, ApiResponse, GraphApi, error_body, normalize_path
from graphsim.clock import SimClock
from graphsim.counters import Counters
from graphsim.faults import FaultRule, Faults
from graphsim.oracle import Oracle
from graphsim.scenario import Scenario, build_tenant, load_scenario
from graphsim.tenant import Tenant
from graphsim.throttle import Throttle, ThrottleLimits

T = TypeVar("T")
_log = logging.getLogger("graphsim")
_SETTLE_INTERVAL = 0.1
"""Real seconds between background settles, so timed events and the legacy actor happen even
while nobody asks, and a big group's processing is spread over many small steps."""


class Simulator:
    """One simulated tenant served over HTTP. Create with `await Simulator.start(...)`."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        time_scale: float = 1.0,
        frozen_clock: bool = False,
        throttling: bool | ThrottleLimits | None = None,
        faults: bool = True,
    ) -> None:
        self.scenario = scenario
        self.clock = SimClock(time_scale, frozen=frozen_clock)
        self.tenant: Tenant = build_tenant(scenario, self.clock)
        limits = scenario.throttle_limits(len(self.tenant.users))
        if isinstance(throttling, ThrottleLimits):
            limits = throttling
        elif throttling is not None:
            limits = ThrottleLimits(**{**_limits_dict(limits), "enabled": bool(throttling)})
        self.throttle = Throttle(limits, self.tenant.tenant_id)
        self.counters = Counters()
        self.faults = Faults(scenario.faults, seed=scenario.fault_seed, enabled=faults)
        self.api = GraphApi(self.tenant, self.throttle, self.counters, self.clock)
        self.tenant.on_legacy_write = lambda: self.throttle.record_external_write(self.clock.now())
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # ------------------------------------------------------------------------- lifecycle
    @classmethod
    async def start(
        cls,
        scenario: Scenario | str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        frozen_clock: bool = False,
        throttling: bool | ThrottleLimits | None = None,
        faults: bool = True,
    ) -> Simulator:
        """Build the tenant and listen on host:port (0 = a free port) in the running loop."""
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        sim = cls(scenario, time_scale=time_scale, frozen_clock=frozen_clock, throttling=throttling, faults=faults)
        await sim._listen(host, port)
        return sim

    async def _listen(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runner = runner
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.host, self.port = host, int(sockets[0].getsockname()[1]) if sockets else port
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(_SETTLE_INTERVAL)
            try:
                self.tenant.settle()
            except Exception:
                # Keep serving: the same failure will surface as a 500 on the next request that settles.
                _log.exception("graphsim: background settle failed")

    # ------------------------------------------------------------------------- accessors
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1.0"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.port}/_sim"

    @property
    def oracle(self) -> Oracle:
        self.tenant.settle()
        return self.tenant.oracle

    def advance(self, seconds: float) -> None:
        """Move the sim clock forward (processing, events, legacy ticks and quotas follow)."""
        self.clock.advance(seconds)
        self.tenant.settle()

    def set_legacy(self, enabled: bool) -> None:
        self.tenant.set_legacy(enabled=enabled)

    # ------------------------------------------------------------------------------ HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sim"):
            return await self._admin(request, normalize_path(path[len("/_sim") :]))
        normalized = normalize_path(path)
        if not normalized.lower().startswith("/v1.0"):
            return web.json_response(
                error_body("BadRequest", "Invalid version: use /v1.0.", "", "", self.api._date()), status=400
            )
        graph_path = normalized[len("/v1.0") :] or "/"
        self.tenant.settle()
        method = request.method.upper()
        kind = "read" if method == "GET" else "write"
        plan = self.faults.plan(kind, graph_path)
        if plan.latency_seconds:
            await asyncio.sleep(plan.latency_seconds)
        rule = plan.rule
        endpoint = self.api.endpoint_of(method, graph_path)
        if rule is not None and not rule.after_write:
            return self._fault(request, rule, endpoint, None)
        body = await request.read()
        origin = f"{request.scheme}://{request.host}"
        api_request = ApiRequest(method, graph_path, list(request.query.items()), request.headers, body, origin)
        answer = self.api.handle(api_request)
        if rule is not None and answer.executed and answer.status < 400:
            self.counters.record(answer.endpoint, status=rule.status or 0, write=True, fault=True, path=graph_path)
            return self._fault(request, rule, endpoint, answer, counted=True)
        self.counters.record(
            answer.endpoint,
            status=answer.status,
            read=answer.executed and answer.kind == "read",
            write=answer.executed and answer.kind == "write",
            quota=answer.quota,
            path=graph_path,
        )
        return _response(answer)

    def _fault(
        self, request: web.Request, rule: FaultRule, endpoint: str, answer: ApiResponse | None, counted: bool = False
    ) -> web.StreamResponse:
        if not counted:
            self.counters.record(endpoint, status=rule.status or 0, fault=True, path=request.path)
        if rule.drop:
            transport = request.transport
            if transport is not None:
                transport.abort()
            # Nothing can be written on an aborted transport; aiohttp drops this response quietly.
            return web.Response(status=500)
        status = rule.status or 503
        code = {429: "TooManyRequests", 503: "serviceNotAvailable", 504: "gatewayTimeout"}.get(
            status, "generalException"
        )
        message = {
            429: "Please retry again later.",
            503: "The service is temporarily unavailable. Please retry later.",
            504: "The gateway timed out while waiting for the service. Please retry later.",
        }.get(status, "An injected error occurred.")
        request_id = answer.headers.get("request-id", "") if answer else ""
        client_request_id = request.headers.get("client-request-id") or request_id
        headers = {"request-id": request_id, "client-request-id": client_request_id, "Content-Type": JSON_TYPE}
        if rule.retry_after is not None:
            headers["Retry-After"] = str(rule.retry_after)
        if status == 429:
            headers["x-ms-throttle-information"] = "ResourceUnitLimitExceeded"
            headers["x-ms-throttle-scope"] = f"Tenant_Application/ReadWrite/injected/{self.tenant.tenant_id}"
        body = error_body(code, message, request_id, client_request_id, self.api._date())
        return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)

    # ------------------------------------------------------------------------------ admin
    async def _admin(self, request: web.Request, path: str) -> web.StreamResponse:
        self.tenant.settle()
        method = request.method.upper()
        try:
            payload: Any = None
            if method == "POST":
                raw = await request.read()
                payload = json.loads(raw) if raw.strip() else {}
            result = self._admin_call(method, path, request.query, payload)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if result is None:
            return web.json_response({"error": f"no admin endpoint {method} /_sim{path}"}, status=404)
        return web.json_response(result)

    def _admin_call(self, method: str, path: str, query: Mapping[str, str], payload: Any) -> Any:
        tenant = self.tenant
        if method == "GET" and path == "/oracle":
            return tenant.oracle.to_json(query.get("cause_prefix"))
        if method == "GET" and path.startswith("/oracle/timeline/"):
            user = tenant.user(path.rsplit("/", 1)[1])
            return {"userId": user.id, "timeline": [p.to_json() for p in tenant.oracle.timeline(user.id)]}
        if method == "GET" and path == "/counters":
            return self.counters.to_json()
        if method == "POST" and path == "/counters/reset":
            self.counters.reset()
            return {"ok": True}
        if path == "/faults":
            if method == "POST":
                self.configure_faults(payload)
            return self.faults.to_json()
        if path == "/legacy":
            if method == "POST":
                tenant.set_legacy(enabled=bool(payload.get("enabled", True)))
            return {
                "enabled": tenant.legacy_enabled,
                "configured": tenant.legacy is not None,
                "stats": tenant.legacy_stats.to_json(),
            }
        if method == "GET" and path == "/clock":
            return {
                "now": self.clock.now(),
                "timeScale": self.clock.time_scale,
                "frozen": self.clock.frozen,
                "datetime": self.clock.iso(self.clock.now()),
            }
        if method == "POST" and path == "/clock/advance":
            self.advance(float(payload["seconds"]))
            return {"now": self.clock.now()}
        if method == "POST" and path == "/events":
            actions = payload if isinstance(payload, list) else [payload]
            for action in actions:
                tenant.apply(action)
            return {"applied": len(actions)}
        if method == "GET" and path == "/scenario":
            return self.scenario.describe()
        if method == "GET" and path == "/state":
            return self.state()
        return None

    def configure_faults(self, payload: Mapping[str, Any]) -> None:
        """Admin/Python: {"enabled": bool, "seed": int, "rules": [...] (replace), "add": [...], "clear": bool}."""
        if payload.get("clear"):
            self.faults.clear()
        if "rules" in payload:
            self.faults.set([FaultRule.from_json(r) for r in payload["rules"]], seed=payload.get("seed"))
        elif "seed" in payload:
            self.faults.set(self.faults.rules, seed=int(payload["seed"]))
        for rule in payload.get("add") or []:
            self.faults.add(FaultRule.from_json(rule))
        if "enabled" in payload:
            self.faults.enabled = bool(payload["enabled"])

    def state(self) -> dict[str, Any]:
        tenant = self.tenant
        return {
            "tenantId": tenant.tenant_id,
            "users": len(tenant.users),
            "groups": {
                g.display_name: {"id": g.id, "members": len(g.members), "processing": tenant.processing_state(g)}
                for g in tenant.groups.values()
            },
            "skus": {
                s.part_number: {
                    "skuId": s.sku_id,
                    "seats": tenant.seats[s.sku_id],
                    "consumed": tenant.consumed[s.sku_id],
                }
                for s in tenant.skus.values()
            },
            "legacy": {"enabled": tenant.legacy_enabled, **tenant.legacy_stats.to_json()},
            "eventsApplied": tenant.events_applied,
            "eventFailures": list(tenant.event_failures),
            "clock": self.clock.now(),
        }


def _limits_dict(limits: ThrottleLimits) -> dict[str, Any]:
    return {name: getattr(limits, name) for name in ThrottleLimits.__dataclass_fields__}


def _response(answer: ApiResponse) -> web.Response:
    if answer.body is None:
        return web.Response(status=answer.status, headers=answer.headers)
    if isinstance(answer.body, str):
        return web.Response(status=answer.status, text=answer.body, headers=answer.headers)
    data = json.dumps(answer.body, separators=(",", ":")).encode()
    return web.Response(status=answer.status, body=data, headers={**answer.headers, "Content-Type": JSON_TYPE})


class SimulatorThread:
    """A Simulator on its own event loop in a daemon thread, for synchronous code.

    with SimulatorThread(scenario, time_scale=0.01) as sim:
        sim.base_url
        sim.call(lambda tenant: tenant.remove_member("wave", "alice"))
    """

    def __init__(
        self,
        scenario: Scenario | str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        frozen_clock: bool = False,
        throttling: bool | ThrottleLimits | None = None,
        faults: bool = True,
    ) -> None:
        self._args = (scenario, host, port, time_scale, frozen_clock, throttling, faults)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sim: Simulator | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> SimulatorThread:
        self._thread = threading.Thread(target=self._run, name="graphsim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        scenario, host, port, time_scale, frozen, throttling, faults = self._args
        try:
            self._sim = loop.run_until_complete(
                Simulator.start(
                    scenario,
                    host=host,
                    port=port,
                    time_scale=time_scale,
                    frozen_clock=frozen,
                    throttling=throttling,
                    faults=faults,
                )
            )
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._sim.stop())
        loop.close()

    @property
    def sim(self) -> Simulator:
        if self._sim is None:
            raise RuntimeError("the simulator thread is not running; use `with SimulatorThread(...)` or .start()")
        return self._sim

    @property
    def base_url(self) -> str:
        return self.sim.base_url

    @property
    def admin_url(self) -> str:
        return self.sim.admin_url

    def call(self, fn: Callable[[Tenant], T], timeout: float = 60.0) -> T:
        """Run fn(tenant) on the simulator's loop (thread-safe) and return its result."""
        return self.call_sim(lambda sim: fn(sim.tenant), timeout)

    def call_sim(self, fn: Callable[[Simulator], T], timeout: float = 60.0) -> T:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the simulator thread is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                self.sim.tenant.settle()
                future.set_result(fn(self.sim))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    scenario: Scenario | str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    time_scale: float = 1.0,
    throttling: bool | ThrottleLimits | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Run the simulator until interrupted (Ctrl+C). What `licshift sim serve` calls."""

    async def main() -> None:
        sim = await Simulator.start(scenario, host=host, port=port, time_scale=time_scale, throttling=throttling)
        announce(f"graphsim: tenant '{sim.scenario.name}' ({len(sim.tenant.users)} users) at {sim.base_url}")
        announce(f"graphsim: admin at {sim.admin_url} (oracle, counters, faults, legacy, clock, events)")
        stopped = asyncio.Event()
        # Handlers of our own, not Python's default: a shell starts background jobs with SIGINT
        # ignored, and `kill` and process managers send SIGTERM; both must still stop the server.
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt
                asyncio.get_running_loop().add_signal_handler(sig, stopped.set)
        try:
            await stopped.wait()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    announce("graphsim: stopped")
