"""`licshift sim serve`: the Graph tenant simulator alone, on loopback, until interrupted."""

from __future__ import annotations

import sys


def serve(scenario: str, *, port: int, users: int | None, time_scale: float) -> int:
    from graphsim import ScenarioError, load_scenario
    from graphsim import serve as run

    try:
        loaded = load_scenario(scenario, users=users)
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"licshift sim: {exc}", file=sys.stderr)
        return 2
    try:
        run(loaded, "127.0.0.1", port, time_scale=time_scale)
    except OSError as exc:
        print(f"licshift sim: cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another --port", file=sys.stderr)
        return 1
    return 0
