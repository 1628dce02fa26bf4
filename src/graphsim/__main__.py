"""`python -m graphsim serve NAME|FILE [--port P] [--users N] [--time-scale S] [--no-throttling]` or
`python -m graphsim dump NAME [--users N]` (print a built-in as a scenario document)."""

from __future__ import annotations

import argparse
import json
import sys

from graphsim.builtins import BUILTINS
from graphsim.scenario import ScenarioError, load_scenario
from graphsim.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphsim")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="serve a scenario until Ctrl+C")
    run.add_argument("scenario")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080)
    run.add_argument("--users", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--time-scale", type=float, default=1.0)
    run.add_argument("--no-throttling", action="store_true", help="switch Graph's quotas off (benchmarks)")
    dump = sub.add_parser("dump", help="print a built-in scenario document as JSON")
    dump.add_argument("name", choices=sorted(BUILTINS))
    dump.add_argument("--users", type=int)
    dump.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        if args.command == "dump":
            print(json.dumps(BUILTINS[args.name](users=args.users, seed=args.seed), indent=2))
            return 0
        scenario = load_scenario(args.scenario, users=args.users, seed=args.seed)
    except (ScenarioError, ValueError) as exc:
        print(f"graphsim: {exc}", file=sys.stderr)
        return 2
    serve(scenario, args.host, args.port, time_scale=args.time_scale, throttling=False if args.no_throttling else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
