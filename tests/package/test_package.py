"""The deployed package: built the way azd builds it, it holds only the app and runs on requirements.txt alone.

azd zips the service folder (azure.yaml `project: .`, the repo root) minus what `.funcignore` excludes
(gitignore rules; with a .funcignore azd applies no default excludes of its own), and the Flex
Consumption remote build installs requirements.txt. Here the same zip is built from a clean listing
of the work tree (tracked and untracked-but-not-ignored files: what a clone of the commit holds),
unpacked, given a fresh venv with requirements.txt alone, and its function_app imported there.

What may ship is decided by rule, not by a list of modules: the three host files plus the modules
under src/ that function_app.py imports, directly or lazily (tests/package/import_closure.py follows
them). What must never ship, whatever the layout, is the one list NEVER_SHIPPED below.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pathspec import GitIgnoreSpec

from package.import_closure import first_party_closure, imported_modules

ROOT = Path(__file__).resolve().parents[2]
HOST_FILES = ("function_app.py", "host.json", "requirements.txt")

# What must never be in the package, as paths a developer's or CI's work tree may hold (local state
# included, which a clean listing never shows). Each is checked against .funcignore.
NEVER_SHIPPED = (
    ".azure/licshift-prod/.env",  # azd's environment: subscription, principal ids, settings
    ".azure/config.json",
    ".git/HEAD",
    ".venv/bin/python",
    ".venv-checkov/bin/checkov",
    "node_modules/azurite/package.json",
    "src/licshift/__pycache__/settings.cpython-311.pyc",
    "src/licshift.egg-info/PKG-INFO",
    "local.settings.json",
    ".azurite/__blobstorage__/x",
    ".vscode/settings.json",
    ".github/workflows/azure-dev.yml",
    "tests/unit/test_decide.py",
    "docs/ledger.md",
    "infra/main.bicep",
    "infra/hooks/postprovision.sh",
    "bench/README.md",
    "README.md",
    "src/graphsim/server.py",
)
# Top-level modules no shipped module may import: dev and test tooling, the simulator.
DEV_ONLY_IMPORTS = frozenset({"graphsim", "yaml", "pytest", "hypothesis", "aiohttp.web", "licshift_local"})
# pip's own tools in a fresh venv: not the app's dependencies.
VENV_TOOLS = frozenset({"pip", "setuptools", "wheel", "distribute"})


def _funcignore() -> GitIgnoreSpec:
    return GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text().splitlines())


def _clean_listing() -> list[str]:
    """Files a clean clone would hold: tracked plus untracked-but-not-ignored, as they are now."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted({name for name in out.split("\0") if name and (ROOT / name).is_file()})


def _packaged(files: list[str]) -> list[str]:
    spec = _funcignore()
    return [name for name in files if not spec.match_file(name)]


def _walk_like_azd(root: Path) -> Iterator[str]:
    """Every file azd would pack from `root` as it is on disk, skipping excluded folders whole."""
    spec = _funcignore()
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not spec.match_file(f"{(rel / d).as_posix()}/")]
        for name in files:
            path = (rel / name).as_posix()
            if not spec.match_file(path):
                yield path


def _build_zip(target: Path) -> Path:
    package = target / "package.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in _packaged(_clean_listing()):
            archive.write(ROOT / name, name)
    return package


def _runtime_files() -> set[str]:
    modules = first_party_closure(ROOT / "function_app.py", ROOT / "src")
    return {path.relative_to(ROOT).as_posix() for path in modules}


# --- what is in the package (no network) -------------------------------------------------------------


def test_package_holds_the_host_files_and_the_modules_the_app_imports_only() -> None:
    packaged = set(_packaged(_clean_listing()))
    expected = set(HOST_FILES) | _runtime_files()
    missing, extra = sorted(expected - packaged), sorted(packaged - expected)
    assert not missing, f"the function app imports these but .funcignore leaves them out: {missing}"
    assert not extra, f"these would ship but the function app never imports them: add them to .funcignore: {extra}"
    assert any(name.startswith("src/licshift/functions/") for name in packaged)


@pytest.mark.parametrize("path", NEVER_SHIPPED)
def test_funcignore_keeps_out_local_state_and_dev_files(path: str) -> None:
    assert _funcignore().match_file(path), f"{path} would be deployed: add a rule to .funcignore"


def test_the_work_tree_as_it_is_packs_like_a_clean_clone() -> None:
    """azd packs the folder on disk: .venv, .azure, caches and egg-info must not add a single file."""
    assert sorted(_walk_like_azd(ROOT)) == _packaged(_clean_listing())


def test_no_packaged_module_imports_dev_only_code() -> None:
    for name in _packaged(_clean_listing()):
        if name.endswith(".py"):
            imported = imported_modules(ROOT / name)
            bad = {m for m in imported if m in DEV_ONLY_IMPORTS or m.split(".")[0] in DEV_ONLY_IMPORTS}
            assert not bad, f"{name} imports dev-only {sorted(bad)}"


def test_funcignore_has_no_negations() -> None:
    # azd before 1.23.13 mishandled `!` patterns; a plain deny list reads the same everywhere.
    rules = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()]
    assert not [rule for rule in rules if rule.startswith("!")]


# --- the package on a fresh venv (PyPI) ----------------------------------------------------------------

PROBE = r"""
import asyncio, importlib, json, sys
from pathlib import Path

root = Path.cwd()
sys.path.insert(0, str(root))
import function_app  # noqa: E402

app = function_app.app
functions = {f.get_function_name(): json.loads(f.get_function_json()) for f in app.get_functions()}
modules = sorted(
    ".".join(p.relative_to(root / "src").with_suffix("").parts).removesuffix(".__init__")
    for p in (root / "src").rglob("*.py")
)
for name in modules:
    importlib.import_module(name)

# The production adapters (msgraph, tables, queues, identity, aiohttp) as the first invocation builds them.
from licshift.functions import runtime
from licshift.settings import Settings  # noqa: E402

built = runtime.build(Settings.from_env(dict(__import__("os").environ)))
built.queue.adapter()  # the queue client, which the app builds on its first send

async def close() -> None:
    for adapter in (built.graph, built.ledger, built.queue):
        closer = getattr(adapter, "aclose", None)
        if closer is not None:
            await closer()

asyncio.run(close())
print(json.dumps({"functions": functions, "modules": modules, "loaded": sorted(sys.modules)}))
"""

AZURE_SETTINGS = {
    "LicshiftStorage__queueServiceUri": "https://stlicshift.queue.core.windows.net/",
    "LicshiftStorage__tableServiceUri": "https://stlicshift.table.core.windows.net/",
    "LicshiftStorage__credential": "managedidentity",
    "LicshiftStorage__clientId": "00000000-0000-0000-0000-000000000001",
    "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
}


@pytest.fixture(scope="session")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("package")
    target = work / "wwwroot"
    with zipfile.ZipFile(_build_zip(work)) as archive:
        archive.extractall(target)
    return target


def _wheelhouse(requirements: Path) -> Path:
    """Wheels for exactly this requirements.txt, downloaded (and resolved) from PyPI once, then reused."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    house = ROOT / ".venv" / "package-wheels" / digest
    done_marker = house / ".complete"
    if not done_marker.exists():
        house.mkdir(parents=True, exist_ok=True)
        fetch = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "-w", str(house)]
        done = subprocess.run([*fetch, "-r", str(requirements)], capture_output=True, text=True)
        assert done.returncode == 0, f"pip wheel -r requirements.txt failed (PyPI reachable?):\n{done.stderr[-3000:]}"
        done_marker.touch()
    return house


@pytest.fixture(scope="session")
def fresh_venv(unpacked: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the package's requirements.txt and nothing else, installed as the remote build does."""
    requirements = unpacked / "requirements.txt"
    house = _wheelhouse(requirements)
    venv = tmp_path_factory.mktemp("venv") / "app"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # --isolated: no pip.conf find-links or constraints of this machine; --no-compile: msgraph alone has
    # thousands of modules, and byte-compiling them proves nothing here.
    install = [str(python), "-m", "pip", "--isolated", "install", "--quiet", "--no-index", "--no-compile"]
    install += ["--find-links", str(house), "-r", str(requirements)]
    done = subprocess.run(install, capture_output=True, text=True)
    assert done.returncode == 0, f"pip install -r requirements.txt failed:\n{done.stderr[-3000:]}"
    return python


def _run(python: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, env=env)
    assert done.returncode == 0, f"{' '.join(args[:3])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return pins


def test_requirements_txt_alone_installs_exactly_the_lock_and_is_consistent(fresh_venv: Path) -> None:
    _run(fresh_venv, "-m", "pip", "check")
    frozen = {}
    for line in _run(fresh_venv, "-m", "pip", "freeze", "--all").splitlines():
        name, _, version = line.partition("==")
        if canonicalize_name(name) not in VENV_TOOLS:
            frozen[canonicalize_name(name)] = version
    lock = {name: version for name, version in _lock().items() if name not in VENV_TOOLS}
    assert frozen == lock, "the venv holds what the lock does not pin, or other versions"


def test_the_unpacked_package_imports_and_declares_the_apps_functions(fresh_venv: Path, unpacked: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **AZURE_SETTINGS}
    found: dict[str, Any] = json.loads(_run(fresh_venv, "-I", "-c", PROBE, cwd=unpacked, env=env))
    expected = _functions_of_the_repo_app()
    assert found["functions"] == expected, "the zip's function app differs from the repo's"
    assert set(found["functions"]) >= {"wave_intake", "tick", "remove_direct_license", "drift_watch"}
    loaded = set(found["loaded"])
    assert not {m for m in loaded if m.split(".")[0] in DEV_ONLY_IMPORTS or m in DEV_ONLY_IMPORTS}
    assert {"msgraph", "azure.data.tables.aio", "azure.storage.queue.aio"} <= loaded


def _functions_of_the_repo_app() -> dict[str, Any]:
    """The same app, loaded from the repo in this process (what test_functions_wiring checks in detail)."""
    probe = "import json, sys; sys.path.insert(0, '.'); import function_app as f; " + (
        "print(json.dumps({x.get_function_name(): json.loads(x.get_function_json()) for x in f.app.get_functions()}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    functions: dict[str, Any] = json.loads(done.stdout)
    return functions
