"""The README's settings table is the documentation admins read: it must match what the code reads."""

from __future__ import annotations

import re
from pathlib import Path

from licshift.settings import SETTINGS_TABLE

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_settings() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", section, flags=re.MULTILINE)


def test_readme_lists_every_setting_with_its_default_in_order() -> None:
    assert _readme_settings() == [(name, default) for name, default, _ in SETTINGS_TABLE]


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    test_lines = [line.split("#")[0].strip() for b in blocks for line in b.splitlines() if "make test" in line]
    assert test_lines, "README must show the test command"
    assert test_lines[0] in ci.splitlines()
