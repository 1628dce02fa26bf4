"""`licshift sim serve`: the Graph tenant simulator alone, on loopback, until interrupted."""

from __future__ import annotations

import argparse
from typing import Any

from licshift.cli.context import Context
from licshift.cli.exitcodes import EnvironmentProblem, ExitCode, UsageError
from licshift.cli.parsing import add_command, bounded, whole


def register(sub: Any) -> None:
    sim = add_command(
        sub, "sim", help="the Graph tenant simulator", examples=["licshift sim serve --scenario seed-example"]
    )
    actions = sim.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    serve = add_command(
        actions,
        "serve",
        help="serve a scenario on loopback until interrupted",
        examples=["licshift sim serve --scenario seed-example --port 8080", "licshift sim serve --users 5000"],
    )
    serve.add_argument("--scenario", default="seed-example", help="built-in scenario name or a .json/.yaml file")
    serve.add_argument("--port", type=whole("--port", 1, 65535), default=8080)
    serve.add_argument("--users", type=whole("--users", 1, 1_000_000), default=None, help="tenant size")
    serve.add_argument(
        "--time-scale", type=bounded("--time-scale", 0, 1000), default=1.0, help="compress throttling and delays"
    )
    serve.set_defaults(handler=serve_command)


def listen_problem(port: int, exc: OSError) -> str:
    return f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another --port"


def load(scenario: str, users: int | None) -> Any:
    from graphsim import ScenarioError, load_scenario

    try:
        return load_scenario(scenario, users=users)
    except (ScenarioError, ValueError, OSError) as exc:
        raise UsageError(f"scenario {scenario!r}: {exc}") from None


def serve_command(args: argparse.Namespace, ctx: Context) -> int:
    from graphsim import serve

    loaded = load(args.scenario, args.users)
    try:
        serve(loaded, "127.0.0.1", args.port, time_scale=args.time_scale)
    except OSError as exc:
        raise EnvironmentProblem(listen_problem(args.port, exc)) from None
    return ExitCode.OK
