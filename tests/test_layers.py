"""The layers stay apart: imports point down only (STYLE.md).

cli -> io, core -> solvers, engines -> errors. click and rich live only in the
CLI, h5py only in io, cupy and dask only in their engines; the core and the
solvers never touch files or terminals.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nmfcli"


def imports_of(path):
    """Top-level module names imported anywhere in a file (also inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def files(*parts):
    root = PACKAGE.joinpath(*parts)
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


def offenders(paths, forbidden):
    bad = []
    for path in paths:
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                where = path.relative_to(PACKAGE.parent) if PACKAGE.parent in path.parents else path
                bad.append(f"{where} imports {name}")
    return bad


EVERYTHING = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("library,home", [
    ("click", "cli"), ("rich", "cli"), ("h5py", "io"), ("zarr", "io"), ("matplotlib", "plot"),
])
def test_library_lives_in_its_layer_only(library, home):
    outside = [p for p in EVERYTHING if home not in p.relative_to(PACKAGE).parts
               and p.stem != home]
    # zarr is also read by the row-block engines through io only; dask/cupy are checked below.
    assert offenders(outside, [library]) == []


def test_cupy_and_dask_only_in_their_engines():
    outside_cupy = [p for p in EVERYTHING if p.name != "cupy.py"]
    assert offenders(outside_cupy, ["cupy", "cupyx"]) == []
    outside_dask = [p for p in EVERYTHING if p.name not in ("dask.py",)]
    assert offenders(outside_dask, ["dask", "distributed"]) == []


# Imports that break the layering today, each to be removed (the engines reach io, and the Dask
# engine the core): listed so that any new one fails, and each fixed one must leave the list.
KNOWN_VIOLATIONS = {
    "nmfcli/engines/chunked.py imports nmfcli.io",
    "nmfcli/engines/dask.py imports nmfcli.io",
    "nmfcli/engines/dask.py imports nmfcli.core",
    "nmfcli/engines/dask.py imports nmfcli.init",
}


def layer_offenders():
    lower = files("core") + files("solvers") + files("init") + files("engines") + files("errors")
    lower += files("estimator") + files("summary") + files("rank")
    found = offenders(lower, ["nmfcli.cli", "nmfcli.io", "click", "rich"])
    found += offenders(files("solvers"), ["nmfcli.core", "nmfcli.engines", "nmfcli.io", "nmfcli.init"])
    found += offenders(files("engines"), ["nmfcli.core", "nmfcli.io", "nmfcli.init", "nmfcli.rank"])
    return {line.split(" imports ")[0] + " imports " + _package_of(line.split(" imports ")[1]) for line in found}


def _package_of(name):
    """nmfcli.io.RowBlock -> nmfcli.io; nmfcli.core.fit -> nmfcli.core (the layer a name is in)."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "nmfcli" else parts[0]


def test_core_and_solvers_never_reach_up():
    assert layer_offenders() - KNOWN_VIOLATIONS == set()


def test_the_known_violations_are_still_there():
    """A violation that was fixed leaves KNOWN_VIOLATIONS (so the list only shrinks)."""
    assert KNOWN_VIOLATIONS - layer_offenders() == set()


@pytest.mark.parametrize("statement", ["import nmfcli.io", "from nmfcli import io", "from nmfcli.io import read_matrix",
                                       "from nmfcli import cli as c", "import click"])
def test_the_guard_catches_every_form_of_import(tmp_path, statement):
    """Each way of writing an upward import, planted in a core-level file, is reported."""
    planted = tmp_path / "core.py"
    planted.write_text(f"def f():\n    {statement}\n", encoding="utf-8")
    assert offenders([planted], ["nmfcli.cli", "nmfcli.io", "click"]) != []


def test_io_does_not_compute_factorizations():
    assert offenders(files("io"), ["nmfcli.core", "nmfcli.solvers", "nmfcli.cli", "nmfcli.engines"]) == []


def test_errors_imports_nothing():
    assert imports_of(PACKAGE / "errors.py") == set()


def test_core_api_does_not_load_terminal_or_file_libraries():
    """In a fresh interpreter: a library user's fit loads none of click, rich, h5py."""
    code = (
        "import sys, numpy as np, nmfcli\n"
        "nmfcli.fit(np.ones((5, 4)) + np.eye(5, 4), 2)\n"
        "loaded = sorted(m for m in ('click', 'rich', 'h5py', 'cupy', 'dask') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Import cycles (function-level imports counted) that exist today, to be broken: any other fails.
KNOWN_CYCLES = {
    ("nmfcli.core", "nmfcli.engines.chunked", "nmfcli.engines.dask"),
    ("nmfcli.io._blocks", "nmfcli.io._hdf5"),
}


def module_graph():
    """nmfcli's modules and the nmfcli modules each imports (anywhere in the file)."""
    modules = {}
    for path in EVERYTHING:
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            parts = imported.split(".")
            for cut in range(len(parts), 0, -1):  # the longest prefix that is a module
                candidate = ".".join(parts[:cut])
                if candidate in modules:
                    # (a package's own __init__ is where its modules reach their siblings from)
                    if candidate != name and not name.startswith(candidate + "."):
                        targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def cycles(graph):
    """The strongly connected components of more than one module, as sorted tuples (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return set(found)


def test_no_new_import_cycles():
    assert cycles(module_graph()) - KNOWN_CYCLES == set()
    assert KNOWN_CYCLES - cycles(module_graph()) == set(), "a cycle was broken: remove it from KNOWN_CYCLES"


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == {("a", "b", "c")}
