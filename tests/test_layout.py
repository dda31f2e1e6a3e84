"""The import rules docs/ARCHITECTURE.md states, checked on the source (every `import` and `from`).

- `pospal_protocol/` (the wire format) imports none of `agent`, `server`, `ui`.
- `server/` imports nothing from `agent/` or `ui/`.
- `agent/` imports nothing from `server/`, `ui/` or PySide6.
- `ui/` reaches the agent only through `agent.control` (and `agent.connect()`, the composition root that
  hands it one), plus the shared catalogue `agent.messages` and the error types it shows, `agent.errors`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "pospal_protocol": {"agent", "server", "ui", "PySide6", "shiboken6"},
    "server": {"agent", "ui", "PySide6", "shiboken6"},
    "agent": {"server", "ui", "PySide6", "shiboken6"},
}


def imported_roots(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) for every absolute import in `path`, including ones inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layout(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {root}"
        for path in files
        for line, root in sorted(imported_roots(path))
        if root in FORBIDDEN[package]
    ]
    assert bad == []


UI_MAY_IMPORT = {"agent", "agent.control", "agent.errors", "agent.messages"}


def imported_modules(path: Path) -> set[tuple[int, str]]:
    """(line, full module name) for every absolute import in `path` (`from a.b import c` gives a.b)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module))
    return found


def test_ui_reaches_the_agent_only_through_its_control():
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "ui").rglob("*.py"))
        for line, module in sorted(imported_modules(path))
        if module.split(".")[0] == "agent" and module not in UI_MAY_IMPORT
    ]
    assert bad == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from agent.tokens import x\n    import server.app\n")
    assert {root for _, root in imported_roots(probe)} == {"agent", "server"}


PACKAGES = ("pospal_protocol", "agent", "server", "ui")


def module_name(path: Path) -> str:
    """`agent/localapi/api.py` -> `agent.localapi.api`; `server/api/__init__.py` -> `server.api`."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports at module level (`if TYPE_CHECKING:` blocks included).

    Imports inside functions are deliberate deferrals and are left out. `from pkg import name` counts as
    an import of `pkg.name` when that is a module, else of `pkg`.
    """
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If | ast.Try):
            nodes.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                nodes.extend(handler.body)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in known:
                    found.add(full)
                elif node.module in known:
                    found.add(node.module)
    return found


def import_cycles() -> list[list[str]]:
    """Every cycle in the module-level import graph of the shipped packages (Tarjan's SCCs > 1)."""
    paths = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    known = set(paths)
    graph = {name: module_level_imports(path, known) - {name} for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def test_no_import_cycles_between_modules():
    assert import_cycles() == []


def architecture_tree() -> set[str]:
    """Every path docs/ARCHITECTURE.md's package tree names (`agent/core/service.py`, ...), by indentation."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named: set[str] = set()
    stack: list[tuple[int, str]] = []
    for block in text.split("```")[1::2]:
        for line in block.splitlines():
            m = re.match(r"^( *)([\w./<>-]+?(?:/|\.py))(?: |$)", line)
            if not m:
                continue
            indent, name = len(m.group(1)), m.group(2)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = "".join(part for _, part in stack) + name
            named.add(path)
            if name.endswith("/"):
                stack.append((indent, name))
    return named


@pytest.mark.parametrize("package", ["agent", "pospal_protocol"])
def test_architecture_names_every_module_where_it_lives(package):
    named = architecture_tree()
    files = sorted((ROOT / package).rglob("*.py"))
    missing = [
        str(path.relative_to(ROOT))
        for path in files
        if path.name != "_build.py"
        and not (path.name == "__init__.py" and path.parent != ROOT / package)
        and str(path.relative_to(ROOT)) not in named
    ]
    assert files and missing == []
    stale = sorted(
        p for p in named if p.startswith(f"{package}/") and p.endswith(".py") and not (ROOT / p).exists()
    )
    assert stale == []
