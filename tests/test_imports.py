"""The package's import graph: no circle among ssl_seg modules or folders (lazy and type-only imports count), no
gan_aug."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, packages under their own name."""
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(name: str, path: Path) -> set[str]:
    """Every dotted name an import anywhere in the file may refer to (module, or module.attribute)."""
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def import_graph(package: str = "ssl_seg") -> dict[str, set[str]]:
    """module -> the package's modules it imports (at any depth of the file)."""
    modules = _modules(package)
    return {m: {t for t in _imported(m, p) if t in modules and t != m} for m, p in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (each holds an import circle)."""
    order, low, stack, out, counter = {}, {}, [], [], [0]

    def visit(v: str) -> None:
        order[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return out


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_ssl_seg():
    graph = import_graph()
    assert "ssl_seg.data.sample" in graph["ssl_seg.data.h5format"]  # relative imports are resolved
    assert circles(graph) == []


def test_folders_form_layers():
    """Folders (engine, data, ...) and top-level modules import one way: no circle between them either."""
    def unit(module: str) -> str:
        return module.split(".")[1] if "." in module else module

    graph = import_graph()
    folders: dict[str, set[str]] = {unit(m): set() for m in graph}
    for m, deps in graph.items():
        folders[unit(m)] |= {unit(d) for d in deps} - {unit(m)}
    assert not folders["data"] & {"models", "methods", "evaluation", "engine", "experiments", "cli"}
    assert "experiments" in folders["cli"]  # the folder graph sees the imports
    assert circles(folders) == []


def test_ssl_seg_never_imports_gan_aug():
    for name, path in _modules("ssl_seg").items():
        assert not {t for t in _imported(name, path) if t.split(".")[0] == "gan_aug"}, name
