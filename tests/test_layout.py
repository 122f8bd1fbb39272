"""The package's layering, checked on its source: no import cycles, no private names across
modules, dask only where it belongs, and a light ``import bigrfm``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "bigrfm"
CLI = ROOT / "cli"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "cli":
        parts[0] = "bigrfm_cli"
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for base in (PKG, CLI) for p in sorted(base.rglob("*.py"))}


MODULES = _modules()


def _resolve(mod: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, path: Path) -> list[tuple[str, list[str], bool]]:
    """(imported module, names taken from it, at module level?) for every import statement."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(mod, path, node)
            names = [a.name for a in node.names]
            # `from pkg import submodule` imports the submodule
            subs = [n for n in names if f"{target}.{n}" in MODULES]
            out += [(f"{target}.{n}", [], id(node) in top) for n in subs]
            rest = [n for n in names if n not in subs]
            if rest:
                out.append((target, rest, id(node) in top))
    return out


def _internal(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_there_are_no_import_cycles() -> None:
    graph = {m: {t for n, _, _ in _imports(m, p) if (t := _internal(n)) and t != m} for m, p in MODULES.items()}
    # a package's __init__ is imported by its submodules implicitly; only explicit edges count
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_private_name_is_imported_across_modules() -> None:
    bad = []
    for m, p in MODULES.items():
        for target, names, _ in _imports(m, p):
            if not _internal(target):
                continue
            bad += [f"{m}: from {target} import {n}" for n in names if n.startswith("_") and n != "__version__"]
            if target.rpartition(".")[2].startswith("_") and not target.endswith("__init__"):
                bad.append(f"{m}: import {target}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_dask_is_imported_only_by_the_engine_and_the_dataset_readers() -> None:
    allowed = {"bigrfm.engine"} | {m for m in MODULES if m.startswith("bigrfm.io.")}
    bad = [
        f"{m} imports {t}"
        for m, p in MODULES.items()
        if m.startswith("bigrfm.") and m not in allowed
        for t, _, _ in _imports(m, p)
        if t.split(".")[0] in ("dask", "distributed", "dask_cuda")
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer, forbidden", [
    ("bigrfm.numerics", ("zarr", "dask", "distributed", "bigrfm.io", "bigrfm.model", "bigrfm.solvers", "bigrfm.engine", "bigrfm.estimators")),
    ("bigrfm.io", ("bigrfm.numerics", "bigrfm.model", "bigrfm.solvers", "bigrfm.engine", "bigrfm.estimators", "bigrfm.features")),
    ("bigrfm.solvers", ("zarr", "dask", "distributed", "bigrfm.io", "bigrfm.engine", "bigrfm.estimators")),
    ("bigrfm.model", ("zarr", "dask", "distributed", "bigrfm.engine", "bigrfm.estimators")),
    ("bigrfm.config", ("zarr", "dask", "distributed", "bigrfm.numerics")),
])
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        f"{m} imports {t}"
        for m, p in MODULES.items()
        if m == layer or m.startswith(layer + ".")
        for t, _, _ in _imports(m, p)
        if any(t == f or t.startswith(f + ".") for f in forbidden)
    ]
    assert not bad, "\n".join(bad)


def test_every_module_says_what_it_owns() -> None:
    missing = [m for m, p in MODULES.items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


def test_import_bigrfm_loads_neither_dask_nor_zarr() -> None:
    code = (
        "import sys, bigrfm\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed', 'zarr', 'cupy', 'numba'})\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"import bigrfm loaded {out.stdout.strip()}"
