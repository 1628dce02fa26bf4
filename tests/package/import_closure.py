"""The first-party modules a Python file needs at run time, found by reading import statements.

Every `import` and `from ... import` counts, at module level or inside a function (the runtime imports
its adapters lazily), except those under `if TYPE_CHECKING:`, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path) -> set[str]:
    """Dotted names `path` imports at run time: `a.b` for `import a.b`, `a.b` and `a.b.c` for `from a.b import c`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path)
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def first_party_closure(entry: Path, source_root: Path) -> set[Path]:
    """Files under `source_root` that `entry` reaches through imports, with their packages' __init__.py."""
    seen: set[Path] = set()
    pending = [entry]
    while pending:
        current = pending.pop()
        for dotted in imported_modules(current):
            for path in _files_for(dotted, source_root):
                if path not in seen:
                    seen.add(path)
                    pending.append(path)
    return seen


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    nodes: list[ast.AST] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        nodes.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _package_of(path: Path) -> str:
    """Dotted package a file under a src/ folder belongs to ('' elsewhere, e.g. function_app.py)."""
    parts = path.resolve().parts
    if "src" not in parts:
        return ""
    inside = parts[len(parts) - parts[::-1].index("src") :]
    return ".".join(inside[:-1])  # a module's package; for __init__.py, the package itself


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".") if package else []
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _files_for(dotted: str, source_root: Path) -> list[Path]:
    """The module's file and every enclosing package's __init__.py, where they exist under source_root."""
    parts = dotted.split(".")
    files = []
    for depth in range(1, len(parts) + 1):
        base = source_root.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
    return files
