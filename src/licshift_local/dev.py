"""`licshift host` and `licshift dev up`: licshift on this machine, no Azure needed.

`licshift host` plays the Functions host for function_app.py against the storage and Graph endpoint
the settings name (README defaults, then local.settings.json, then the environment, as `func start`
would). `licshift dev up` brings up the whole local stack in one command: Azurite (on free loopback
ports, with the flags the Azure SDKs need), the Graph tenant simulator with a scenario, and the
host; it prints the tenant's groups and SKUs and the `export` lines the CLI needs in another shell.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from licshift.cli.context import Context
from licshift.cli.exitcodes import EnvironmentProblem, ExitCode
from licshift.cli.parsing import add_command, bounded, whole
from licshift.settings import SETTINGS_TABLE, STORAGE_CONNECTION

if TYPE_CHECKING:
    from graphsim import Scenario, Simulator

DEV_TICK_SECONDS = 5


def show_warnings() -> None:
    """The host's warnings and alerts (rejections, restores, halts) on stderr, as the Functions host logs."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )


def register(sub: Any) -> None:
    host = add_command(
        sub,
        "host",
        help="run function_app.py's functions locally against the configured storage and Graph endpoint",
        examples=[
            "licshift host                       # settings from local.settings.json and the environment",
            "LICSHIFT_GRAPH_ENDPOINT=http://127.0.0.1:8080/v1.0 LicshiftStorage=UseDevelopmentStorage=true \\\n"
            "    licshift host",
        ],
    )
    host.add_argument(
        "--timer-interval",
        type=bounded("--timer-interval", 0, 86400),
        default=None,
        help="fire timers every N seconds (default: their schedules)",
    )
    host.set_defaults(handler=host_command)

    dev = add_command(
        sub,
        "dev",
        help="the local stack for development and trying licshift out",
        examples=["licshift dev up", "licshift dev up --scenario adversarial --env-file .licshift-dev.env"],
    )
    actions = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    up = add_command(
        actions,
        "up",
        help="start Azurite, the Graph simulator (with a scenario) and the host; print the CLI's settings",
        examples=[
            "licshift dev up                                  # seed-example: 1,000 users, E3 assigned directly",
            "licshift dev up --scenario adversarial --env-file .licshift-dev.env",
            "source .licshift-dev.env && licshift groups       # in another shell",
        ],
    )
    up.add_argument("--scenario", default="seed-example", help="built-in scenario name or a .json/.yaml file")
    up.add_argument("--users", type=whole("--users", 1, 1_000_000), default=None, help="tenant size")
    up.add_argument("--port", type=whole("--port", 0, 65535), default=0, help="simulator port (default: a free one)")
    up.add_argument("--time-scale", type=bounded("--time-scale", 0, 1000), default=1.0, help="simulated time factor")
    up.add_argument("--tick-seconds", type=whole("--tick-seconds", 1, 3600), default=DEV_TICK_SECONDS)
    up.add_argument("--storage", default=None, help="use this storage connection string instead of starting Azurite")
    up.add_argument("--no-prepare", action="store_true", help="do not assign the scenario's SKUs to its wave group")
    up.add_argument("--env-file", type=Path, default=None, help="also write the export lines to this file")
    up.set_defaults(handler=dev_up_command)


# --- licshift host -------------------------------------------------------------------------------


def host_command(args: argparse.Namespace, ctx: Context) -> int:
    from licshift_local.functions_host import FunctionsHost, FunctionsHostError
    from licshift_local.stack import ROOT, function_app

    settings = ctx.settings()
    connection = settings.storage.connection_string
    if not connection:
        raise EnvironmentProblem(
            f"licshift host plays the Functions host on a storage emulator: set {STORAGE_CONNECTION} to a "
            "connection string (Azurite: UseDevelopmentStorage=true), or use `licshift dev up`"
        )
    env = ctx.env()
    show_warnings()

    async def main() -> None:
        from licshift.adapters.ledger import Ledger
        from licshift.adapters.queues import StorageQueues

        async with Ledger.from_settings(settings) as ledger, StorageQueues.from_settings(settings) as queue:
            await ledger.ensure_tables()
            await queue.ensure_queues()
        host = FunctionsHost(
            function_app(),
            settings_env=env,
            host_json=ROOT / "host.json",
            connection_string=connection,
            timer_interval=args.timer_interval,
        )
        print(
            f"licshift host: {len(host.functions)} functions, Graph at {settings.graph_endpoint}; Ctrl+C stops",
            file=sys.stderr,
        )
        await host.run_forever()

    try:
        asyncio.run(main())
    except FunctionsHostError as exc:
        raise EnvironmentProblem(str(exc)) from None
    except KeyboardInterrupt:
        pass
    return ExitCode.OK


# --- licshift dev up -----------------------------------------------------------------------------

CLI_SETTINGS = {name for name, _, _ in SETTINGS_TABLE}


def export_lines(env: dict[str, str]) -> list[str]:
    """What the CLI needs in another shell: the settings licshift reads that the stack sets."""
    return [f"export {name}={shlex.quote(value)}" for name, value in env.items() if name in CLI_SETTINGS]


def tenant_lines(sim: Simulator) -> list[str]:
    tenant = sim.tenant
    lines = [f"simulated tenant '{sim.scenario.name}' ({len(tenant.users)} users) at {sim.base_url}", "SKUs:"]
    for sku in tenant.skus.values():
        seats = tenant.seats.get(sku.sku_id, 0)
        lines.append(f"  {sku.part_number:<24} {sku.sku_id}  seats {seats}, {len(sku.plan_ids)} plans")
    lines.append("groups:")
    for group in tenant.groups.values():
        licensed = ", ".join(tenant.skus[s].part_number for s in group.licenses if s in tenant.skus) or "no license"
        lines.append(f"  {group.display_name:<24} {group.id}  {len(group.members)} members, {licensed}")
    return lines


async def prepare(sim: Simulator, scenario: Scenario) -> list[str]:
    """Microsoft's step 3 on the simulator: assign the scenario's SKUs to its wave group (an admin's
    job in the Entra admin center; licshift itself never assigns licenses to groups)."""
    import httpx

    done = []
    async with httpx.AsyncClient(timeout=30) as http:
        for wave in scenario.waves[:1]:
            for sku_id, disabled in wave.group_license:
                body = {"addLicenses": [{"skuId": sku_id, "disabledPlans": sorted(disabled)}], "removeLicenses": []}
                response = await http.post(f"{sim.base_url}/groups/{wave.group}/assignLicense", json=body)
                response.raise_for_status()
                done.append(f"assigned {sku_id} to group {wave.group} (Microsoft's step 3, as an admin would)")
    return done


async def _dev_up(args: argparse.Namespace) -> None:
    from graphsim import Simulator
    from licshift_local.azurite import Azurite, AzuriteError
    from licshift_local.sim import listen_problem, load
    from licshift_local.stack import LocalStack, StackOptions

    scenario = load(args.scenario, args.users)
    azurite: Azurite | None = None
    connection = args.storage
    if not connection:
        print("starting Azurite on loopback ...", file=sys.stderr, flush=True)
        try:
            azurite = await asyncio.to_thread(Azurite.start)
        except AzuriteError as exc:
            raise EnvironmentProblem(str(exc)) from None
        connection = azurite.connection_string
    try:
        try:
            sim = await Simulator.start(scenario, port=args.port, time_scale=args.time_scale)
        except OSError as exc:
            raise EnvironmentProblem(listen_problem(args.port, exc)) from None
        try:
            notes = [] if args.no_prepare else await prepare(sim, scenario)
            options = StackOptions(tick_seconds=args.tick_seconds)
            async with LocalStack(sim.base_url, connection, options) as stack:
                print("\n".join(tenant_lines(sim) + notes), file=sys.stderr, flush=True)
                exports = export_lines(stack.env)
                if args.env_file is not None:
                    args.env_file.write_text("\n".join(exports) + "\n", encoding="utf-8")
                print("\n".join(exports), flush=True)
                print(
                    "licshift dev: ready; run the CLI in another shell with the exports above. Ctrl+C stops.",
                    file=sys.stderr,
                    flush=True,
                )
                await stack.host.run_forever()
        finally:
            await sim.stop()
    finally:
        if azurite is not None:
            azurite.stop()


def dev_up_command(args: argparse.Namespace, ctx: Context) -> int:
    show_warnings()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_dev_up(args))
    print("licshift dev: stopped", file=sys.stderr)
    return ExitCode.OK
