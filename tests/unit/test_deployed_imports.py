"""What a cold start imports: function_app.py must work with only the deployed packages installed
(requirements.txt, no local tooling, no simulator), and must leave the SDKs for the first invocation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NOT_DEPLOYED = ("licshift_local", "graphsim", "aiohttp", "yaml", "pytest", "hypothesis")
"""Top-level packages that are not in the deployed app (.funcignore, requirements-dev.txt)."""

IMPORTED_ON_FIRST_USE = ("msgraph", "kiota_", "httpx", "azure.identity", "azure.data.tables", "azure.storage.queue")
"""Imported when the first invocation builds the adapters, never on import (cold start)."""

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
