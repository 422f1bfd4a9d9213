"""Fuzz the whole command: hypothesis builds argument lists for every subcommand and the files
they name (valid, truncated, mutated, declaring far more than they hold), runs `nmf` in this
process (nmfcli.cli.run, the console script's boundary) and asserts

- no traceback, and an exit code from the README's table other than 70 (a bug);
- a failure says so in one `Error:` line, the last line on stderr;
- nothing outside the output paths changes, and on a failure nothing at all changes.

NMF_CLI_FUZZ_EXAMPLES sets the number of cases (a few hundred by default, derandomized so the
default suite is the same every time; `make test-slow` runs thousands with fresh randomness).
"""

from __future__ import annotations

import contextlib
import gzip
import io as stdio
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import REPO, labels, low_rank, write_csv
from conftest import snapshot as conftest_snapshot
from nmfcli.cli import run
from nmfcli.cli.fit import default_outdir

EXAMPLES = int(os.environ.get("NMF_CLI_FUZZ_EXAMPLES", "500"))
LONG_HUNT = "NMF_CLI_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG_HUNT, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)


def readme_exit_codes() -> set[int]:
    """Every code of the README's 'code | meaning' table."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("| code | meaning |"):]
    codes = set()
    for line in table.splitlines()[2:]:
        if not line.startswith("| "):
            break
        codes.update(int(c) for c in re.findall(r"\d+", line.split("|")[1]))
    return codes


ALLOWED = readme_exit_codes() - {70}  # 70 is in the table, and is a bug


# --------------------------------------------------------------------------- the files


def _bytes_of(path) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """(name -> bytes, kind -> bytes): valid inputs of every format, a fit's outputs, a checkpoint,
    and files whose headers declare far more than they hold. Held in POOL, so hypothesis does not
    print it with every failing case."""
    POOL[:] = [_build_pool(tmp_path_factory.mktemp("pool"))]
    yield
    POOL.clear()


POOL: list = []


def _build_pool(d):
    X = low_rank(20, 8)
    files = {}
    np.save(d / "x.npy", X)
    write_csv(d / "x.csv", X, labels("r", 20), labels("w", 8))
    write_csv(d / "x.csv.gz", X, compress=True)
    sp.save_npz(d / "x.npz", sp.csr_matrix(np.where(X > 0.5, X, 0)))
    rows, cols = np.nonzero(X > 0.3)
    (d / "x.mtx").write_text("%%MatrixMarket matrix coordinate real general\n"
                             f"20 8 {rows.size}\n" + "".join(f"{i + 1} {j + 1} {X[i, j]!r}\n"
                                                             for i, j in zip(rows, cols)))
    with h5py.File(d / "x.h5", "w") as f:
        f["X"] = X
    np.save(d / "w.npy", np.ones_like(X))
    np.save(d / "H.npy", np.ones((2, 8)))
    np.save(d / "W.npy", np.ones((20, 2)))
    cwd = os.getcwd()
    os.chdir(d)
    try:
        with contextlib.redirect_stdout(stdio.StringIO()), contextlib.redirect_stderr(stdio.StringIO()):
            assert run(["fit", "x.npy", "-k", "2", "-o", "m", "-q"]) == 0
            assert run(["fit", "x.npy", "-k", "2", "-o", "c", "-q", "--tol", "0", "--max-iter", "3",
                        "--checkpoint-every", "1"]) == 0
    finally:
        os.chdir(cwd)
    for name in ("x.npy", "x.csv", "x.csv.gz", "x.npz", "x.mtx", "x.h5", "w.npy", "H.npy", "W.npy",
                 "m/model.h5", "m/W.npy", "m/H.npy", "m/report.json", "c/checkpoint.h5"):
        files[name] = _bytes_of(d / name)
    huge = {}
    head = stdio.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**6)})
    huge["npy"] = head.getvalue() + b"\0" * 64
    huge["mtx"] = b"%%MatrixMarket matrix coordinate real general\n1000000000000 3 1\n1 1 1\n"
    huge["mtx-array"] = b"%%MatrixMarket matrix array real general\n100000 100000\n1\n"
    np.savez_compressed(d / "coo.npz", format=np.array("coo"), shape=np.array([10**12, 3]), data=np.array([1.0]),
                        row=np.array([0]), col=np.array([0]))
    huge["npz"] = _bytes_of(d / "coo.npz")
    with h5py.File(d / "huge.h5", "w") as f:
        f.create_dataset("X", shape=(10**7, 10**6), dtype="f8", chunks=(1000, 1000))
    huge["h5"] = _bytes_of(d / "huge.h5")
    with h5py.File(d / "m" / "model.h5", "a") as f:
        del f["H"]
        f.create_dataset("H", shape=(2, 250_000_000), dtype="f8", chunks=(1, 1_000_000))
    huge["model"] = _bytes_of(d / "m" / "model.h5")
    huge["gz"] = gzip.compress(b"\0" * (8 << 20))
    return files, huge, _parts(files)


def _parts(files) -> dict:
    """name -> (attributes or keys, datasets) of the model, the checkpoint and the report: what a
    hand edit (a valid file with one part of the wrong kind) replaces."""
    parts = {}
    for name in ("m/model.h5", "c/checkpoint.h5"):
        with h5py.File(stdio.BytesIO(files[name]), "r") as f:
            parts[name] = (sorted(f.attrs), sorted(f))
    parts["m/report.json"] = (sorted(json.loads(files["m/report.json"])), [])
    return parts


# JSON values of the wrong kind for any key
WRONG_JSON = ['"x"', "[1, 2]", "{}", '{"a": [1]}', "null", "-1", "1e400", "[]", "true", "0", '"frobenius"',
              "[[1]]", "NaN"]
WRONG_ARRAYS = [np.ones(3), np.ones((1, 1)), np.ones((5, 5, 2)), np.array([["a"]], dtype=h5py.string_dtype()),
                np.full((2, 8), np.nan), -np.ones((2, 8)), np.ones((3, 8)), np.ones((20, 3)), np.zeros((0, 8))]


def hand_edit(root: Path, name: str, key: str, value) -> None:
    """Replace one part of a valid model, checkpoint or report by a value of the wrong kind."""
    path = root / name
    if name.endswith(".json"):
        report = json.loads(path.read_text())
        report[key] = json.loads(value)
        path.write_text(json.dumps(report))
        return
    with h5py.File(path, "a") as f:
        if isinstance(value, str):
            f.attrs[key] = value
        else:
            if key in f:
                del f[key]
            f[key] = value


NAMES = ("x.npy", "x.csv", "x.csv.gz", "x.npz", "x.mtx", "x.h5", "w.npy", "H.npy", "W.npy", "m/model.h5", "m/W.npy",
         "m/H.npy", "m/report.json", "c/checkpoint.h5")
# what a file argument may name: the files, and things that are not the file asked for
TARGETS = NAMES + ("noext", "nope.csv", "m", "c", "empty", "link", "dangling", "x.h5::/X", "x.h5::/nope", "-")


@st.composite
def contents(draw):
    """A file's bytes: valid (of any format, under any name), truncated, mutated, huge-declared or noise."""
    files, huge, _ = POOL[0]
    how = draw(st.sampled_from(["valid", "valid", "truncated", "mutated", "huge", "noise", "empty"]))
    if how == "huge":
        return draw(st.sampled_from(sorted(huge.values())))
    if how == "noise":
        return draw(st.binary(max_size=300))
    if how == "empty":
        return b""
    data = files[draw(st.sampled_from(NAMES))]
    if how == "truncated":
        return data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    if how == "mutated":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    return data


def _file():
    return st.sampled_from(TARGETS)


def _opt(flag, values):
    return st.tuples(st.just(flag), st.sampled_from(values))


def _flag(flag):
    return st.just((flag,))


def _files(flag):
    return st.tuples(st.just(flag), _file())


# Each command's options: (mostly valid, hostile). A command line takes a few of the first and,
# one time in three, one of the second, so most cases get past the option checks into the files.
INPUT_OPTIONS = ([_opt("--input-format", ["csv", "npy", "npz", "mtx", "h5"]), _flag("--header"),
                  _flag("--no-header"), _flag("--index-col"), _flag("--no-index-col")],
                 [_opt("--input-format", ["zarr", "bogus"]), _opt("--dataset", ["/X", "X", "/nope", "/H"])])
LOSSES = (["frobenius", "kl", "is", "0.5", "3"], ["-1", "nan", "inf", "hinge"])
OUTPUTS = (["out", "out.csv", "out.npy", "out.h5", "-"],
           ["out.xyz", "x.npy", "m", "link", "dangling", "nowhere/deep", "empty", "/dev/null", "c"])

OPTIONS = {
    "fit": ([_opt("-k", ["1", "2", "3"]), _opt("-k", ["2"]), _opt("--loss", LOSSES[0]),
             _opt("--solver", ["auto", "ehals", "hals", "cd", "emu", "mu", "anls"]),
             _opt("--init", ["nndsvda", "nndsvd", "nndsvdar", "random"]), _opt("--seed", ["0", "7", str(2**32 - 1)]),
             _opt("--max-iter", ["1", "5"]), _opt("--tol", ["0", "1e-3"]), _opt("--alpha-W", ["0", "0.1"]),
             _opt("--alpha-H", ["same", "0.5"]), _opt("--l1-ratio", ["0", "0.5", "1"]),
             _files("--W0"), _files("--H0"), _files("--fix-H"), _files("--fix-W"), _files("--align-to"),
             _files("--weights"), _files("--resume"), _opt("--dtype", ["float32", "float64"]),
             _opt("--missing", ["nan"]), _opt("--format", ["npy", "csv", "h5"]), _flag("--json"), _flag("-q"),
             _flag("-v"), _flag("--force"), _flag("--force"), _flag("--strict"), _flag("--no-lock"),
             _opt("--checkpoint-every", ["1", "3"]), _opt("--max-time", ["0.05", "inf"]),
             _opt("--chunk-rows", ["3", "100"]), _opt("-o", OUTPUTS[0]), _opt("-o", OUTPUTS[0]),
             *INPUT_OPTIONS[0]],
            [_opt("-k", ["0", "7", "100000", "1000000000000", "-1", "x", "2.5"]), _opt("--loss", LOSSES[1]),
             _opt("--solver", ["newton"]), _opt("--init", ["custom"]), _opt("--seed", ["-1", str(2**32), "x"]),
             _opt("--max-iter", ["0", "-3"]), _opt("--tol", ["-1", "nan"]), _opt("--alpha-W", ["-1", "nan", "inf"]),
             _opt("--alpha-H", ["-2", "x"]), _opt("--l1-ratio", ["2", "nan"]), _opt("--dtype", ["int8"]),
             _opt("--missing", ["zero"]), _opt("--format", ["npz"]), _opt("--checkpoint-every", ["0"]),
             _opt("--max-time", ["0", "-1", "nan"]), _opt("--chunk-rows", ["0"]),
             _opt("--engine", ["cupy", "auto"]), _opt("-o", OUTPUTS[1]), _flag("--bogus"), *INPUT_OPTIONS[1]]),
    "transform": ([_files("--model"), _files("--model"), _files("--components"), _opt("-o", OUTPUTS[0]),
                   _opt("--loss", LOSSES[0]), _opt("--dtype", ["float32", "float64"]), _flag("--force"),
                   _opt("--missing", ["nan"]), _files("--weights"), _opt("--chunk-rows", ["3"]),
                   *INPUT_OPTIONS[0]],
                  [_opt("-o", OUTPUTS[1]), _opt("--loss", LOSSES[1]), _opt("--engine", ["cupy"]),
                   _opt("--chunk-rows", ["0"]), *INPUT_OPTIONS[1]]),
    "reconstruct": ([_files("--model"), _opt("-o", OUTPUTS[0]), _files("--against"), _files("--against"),
                     _opt("--report", ["r.json", "-"]), _opt("--loss", LOSSES[0]), _flag("--json"),
                     _opt("--missing", ["nan"]), _files("--weights"), _flag("--force"), *INPUT_OPTIONS[0]],
                    [_opt("-o", OUTPUTS[1]), _opt("--report", ["x.npy", "m"]), _opt("--loss", LOSSES[1]),
                     *INPUT_OPTIONS[1]]),
    "inspect": ([_opt("--top", ["1", "3"]), _flag("--json"), *INPUT_OPTIONS[0]],
                [_opt("--top", ["0", "-2"]), *INPUT_OPTIONS[1]]),
    "rank": ([_opt("-k", ["2", "2:3", "2,3"]), _opt("-k", ["2"]), _opt("--runs", ["1", "2"]), _opt("--seed", ["0"]),
              _opt("--init", ["random", "nndsvda"]), _opt("--loss", LOSSES[0]), _opt("--max-iter", ["5"]),
              _opt("--tol", ["1e-3"]), _opt("--missing", ["nan"]), _files("--weights"),
              _opt("--report", ["r.json", "-"]), _flag("--json"), _flag("--force"), _flag("-q"), *INPUT_OPTIONS[0]],
             [_opt("-k", ["0", "3:1", "x", "1000000000000"]), _opt("--runs", ["0"]), _opt("--seed", ["-1"]),
              _opt("--init", ["custom"]), _opt("--max-iter", ["0"]), _opt("--tol", ["-1"]),
              _opt("--report", ["x.npy"]), *INPUT_OPTIONS[1]]),
}
POSITIONAL = {"fit": 1, "transform": 1, "reconstruct": 2, "inspect": 1, "rank": 1}
# what the positional arguments mostly are: the inputs a command is meant for
USUAL = {"fit": ["x.npy", "x.csv", "x.npz", "x.mtx", "x.h5", "x.csv.gz", "-"],
         "transform": ["x.npy", "x.csv", "x.h5", "-"], "reconstruct": ["m/W.npy", "W.npy", "m/H.npy", "H.npy"],
         "inspect": list(NAMES), "rank": ["x.npy", "x.csv", "x.npz"]}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    count = POSITIONAL[command]
    if draw(st.integers(0, 9)) == 0:
        count = draw(st.integers(0, count))  # too few
    args = [command] + [draw(st.one_of(st.sampled_from(USUAL[command]), _file())) for _ in range(count)]
    if command == "reconstruct" and count == 2 and draw(st.booleans()):
        args[2] = "m/H.npy"
    valid, hostile = OPTIONS[command]
    options = draw(st.lists(st.one_of(valid), max_size=6))
    if draw(st.integers(0, 2)) == 0:
        options.insert(draw(st.integers(0, len(options))), draw(st.one_of(hostile)))
    for option in options:
        args.extend(option)
    if command in ("fit", "rank") and "--max-iter" not in args:
        args += ["--max-iter", "30"]  # the fits stay short; --max-iter itself is fuzzed above
    if command == "fit" and "-k" not in args and not any(a in args for a in ("--fix-H", "--fix-W", "--W0", "--H0",
                                                                             "--resume")):
        args += ["-k", "2"]
    if command == "transform" and "--model" not in args and "--components" not in args and draw(st.booleans()):
        args += ["--model", "m/model.h5"]
    # Mostly, the combinations a command needs (otherwise a usage error ends most cases early)
    if draw(st.integers(0, 4)):
        if command == "rank" and "-k" not in args:
            args += ["-k", "2"]
        if command == "reconstruct":
            if "--model" in args and len(args) > 2 and not args[2].startswith("-"):
                del args[2]
            if any(a in args for a in ("--json", "--report", "--missing", "--weights")) and "--against" not in args:
                args += ["--against", draw(st.sampled_from(["x.npy", "x.csv", "x.h5"]))]
        if command == "transform" and "--model" in args and "--components" in args:
            i = args.index("--components")
            del args[i:i + 2]
    return args


def _option(args, flag):
    values = [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]
    return values[-1] if values else None


def output_paths(args) -> list[str]:
    """What the command line names as its outputs (and where a fit writes by default)."""
    command, outs = args[0], []
    if command == "fit":
        given = _option(args, "-o")
        inputs = [a for a in args[1:2] if not a.startswith("-") or a == "-"]
        outs.append(given if given is not None else default_outdir(inputs[0]) if inputs else "out")
    elif command in ("transform", "reconstruct"):
        outs.append(_option(args, "-o"))
    if command in ("reconstruct", "rank"):
        outs.append(_option(args, "--report"))
    return [o for o in outs if o not in (None, "-")]


def snapshot(root: Path) -> dict:
    return conftest_snapshot(root, folders=True)


def _under(rel: str, outputs: list[str], root: Path, before: dict) -> bool:
    """rel is an output, inside one, or a folder made on the way to one (as mkdir -p makes it)."""
    if rel not in before and any(out.startswith(rel + "/") for out in outputs):
        return True
    path = os.path.realpath(root / rel)
    for out in outputs:
        for target in {os.path.abspath(root / out), os.path.realpath(root / out)}:
            if path == target or path.startswith(target + os.sep):
                return True
    return False


def run_case(root: Path, args, stdin: bytes):
    out, err = stdio.StringIO(), stdio.StringIO()
    old_stdin, cwd = sys.stdin, os.getcwd()
    sys.stdin = stdio.TextIOWrapper(stdio.BytesIO(stdin))
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run(args)
    finally:
        os.chdir(cwd)
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


@FUZZ
@given(data=st.data())
def test_the_whole_command_never_crashes_and_never_writes_outside_its_outputs(pool, data):
    files, _, parts = POOL[0]
    args = data.draw(command_lines(), label="args")
    # every valid file, then a few of them replaced by damaged or lying ones
    written = dict(files)
    for name in data.draw(st.lists(st.sampled_from(NAMES + ("noext",)), max_size=3, unique=True), label="damaged"):
        written[name] = data.draw(contents(), label=name)
    stdin = data.draw(st.one_of(st.just(b""), contents()), label="stdin")
    with tempfile.TemporaryDirectory(prefix="nmf-fuzz-") as tmp:
        root = Path(tmp)
        for name, content in written.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(content)
        (root / "empty").mkdir()
        os.symlink("m", root / "link")
        os.symlink("nowhere", root / "dangling")
        if data.draw(st.integers(0, 4), label="lock") == 0:  # a lock file that points at an input
            os.symlink("../x.npy", root / "m" / ".nmf.lock")
        for _ in range(data.draw(st.integers(0, 2), label="hand edits")):
            name = data.draw(st.sampled_from(sorted(parts)), label="edited")
            keys, datasets = parts[name]
            if datasets and data.draw(st.booleans()):
                key, value = data.draw(st.sampled_from(datasets)), data.draw(st.sampled_from(WRONG_ARRAYS))
            else:
                key, value = data.draw(st.sampled_from(keys)), data.draw(st.sampled_from(WRONG_JSON))
            if (root / name).exists():
                try:
                    hand_edit(root, name, key, value)
                except (OSError, ValueError):
                    pass  # the file was already replaced by damaged bytes
        before = snapshot(root)
        code, stdout, stderr = run_case(root, args, stdin)
        after = snapshot(root)
    shown = f"nmf {' '.join(args)}\nexit {code}\nstderr:\n{stderr}"
    event(f"{args[0]}: exit {code}")
    if os.environ.get("NMF_CLI_FUZZ_LOG"):
        with open(os.environ["NMF_CLI_FUZZ_LOG"], "a") as log:
            log.write(f"{code}\t{' '.join(args)}\t{(stderr.splitlines() or [''])[-1][:90]}\n")
    assert "Traceback" not in stderr and "Traceback" not in stdout, shown
    assert code in ALLOWED, shown
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    if code in (0, 3):  # 3: --strict and not converged, said in one line; the outputs are written
        assert len(errors) == (code == 3), shown
        outputs = output_paths(args)
        changed = {rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}
        assert {rel for rel in changed if not _under(rel, outputs, root, before)} == set(), shown
    else:
        assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0], shown
        changed = sorted(rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel))
        assert changed == [], shown


# What reads a model, a checkpoint or a report: each command line given one hand-edited file.
CONSUMERS = {
    "m/model.h5": [["inspect", "m/model.h5"], ["inspect", "m/model.h5", "--json"], ["inspect", "m"],
                   ["transform", "x.npy", "--model", "m/model.h5"], ["transform", "x.csv", "--model", "m"],
                   ["reconstruct", "m/W.npy", "--model", "m/model.h5", "--against", "x.npy", "--json"],
                   ["fit", "x.npy", "--fix-H", "m/model.h5", "-o", "out"],
                   ["fit", "x.npy", "-k", "2", "--align-to", "m/model.h5", "-o", "out"],
                   ["fit", "x.npy", "--fix-H", "m/model.h5", "--loss", "kl", "-o", "out"]],
    "c/checkpoint.h5": [["inspect", "c/checkpoint.h5"], ["inspect", "c/checkpoint.h5", "--json"],
                        ["fit", "x.npy", "-k", "2", "--tol", "0", "--max-iter", "5", "--resume", "c/checkpoint.h5",
                         "-o", "out"],
                        ["fit", "x.npy", "--tol", "0", "--max-iter", "5", "--resume", "c/checkpoint.h5", "-o", "c",
                         "--force"]],
    "m/report.json": [["inspect", "m/report.json"], ["inspect", "m/report.json", "--json"],
                      ["fit", "x.npy", "-k", "2", "--align-to", "m/report.json", "-o", "out"]],
}


@settings(FUZZ, max_examples=max(EXAMPLES // 3, 1))
@given(data=st.data())
def test_hand_edited_models_checkpoints_and_reports_are_refused_or_read(pool, data):
    """A valid model, checkpoint or report with one to three parts of the wrong kind (an attribute
    or key holding the wrong JSON, a dataset of the wrong shape, kind or values), given to every
    command that reads it."""
    files, _, parts = POOL[0]
    name = data.draw(st.sampled_from(sorted(CONSUMERS)), label="file")
    args = data.draw(st.sampled_from(CONSUMERS[name]), label="args")
    keys, datasets = parts[name]
    with tempfile.TemporaryDirectory(prefix="nmf-fuzz-") as tmp:
        root = Path(tmp)
        for file, content in files.items():
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            (root / file).write_bytes(content)
        for _ in range(data.draw(st.integers(1, 3), label="edits")):
            if datasets and data.draw(st.booleans()):
                key, value = data.draw(st.sampled_from(datasets)), data.draw(st.sampled_from(WRONG_ARRAYS))
            else:
                key, value = data.draw(st.sampled_from(keys)), data.draw(st.sampled_from(WRONG_JSON))
            hand_edit(root, name, key, value)
        before = snapshot(root)
        code, stdout, stderr = run_case(root, args, b"")
        after = snapshot(root)
    shown = f"nmf {' '.join(args)}\nexit {code}\nstderr:\n{stderr}"
    event(f"{args[0]}: exit {code}")
    assert "Traceback" not in stderr and "Traceback" not in stdout, shown
    assert code in ALLOWED, shown
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    if code in (0, 3):
        assert len(errors) == (code == 3), shown
        changed = {rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}
        assert {rel for rel in changed if not _under(rel, output_paths(args), root, before)} == set(), shown
    else:
        assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0], shown
        assert sorted(rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)) == [], shown
