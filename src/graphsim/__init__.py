"""graphsim: a Microsoft Graph tenant simulator for licensing (users, groups, group-based licensing,
throttling, faults, a legacy actor and an oracle of lost plans), served over HTTP on loopback.

    from graphsim import load_scenario, Simulator, SimulatorThread
    scenario = load_scenario("seed-example", users=200, seed=1)
    sim = await Simulator.start(scenario, port=0, time_scale=1.0)

It never imports licshift: it is the independent referee. See README.md beside this file.
"""

from graphsim.faults import FaultRule, Faults
from graphsim.legacy import LegacySpec, LegacyTargets
from graphsim.oracle import GRAPH, LEGACY, SCENARIO, Loss, Oracle, TimelinePoint
from graphsim.scenario import OUTCOMES, Scenario, ScenarioError, Wave, WaveSelection, load_scenario, parse
from graphsim.server import Simulator, SimulatorThread, serve
from graphsim.tenant import ProcessingTiming, Tenant
from graphsim.throttle import ThrottleLimits

__all__ = [
    "GRAPH",
    "LEGACY",
    "OUTCOMES",
    "SCENARIO",
    "FaultRule",
    "Faults",
    "LegacySpec",
    "LegacyTargets",
    "Loss",
    "Oracle",
    "ProcessingTiming",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "SimulatorThread",
    "Tenant",
    "ThrottleLimits",
    "TimelinePoint",
    "Wave",
    "WaveSelection",
    "load_scenario",
    "parse",
    "serve",
]
