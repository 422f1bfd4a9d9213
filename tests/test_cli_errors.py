"""Every bad input gets one `Error: <file>: ...` line, a documented exit code, no
traceback and no outputs left behind. Each row of CASES runs `nmf` as a real process.

The table in the README ("failure | message | exit code") is this table.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import NMF, labels, low_rank, nmf_env, one_error_line, run_nmf, write_csv

X = low_rank(12, 6)


def _build(d):
    """Every bad (and good) input file the cases below use, in folder d."""
    write_csv(d / "good.csv", X, labels("r", 12), labels("w", 6))
    np.save(d / "good.npy", X)
    (d / "empty.csv").write_bytes(b"")
    (d / "ragged.csv").write_text("1,2,3\n4,5,6\n7,8\n")
    (d / "text.csv").write_text("1,2,3\n4,abc,6\n")
    (d / "negative.csv").write_text("1,-1,3\n4,5,-6\n")
    (d / "nan.csv").write_text("1,2,3\n4,nan,6\n")
    (d / "inf.csv").write_text("1,2,inf\n4,5,6\n")
    (d / "zeros.csv").write_text("0,0,0\n0,0,0\n")
    (d / "somezeros.csv").write_text("1,0,3\n4,5,6\n7,8,9\n")
    np.save(d / "weights_5x6.npy", np.ones((5, 6)))
    negative_weights = np.ones_like(X)
    negative_weights[1, 2] = -0.5
    np.save(d / "negative_weights.npy", negative_weights)
    np.save(d / "one_d.npy", np.arange(5.0))
    np.save(d / "three_d.npy", np.ones((2, 3, 4)))
    np.save(d / "complex.npy", np.ones((3, 3), dtype=complex))
    np.save(d / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(d / "bools.npy", np.ones((3, 3), dtype=bool))
    np.save(d / "pickle.npy", np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    np.savez(d / "pickle.npz", X=np.array([[{"a": 1}]], dtype=object))
    (d / "truncated.npy").write_bytes((d / "good.npy").read_bytes()[:150])
    (d / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0garbage" * 20)
    (d / "truncated.mtx").write_text("%%MatrixMarket matrix coordinate real general\n3 3 4\n1 1 1.0\n2 2 2.0\n")
    # A 191-byte NPY whose header claims a 10^7 x 10^6 float64 array.
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (10000000, 1000000), }"
    header = header + " " * (191 - 10 - len(header) - 1) + "\n"
    (d / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())
    with h5py.File(d / "two.h5", "w") as f:
        f.create_dataset("data/X", data=X)
        f.create_dataset("data/Y", data=X)
    with h5py.File(d / "outside.h5", "w") as f:
        f.create_dataset("X", data=X)
    with h5py.File(d / "extlink.h5", "w") as f:
        f["X"] = h5py.ExternalLink("outside.h5", "/X")
    layout = h5py.VirtualLayout(shape=X.shape, dtype="f8")
    layout[:] = h5py.VirtualSource("outside.h5", "X", shape=X.shape)
    with h5py.File(d / "virtual.h5", "w") as f:
        f.create_virtual_dataset("X", layout)
    np.save(d / "H_wrong.npy", np.ones((3, 5)))
    np.save(d / "W0_wrong.npy", np.ones((11, 3)))
    np.save(d / "H0.npy", np.ones((3, 6)))
    write_csv(d / "H_labels.csv", np.ones((3, 6)), ["c0", "c1", "c2"], ["w0", "w1", "x2", "w3", "w4", "w5"])
    write_csv(d / "new_labels.csv", X[:4], labels("n", 4), ["w0", "w1", "w2", "w3", "oops", "w5"])
    write_csv(d / "new_narrow.csv", X[:4, :5], labels("n", 4), labels("w", 5))
    (d / "a_file").write_text("not a folder\n")
    (d / "gz_bad.csv.gz").write_bytes(gzip.compress(b"1,2\n3,4\n")[:-6])
    fake = d / "no_matplotlib" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")


# (id, args, exit code, the exact stderr line, or a compiled regex for lines with numbers that vary)
CASES = [
    ("missing file", ["fit", "nope.csv", "-k", "2"], 66, "Error: nope.csv: no such file"),
    ("empty file", ["fit", "empty.csv", "-k", "2"], 65, "Error: empty.csv: the file is empty"),
    ("ragged CSV", ["fit", "ragged.csv", "-k", "2"], 65, "Error: ragged.csv: line 3 has 2 fields, expected 3"),
    ("non-numeric cell", ["fit", "text.csv", "-k", "2"], 65,
     "Error: text.csv: row 2, column 2 (line 2, field 2): 'abc' is not a number"),
    ("negative values", ["fit", "negative.csv", "-k", "2"], 65,
     "Error: negative.csv: X has 2 negative values; the first is -1 at row 1, column 2; NMF needs non-negative data"),
    ("NaN", ["fit", "nan.csv", "-k", "2"], 65,
     "Error: nan.csv: X has 1 NaN or infinite value; the first is nan at row 2, column 2; to leave NaN entries "
     "out of the fit as missing values, use --missing nan"),
    ("Inf", ["fit", "inf.csv", "-k", "2"], 65,
     "Error: inf.csv: X has 1 NaN or infinite value; the first is inf at row 1, column 3"),
    ("all zeros", ["fit", "zeros.csv", "-k", "1"], 65, "Error: zeros.csv: X is all zeros; there is nothing to factorize"),
    ("weights of another shape", ["fit", "good.npy", "-k", "2", "--weights", "weights_5x6.npy"], 65,
     "Error: weights_5x6.npy: the weights are 5 x 6 but good.npy is 12 x 6; they must have the same shape"),
    ("negative weights", ["fit", "good.npy", "-k", "2", "--weights", "negative_weights.npy"], 65,
     "Error: negative_weights.npy: weights has 1 negative value; the first is -0.5 at row 2, column 3; weights "
     "must be finite and non-negative"),
    ("zeros with Itakura-Saito", ["fit", "somezeros.csv", "-k", "2", "--loss", "is"], 65,
     "Error: somezeros.csv: X contains zeros, where the is loss (beta=0 <= 0) is undefined; "
     "add a small positive constant or use loss kl or frobenius"),
    ("zeros with beta <= 0", ["fit", "somezeros.csv", "-k", "2", "--loss", "-0.5"], 65,
     "Error: somezeros.csv: X contains zeros, where the beta=-0.5 loss (beta=-0.5 <= 0) is undefined; "
     "add a small positive constant or use loss kl or frobenius"),
    ("1-D array", ["fit", "one_d.npy", "-k", "1"], 65, re.compile(r"Error: one_d\.npy: .*1-D.*")),
    ("3-D array", ["fit", "three_d.npy", "-k", "1"], 65, re.compile(r"Error: three_d\.npy: .*3-D.*")),
    ("complex array", ["fit", "complex.npy", "-k", "1"], 65, re.compile(r"Error: complex\.npy: .*complex.*")),
    ("string array", ["fit", "strings.npy", "-k", "1"], 65, re.compile(r"Error: strings\.npy: .*text.*")),
    ("boolean array", ["fit", "bools.npy", "-k", "1"], 65, re.compile(r"Error: bools\.npy: .*boolean.*")),
    ("NPY holding pickles", ["fit", "pickle.npy", "-k", "1"], 65, re.compile(r"Error: pickle\.npy: .*pickle.*")),
    ("NPZ holding pickles", ["fit", "pickle.npz", "-k", "1"], 65, re.compile(r"Error: pickle\.npz: .*pickle.*")),
    ("truncated NPY", ["fit", "truncated.npy", "-k", "1"], 65, re.compile(r"Error: truncated\.npy: .*")),
    ("corrupt HDF5", ["fit", "corrupt.h5", "-k", "1"], 65,
     "Error: corrupt.h5: not an HDF5 file, or the file is corrupt"),
    ("truncated MTX", ["fit", "truncated.mtx", "-k", "1"], 65, re.compile(r"Error: truncated\.mtx: .*")),
    ("truncated gzip", ["fit", "gz_bad.csv.gz", "-k", "1"], 65, re.compile(r"Error: gz_bad\.csv\.gz: .*gzip.*")),
    ("HDF5 path that does not exist", ["fit", "two.h5::/data/Z", "-k", "1"], 65,
     "Error: two.h5: no dataset '/data/Z'; datasets in this file: /data/X, /data/Y"),
    ("HDF5 with several matrices", ["fit", "two.h5", "-k", "1"], 65,
     "Error: two.h5: holds several matrices (/data/X, /data/Y); name one as two.h5::/data/X"),
    ("HDF5 external link", ["fit", "extlink.h5::/X", "-k", "1"], 65,
     "Error: extlink.h5: '/X' goes through an external link to outside.h5:/X; nmf reads only data stored inside the file"),
    ("HDF5 virtual dataset", ["fit", "virtual.h5", "-k", "1"], 65,
     "Error: virtual.h5: dataset '/X' is a virtual dataset mapping other files; nmf reads only data stored inside the file"),
    ("NPY header far larger than memory", ["fit", "huge.npy", "-k", "1"], 65,
     re.compile(r"Error: huge\.npy: .*10000000 x 1000000.*")),
    ("k <= 0", ["fit", "good.csv", "-k", "0"], 2, "Error: good.csv: k must be a positive integer; got 0"),
    ("k too large for the chosen init", ["fit", "good.csv", "-k", "7", "--init", "nndsvda"], 2,
     "Error: good.csv: k=7 is larger than min(rows, columns) = 6, which init 'nndsvda' needs; "
     "use a smaller k or init 'random'"),
    ("fit needs more memory than the machine has", ["fit", "good.csv", "-k", "100000000000", "--init", "random"], 69,
     re.compile(r"Error: good\.csv: the fit needs about [\d.]+ [KMGTi]*B of memory \(12 x 6, k=100000000000\) but only "
                r"[\d.]+ [KMGTi]*B is available; use --dtype float32, sparse input \(\.npz, \.mtx or a sparse "
                r"HDF5 group\) or the Dask engine")),
    ("--fix-H shape mismatch", ["fit", "good.npy", "--fix-H", "H_wrong.npy"], 65,
     "Error: H_wrong.npy: fixed H has shape 3 x 5; expected 3 x 6"),
    ("--fix-H label mismatch", ["fit", "good.csv", "--fix-H", "H_labels.csv"], 65,
     "Error: H_labels.csv: column 3 is 'x2' but good.csv's column 3 is 'w2'; the columns must match, in the same order"),
    ("--W0 shape mismatch", ["fit", "good.npy", "-k", "3", "--W0", "W0_wrong.npy", "--H0", "H0.npy"], 65,
     "Error: W0_wrong.npy: W0 has shape 11 x 3; expected 12 x 3"),
    ("--fix-H with --fix-W", ["fit", "good.npy", "--fix-H", "H0.npy", "--fix-W", "W0_wrong.npy"], 2,
     "Error: --fix-H and --fix-W cannot both be given: nothing would be left to fit"),
    ("transform: column count differs from the model", ["transform", "new_narrow.csv", "--model", "m/model.h5"], 65,
     "Error: new_narrow.csv: has 5 columns but the components in m/model.h5 have 6; "
     "the new data must have the model's columns"),
    ("transform: column labels differ from the model", ["transform", "new_labels.csv", "--model", "m/model.h5"], 65,
     "Error: new_labels.csv: column 5 is 'oops' but m/model.h5's column 5 is 'w4'; "
     "the columns must match, in the same order"),
    ("transform: model is not a model", ["transform", "good.csv", "--model", "good.npy"], 65,
     re.compile(r"Error: good\.npy: .*")),
    ("transform: no --model or --components", ["transform", "good.csv"], 2,
     "Error: give exactly one of --model MODEL.h5 and --components H_FILE"),
    ("reconstruct: W and H do not chain", ["reconstruct", "good.npy", "H0.npy"], 65,
     "Error: good.npy: W has 6 columns but H in H0.npy has 3 rows; they must match (k)"),
    ("unknown option value", ["fit", "good.csv", "-k", "2", "--solver", "newton"], 2,
     "Error: Invalid value for '--solver': 'newton' is not one of 'auto', 'ehals', 'hals', 'cd', 'emu', 'mu', 'anls'. (see 'nmf fit --help')"),
    ("unknown loss", ["fit", "good.csv", "-k", "2", "--loss", "hinge"], 2,
     "Error: Invalid value for '--loss': 'hinge' is not one of frobenius, kl, is or a number (beta) (see 'nmf fit --help')"),
    ("unknown option", ["fit", "good.csv", "-k", "2", "--bogus"], 2,
     "Error: No such option '--bogus'. (Did you mean one of: '--loss', '--verbose'?) (see 'nmf fit --help')"),
    ("output folder is a file", ["fit", "good.csv", "-k", "2", "-o", "a_file"], 73, re.compile(r"Error: a_file: .*")),
    ("existing outputs without --force", ["fit", "good.csv", "-k", "2", "-o", "m"], 73,
     "Error: m/W.npy: already exists; use --force to replace it"),
    ("--plot without matplotlib", ["inspect", "m/model.h5", "--plot", "p.png"], 69,
     "Error: --plot needs matplotlib, which is not installed; install it with: pip install 'nmfcli[plot]'"),
]
if os.geteuid() != 0:  # root reads every file
    CASES.append(("unreadable file", ["fit", "secret.csv", "-k", "1"], 66,
                  "Error: secret.csv: cannot be opened (permission denied)"))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """Build the files, fit one model into m/, then run every case at once (they are independent)."""
    d = tmp_path_factory.mktemp("errors")
    _build(d)
    if os.geteuid() != 0:
        write_csv(d / "secret.csv", X)
        os.chmod(d / "secret.csv", 0)
    run_nmf("fit", "good.csv", "-k", 3, "-o", "m", cwd=d, check=0)
    before = {p.name: p.read_bytes() for p in (d / "m").iterdir()}
    procs = {}
    for case_id, args, _, _ in CASES:
        env = nmf_env(PYTHONPATH=str(d / "no_matplotlib")) if "--plot" in args else nmf_env()
        if args[0] == "fit" and "-o" not in args:
            args = [*args, "-o", f"out-{case_id.replace(' ', '_')}"]
        procs[case_id] = subprocess.Popen([str(NMF), *args], cwd=d, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    results = {}
    for case_id, p in procs.items():
        out, err = p.communicate(timeout=300)
        p.stdout_text, p.stderr = out.decode(), err.decode()
        p.stdout = p.stdout_text
        results[case_id] = p
    return d, before, results


@pytest.mark.parametrize("case_id, args, code, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_and_its_exit_code(ran, case_id, args, code, message):
    d, before, results = ran
    p = results[case_id]
    line = one_error_line(p)
    assert p.returncode == code, line
    if isinstance(message, str):
        assert line == message
    else:
        assert message.fullmatch(line), line
    assert p.stdout == ""
    # Nothing left behind: no output folder, no temporary files, the earlier model untouched.
    leftovers = sorted(x.name for x in d.iterdir() if x.name.startswith(("out-", ".")) or ".tmp-" in x.name)
    assert leftovers == []
    assert {x.name: x.read_bytes() for x in (d / "m").iterdir()} == before
    assert not (d / "p.png").exists()


def test_files_in_error_messages_are_named_as_given():
    """Every case that reads a file names it first, as the user typed it."""
    for case_id, args, code, message in CASES:
        if code in (65, 66) and isinstance(message, str):
            assert message.startswith("Error: ") and ": " in message[7:], case_id


@pytest.mark.parametrize("name, content", [
    ("bom.csv", b"\xef\xbb\xbfa,b,c\n1,2,3\n4,5,6\n"),
    ("crlf.csv", b"a,b,c\r\n1,2,3\r\n4,5,6\r\n"),
    ("quoted.csv", b'"a","b, with comma","c"\n"1","2","3"\n4,5,6\n'),
    ("comments.csv", b"# made by hand\na,b,c\n# a comment line\n1,2,3\n4,5,6\n"),
    ("trailing.csv", b"a,b,c\n1,2,3\n4,5,6\n\n\n  \n"),
])
def test_csv_quirks_are_read_not_refused(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    p = run_nmf("inspect", name, "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    import json

    info = json.loads(p.stdout)
    assert info["shape"] == [2, 3] and info["min"] == 1 and info["max"] == 6 and info["col_labels"]
    from nmfcli import io as nio

    m = nio.read_matrix(tmp_path / name)
    assert np.array_equal(m.X, [[1, 2, 3], [4, 5, 6]])
    assert m.col_labels[0] == "a" and m.col_labels[2] == "c"


def test_sparse_input_with_an_all_zero_matrix(tmp_path):
    sp.save_npz(tmp_path / "z.npz", sp.csr_matrix((4, 3)))
    p = run_nmf("fit", "z.npz", "-k", 1, cwd=tmp_path)
    assert p.returncode == 65
    assert one_error_line(p) == "Error: z.npz: X is all zeros; there is nothing to factorize"
    assert not (tmp_path / "z.nmf").exists()
