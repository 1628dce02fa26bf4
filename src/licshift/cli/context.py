"""What every command gets: its output, and the app settings as the Functions tooling would see them.

Settings come from three places, later ones winning: the README's defaults, `local.settings.json`
in the current directory (its `Values`, as `func start` reads it from the function app's folder),
then the environment (Core Tools, too, skips a local setting the environment already defines).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from licshift.cli.exitcodes import EnvironmentProblem
from licshift.cli.output import Output
from licshift.settings import SETTINGS_TABLE, Settings, SettingsError

LOCAL_SETTINGS = "local.settings.json"


def readme_defaults() -> dict[str, str]:
    """Every setting with a concrete default (binding expressions like %LICSHIFT_WAVES_QUEUE% need them)."""
    return {name: default for name, default, _ in SETTINGS_TABLE if not default.startswith("(")}


def local_settings(folder: Path) -> dict[str, str]:
    """The `Values` of folder/local.settings.json; {} when there is none."""
    path = folder / LOCAL_SETTINGS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read {path}: {exc.strerror}; fix its permissions or remove it") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise EnvironmentProblem(f"{path} is not valid JSON ({exc}); fix it or remove it") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("Values", {}), dict):
        raise EnvironmentProblem(f'{path} must be an object with "Values": {{"NAME": "value", ...}}')
    if doc.get("IsEncrypted"):
        raise EnvironmentProblem(
            f"{path} is encrypted (IsEncrypted: true); decrypt it with `func settings decrypt` or set the values "
            "in the environment"
        )
    values = doc.get("Values", {})
    return {str(k): ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in values.items()}


def settings_env(environ: Mapping[str, str], folder: Path) -> dict[str, str]:
    env = readme_defaults()
    env.update(local_settings(folder))
    env.update(environ)
    return env


@dataclass
class Context:
    output: Output = field(default_factory=Output)
    debug: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    folder: Path = field(default_factory=Path.cwd)
    _settings: Settings | None = None

    def env(self) -> dict[str, str]:
        return settings_env(self.environ, self.folder)

    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = Settings.from_env(self.env())
            except SettingsError as exc:
                raise EnvironmentProblem(str(exc)) from None
        return self._settings
