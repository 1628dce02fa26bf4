"""Every reference in code, tests and docs points at something in the repo: a newcomer can look it up.

Docs are cited as `docs/<name>.md` (graph.md by section, `docs/graph.md §1.4`), source files by their path
from the root (`src/licshift/rules/decide.py`).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".py", ".md", ".toml", ".bicep", ".json", ".yml", ".yaml", ".txt"}

DOC = re.compile(r"\bdocs/([\w-]+\.md)(?: (§[\d.]+(?:, §[\d.]+)*))?")
SOURCE = re.compile(r"\b((?:src|tests|bench|infra)/[\w/.-]+\.(?:py|md|bicep|json|html))\b")
# Notes that lived outside the repository once; the names are split so this file does not match.
OUTSIDE = re.compile("|".join(["graph-" + "facts", r"design\." + "md", r"environment\." + "md", r"\.\./" + "shared"]))


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
    return [
        ROOT / rel
        for rel in listed.stdout.splitlines()
        if Path(rel).suffix in SUFFIXES and not rel.startswith(("bench/results/", "package")) and (ROOT / rel).is_file()
    ]


FILES = tracked_text_files()


def graph_sections() -> set[str]:
    text = (ROOT / "docs" / "graph.md").read_text(encoding="utf-8")
    return {"§" + m for m in re.findall(r"^#{2,3} ([\d.]+?)\.? ", text, flags=re.MULTILINE)}


def test_graph_doc_numbers_its_sections() -> None:
    assert {"§1", "§1.4", "§1.8", "§2", "§3", "§4.1", "§4.3", "§5"} <= graph_sections()


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_references_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not OUTSIDE.search(text), f"{path.relative_to(ROOT)} cites notes that are not in the repo"
    sections = graph_sections()
    for match in DOC.finditer(text):
        assert (ROOT / "docs" / match[1]).is_file(), f"docs/{match[1]} does not exist"
        if match[1] == "graph.md" and match[2]:
            missing = [s for s in match[2].split(", ") if s not in sections]
            assert missing == [], f"docs/graph.md has no section {missing}"
    for match in SOURCE.finditer(text):
        assert (ROOT / match[1]).exists(), f"{match[1]} does not exist"
