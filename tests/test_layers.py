"""DESIGN.md's one-way layers, read from every import of the code with `ast` (function-level
imports included):

    warehouse  ←  ingest, forecasts, governance  ←  pipelines  (←  tests, bench)

plus what keeps configuration at the edge: no leaf package reads the environment at import,
and only the few places that prepare a child process write it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("warehouse", "ingest", "forecasts", "governance", "pipelines")
ALLOWED = {
    "warehouse": set(),
    "ingest": {"warehouse"},
    "forecasts": {"warehouse"},
    "governance": {"warehouse"},
    "pipelines": {"warehouse", "ingest", "forecasts", "governance"},
}
LEAVES = ("warehouse", "ingest", "forecasts", "governance")
# Where the environment may be written: a forecast worker's own thread and temp variables (in
# the worker process), and variables scoped to one call (dbt's child process, Dagster's switches).
ENV_WRITERS = {
    "forecasts/pool.py", "forecasts/dask_pool.py", "pipelines/scoped_env.py", "ingest/simulator/run.py",
    "pipelines/dbt_assets.py",  # puts the bin folder of this interpreter on PATH, where dagster-dbt looks for dbt
}
# Edges below pipelines/: the analysts' Python client runs in their own process and reads its
# key and URL there; a Stan fit hands its environment to the cmdstan child it starts.
ENV_READERS = ENV_WRITERS | {"governance/client.py", "forecasts/prophet_direct.py"}


def modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported(path: Path, module: str) -> set[str]:
    """Every project module `path` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names |= {f"{prefix}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] in PACKAGES}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t in imported(p, m) if t in mods and t != m} for m, p in mods.items()}


def test_each_layer_imports_only_the_layers_below_it(graph):
    wrong = [
        f"{m} imports {t}"
        for m, targets in graph.items()
        for t in targets
        if t.split(".")[0] != m.split(".")[0] and t.split(".")[0] not in ALLOWED[m.split(".")[0]]
    ]
    assert not wrong, "\n".join(wrong)


def test_nothing_but_tests_and_bench_imports_pipelines(graph):
    assert not [m for m, targets in graph.items() if not m.startswith("pipelines") and any(t.startswith("pipelines") for t in targets)]


def test_no_import_cycles(graph):
    """Function-level imports count: a cycle hidden behind one is still a cycle."""
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(" → ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def _module_level(tree: ast.Module):
    """Statements that run at import (function and class bodies excluded, class bodies kept)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _reads_env(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and isinstance(node.value, ast.Name) and node.value.id == "os")


@pytest.mark.parametrize("package", LEAVES)
def test_leaf_packages_read_no_environment_at_import(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in _module_level(ast.parse(path.read_text())):
            if _reads_env(node):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_leaf_packages_read_the_environment_nowhere():
    """The settings are read at the edge (the CLI, the Dagster definitions) and passed down;
    a worker may set its own thread variables (ENV_WRITERS), nothing below reads them."""
    offenders = []
    for package in LEAVES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel in ENV_READERS:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if _reads_env(node):
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders


def test_the_environment_is_written_only_for_child_processes():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text())):
                target = None
                if isinstance(node, (ast.Assign, ast.AugAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    target = next((t for t in targets if isinstance(t, ast.Subscript) and _reads_env(t.value)), None)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("setdefault", "pop", "update", "clear"):
                    target = node.func.value if _reads_env(node.func.value) else None
                if target is not None and rel not in ENV_WRITERS:
                    offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders


def _calls(path: Path) -> set[str]:
    """`owner.method` of every call; a `duckdb.connect` to a database file (not in memory) is
    named `duckdb.connect(file)`."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            name = f"{owner}.{node.func.attr}"
            if name == "duckdb.connect":
                first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "database"), None)
                in_memory = first is None or (isinstance(first, ast.Constant) and first.value in (":memory:", ""))
                name += "" if in_memory else "(file)"
            out.add(name)
    return out


def test_the_loader_never_opens_the_warehouse_nor_registers_frames():
    """The caller owns the single writer's connection (DESIGN.md "One writer"); and a frame
    registered inside an open transaction stays alive until COMMIT (one 1 GB file's
    transaction held 1.9 GB), so frames go to DuckDB as Arrow tables named in the SQL."""
    for path in sorted((ROOT / "ingest").glob("*.py")):
        if path.name in ("data_docs.py", "expectations.py"):
            continue  # off the load path: they read a published snapshot the caller opened
        calls = _calls(path)
        assert "duckdb.connect(file)" not in calls, path
        assert not {c for c in calls if c.endswith(".register") or c.endswith(".unregister")}, path


def test_no_backend_branch_outside_the_warehouse_layer():
    """Which backend the warehouse is (a file or DuckLake) is decided in warehouse/ only."""
    offenders = []
    for package in PACKAGES:
        if package == "warehouse":
            continue
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            for needle in ("is_lake", "catalog is None", "catalog is not None", "is_lake_snapshot"):
                if needle in text:
                    offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders
