"""Import contracts of the package layout (docs/architecture.md), checked on the source.

- ``spacon._core`` is torch/numpy only: it imports no AnnData, scanpy or squidpy, and
  nothing of the AnnData-facing layers;
- ``spacon.pl`` uses the public face of ``spacon.tl`` only;
- no import cycle between spacon's modules (imports inside functions count: a deferred
  import that closes a circle is still a circle);
- the optional ``spatialdata`` has one home, ``spacon._spatialdata``, which imports it only
  inside functions (``import spacon`` never loads it);
- the package is typed (``py.typed``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "spacon"
#: modules that import private ``spacon.tl`` names; to empty as they move to public ones
PL_PRIVATE_TL_ALLOWED: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(name: str) -> bool:
    return (SRC / Path(*name.split(".")) / "__init__.py").exists()


def _exists(name: str) -> bool:
    path = SRC / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports at run time (any depth in the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if module.startswith("spacon") and _exists(sub) else module)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: imports(path) for name, path in MODULES.items()}


def test_core_imports_no_anndata_layer():
    outside = ("anndata", "scanpy", "squidpy", "spacon.tl", "spacon.pp", "spacon.pl")
    allowed_spacon = {"spacon._io", "spacon._progress"}  # atomic writer, progress bars: no AnnData
    for name, found in IMPORTS.items():
        if not name.startswith("spacon._core"):
            continue
        for module in found:
            assert not module.startswith(outside), f"{name} imports {module}"
            if module.startswith("spacon") and not module.startswith("spacon._core"):
                assert module in allowed_spacon, f"{name} imports {module}"
    for module in allowed_spacon:
        assert not any(m.startswith(("anndata", "scanpy")) for m in IMPORTS[module]), module


def test_pl_uses_only_the_public_tl():
    for name, found in IMPORTS.items():
        if not name.startswith("spacon.pl") or name in PL_PRIVATE_TL_ALLOWED:
            continue
        private = [m for m in found if m.startswith("spacon.tl.")]
        assert not private, f"{name} imports private {private}; use spacon.tl's public names"


def test_no_import_cycles():
    graph = {
        name: {m for m in found if m in MODULES and m != name} for name, found in IMPORTS.items()
    }
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    for name in graph:
        if _is_package(name):
            graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_contract_checker_sees_a_cycle(tmp_path, monkeypatch):
    """The checker is not vacuous: the old ``tl._embed`` <-> ``tl._model`` circle is found."""
    assert "spacon.tl._model" in IMPORTS["spacon.tl._embed"]
    assert "spacon.tl._embed" not in IMPORTS["spacon.tl._model"]
    source = "def f():\n    from ._embed import embed\n"
    fake = tmp_path / "spacon" / "tl" / "_model.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    (tmp_path / "spacon" / "tl" / "_embed.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert "spacon.tl._embed" in imports(fake)


def test_spatialdata_is_imported_only_by_its_home_and_only_when_used():
    home = "spacon._spatialdata"
    assert home in MODULES
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking_only(node, parents):
                continue
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not any(m.partition(".")[0] == "spatialdata" for m in modules):
                continue
            assert name == home, f"{name} imports spatialdata; go through {home}.resolve_table"
            scope = node
            while scope in parents and not isinstance(scope, ast.FunctionDef):
                scope = parents[scope]
            assert isinstance(scope, ast.FunctionDef), f"{home} imports spatialdata at module level"


def test_package_is_typed():
    assert (PACKAGE / "py.typed").exists()
