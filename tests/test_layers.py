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
                bad.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
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


def test_core_and_solvers_never_reach_up():
    lower = files("core") + files("solvers") + files("init") + files("engines") + files("errors")
    lower += files("estimator") + files("summary") + files("rank")
    assert offenders(lower, ["nmfcli.cli", "nmfcli.io.__init__", "click", "rich"]) == []
    assert offenders(files("solvers"), ["nmfcli.core", "nmfcli.engines"]) == []


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
