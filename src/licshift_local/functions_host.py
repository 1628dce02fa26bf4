"""The local host: plays the Azure Functions host for the very functions declared in a FunctionApp.

`func start` cannot run here (Core Tools download a binary from outside the package registries), so
this module does what the host does for the two trigger kinds licshift uses, against Azurite:

- queue triggers, with host.json's `extensions.queues` settings: batchSize, newBatchThreshold
  (fetch a new batch when in-flight drops to it), maxDequeueCount (then the original text goes to
  `<queue>-poison`), visibilityTimeout (a failed message becomes visible again after it),
  maxPollingInterval (empty-queue back-off cap) and messageEncoding;
- timer triggers: NCRONTAB (6 fields, UTC) or a compressed `timer_interval` for demos and tests,
  runOnStartup, past_due, and the singleton rule (a timer never overlaps itself);
- queue output bindings (`queue`, direction out), written only when the function succeeds.

HTTP-triggered functions are listed in `FunctionsHost.skipped` and not served; any other binding is
refused with a clear error. App settings (`settings_env`) resolve `%NAME%` expressions and, as in
Azure, are visible to the functions as environment variables while the host runs.

Differences from Azure worth knowing: one process plays one instance (timers are singletons per
host object, not across processes); the schedule monitor (useMonitor) is not persisted; function
retry policies (`@app.retry`) are not played, only the queue's own redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import re
import signal
import threading
import time
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import azure.functions as func
from azure.core.exceptions import AzureError
from azure.functions._abc import RetryContext, RpcException, TraceContext
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from licshift.adapters.queues import Encoding, check_queue_name, poison_queue
from licshift_local.host_queues import HostQueues, MessageGone, ReceivedMessage

log = logging.getLogger(__name__)

LEASE_SECONDS: Final = 60.0
"""How long a received message stays invisible; renewed every third of it while the function runs
(the real host leases for 10 minutes and renews at half time; shorter here so a killed local host's
messages come back quickly)."""
MIN_POLL_SECONDS: Final = 0.1
SHUTDOWN_SECONDS: Final = 30.0
STORAGE_RETRY_SECONDS: Final = 1.0


class FunctionsHostError(RuntimeError):
    """The app or host.json asks for something the local host cannot play; the message says what."""


# --------------------------------------------------------------------------------------------------
# host.json


def parse_timespan(text: str, what: str) -> float:
    """A .NET TimeSpan as host.json writes it: `[d.]hh:mm:ss[.fffffff]` -> seconds."""
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d{1,7})?", text.strip())
    if not match:
        raise FunctionsHostError(f"{what}={text!r} is not a time span; write it as hh:mm:ss, e.g. 00:00:30")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or int(seconds) > 59:
        raise FunctionsHostError(f"{what}={text!r}: minutes and seconds must be 0-59")
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds) + float(fraction or 0)


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """host.json `extensions.queues`, with the host's defaults (one vCPU, as on Flex Consumption)."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: Encoding = "base64"

    @property
    def max_parallel(self) -> int:
        return self.batch_size + self.new_batch_threshold

    @staticmethod
    def from_host_json(host_json: Mapping[str, Any]) -> QueueOptions:
        queues = (host_json.get("extensions") or {}).get("queues") or {}
        if not isinstance(queues, Mapping):
            raise FunctionsHostError("host.json extensions.queues must be an object")

        def integer(name: str, default: int, low: int, high: int) -> int:
            value = queues.get(name, default)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise FunctionsHostError(
                    f"host.json extensions.queues.{name}={value!r}: use a whole number {low}-{high}"
                )
            return value

        batch = integer("batchSize", 16, 1, 32)
        threshold = integer("newBatchThreshold", batch // 2, 0, 1000)
        dequeue = integer("maxDequeueCount", 5, 1, 1000)
        visibility = parse_timespan(str(queues.get("visibilityTimeout", "00:00:00")), "visibilityTimeout")
        polling = parse_timespan(str(queues.get("maxPollingInterval", "00:01:00")), "maxPollingInterval")
        if polling < MIN_POLL_SECONDS:
            raise FunctionsHostError("host.json extensions.queues.maxPollingInterval must be at least 00:00:00.1")
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise FunctionsHostError(f"host.json extensions.queues.messageEncoding={encoding!r}: use base64 or none")
        return QueueOptions(batch, threshold, dequeue, visibility, polling, typing.cast(Encoding, encoding))


def load_host_json(host_json: Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(host_json, Mapping):
        return dict(host_json)
    try:
        loaded = json.loads(Path(host_json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FunctionsHostError(f"cannot read host.json at {host_json}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise FunctionsHostError(f"{host_json} must hold a JSON object")
    return loaded


# --------------------------------------------------------------------------------------------------
# Schedules


class Schedule(typing.Protocol):
    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (aware, UTC)."""
        ...


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Every `seconds`, counted from `anchor` (a TimeSpan schedule, or the host's timer_interval)."""

    seconds: float
    anchor: datetime

    def next_after(self, moment: datetime) -> datetime:
        elapsed = (moment - self.anchor).total_seconds()
        steps = max(0, math.floor(elapsed / self.seconds)) + 1
        return self.anchor + timedelta(seconds=steps * self.seconds)


_MONTHS = {
    m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)
}
_DAYS = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


def _cron_value(text: str, names: Mapping[str, int], what: str, expression: str) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise FunctionsHostError(f"schedule {expression!r}: {what} value {text!r} is not a number")
    return int(text)


def _cron_field(text: str, low: int, high: int, names: Mapping[str, int], what: str, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise FunctionsHostError(
                    f"schedule {expression!r}: {what} step {step_text!r} must be a positive number"
                )
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _cron_value(a, names, what, expression), _cron_value(b, names, what, expression)
        else:
            first = _cron_value(base, names, what, expression)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high and first <= last):
            raise FunctionsHostError(f"schedule {expression!r}: {what} {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    if what == "day of week":  # NCRONTAB accepts both 0 and 7 for Sunday
        values = {0 if v == 7 else v for v in values}
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """NCRONTAB with seconds, as Azure Functions timers use it: `sec min hour day month day-of-week`, UTC.

    Supported: numbers, `*`, `*/n`, `a-b`, `a-b/n`, `a/n`, lists, month and day names (JAN, MON).
    As in NCrontab, day of month and day of week must both match.
    """

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @staticmethod
    def parse(expression: str) -> CronSchedule:
        fields = expression.split()
        if len(fields) != 6:
            raise FunctionsHostError(
                f"schedule {expression!r} has {len(fields)} fields; Azure Functions NCRONTAB needs 6: "
                "second minute hour day month day-of-week (e.g. '0 */5 * * * *')"
            )
        s, mi, h, d, mo, w = fields
        return CronSchedule(
            expression,
            _cron_field(s, 0, 59, {}, "second", expression),
            _cron_field(mi, 0, 59, {}, "minute", expression),
            _cron_field(h, 0, 23, {}, "hour", expression),
            _cron_field(d, 1, 31, {}, "day", expression),
            _cron_field(mo, 1, 12, _MONTHS, "month", expression),
            _cron_field(w, 0, 7, _DAYS, "day of week", expression),
        )

    def next_after(self, moment: datetime) -> datetime:
        t = moment.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        limit = t + timedelta(days=366 * 5)
        while t < limit:
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            elif t.day not in self.days or (t.weekday() + 1) % 7 not in self.weekdays:
                t = t.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
            elif t.second not in self.seconds:
                t += timedelta(seconds=1)
            else:
                return t
        raise FunctionsHostError(f"schedule {self.expression!r} never fires")


def parse_schedule(expression: str, now: datetime) -> Schedule:
    """NCRONTAB, or a TimeSpan (`hh:mm:ss`, which Azure accepts on dedicated plans only)."""
    if re.fullmatch(r"\s*(?:\d+\.)?\d{1,2}:\d{1,2}:\d{1,2}\s*", expression):
        seconds = parse_timespan(expression, "schedule")
        if seconds <= 0:
            raise FunctionsHostError(f"schedule {expression!r} must be longer than zero")
        return IntervalSchedule(seconds, now)
    return CronSchedule.parse(expression)


# --------------------------------------------------------------------------------------------------
# Discovery: what the app declares


_SETTING = re.compile(r"%([^%]+)%")


def resolve_setting_expressions(value: str, settings: Mapping[str, str], where: str) -> str:
    """Replace `%NAME%` with app setting NAME, as the host does for binding properties."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings or not settings[name]:
            raise FunctionsHostError(
                f"{where} refers to app setting %{name}%, which is not set: add {name} to the settings"
            )
        return settings[name]

    return _SETTING.sub(replace, value)


@dataclass(frozen=True, slots=True)
class QueueOutput:
    param: str
    queue: str


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    kind: typing.Literal["queue", "timer"]
    trigger_param: str
    user_function: Callable[..., Any]
    context_param: str | None
    outputs: tuple[QueueOutput, ...]
    queue: str = ""
    schedule: str = ""
    run_on_startup: bool = False
    use_monitor: bool = True


def _connection_declared(name: str, settings: Mapping[str, str]) -> bool:
    keys = (name, f"{name}__queueServiceUri", f"{name}__serviceUri", f"{name}__accountName")
    return any(settings.get(k) for k in keys)


@contextlib.contextmanager
def _quiet_auth_level_warning() -> Iterator[None]:
    # get_functions() warns on the root logger for every app without HTTP functions.
    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith("Auth level is not applied")

    drop = Drop()
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def discover(app: func.FunctionApp, settings: Mapping[str, str]) -> tuple[list[FunctionSpec], list[str]]:
    """The queue and timer functions of `app` (and the names of HTTP functions, which are skipped)."""
    # get_functions() is not idempotent: it records names and refuses them the second time.
    app.functions_bindings = None
    try:
        with _quiet_auth_level_warning():
            functions = app.get_functions()
    finally:
        app.functions_bindings = None
    specs: list[FunctionSpec] = []
    skipped: list[str] = []
    for fn in functions:
        name = str(fn.get_function_name())
        bindings = json.loads(fn.get_function_json())["bindings"]
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), None)
        if trigger is None:
            raise FunctionsHostError(f"function {name} has no trigger")
        if trigger["type"] == "httpTrigger":
            skipped.append(name)
            continue
        specs.append(_spec(name, fn.get_user_function(), trigger, bindings, settings))
    return specs, skipped


def _spec(
    name: str,
    user_function: Callable[..., Any],
    trigger: Mapping[str, Any],
    bindings: list[Mapping[str, Any]],
    settings: Mapping[str, str],
) -> FunctionSpec:
    outputs = []
    for binding in bindings:
        if binding is trigger:
            continue
        if binding.get("type") == "queue" and binding.get("direction") == "OUT":
            outputs.append(QueueOutput(str(binding["name"]), _queue_of(name, binding, settings)))
        else:
            raise FunctionsHostError(
                f"function {name} has a {binding.get('type')!r} binding ({binding.get('direction')}); the local "
                "host plays queue and timer triggers and queue outputs only: use the SDK clients instead"
            )
    parameters = inspect.signature(user_function).parameters
    bound = {str(trigger["name"]), *(o.param for o in outputs)}
    context_param = next((p for p in parameters if p == "context"), None)
    for pname, parameter in parameters.items():
        if pname not in bound and pname != context_param and parameter.default is inspect.Parameter.empty:
            raise FunctionsHostError(
                f"function {name}: parameter {pname!r} is bound to nothing; name a binding after it"
            )
    for pname in bound:
        if pname not in parameters:
            raise FunctionsHostError(f"function {name}: binding {pname!r} has no parameter of that name")
    common: dict[str, Any] = {
        "name": name,
        "trigger_param": str(trigger["name"]),
        "user_function": user_function,
        "context_param": context_param,
        "outputs": tuple(outputs),
    }
    if trigger["type"] == "queueTrigger":
        return FunctionSpec(kind="queue", queue=_queue_of(name, trigger, settings), **common)
    if trigger["type"] == "timerTrigger":
        schedule = resolve_setting_expressions(str(trigger["schedule"]), settings, f"function {name}'s schedule")
        now = datetime.now(UTC)
        parse_schedule(schedule, now).next_after(now)  # refuse a bad schedule before anything runs
        return FunctionSpec(
            kind="timer",
            schedule=schedule,
            run_on_startup=bool(trigger.get("runOnStartup", False)),
            use_monitor=bool(trigger.get("useMonitor", True)),
            **common,
        )
    raise FunctionsHostError(
        f"function {name} has a {trigger['type']!r} trigger; the local host plays queueTrigger and timerTrigger "
        "(and skips httpTrigger)"
    )


def _queue_of(function: str, binding: Mapping[str, Any], settings: Mapping[str, str]) -> str:
    where = f"function {function}'s queue name"
    queue = resolve_setting_expressions(str(binding.get("queueName", "")), settings, where)
    connection = str(binding.get("connection") or "AzureWebJobsStorage")
    if not _connection_declared(connection, settings):
        raise FunctionsHostError(
            f"function {function} uses storage connection {connection!r}, which the settings do not define: set "
            f"{connection} (a connection string) or {connection}__queueServiceUri"
        )
    return check_queue_name(queue, where)


# --------------------------------------------------------------------------------------------------
# What a function receives besides its trigger


class _TraceContext(TraceContext):
    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _NoException(RpcException):
    @property
    def source(self) -> str:
        return ""

    @property
    def stack_trace(self) -> str:
        return ""

    @property
    def message(self) -> str:
        return ""


class _RetryContext(RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> RpcException:
        return _NoException()


class _Context(func.Context):
    def __init__(self, invocation_id: str, function_name: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return typing.cast(type[threading.local], self._local)

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return os.getcwd()

    @property
    def trace_context(self) -> TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> RetryContext:
        return _RetryContext()


class _Out(func.Out[Any]):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


# --------------------------------------------------------------------------------------------------
# The host


@dataclass(slots=True)
class FunctionStats:
    deliveries: int = 0
    """Queue messages handed to the function (a redelivery counts again)."""
    successes: int = 0
    failures: int = 0
    """Invocations that raised (queue or timer), plus messages that could not be decoded."""
    poisoned: int = 0
    """Messages moved to `<queue>-poison`."""
    timer_firings: int = 0
    timer_skipped: int = 0
    """Firings skipped because the previous run of the same timer was still running."""
    past_due: int = 0
    in_flight: int = 0
    max_in_flight: int = 0


class FunctionsHost:
    """Runs the queue and timer functions of `app` against Azurite until stopped.

    `async with FunctionsHost(app, ...) as host: await host.run_until(done, timeout=60)`.
    """

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        settings_env: Mapping[str, str],
        host_json: Path | Mapping[str, Any],
        connection_string: str,
        timer_interval: float | None = None,
        shutdown_timeout: float = SHUTDOWN_SECONDS,
        apply_env: bool = True,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        if lease_seconds < 1:
            raise FunctionsHostError(
                f"lease_seconds must be at least 1 (queue visibility is in whole seconds), got {lease_seconds!r}"
            )
        if timer_interval is not None and not timer_interval > 0:
            raise FunctionsHostError(f"timer_interval must be a positive number of seconds, got {timer_interval!r}")
        self.settings_env = dict(settings_env)
        self.options = QueueOptions.from_host_json(load_host_json(host_json))
        self.functions, self.skipped = discover(app, self.settings_env)
        names = [f.name for f in self.functions]
        consumers: dict[str, str] = {}
        for spec in self.functions:
            if spec.kind == "queue" and spec.queue in consumers:
                raise FunctionsHostError(
                    f"functions {consumers[spec.queue]} and {spec.name} both trigger on {spec.queue}"
                )
            consumers[spec.queue] = spec.name
        self.timer_interval = timer_interval
        self.shutdown_timeout = shutdown_timeout
        self.lease_seconds = lease_seconds
        self._connection_string = connection_string
        self._apply_env = apply_env
        self._saved_env: dict[str, str | None] = {}
        self._stats = {n: FunctionStats() for n in names}
        self._queue: HostQueues | None = None
        self._stopping = asyncio.Event()
        self._wake: dict[str, asyncio.Event] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._invocations: set[asyncio.Task[Any]] = set()
        self._crash: BaseException | None = None
        self._started = False

    # Lifecycle -----------------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, FunctionStats]:
        """A snapshot of per-function counters."""
        return {name: dataclasses.replace(s) for name, s in self._stats.items()}

    @property
    def queues(self) -> HostQueues:
        if self._queue is None:
            raise FunctionsHostError("the host is not started: use `async with FunctionsHost(...)`")
        return self._queue

    async def __aenter__(self) -> FunctionsHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._apply_env:
            for key, value in self.settings_env.items():
                self._saved_env[key] = os.environ.get(key)
                os.environ[key] = value
        self._queue = HostQueues(self._connection_string, encoding=self.options.message_encoding)
        queue_names = {f.queue for f in self.functions if f.kind == "queue"}
        queue_names |= {o.queue for f in self.functions for o in f.outputs}
        for name in sorted(queue_names):
            await self._queue.create_queue(name)
            self._wake[name] = asyncio.Event()
        for spec in self.functions:
            runner = self._poll(spec) if spec.kind == "queue" else self._tick(spec)
            self._loops.append(asyncio.create_task(self._guard(runner), name=f"localhost:{spec.name}"))
        if self.skipped:
            log.info("local host does not serve HTTP functions: %s", ", ".join(self.skipped))
        log.info(
            "local host started: %s",
            ", ".join(f"{f.name} ({f.queue or f.schedule})" for f in self.functions) or "no functions",
        )

    def stop(self) -> None:
        """Ask the host to stop: no new deliveries or firings; `aclose()` waits for running ones."""
        self._stopping.set()
        for event in self._wake.values():
            event.set()

    async def aclose(self) -> None:
        self.stop()
        if self._loops:
            await asyncio.gather(*self._loops, return_exceptions=True)
            self._loops.clear()
        if self._invocations:
            _, pending = await asyncio.wait(self._invocations, timeout=self.shutdown_timeout)
            for task in pending:
                log.warning(
                    "stopping %s: still running after %.0f s, cancelled", task.get_name(), self.shutdown_timeout
                )
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._queue is not None:
            await self._queue.aclose()
            self._queue = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    async def run_until(
        self,
        predicate: Callable[[], Awaitable[bool]] | None = None,
        timeout: float = 60.0,  # noqa: ASYNC109 - the host's own deadline, not a cancellation scope
        *,
        check_every: float = 0.1,
    ) -> bool:
        """Run until `predicate()` is true (True), or `timeout` seconds pass or stop() is called (False).
        Re-raises what broke the host, if anything did.
        """
        await self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._crash is not None:
                raise self._crash
            if predicate is not None and await predicate():
                return True
            remaining = deadline - loop.time()
            if self._stopping.is_set() or remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), min(check_every, remaining))

    async def run_forever(self, *, handle_signals: bool = True) -> None:
        """Run until stop() (or SIGINT/SIGTERM when `handle_signals`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        installed = []
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
                    installed.append(sig)
        try:
            await self.start()
            await self._stopping.wait()
            if self._crash is not None:
                raise self._crash
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.aclose()

    def nudge(self, queue: str) -> None:
        """Poll `queue` now instead of after the back-off (the host does this for its own outputs)."""
        event = self._wake.get(queue)
        if event is not None:
            event.set()

    async def _guard(self, runner: Awaitable[None]) -> None:
        try:
            await runner
        except Exception as exc:
            log.exception("local host loop failed; stopping the host")
            self._crash = exc
            self.stop()

    async def _pause(self, seconds: float, queue: str | None = None) -> None:
        """Sleep, but wake early on stop() or a nudge for `queue`."""
        event = self._wake.get(queue) if queue else None
        waiter = event if event is not None else self._stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), max(0.0, seconds))
        if event is not None and not self._stopping.is_set():
            event.clear()

    # Queue triggers ------------------------------------------------------------------------------

    async def _poll(self, spec: FunctionSpec) -> None:
        options = self.options
        in_flight: set[asyncio.Task[None]] = set()
        backoff = MIN_POLL_SECONDS
        while not self._stopping.is_set():
            if len(in_flight) > options.new_batch_threshold:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await self.queues.receive(
                    spec.queue, max_messages=options.batch_size, visibility_timeout=self.lease_seconds
                )
            except AzureError as exc:
                log.warning("receiving from %s for %s failed: %s", spec.queue, spec.name, exc)
                await self._pause(STORAGE_RETRY_SECONDS)
                continue
            if not messages:
                await self._pause(backoff, spec.queue)
                backoff = min(backoff * 2, options.max_polling_interval)
                continue
            backoff = MIN_POLL_SECONDS
            for message in messages:
                task = asyncio.create_task(self._deliver(spec, message), name=f"{spec.name}:{message.id}")
                in_flight.add(task)
                self._invocations.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(self._invocations.discard)

    async def _deliver(self, spec: FunctionSpec, message: ReceivedMessage) -> None:
        stats = self._stats[spec.name]
        queues = self.queues
        max_dequeue = self.options.max_dequeue_count
        try:
            if message.dequeue_count > max_dequeue:
                # Processing crashed before it could count as a failure (e.g. a killed host).
                await queues.move_to_poison(message)
                stats.poisoned += 1
                log.warning("%s: message %s poisoned (dequeued %d times)", spec.name, message.id, message.dequeue_count)
                return
            receipt = [message.pop_receipt]
            renewer = asyncio.create_task(self._renew(message, receipt))
            stats.deliveries += 1
            try:
                ok = await self._run_queue_function(spec, message)
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            if ok:
                if not await queues.delete(message, receipt[0]):
                    log.warning("%s: message %s was gone when deleting it (its lease ran out)", spec.name, message.id)
            elif message.dequeue_count >= max_dequeue:
                await queues.move_to_poison(message, receipt[0])
                stats.poisoned += 1
                log.warning(
                    "%s: message %s moved to %s after %d deliveries",
                    spec.name,
                    message.id,
                    poison_queue(spec.queue),
                    message.dequeue_count,
                )
            else:
                await queues.set_visibility(message, receipt[0], self.options.visibility_timeout)
        except MessageGone as exc:
            log.warning("%s: %s", spec.name, exc)
        except AzureError as exc:
            # The lease runs out and the message comes back: at-least-once, as in Azure.
            log.warning("%s: storage error settling message %s: %s", spec.name, message.id, exc)
        except Exception:
            log.exception("%s: the local host failed handling message %s", spec.name, message.id)

    async def _renew(self, message: ReceivedMessage, receipt: list[str]) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                receipt[0] = await self.queues.set_visibility(message, receipt[0], self.lease_seconds)
            except (MessageGone, AzureError) as exc:
                log.warning("could not extend the lease of message %s: %s", message.id, exc)
                return

    async def _run_queue_function(self, spec: FunctionSpec, message: ReceivedMessage) -> bool:
        stats = self._stats[spec.name]
        if message.body is None:
            stats.failures += 1
            log.warning("%s: message %s cannot be delivered: %s", spec.name, message.id, message.decode_error)
            return False
        trigger = QueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=message.body,
            dequeue_count=message.dequeue_count,
            pop_receipt=message.pop_receipt,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
        )
        return await self._invoke(spec, trigger, f"message {message.id} (delivery {message.dequeue_count})")

    # Timer triggers ------------------------------------------------------------------------------

    async def _tick(self, spec: FunctionSpec) -> None:
        started = datetime.now(UTC)
        schedule: Schedule = (
            IntervalSchedule(self.timer_interval, started)
            if self.timer_interval is not None
            else parse_schedule(spec.schedule, started)
        )
        running: asyncio.Task[None] | None = None
        last: datetime | None = None
        if spec.run_on_startup:
            running = self._fire(spec, past_due=False, last=None, scheduled=started, next_at=None)
            last = started
        due = schedule.next_after(started)
        while True:
            await self._pause((due - datetime.now(UTC)).total_seconds())
            if self._stopping.is_set():
                return
            now = datetime.now(UTC)
            if now < due:
                continue  # woke early (clock adjustments)
            following = schedule.next_after(max(now, due))
            stats = self._stats[spec.name]
            if running is not None and not running.done():
                stats.timer_skipped += 1
                log.debug("%s: firing at %s skipped, the previous run is still running", spec.name, due.isoformat())
            else:
                interval = (schedule.next_after(due) - due).total_seconds()
                past_due = (now - due).total_seconds() > interval
                running = self._fire(spec, past_due=past_due, last=last, scheduled=due, next_at=following)
                last = due
            due = following

    def _fire(
        self,
        spec: FunctionSpec,
        *,
        past_due: bool,
        last: datetime | None,
        scheduled: datetime,
        next_at: datetime | None,
    ) -> asyncio.Task[None]:
        stats = self._stats[spec.name]
        stats.timer_firings += 1
        if past_due:
            stats.past_due += 1
        status = {
            "Last": (last or scheduled).isoformat(),
            "Next": (next_at or scheduled).isoformat(),
            "LastUpdated": scheduled.isoformat(),
        }
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": False})

        async def run() -> None:
            await self._invoke(spec, request, f"firing at {scheduled.isoformat()}{' (past due)' if past_due else ''}")

        task = asyncio.create_task(run(), name=f"{spec.name}:{scheduled.isoformat()}")
        self._invocations.add(task)
        task.add_done_callback(self._invocations.discard)
        return task

    # Invocation ----------------------------------------------------------------------------------

    async def _invoke(self, spec: FunctionSpec, trigger: Any, what: str) -> bool:
        """Call the user function the way the worker does; True when it returned, False when it raised."""
        stats = self._stats[spec.name]
        invocation_id = str(uuid.uuid4())
        kwargs: dict[str, Any] = {spec.trigger_param: trigger}
        outs = {o.param: _Out() for o in spec.outputs}
        kwargs.update(outs)
        if spec.context_param:
            kwargs[spec.context_param] = _Context(invocation_id, spec.name)
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        began = time.perf_counter()
        log.debug("%s: start %s [%s]", spec.name, what, invocation_id)
        try:
            fn = spec.user_function
            if inspect.iscoroutinefunction(fn):
                result = await fn(**kwargs)
            else:
                # The Python worker runs sync functions on a thread pool, off the event loop.
                result = await asyncio.to_thread(fn, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            for output in spec.outputs:
                await self._write_output(output, outs[output.param].get())
        except Exception:
            stats.failures += 1
            log.warning(
                "%s: %s failed after %.3f s [%s]",
                spec.name,
                what,
                time.perf_counter() - began,
                invocation_id,
                exc_info=True,
            )
            return False
        finally:
            stats.in_flight -= 1
        stats.successes += 1
        log.debug("%s: end %s in %.3f s [%s]", spec.name, what, time.perf_counter() - began, invocation_id)
        return True

    async def _write_output(self, output: QueueOutput, value: Any) -> None:
        if value is None:
            return
        values = value if isinstance(value, list) else [value]
        for item in values:
            body = item.decode("utf-8") if isinstance(item, bytes | bytearray) else item
            if not isinstance(body, str):
                body = json.dumps(body)
            await self.queues.send(output.queue, body)
        self.nudge(output.queue)
