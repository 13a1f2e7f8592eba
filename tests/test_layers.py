"""The package's layers, checked from its source: no import cycle among oxcache modules,
`redis` imported only under `backends/`, no module reaching into another's private names or
fields, and every module's `__all__` complete. The request path these layers follow is drawn
in docs/architecture.md."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import oxcache

PACKAGE = pathlib.Path(oxcache.__file__).parent

#: Known breaches of the rules below, each to be removed by the step that fixes it. Empty
#: means the layers hold without exception.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def imports(name: str) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in `name`, top-level or inside functions."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            found.append((base, [alias.name for alias in node.names]))
    return found


def oxcache_edges(name: str) -> set[str]:
    """The oxcache modules `name` imports (a `from package import module` counts as the
    module)."""
    edges: set[str] = set()
    for module, names in imports(name):
        if module not in MODULES:
            continue
        targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        edges.update(targets or [module])
    edges.discard(name)
    return edges


def breaches(kind: str, found: list[str]) -> list[str]:
    return sorted(f for f in found if (kind, f) not in ALLOWED)


def find_cycles() -> list[str]:
    graph = {name: oxcache_edges(name) for name in MODULES}
    cycles: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_among_oxcache_modules() -> None:
    assert breaches("cycle", find_cycles()) == []


def find_redis_imports() -> list[str]:
    return [
        f"{name} imports {module}"
        for name in MODULES
        if not name.startswith("oxcache.backends")
        for module, _ in imports(name)
        if module == "redis" or module.startswith("redis.")
    ]


def test_redis_is_imported_only_under_backends() -> None:
    assert breaches("redis", find_redis_imports()) == []


def find_private_imports() -> list[str]:
    found = []
    for name in MODULES:
        for module, names in imports(name):
            if not module.startswith("oxcache") or module == "oxcache._core":
                continue
            # A package's private modules are for that package alone.
            owner = module.rpartition(".")[0] if "._" in module else module
            same_package = name.rpartition(".")[0] == owner.rpartition(".")[0] or name.startswith(
                owner + "."
            )
            if "._" in module and not same_package:
                found.append(f"{name} imports {module}")
            for n in names:
                if n.startswith("_") and not n.startswith("__") and module != name:
                    found.append(f"{name} imports {module}.{n}")
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    assert breaches("private-import", find_private_imports()) == []


def find_private_fields() -> list[str]:
    """`obj._field` only on `self` or `cls`: state that belongs to another object is
    changed through that object's methods. Backends are exempt for the client objects they
    adapt (the read pipe drives redis-py's connection streams), as httpx's transports are
    for httpcore."""
    found = []
    for name, tree in TREES.items():
        if name.startswith("oxcache.backends"):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{name}: {ast.unparse(node)}")
    return sorted(set(found))


def test_no_module_touches_another_objects_private_fields() -> None:
    assert breaches("private-field", find_private_fields()) == []


def public_definitions(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper() and len(target.id) > 1:
                    names.add(target.id)
    return {n for n in names if not n.startswith("_")}


CHECKED = sorted(n for n in MODULES if n != "oxcache.__main__")


def find_unlisted(name: str) -> list[str]:
    exported = getattr(importlib.import_module(name), "__all__", None)
    if exported is None:
        return [f"{name} has no __all__"]
    unlisted = sorted(public_definitions(TREES[name]) - set(exported))
    return [f"{name}.{n}" for n in unlisted]


@pytest.mark.parametrize("name", CHECKED)
def test_every_module_lists_its_public_names_in_all(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it does not have"
    assert breaches("all", find_unlisted(name)) == []


def test_every_allowed_breach_still_exists() -> None:
    """An exception that was fixed leaves the list in the same commit."""
    found = {("cycle", f) for f in find_cycles()}
    found |= {("redis", f) for f in find_redis_imports()}
    found |= {("private-import", f) for f in find_private_imports()}
    found |= {("private-field", f) for f in find_private_fields()}
    found |= {("all", f) for name in CHECKED for f in find_unlisted(name)}
    assert sorted(ALLOWED - found) == []


def test_the_package_exports_every_public_name_it_imports() -> None:
    public = {
        n
        for n, v in vars(oxcache).items()
        if not n.startswith("_") and not isinstance(v, type(oxcache))
    }
    assert sorted(public - set(oxcache.__all__)) == []
