"""Cold start of licshift's Graph path, measured in fresh Python processes (median of N runs each).

  .venv/bin/python bench/coldstart.py [--runs 5] [--out bench/results/coldstart.json]

What each case measures (wall = seconds, RSS = the child's peak resident set, VmHWM; Linux only):
- interpreter:      `python -c pass`, the floor every other case pays.
- import_graph:     `import licshift.adapters.graph` (msgraph is imported lazily, on adapter creation).
- import_sdk_eagerly: the same plus what `GraphAdapter.create/from_settings` import (msgraph client,
                     msgraph_core, httpx, azure.identity.aio): what a module-level import would cost.
- import_function_app: what the Functions worker does on a cold start: `import function_app` (the
                     Blueprints and the modules they need; the SDKs load on the first invocation).
- import_app:       every module of the app that exists (src/licshift/**, function_app.py).
- first_call_native: process start → first user_licenses() answered by the tenant simulator, through
                     GraphAdapter (msgraph-sdk request builders + native response handler).
- first_answer_function_app: what a worker's cold start costs up to the first Graph answer:
                     `import function_app`, `runtime.build` (Graph adapter, ledger, queue client)
                     and the first user_licenses().
- first_answer_worker: the same, fairly to the Functions worker, which has `azure.functions` (and
                     grpc) loaded before it imports the app: `azure.functions` is imported before the
                     clock starts, and `answer_s` runs from there to the first Graph answer, split into
                     `import_s` (function_app and the services the removals trigger imports on its
                     first call), `build_s` (runtime.build) and `first_call_s`;
                     `answer_cpu_s` is the CPU time of the same span (less sensitive to other jobs).
- first_answer_worker_monitored: the same with azure.monitor.opentelemetry imported before the clock
                     too, as by a worker that set up Azure Monitor (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY)
                     before loading the app: its exporter has azure.identity and azure.core loaded.
- first_answer_worker_uncompiled: the same with licshift's own modules compiled from source, as on a
                     host that cannot write __pycache__ next to them (the package ships no .pyc;
                     installed packages are byte-compiled by pip): a copy of src/ without __pycache__,
                     PYTHONDONTWRITEBYTECODE=1.
- managed_identity:  what a managed identity adds on Azure, measured after first_answer_worker's path
                     in the same process (so only what it adds): importing azure.identity.aio and the
                     first token from the App Service identity endpoint (IDENTITY_ENDPOINT /
                     IDENTITY_HEADER, as on Flex Consumption), here a loopback stand-in in the parent.
- first_call_typed:  the same GET through msgraph's typed models
                     (`client.users.by_user_id(id).get()` with the same $select, no native handler).
"Since spawn" is measured from just before the parent starts the child to the moment the child has
its answer, so it includes interpreter start-up; `in_process_s` is the same span measured inside the
child from its first line. The simulator runs in the parent, in its own thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
IDENTITY_HEADER = "bench-identity-header"
GOAL_S = 0.4
"""Issue 8's goal figure for the cold start to the first Graph answer."""
BASELINE = "@baseline"
"""Suffix of the cases run on --baseline's checkout."""
UNCOMPILED = "_uncompiled"
"""Suffix of the cases run on a copy of the app without byte-compiled modules."""

_PRELUDE = """
import json, sys, time
_T0 = time.perf_counter()
_SPAWNED = float(sys.argv[1])
def _peak_rss_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's peak across fork+exec.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
# Azurite's well-known development key; port 9 (discard): the cases build the ledger, never call it.
_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
)
def _report(**extra):
    out = {
        "since_spawn_s": time.time() - _SPAWNED,
        "in_process_s": time.perf_counter() - _T0,
        "peak_rss_mb": _peak_rss_mb(),
        "modules": len(sys.modules),
    }
    out.update(extra)
    print(json.dumps(out))
"""

CASES: dict[str, str] = {
    "interpreter": """
_report()
""",
    "import_graph": """
t = time.perf_counter()
import licshift.adapters.graph
_report(import_s=time.perf_counter() - t)
""",
    "import_sdk_eagerly": """
t = time.perf_counter()
import licshift.adapters.graph
import httpx, msgraph.graph_service_client, msgraph.graph_request_adapter, msgraph_core, azure.identity.aio
_report(import_s=time.perf_counter() - t)
""",
    "import_function_app": """
t = time.perf_counter()
import function_app
_report(import_s=time.perf_counter() - t)
""",
    "import_app": """
import importlib
names = json.loads(sys.argv[2])
t = time.perf_counter()
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"[:200]
_report(import_s=time.perf_counter() - t, imported=len(names) - len(failed), failed=failed)
""",
    "first_call_native": """
import asyncio
from licshift.adapters.graph import GraphAdapter
base_url, user_id = sys.argv[2], sys.argv[3]
async def main():
    async with GraphAdapter.create(base_url, credential=None) as graph:
        user = await graph.user_licenses(user_id)
        assert user.user_id == user_id, user
        return len(user.states)
states = asyncio.run(main())
_report(states=states)
""",
    "first_answer_function_app": """
import asyncio
import function_app
from licshift.functions import runtime
from licshift.settings import Settings
base_url, user_id = sys.argv[2], sys.argv[3]
async def main():
    rt = runtime.build(Settings.from_env({"LicshiftStorage": _STORAGE, "LICSHIFT_GRAPH_ENDPOINT": base_url}))
    user = await rt.graph.user_licenses(user_id)
    await rt.graph.aclose()
    return len(user.states)
states = asyncio.run(main())
_report(states=states)
""",
    "first_answer_worker": """
import asyncio
import azure.functions
_W0, _C0 = time.perf_counter(), time.process_time()
import function_app
import licshift.services.quota, licshift.services.remover  # what the removals trigger's first call imports
from licshift.functions import runtime
from licshift.settings import Settings
_W1 = time.perf_counter()
base_url, user_id = sys.argv[2], sys.argv[3]
async def main():
    t = time.perf_counter()
    rt = runtime.build(Settings.from_env({"LicshiftStorage": _STORAGE, "LICSHIFT_GRAPH_ENDPOINT": base_url}))
    built = time.perf_counter()
    user = await rt.graph.user_licenses(user_id)
    answered = time.perf_counter()
    await rt.graph.aclose()
    return len(user.states), built - t, answered - built, answered
states, build_s, first_call_s, answered = asyncio.run(main())
_report(
    states=states, answer_s=answered - _W0, answer_cpu_s=time.process_time() - _C0,
    import_s=_W1 - _W0, build_s=build_s, first_call_s=first_call_s,
)
""",
    "managed_identity": """
import asyncio
import azure.functions
import function_app
from licshift.functions import runtime
from licshift.settings import Settings
base_url, user_id = sys.argv[2], sys.argv[3]
async def main():
    rt = runtime.build(Settings.from_env({"LicshiftStorage": _STORAGE, "LICSHIFT_GRAPH_ENDPOINT": base_url}))
    await rt.graph.user_licenses(user_id)
    await rt.graph.aclose()
    t = time.perf_counter()
    from azure.identity.aio import ManagedIdentityCredential
    imported = time.perf_counter()
    async with ManagedIdentityCredential() as credential:
        token = await credential.get_token("https://graph.microsoft.com/.default")
    assert token.token == "bench-token", token
    done = time.perf_counter()
    return imported - t, done - imported, done - t
import_s, token_s, added_s = asyncio.run(main())
_report(import_s=import_s, token_s=token_s, added_s=added_s)
""",
    "first_call_typed": """
import asyncio
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
base_url, user_id = sys.argv[2], sys.argv[3]
async def main():
    adapter = GraphRequestAdapter(AnonymousAuthenticationProvider())
    adapter.base_url = base_url
    client = GraphServiceClient(request_adapter=adapter)
    builder = client.users.by_user_id(user_id)
    query = builder.UserItemRequestBuilderGetQueryParameters(
        select=["id", "userPrincipalName", "licenseAssignmentStates"]
    )
    user = await builder.get(RequestConfiguration(query_parameters=query))
    await adapter._http_client.aclose()
    assert user is not None and user.id == user_id, user
    return len(user.license_assignment_states or [])
states = asyncio.run(main())
_report(states=states)
""",
}


# The worker configures Azure Monitor before it loads the app when PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY
# is true (infra sets it); the exporter imports azure.identity and azure.core, so those are loaded already.
CASES["first_answer_worker_monitored"] = CASES["first_answer_worker"].replace(
    "import azure.functions\n", "import azure.functions\nimport azure.monitor.opentelemetry\n", 1
)


def app_modules() -> list[str]:
    """Every module of the app that exists right now (others are being written in parallel)."""
    names = []
    for path in sorted((SRC / "licshift").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    if (ROOT / "function_app.py").exists():
        names.append("function_app")
    return names


class _IdentityEndpoint(BaseHTTPRequestHandler):
    """A stand-in for the App Service identity endpoint Flex Consumption gives a function app."""

    def do_GET(self) -> None:
        if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            self.send_error(401)
            return
        body = json.dumps(
            {
                "access_token": "bench-token",
                "expires_on": int(time.time()) + 3600,
                "resource": "https://graph.microsoft.com",
                "token_type": "Bearer",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def identity_endpoint() -> tuple[ThreadingHTTPServer, dict[str, str]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _IdentityEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"IDENTITY_ENDPOINT": f"http://127.0.0.1:{server.server_port}/msi/token", "IDENTITY_HEADER": IDENTITY_HEADER}
    return server, env


def run_child(case: str, *args: str, extra_env: dict[str, str] | None = None, root: Path = ROOT) -> dict[str, Any]:
    """Run one case in a fresh interpreter on the app in `root` (this checkout, or a baseline's)."""
    env = {**os.environ, **(extra_env or {}), "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    # Byte-compiled modules, as for the installed packages: the first run of a case writes them.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if case.endswith(UNCOMPILED):
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    code = _PRELUDE + CASES[case.partition(BASELINE)[0].removesuffix(UNCOMPILED)]
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, "-c", code, repr(spawned), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{case} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[f"{key}_median"] = round(statistics.median(values), 4)
            out[f"{key}_all"] = [round(v, 4) for v in values]
        else:
            out[key] = values[-1]
    return out


def source_copy(target: Path) -> Path:
    """The deployed app's Python files (function_app.py, src/licshift) without any byte-compiled ones."""
    shutil.copy2(ROOT / "function_app.py", target / "function_app.py")
    shutil.copytree(SRC / "licshift", target / "src" / "licshift", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def first_graph_answer(results: dict[str, Any], baseline: Path | None) -> dict[str, Any]:
    """Issue 8's goal figure: the worker's cold start to the first Graph answer, here and with what a
    managed identity adds on Azure (its import and first token); against the baseline when given."""
    worker, identity = results["first_answer_worker"], results["managed_identity"]
    out: dict[str, Any] = {
        "goal_s": GOAL_S,
        "worker_s": worker["answer_s_median"],
        "import_function_app_s": worker["import_s_median"],
        "runtime_build_s": worker["build_s_median"],
        "first_call_s": worker["first_call_s_median"],
        "managed_identity_added_s": identity["added_s_median"],
        "on_azure_s": round(worker["answer_s_median"] + identity["added_s_median"], 4),
        "worker_cpu_s": worker["answer_cpu_s_median"],
        "monitored_worker_s": results["first_answer_worker_monitored"]["answer_s_median"],
        "monitored_worker_cpu_s": results["first_answer_worker_monitored"]["answer_cpu_s_median"],
        "uncompiled_worker_s": results["first_answer_worker" + UNCOMPILED]["answer_s_median"],
        "uncompiled_worker_cpu_s": results["first_answer_worker" + UNCOMPILED]["answer_cpu_s_median"],
    }
    if baseline is not None:
        before = results["first_answer_worker" + BASELINE]
        out["baseline"] = str(baseline)
        out["baseline_worker_s"] = before["answer_s_median"]
        out["baseline_worker_cpu_s"] = before["answer_cpu_s_median"]
        out["baseline_modules"] = before["modules_median"]
        out["modules"] = worker["modules_median"]
        out["baseline_peak_rss_mb"] = before["peak_rss_mb_median"]
        out["peak_rss_mb"] = worker["peak_rss_mb_median"]
        cpu_pairs = zip(worker["answer_cpu_s_all"], before["answer_cpu_s_all"], strict=True)
        out["cpu_ratio_per_round_median"] = round(statistics.median(a / b for a, b in cpu_pairs), 3)
        # The ratio of medians, and the median of the per-round ratios (rounds ran back to back).
        out["ratio_to_baseline"] = round(worker["answer_s_median"] / before["answer_s_median"], 3)
        pairs = zip(worker["answer_s_all"], before["answer_s_all"], strict=True)
        out["ratio_per_round_median"] = round(statistics.median(a / b for a, b in pairs), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "coldstart.json")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. a worktree of main before a change): its first_answer_worker runs "
        "interleaved with this one's, so the two are compared within one run",
    )
    options = parser.parse_args(argv)

    sys.path[:0] = [str(SRC)]
    load_before = os.getloadavg()
    from graphsim import SimulatorThread, load_scenario

    scenario = load_scenario("seed-example", users=50, seed=1)
    modules = app_modules()
    results: dict[str, Any] = {}
    identity, identity_env = identity_endpoint()
    uncompiled = source_copy(Path(tempfile.mkdtemp(prefix="licshift-coldstart-")))
    with SimulatorThread(scenario, throttling=False) as sim:
        user_id = sim.call(lambda tenant: next(iter(tenant.users)))
        # One untimed call warms the simulator (its first request pays aiohttp's own set-up).
        run_child("first_call_native", sim.base_url, user_id)
        plan: dict[str, tuple[str, ...]] = {
            "interpreter": (),
            "import_graph": (),
            "import_sdk_eagerly": (),
            "import_function_app": (),
            "import_app": (json.dumps(modules),),
            "first_call_native": (sim.base_url, user_id),
            "first_answer_function_app": (sim.base_url, user_id),
            "first_answer_worker": (sim.base_url, user_id),
            "managed_identity": (sim.base_url, user_id),
            "first_call_typed": (sim.base_url, user_id),
        }
        plan["first_answer_worker" + UNCOMPILED] = plan["first_answer_worker"]
        plan["first_answer_worker_monitored"] = plan["first_answer_worker"]
        if options.baseline is not None:
            plan["first_answer_worker" + BASELINE] = plan["first_answer_worker"]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
        # Interleave the cases so that drift in machine load affects them all alike.
        for _ in range(options.runs):
            for name, args in plan.items():
                root = options.baseline.resolve() if name.endswith(BASELINE) else ROOT
                root = uncompiled if name.endswith(UNCOMPILED) else root
                extra = identity_env if name == "managed_identity" else None
                runs[name].append(run_child(name, *args, extra_env=extra, root=root))
        results = {name: summarise(r) for name, r in runs.items()}
    identity.shutdown()
    shutil.rmtree(uncompiled)

    native, typed = results["first_call_native"], results["first_call_typed"]
    lazy, eager = results["import_graph"], results["import_sdk_eagerly"]
    report = {
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
        "runs": options.runs,
        "statistic": "median",
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "cases": results,
        "saving_lazy_import": {
            "import_s": round(eager["import_s_median"] - lazy["import_s_median"], 4),
            "peak_rss_mb": round(eager["peak_rss_mb_median"] - lazy["peak_rss_mb_median"], 1),
        },
        "first_graph_answer": first_graph_answer(results, options.baseline),
        "saving_native_vs_typed": {
            "since_spawn_s": round(typed["since_spawn_s_median"] - native["since_spawn_s_median"], 4),
            "peak_rss_mb": round(typed["peak_rss_mb_median"] - native["peak_rss_mb_median"], 1),
            "modules": int(typed["modules_median"] - native["modules_median"]),
        },
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    width = max(len(n) for n in results)
    print(f"{'case':<{width}}  since spawn  in process  peak RSS  modules   (median of {options.runs})")
    for name, r in results.items():
        print(
            f"{name:<{width}}  {r['since_spawn_s_median']:>9.3f} s  {r['in_process_s_median']:>8.3f} s"
            f"  {r['peak_rss_mb_median']:>6.1f} MB  {int(r['modules_median']):>7}"
        )
    lazy_saving = report["saving_lazy_import"]
    print(
        f"lazy SDK imports save {lazy_saving['import_s']:.3f} s and {lazy_saving['peak_rss_mb']:.1f} MB "
        "for code that imports licshift.adapters.graph without calling Graph"
    )
    answer = report["first_graph_answer"]
    print(
        f"worker cold start to the first Graph answer: {answer['worker_s']:.3f} s here, "
        f"{answer['on_azure_s']:.3f} s with the managed identity's import and token (goal {GOAL_S} s)"
        + (
            f"; baseline {answer['baseline_worker_s']:.3f} s (ratio {answer['ratio_to_baseline']:.2f})"
            if "baseline_worker_s" in answer
            else ""
        )
    )
    saving = report["saving_native_vs_typed"]
    print(
        f"native handler saves {saving['since_spawn_s']:.3f} s, {saving['peak_rss_mb']:.1f} MB and "
        f"{saving['modules']} modules on the first call; written to {options.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
