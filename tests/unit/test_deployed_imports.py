"""What a cold start imports: function_app.py must work with only the deployed packages installed
(requirements.txt, no local tooling, no simulator), and must leave the SDKs for the first invocation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NOT_DEPLOYED = ("licshift_local", "graphsim", "yaml", "pytest", "hypothesis")
"""Top-level packages that are not in the deployed app (.funcignore, requirements-dev.txt)."""

IMPORTED_ON_FIRST_USE = (
    "msgraph",
    "kiota_",
    "httpx",
    "aiohttp",
    "azure.identity",
    "azure.data.tables",
    "azure.storage.queue",
)
"""Deployed (requirements.txt; aiohttp is the storage SDKs' async transport), but imported when the first
invocation builds the adapters, never on import (cold start)."""

# Run in a fresh interpreter where the packages above cannot be imported, as on Azure.
_PROBE = """
import importlib.abc, json, sys

BLOCKED = frozenset(sys.argv[1].split(","))

class NotDeployed(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not deployed)", name=name)
        return None

sys.meta_path.insert(0, NotDeployed())
if sys.argv[2] == "app":
    import function_app
else:
    import importlib, pkgutil, licshift
    for info in pkgutil.walk_packages(licshift.__path__, "licshift."):
        if not info.name.startswith("licshift.cli"):  # the admin command is not deployed
            importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def _cold_import(what: str = "app") -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(NOT_DEPLOYED), what],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"the deployed code needs a package that is not deployed:\n{done.stderr}"
    modules: list[str] = json.loads(done.stdout)
    return modules


def test_function_app_imports_without_local_tooling_and_leaves_the_sdks_for_later() -> None:
    modules = _cold_import()
    assert "licshift.functions" in modules, "the probe did not import the app"
    local = [m for m in modules if m.split(".")[0] in NOT_DEPLOYED]
    assert local == []
    eager = [m for m in modules if m.startswith(IMPORTED_ON_FIRST_USE)]
    assert eager == [], "imported on cold start instead of on first use"
    assert not [m for m in modules if m.startswith("licshift.cli")], "the function app imports the CLI"


def test_every_deployed_module_imports_without_local_tooling() -> None:
    """The whole of src/licshift but the admin command (.funcignore ships no more), not only what
    function_app.py reaches."""
    modules = _cold_import("all")
    assert "licshift.adapters.graph" in modules
    assert [m for m in modules if m.split(".")[0] in NOT_DEPLOYED] == []


# What the worker has loaded before it imports the app (azure.functions), then what importing the app and
# building the runtime add. Module sets, not timings: a heavy SDK creeping back into the cold path fails
# here on any machine (bench/coldstart.py measures what it costs).
_ADDED = """
import json, sys
import azure.functions
before = set(sys.modules)
import function_app
app = set(sys.modules) - before
from licshift.functions import runtime
from licshift.settings import Settings
rt = runtime.build(Settings.from_env({"LicshiftStorage": "UseDevelopmentStorage=true",
                                      "LICSHIFT_GRAPH_ENDPOINT": "http://127.0.0.1:5/v1.0"}))
built = set(sys.modules)
rt.queue.adapter()
print(json.dumps({"app": sorted(app), "built": sorted(built), "sent": sorted(set(sys.modules) - built)}))
"""


def _added() -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _ADDED], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    added: dict[str, list[str]] = json.loads(done.stdout)
    return added


def test_importing_function_app_adds_only_licshift_and_the_standard_library() -> None:
    """Every SDK (Graph, storage, identity, aiohttp, OpenTelemetry) waits for the first invocation."""
    added = _added()["app"]
    assert "licshift.functions.remover" in added, "the probe did not import the app"
    foreign = [m for m in added if m.split(".")[0] not in {"licshift", "function_app"} | set(sys.stdlib_module_names)]
    assert foreign == [], "imported when function_app is imported, not on first use"


def test_the_runtime_builds_the_queue_client_on_the_first_send_only() -> None:
    """A removal reads the ledger and Graph; it sends no message unless throttled, so the queue SDK
    (with its sync transport and crypto) is no part of its cold start."""
    added = _added()
    assert {"msgraph", "azure.data.tables.aio"} <= set(added["built"])
    assert not [m for m in added["built"] if m.startswith("azure.storage.queue")]
    assert "azure.storage.queue.aio" in added["sent"]
