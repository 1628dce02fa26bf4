"""What the Functions host would see in function_app.py: names, triggers, queues, connections, schedules."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from licshift.settings import STORAGE_CONNECTION, Settings
from licshift_local.stack import load_function_app

function_app = load_function_app()
assert function_app.__file__ is not None
ROOT = Path(function_app.__file__).resolve().parent


@pytest.fixture
def functions() -> dict[str, Any]:
    app = function_app.app
    app.functions_bindings = None  # get_functions() raises on a second call (duplicate function names)
    try:
        return {f.get_function_name(): f for f in app.get_functions()}
    finally:
        app.functions_bindings = None


def bindings(function: Any) -> list[dict[str, Any]]:
    return list(json.loads(function.get_function_json())["bindings"])


def test_the_app_declares_exactly_the_pipeline_functions(functions: dict[str, Any]) -> None:
    assert set(functions) == {
        "wave_intake",
        "tick",
        "remove_direct_license",
        "waves_poison",
        "removals_poison",
        "drift_watch",
        "settle_check",
    }
    for function in functions.values():
        assert all(b["type"] in {"queueTrigger", "timerTrigger"} for b in bindings(function)), "no HTTP, no outputs"


@pytest.mark.parametrize(
    ("name", "queue"),
    [
        ("wave_intake", "%LICSHIFT_WAVES_QUEUE%"),
        ("remove_direct_license", "%LICSHIFT_REMOVALS_QUEUE%"),
        ("waves_poison", "%LICSHIFT_WAVES_QUEUE%-poison"),
        ("removals_poison", "%LICSHIFT_REMOVALS_QUEUE%-poison"),
    ],
)
def test_queue_triggers_read_their_queue_from_settings_over_the_licshift_connection(
    functions: dict[str, Any], name: str, queue: str
) -> None:
    (binding,) = bindings(functions[name])
    assert binding["type"] == "queueTrigger"
    assert binding["direction"] == "IN"
    assert binding["queueName"] == queue
    assert binding["connection"] == STORAGE_CONNECTION == "LicshiftStorage"


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("tick", "%LICSHIFT_TICK_SCHEDULE%"),
        ("drift_watch", "%LICSHIFT_DRIFT_SCHEDULE%"),
        ("settle_check", "%LICSHIFT_SETTLE_SCHEDULE%"),
    ],
)
def test_timers_take_their_schedule_from_settings_and_do_not_run_on_startup(
    functions: dict[str, Any], name: str, schedule: str
) -> None:
    (binding,) = bindings(functions[name])
    assert binding["type"] == "timerTrigger"
    assert binding["schedule"] == schedule
    assert binding["runOnStartup"] is False


def test_every_handler_is_async(functions: dict[str, Any]) -> None:
    for name, function in functions.items():
        assert inspect.iscoroutinefunction(function.get_user_function()), name


def test_setting_names_in_bindings_have_defaults_in_settings() -> None:
    defaults = Settings()
    assert defaults.waves_queue == "licshift-waves"
    assert defaults.removals_queue == "licshift-removals"
    assert len(defaults.tick_schedule.split()) == 6, "NCRONTAB with seconds"


def test_function_app_puts_src_on_the_path_for_the_deployed_zip() -> None:
    assert str(ROOT / "src") in sys.path
    assert (ROOT / "src" / "licshift" / "functions").is_dir()


def test_host_json_caps_queue_concurrency_for_graph() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    queues = host["extensions"]["queues"]
    assert queues["batchSize"] + queues["newBatchThreshold"] <= 16
    assert 1 <= queues["maxDequeueCount"] <= 10
    assert queues["visibilityTimeout"] != "00:00:00", "failed messages must back off"
    assert host["extensionBundle"]["version"].startswith("[4.")
    assert host["telemetryMode"] == "OpenTelemetry"
