"""The Azure Functions entry point: registers licshift's Blueprints, nothing else."""

import sys
from pathlib import Path

# The deployed zip carries the package as source under src/ (not installed): make it importable.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

import azure.functions as func

from licshift.functions import drift, intake, poison, remover, settle, tick

app = func.FunctionApp()
for blueprint in (intake.bp, tick.bp, remover.bp, poison.bp, drift.bp, settle.bp):
    app.register_functions(blueprint)
