"""The package's shape holds: no import cycle, no import hidden in a function to dodge one,
surfaces never reach the command line, the lab or the BPF loader (they show snapshots)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "rcupending_tools"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # `from pkg import module` names a module; `from module import name` does not
    return [f"{target}.{a.name}" for a in node.names] + [target]


def imports() -> dict[str, dict[str, bool]]:
    """module -> {imported rcupending_tools module: imported inside a function}."""
    files = {_module(p): p for p in PKG.rglob("*.py")}
    out: dict[str, dict[str, bool]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        found: dict[str, bool] = {}
        funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        nested = {id(n) for f in funcs for n in ast.walk(f)}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                names = _resolve(mod, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                if n in files and n != mod:
                    found[n] = found.get(n, False) or id(node) in nested
        out[mod] = found
    return out


def _reach(graph: dict[str, dict[str, bool]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), {}):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_function_level_imports_of_our_own_modules():
    hidden = [f"{m} -> {n}" for m, deps in imports().items() for n, inside in deps.items()
              if inside]
    assert not hidden, hidden


def test_no_import_cycle():
    graph = imports()
    # a package importing its own submodules (a facade) is not a cycle back into it
    cyclic = [m for m in graph if m in _reach({k: {n: 0 for n in v if not n.startswith(k + ".")}
                                               for k, v in graph.items()}, m)]
    assert not cyclic, cyclic


def test_surfaces_do_not_reach_cli_lab_or_the_loader():
    graph = imports()
    banned = ("rcupending_tools.cli", "rcupending_tools.lab", "rcupending_tools.probes.bpfload")
    for mod in graph:
        if mod.startswith("rcupending_tools.surfaces"):
            bad = sorted(n for n in _reach(graph, mod) if n.startswith(banned))
            assert not bad, f"{mod} reaches {bad}"


def test_one_place_builds_a_live_session():
    makers = [m for m, deps in imports().items()
              if "rcupending_tools.pipeline.live" in deps]
    assert makers == ["rcupending_tools.pipeline.session"], makers
