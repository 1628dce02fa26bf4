"""The local host plays toy FunctionApps (Blueprints, %SETTING% names, sync and async functions) on
Azurite: batching, redelivery, poison queues, output bindings, timers, and stopping.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from licshift.adapters.queues import StorageQueues
from licshift_local.functions_host import (
    CronSchedule,
    FunctionsHost,
    FunctionsHostError,
    IntervalSchedule,
    QueueOptions,
    load_host_json,
    parse_schedule,
    parse_timespan,
)

ROOT = Path(__file__).resolve().parents[2]
CONNECTION = "LicshiftStorage"
BATCH, THRESHOLD = 4, 2
FAST: dict[str, Any] = {
    "version": "2.0",
    "extensions": {
        "queues": {
            "batchSize": BATCH,
            "newBatchThreshold": THRESHOLD,
            "maxDequeueCount": 3,
            "visibilityTimeout": "00:00:00",
            "maxPollingInterval": "00:00:00.2",
        }
    },
}


@dataclass
class Recorder:
    work: list[str] = field(default_factory=list)
    running: int = 0
    peak: int = 0
    failures: list[tuple[str, int | None, bool]] = field(default_factory=list)
    poison: list[tuple[str, int | None, str]] = field(default_factory=list)
    relayed: list[str] = field(default_factory=list)
    env_seen: list[str] = field(default_factory=list)
    firings: list[bool] = field(default_factory=list)

    def enter(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        self.running -= 1


@pytest.fixture
async def settings_env(storage_connection_string: str) -> AsyncIterator[dict[str, str]]:
    tag = f"toy{uuid.uuid4().hex[:10]}"
    env = {
        CONNECTION: storage_connection_string,
        "TOY_WORK_QUEUE": f"{tag}-work",
        "TOY_FAIL_QUEUE": f"{tag}-fail",
        "TOY_OUT_QUEUE": f"{tag}-out",
        "TOY_TICK": "0 0 0 1 1 *",
        "TOY_FLAG": f"flag-{tag}",
    }
    yield env
    async with StorageQueues(storage_connection_string) as queues:
        for name in ("TOY_WORK_QUEUE", "TOY_FAIL_QUEUE", "TOY_OUT_QUEUE"):
            for queue in (env[name], f"{env[name]}-poison", f"{env[name]}-poison-poison"):
                await queues.delete_queue(queue)


def queue_app(rec: Recorder) -> func.FunctionApp:
    work = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations

    @work.queue_trigger(arg_name="msg", queue_name="%TOY_WORK_QUEUE%", connection=CONNECTION)
    @work.queue_output(arg_name="out", queue_name="%TOY_OUT_QUEUE%", connection=CONNECTION)
    async def do_work(msg: func.QueueMessage, out: func.Out[str]) -> None:
        rec.enter()
        try:
            await asyncio.sleep(0.05)
            body = msg.get_body().decode()
            rec.work.append(body)
            rec.env_seen.append(os.environ.get("TOY_FLAG", ""))
            out.set(f"relayed {body}")
        finally:
            rec.leave()

    @work.queue_trigger(arg_name="msg", queue_name="%TOY_OUT_QUEUE%", connection=CONNECTION)
    async def relay(msg: func.QueueMessage) -> None:
        rec.relayed.append(msg.get_body().decode())

    failing = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations

    @failing.queue_trigger(arg_name="msg", queue_name="%TOY_FAIL_QUEUE%", connection=CONNECTION)
    def always_fails(msg: func.QueueMessage) -> None:
        rec.failures.append(
            (msg.get_body().decode(), msg.dequeue_count, threading.current_thread() is threading.main_thread())
        )
        raise RuntimeError("this function always fails")

    @failing.queue_trigger(arg_name="msg", queue_name="%TOY_FAIL_QUEUE%-poison", connection=CONNECTION)
    async def on_poison(msg: func.QueueMessage, context: func.Context) -> None:
        rec.poison.append((msg.get_body().decode(), msg.dequeue_count, context.function_name))

    app = func.FunctionApp()
    app.register_functions(work)
    app.register_functions(failing)
    return app


def timer_app(
    rec: Recorder, *, seconds: float, block_first: float = 0.0, run_on_startup: bool = False
) -> func.FunctionApp:
    bp = func.Blueprint()  # type: ignore[no-untyped-call]  # its __init__ has no annotations

    @bp.timer_trigger(arg_name="timer", schedule="%TOY_TICK%", run_on_startup=run_on_startup)
    async def tick(timer: func.TimerRequest) -> None:
        rec.enter()
        try:
            rec.firings.append(timer.past_due)
            if block_first and len(rec.firings) == 1:
                time.sleep(block_first)  # noqa: ASYNC251 - blocks the event loop on purpose: the next firing is late
            if seconds:
                await asyncio.sleep(seconds)
        finally:
            rec.leave()

    app = func.FunctionApp()
    app.register_functions(bp)
    return app


def host(app: func.FunctionApp, env: dict[str, str], **kwargs: Any) -> FunctionsHost:
    return FunctionsHost(
        app, settings_env=env, host_json=kwargs.pop("host_json", FAST), connection_string=env[CONNECTION], **kwargs
    )


async def test_queue_messages_are_delivered_in_bounded_batches(settings_env: dict[str, str]) -> None:
    rec = Recorder()
    async with host(queue_app(rec), settings_env) as h:
        bodies = [f"m{i}" for i in range(30)]
        await h.queues.send_many(settings_env["TOY_WORK_QUEUE"], [(b, 0.0) for b in bodies])

        async def all_relayed() -> bool:
            return len(rec.relayed) == len(bodies)

        assert await h.run_until(all_relayed, timeout=60)
        assert await h.queues.approximate_count(settings_env["TOY_WORK_QUEUE"]) == 0
    assert sorted(rec.work) == sorted(bodies)
    assert sorted(rec.relayed) == sorted(f"relayed {b}" for b in bodies)
    assert 1 < rec.peak <= BATCH + THRESHOLD
    stats = h.stats["do_work"]
    assert (stats.deliveries, stats.successes, stats.failures, stats.poisoned) == (30, 30, 0, 0)
    # The host counts an invocation until its output binding is written, after the function body has
    # left: under load that tail overlaps the next deliveries, so the host's peak may exceed the body's.
    assert rec.peak <= stats.max_in_flight <= BATCH + THRESHOLD
    assert set(rec.env_seen) == {settings_env["TOY_FLAG"]}  # app settings reach the functions as environment
    assert "TOY_FLAG" not in os.environ  # and are taken back when the host stops


async def test_a_failing_message_ends_in_poison_with_its_original_body(settings_env: dict[str, str]) -> None:
    rec = Recorder()
    async with host(queue_app(rec), settings_env) as h:
        await h.queues.send(settings_env["TOY_FAIL_QUEUE"], "bad ✗ payload")

        async def poisoned() -> bool:
            return bool(rec.poison)

        assert await h.run_until(poisoned, timeout=60)
        assert await h.queues.approximate_count(settings_env["TOY_FAIL_QUEUE"]) == 0
    assert [(body, count) for body, count, _ in rec.failures] == [("bad ✗ payload", n) for n in (1, 2, 3)]
    assert not any(on_loop_thread for *_, on_loop_thread in rec.failures)  # sync functions run on a thread
    assert rec.poison == [("bad ✗ payload", 1, "on_poison")]
    assert (h.stats["always_fails"].failures, h.stats["always_fails"].poisoned) == (3, 1)
    assert h.stats["on_poison"].successes == 1


async def test_a_long_invocation_keeps_its_message_leased(settings_env: dict[str, str]) -> None:
    rec = Recorder()
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%TOY_WORK_QUEUE%", connection=CONNECTION)
    async def slow(msg: func.QueueMessage) -> None:
        rec.work.append(msg.get_body().decode())
        await asyncio.sleep(2.5)  # outlives the 1 s lease several times over

    async with host(app, settings_env, lease_seconds=1) as h:
        await h.queues.send(settings_env["TOY_WORK_QUEUE"], "long job")

        async def finished() -> bool:
            return h.stats["slow"].successes == 1

        assert await h.run_until(finished, timeout=30)
    assert rec.work == ["long job"]  # never redelivered while it ran
    assert h.stats["slow"].deliveries == 1


async def test_a_message_that_is_not_base64_is_retried_then_poisoned(
    settings_env: dict[str, str], storage_connection_string: str
) -> None:
    from azure.storage.queue.aio import QueueClient

    rec = Recorder()
    async with host(queue_app(rec), settings_env) as h:
        async with QueueClient.from_connection_string(storage_connection_string, settings_env["TOY_WORK_QUEUE"]) as q:
            await q.send_message("plain text, not base64")

        async def poisoned() -> bool:
            return h.stats["do_work"].poisoned == 1

        assert await h.run_until(poisoned, timeout=60)
        assert await h.queues.peek_texts(settings_env["TOY_WORK_QUEUE"] + "-poison") == ["plain text, not base64"]
    assert rec.work == []
    assert h.stats["do_work"].failures == 3


async def test_timer_fires_repeatedly_and_never_overlaps_itself(settings_env: dict[str, str]) -> None:
    rec = Recorder()
    async with host(timer_app(rec, seconds=0.25), settings_env, timer_interval=0.05) as h:

        async def fired_enough() -> bool:
            return len(rec.firings) >= 4

        assert await h.run_until(fired_enough, timeout=30)
    assert rec.peak == 1
    stats = h.stats["tick"]
    assert stats.timer_firings == len(rec.firings)
    assert stats.timer_skipped > 0


async def test_a_late_firing_is_past_due(settings_env: dict[str, str]) -> None:
    rec = Recorder()
    async with host(timer_app(rec, seconds=0.0, block_first=0.5), settings_env, timer_interval=0.1) as h:

        async def fired_twice() -> bool:
            return len(rec.firings) >= 2

        assert await h.run_until(fired_twice, timeout=30)
    assert rec.firings[0] is False
    assert rec.firings[1] is True
    assert h.stats["tick"].past_due >= 1


async def test_run_on_startup_fires_before_the_schedule(settings_env: dict[str, str]) -> None:
    rec = Recorder()
    async with host(timer_app(rec, seconds=0.0, run_on_startup=True), settings_env) as h:  # yearly schedule

        async def fired() -> bool:
            return len(rec.firings) == 1

        assert await h.run_until(fired, timeout=30)
    assert rec.firings == [False]


async def test_run_until_returns_false_on_timeout_and_on_stop(settings_env: dict[str, str]) -> None:
    rec = Recorder()
    async with host(queue_app(rec), settings_env) as h:

        async def never() -> bool:
            return False

        assert await h.run_until(never, timeout=0.3) is False
        asyncio.get_running_loop().call_later(0.2, h.stop)
        assert await h.run_until(None, timeout=60) is False


def test_bindings_the_host_cannot_play_are_refused(settings_env: dict[str, str]) -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="c/{name}", connection=CONNECTION)
    def on_blob(blob: func.InputStream) -> None:
        del blob

    with pytest.raises(FunctionsHostError, match="blobTrigger"):
        host(app, settings_env)


def test_unset_settings_and_connections_are_named(settings_env: dict[str, str]) -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%NOT_SET_ANYWHERE%", connection=CONNECTION)
    def orphan(msg: func.QueueMessage) -> None:
        del msg

    with pytest.raises(FunctionsHostError, match="NOT_SET_ANYWHERE"):
        host(app, settings_env)
    other = func.FunctionApp()

    @other.queue_trigger(arg_name="msg", queue_name="%TOY_WORK_QUEUE%", connection="ElsewhereStorage")
    def elsewhere(msg: func.QueueMessage) -> None:
        del msg

    with pytest.raises(FunctionsHostError, match="ElsewhereStorage__queueServiceUri"):
        host(other, settings_env)


def test_http_functions_are_skipped_and_discovery_can_repeat(settings_env: dict[str, str]) -> None:
    rec = Recorder()
    app = queue_app(rec)

    @app.route(route="status")
    def status(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.url)

    first = host(app, settings_env)
    second = host(app, settings_env)  # get_functions() alone would refuse a second call
    assert first.skipped == second.skipped == ["status"]
    assert sorted(f.name for f in second.functions) == ["always_fails", "do_work", "on_poison", "relay"]


def test_the_repository_host_json_is_understood() -> None:
    options = QueueOptions.from_host_json(load_host_json(ROOT / "host.json"))
    assert options.batch_size >= 1
    assert options.max_parallel == options.batch_size + options.new_batch_threshold
    # The host hands licshift the stored text as is and licshift decodes the base64 itself, so that a
    # message that is not base64 is recorded by its handler instead of poisoned by the host (issue 7).
    assert options.message_encoding == "none"


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ({"batchSize": 33}, "batchSize"),
        ({"maxDequeueCount": 0}, "maxDequeueCount"),
        ({"visibilityTimeout": "30s"}, "hh:mm:ss"),
        ({"maxPollingInterval": "00:00:00"}, "maxPollingInterval"),
        ({"messageEncoding": "utf8"}, "messageEncoding"),
    ],
)
def test_bad_host_json_queue_settings_are_refused(queues: dict[str, Any], message: str) -> None:
    with pytest.raises(FunctionsHostError, match=message):
        QueueOptions.from_host_json({"extensions": {"queues": queues}})


def test_host_json_defaults_are_the_hosts() -> None:
    assert QueueOptions.from_host_json({}) == QueueOptions(16, 8, 5, 0.0, 60.0, "base64")


# NCRONTAB ---------------------------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2026-03-04T12:03:10", "2026-03-04T12:05:00"),
        ("0 */5 * * * *", "2026-03-04T12:05:00", "2026-03-04T12:10:00"),
        ("*/10 * * * * *", "2026-03-04T12:00:05.5", "2026-03-04T12:00:10"),
        ("15,45 * * * * *", "2026-03-04T12:00:20", "2026-03-04T12:00:45"),
        ("0 0 * * * *", "2026-12-31T23:59:59", "2027-01-01T00:00:00"),
        ("0 0 9 * * MON-FRI", "2026-03-07T10:00:00", "2026-03-09T09:00:00"),  # Saturday -> Monday
        ("0 0 12 * * 7", "2026-03-04T00:00:00", "2026-03-08T12:00:00"),  # 7 = Sunday
        ("0 30 2 1 JAN *", "2026-03-04T00:00:00", "2027-01-01T02:30:00"),
        ("0 0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("0 0 0 31 * *", "2026-04-01T00:00:00", "2026-05-31T00:00:00"),
        ("0 0 0 13 * 5", "2026-01-01T00:00:00", "2026-02-13T00:00:00"),  # Friday the 13th: both must match
        ("0 10-20/5 8 * * *", "2026-03-04T08:12:00", "2026-03-04T08:15:00"),
        ("30/15 * * * * *", "2026-03-04T08:00:31", "2026-03-04T08:00:45"),
    ],
)
def test_ncrontab_next_occurrence(expression: str, after: str, expected: str) -> None:
    assert CronSchedule.parse(expression).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 * * * *", "needs 6"),
        ("61 * * * * *", "outside 0-59"),
        ("0 0 25 * * *", "outside 0-23"),
        ("*/0 * * * * *", "positive"),
        ("0 0 0 * * FUNDAY", "not a number"),
        ("0 0 0 30 2 *", "never fires"),
    ],
)
def test_bad_schedules_are_refused_clearly(expression: str, message: str) -> None:
    with pytest.raises(FunctionsHostError, match=message):
        CronSchedule.parse(expression).next_after(at("2026-01-01T00:00:00"))


def test_a_timespan_schedule_is_an_interval() -> None:
    start = at("2026-03-04T12:00:00")
    schedule = parse_schedule("00:00:30", start)
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.next_after(start) == at("2026-03-04T12:00:30")
    assert schedule.next_after(at("2026-03-04T12:01:10")) == at("2026-03-04T12:01:30")
    assert parse_timespan("1.02:03:04.5", "x") == 93784.5
