"""The services: what licshift's functions do (intake, the scheduler's tick, the remover,
drift watch, reports, telemetry), written against the ports.
"""
