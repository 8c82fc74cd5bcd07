"""The project's import graph, read from the source: the engine never imports Streamlit, no
module imports itself back through others when it is loaded, and the scripts never import the
tests."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("emotion", "recommendations", "ui")
PAGE_ONLY = ("streamlit", "streamlit_webrtc")  # imported by app.py and ui/ only


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    files = [REPO / "app.py", *(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))]
    return {module_name(path): path for path in files}


def imported_names(tree: ast.AST, package: str) -> list[str]:
    """Every module a file names in an import statement, wherever the statement is, with
    `from package import name` read as package.name too (name may be a module)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package upwards
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
    return names


def load_time_imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules a module imports while it is loaded: its top-level import statements
    (not those inside functions, nor TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    found = set()
    for node in top_level:
        found.update(imported for imported in imported_names(node, package) if imported in modules)
    return found - {name}


def test_the_engine_never_imports_the_page_libraries():
    offenders = []
    for name, path in project_modules().items():
        if name.split(".")[0] in ("emotion", "recommendations"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            used = {imported.split(".")[0] for imported in imported_names(tree, name)}
            offenders.extend(f"{name} imports {library}" for library in sorted(used & set(PAGE_ONLY)))
    assert offenders == []


def test_no_import_circles():
    modules = project_modules()
    graph = {name: load_time_imports(path, name, modules) for name, path in modules.items()}
    circles, state = [], {}  # state: 1 while a module's imports are being followed, 2 when done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for imported in sorted(graph[name]):
            if state.get(imported) == 1:
                circles.append(" -> ".join([*trail[trail.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*trail, imported])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_scripts_never_import_the_tests():
    offenders = []
    for path in sorted((REPO / "scripts").glob("*.py")):
        name = module_name(path)
        used = {
            imported.split(".")[0] for imported in imported_names(ast.parse(path.read_text("utf-8")), name)
        }
        if "tests" in used:
            offenders.append(name)
    assert offenders == []
