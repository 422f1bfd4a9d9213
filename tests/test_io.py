"""Tests of nmfcli.io: round trips, CSV dialects, every error message, atomic writes, the lock."""

import builtins
import gzip
import io as stdio
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from nmfcli import io
from nmfcli.errors import (
    DataError,
    LockedError,
    MissingInputError,
    NMFError,
    OutputError,
    UnavailableError,
    UsageError,
)


@pytest.fixture
def here(tmp_path, monkeypatch):
    """Work in tmp_path so messages carry short relative paths, as a user types them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(name, "wb") as f:
        f.write(data)
    return name


def message(excinfo):
    return str(excinfo.value)


A = np.array([[0.1, 2.0, 3.5], [4.0, 0.0, 1e-300], [7.25, 8.0, 1 / 3]])


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("ext", ["csv", "tsv", "npy", "npz", "h5"])
def test_dense_round_trip_is_exact(here, ext):
    io.write_matrix(f"a.{ext}", A)
    m = io.read_matrix(f"a.{ext}")
    assert isinstance(m.X, np.ndarray) and m.X.dtype == np.float64 and m.X.flags.c_contiguous
    np.testing.assert_array_equal(m.X, A)
    assert m.path == f"a.{ext}" and m.format == {"tsv": "csv"}.get(ext, ext)
    assert m.sha256 == io.file_sha256(f"a.{ext}")


@pytest.mark.parametrize("ext", ["csv", "tsv", "h5"])
def test_labels_round_trip(here, ext):
    rows, cols = ["doc 1", "doc,2", '#doc "3"'], ["#alpha", "béta", "gam\tma"]
    io.write_matrix(f"a.{ext}", A, row_labels=rows, col_labels=cols)
    m = io.read_matrix(f"a.{ext}")
    np.testing.assert_array_equal(m.X, A)
    assert m.row_labels == rows and m.col_labels == cols


def test_hash_labels_are_not_read_as_comments(here):
    io.write_matrix("a.csv", A[:, :1], col_labels=["#count"])
    assert open("a.csv").read().startswith('"#count"\n')
    assert io.read_matrix("a.csv").col_labels == ["#count"]


def test_many_labels_fit_in_hdf5_attributes(here):
    cols = [f"word{i}" for i in range(20000)]  # far over the 64 KiB compact-attribute limit
    X = np.ones((1, 20000))
    io.write_matrix("a.h5", X, col_labels=cols)
    assert io.read_matrix("a.h5").col_labels == cols


@pytest.mark.parametrize("ext", ["csv", "npy", "npz", "h5"])
def test_float32_kept_when_asked(here, ext):
    A32 = A.astype(np.float32)
    io.write_matrix(f"a.{ext}", A32)
    m = io.read_matrix(f"a.{ext}", dtype="float32")
    assert m.X.dtype == np.float32
    np.testing.assert_array_equal(m.X, A32)
    stored = np.float32 if ext in ("npy", "npz", "h5") else np.float64  # text has no dtype
    assert io.read_matrix(f"a.{ext}").X.dtype == stored, "float32 data stays float32 by default"
    assert io.read_matrix(f"a.{ext}", dtype="float64").X.dtype == np.float64


def test_csv_float32_text_is_short_and_exact(here):
    io.write_matrix("a.csv", np.array([[0.1]], dtype=np.float32))
    assert open("a.csv").read() == "0.100000001\n"


def test_integers_become_float64(here):
    np.save("i.npy", np.arange(6, dtype=np.int32).reshape(2, 3))
    X = io.read_matrix("i.npy").X
    assert X.dtype == np.float64 and X.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("ext", ["npz", "h5"])
def test_sparse_round_trip(here, ext):
    S = sp.random(30, 20, density=0.2, format="csr", random_state=0)
    io.write_matrix(f"s.{ext}", S)
    X = io.read_matrix(f"s.{ext}").X
    assert sp.isspmatrix_csr(X) and X.dtype == np.float64 and X.has_canonical_format
    assert (X != S).nnz == 0


@pytest.mark.parametrize("fmt", ["csc", "coo"])
def test_npz_csc_and_coo_become_csr(here, fmt):
    S = sp.random(6, 5, density=0.5, format=fmt, random_state=1)
    sp.save_npz("s.npz", S)
    X = io.read_matrix("s.npz").X
    assert sp.isspmatrix_csr(X)
    np.testing.assert_array_equal(X.toarray(), S.toarray())


def test_npz_with_one_dense_array(here):
    np.savez("d.npz", anything=A)
    np.testing.assert_array_equal(io.read_matrix("d.npz").X, A)


def test_fortran_order_npy_comes_back_c_ordered(here):
    np.save("f.npy", np.asfortranarray(A))
    X = io.read_matrix("f.npy").X
    assert X.flags.c_contiguous
    np.testing.assert_array_equal(X, A)


def test_lazy_npy_is_a_memory_map(here):
    np.save("a.npy", A)
    X = io.read_matrix("a.npy", lazy=True).X
    assert isinstance(X, np.memmap)
    np.testing.assert_array_equal(X, A)


def test_lazy_h5_is_a_dataset(here):
    io.write_matrix("a.h5", A)
    X = io.read_matrix("a.h5", lazy=True).X
    assert isinstance(X, h5py.Dataset)
    np.testing.assert_array_equal(X[()], A)


def test_mtx_coordinate_is_csr_and_array_is_dense(here):
    S = sp.random(7, 4, density=0.4, format="coo", random_state=2)
    scipy.io.mmwrite("s.mtx", S)
    X = io.read_matrix("s.mtx").X
    assert sp.isspmatrix_csr(X)
    np.testing.assert_allclose(X.toarray(), S.toarray())
    scipy.io.mmwrite("d.mtx", A)
    D = io.read_matrix("d.mtx").X
    assert isinstance(D, np.ndarray)
    np.testing.assert_array_equal(D, A)


def test_mtx_gz(here):
    S = sp.random(7, 4, density=0.4, format="coo", random_state=2)
    scipy.io.mmwrite("s.mtx", S)
    with open("s.mtx", "rb") as src, gzip.open("s.mtx.gz", "wb") as dst:
        dst.write(src.read())
    m = io.read_matrix("s.mtx.gz")
    assert m.format == "mtx" and sp.isspmatrix_csr(m.X)
    np.testing.assert_allclose(m.X.toarray(), S.toarray())


def test_mtx_small_symmetric_array_is_not_taken_for_truncated(here):
    """A symmetric array stores only its lower triangle: fewer bytes than m·n values need."""
    write("s.mtx", "%%MatrixMarket matrix array real symmetric\n3 3\n1\n2\n3\n4\n5\n6\n")
    np.testing.assert_array_equal(io.read_matrix("s.mtx").X, [[1, 2, 3], [2, 4, 5], [3, 5, 6]])


def test_mtx_integer_and_pattern(here):
    write("p.mtx", "%%MatrixMarket matrix coordinate pattern general\n% a comment\n2 3 2\n1 1\n2 3\n")
    np.testing.assert_array_equal(io.read_matrix("p.mtx").X.toarray(), [[1, 0, 0], [0, 0, 1]])
    write("i.mtx", "%%MatrixMarket matrix coordinate integer symmetric\n2 2 2\n1 1 5\n2 1 7\n")
    np.testing.assert_array_equal(io.read_matrix("i.mtx").X.toarray(), [[5, 7], [7, 0]])


@pytest.mark.parametrize("layout", ["coordinate", "array"])
def test_mtx_integer_files_read_as_floats_would(here, layout):
    """Integer files (counts) are read as int64, 8x faster than floats; tokens the promise does
    not hold for (1.0, 2e1, a value beyond int64, which numpy saturates) fall back to the float
    reading, value for value, as do negative integers and ones beyond 2^53 (rounded once)."""
    header = f"%%MatrixMarket matrix {layout} integer general\n"
    for tokens in (["5", "-7", "9007199254740993", "0"], ["5", "1.0", "2e1", "3"],
                   ["5", "99999999999999999999", "-99999999999999999999", "1"], ["5", "+7", "007", "12"]):
        if layout == "coordinate":
            body = "2 2 4\n" + "".join(f"{i} {j} {v}\n" for (i, j), v in zip([(1, 1), (1, 2), (2, 1), (2, 2)], tokens))
        else:
            body = "2 2\n" + "\n".join(tokens) + "\n"
        write("i.mtx", header + body)
        X = io.read_matrix("i.mtx").X
        X = X.toarray() if sp.issparse(X) else X
        expected = np.array([float(v) for v in tokens])
        expected = expected.reshape(2, 2) if layout == "coordinate" else expected.reshape(2, 2).T
        np.testing.assert_array_equal(X, expected)
    rng = np.random.default_rng(6)
    counts = sp.random(40, 30, density=0.2, random_state=7, data_rvs=lambda n: rng.integers(1, 10**6, n))
    scipy.io.mmwrite("c.mtx", counts.tocoo() if layout == "coordinate" else counts.toarray(), field="integer")
    assert "integer" in open("c.mtx").readline()
    got = io.read_matrix("c.mtx").X
    expected = scipy.io.mmread("c.mtx")
    np.testing.assert_array_equal(got.toarray() if sp.issparse(got) else got,
                                  expected.toarray() if sp.issparse(expected) else expected)


@pytest.mark.parametrize("symmetry", ["general", "symmetric", "skew-symmetric"])
@pytest.mark.parametrize("sparse", [True, False])
def test_mtx_reads_what_scipy_writes_as_scipy_reads_it(here, symmetry, sparse):
    """nmfcli parses MatrixMarket itself (scipy's reader can crash the process on malformed
    files); on well-formed ones, coordinate or array, in every symmetry, it must give what
    scipy.io.mmread gives, value for value."""
    rng = np.random.default_rng(5)
    A = rng.random((6, 6)) * (rng.random((6, 6)) < 0.5)
    A = {"general": A, "symmetric": A + A.T, "skew-symmetric": A - A.T}[symmetry]
    scipy.io.mmwrite("m.mtx", sp.coo_matrix(A) if sparse else A, symmetry=symmetry, comment="a comment")
    assert symmetry in open("m.mtx").readline()
    expected = scipy.io.mmread("m.mtx")
    X = io.read_matrix("m.mtx").X
    assert sp.isspmatrix_csr(X) == sparse
    np.testing.assert_array_equal(X.toarray() if sparse else X, expected.toarray() if sparse else expected)


@pytest.mark.parametrize("text, expected", [
    ("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1\n2 2 2 2\n", "m.mtx: the data do not match the "
     "size line (7 numbers after it; 2 entries of 3 numbers declared)"),
    ("%%MatrixMarket matrix coordinate real general\n2 2 1\n3 1 1\n",
     "m.mtx: entry 1: row index 3 is not an integer in 1..2"),
    ("%%MatrixMarket matrix coordinate pattern general\n2 2 1\n1 0.5\n",
     "m.mtx: entry 1: column index 0.5 is not an integer in 1..2"),
    ("%%MatrixMarket matrix array real general\n2 2\n1\n2\nthree\n4\n",
     "m.mtx: the MatrixMarket data is corrupt (a value that is not a number)"),
    ("%%MatrixMarket matrix array real symmetric\n2 2\n1\n2\n3\n4\n",
     "m.mtx: the data do not match the size line (4 values after it; a symmetric 2 x 2 array stores 3)"),
    ("%%MatrixMarket matrix array real skew-symmetric\n3 3\n1\n2\n3\n4\n", "m.mtx: the data do not match the "
     "size line (4 values after it; a skew-symmetric 3 x 3 array stores 3)"),
])
def test_mtx_bad_data_messages(here, text, expected):
    write("m.mtx", text)
    with pytest.raises(DataError) as e:
        io.read_matrix("m.mtx")
    assert message(e) == expected


def test_zarr_dense_and_sparse(here):
    zarr = pytest.importorskip("zarr")
    z = zarr.open("a.zarr", mode="w", shape=A.shape, dtype="f8")
    z[:] = A
    z.attrs["row_labels"] = ["r1", "r2", "r3"]
    m = io.read_matrix("a.zarr")
    np.testing.assert_array_equal(m.X, A)
    assert m.row_labels == ["r1", "r2", "r3"] and m.format == "zarr" and len(m.sha256) == 64
    S = sp.random(5, 4, density=0.5, format="csr", random_state=3)
    g = zarr.open_group("s.zarr", mode="w")
    x = g.create_group("X")
    x.attrs.update({"encoding-type": "csr_matrix", "shape": [5, 4]})
    for key in ("data", "indices", "indptr"):
        arr = getattr(S, key)
        x.create_array(key, shape=arr.shape, dtype=arr.dtype)[:] = arr
    X = io.read_matrix("s.zarr").X
    np.testing.assert_array_equal(X.toarray(), S.toarray())


def test_zarr_missing_says_how_to_install(here, monkeypatch):
    os.mkdir("a.zarr")
    real_import = builtins.__import__

    def no_zarr(name, *args, **kwargs):
        if name == "zarr":
            raise ImportError("no zarr")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zarr)
    with pytest.raises(UnavailableError) as e:
        io.read_matrix("a.zarr")
    assert message(e) == "a.zarr: reading Zarr needs the zarr package; install it with: pip install 'nmfcli[zarr]'"


def test_formats_constant():
    assert io.FORMATS == ("csv", "npy", "npz", "mtx", "h5", "zarr")


def test_format_by_magic_bytes_when_extension_is_unknown(here):
    with open("a.dat", "wb") as f:
        np.save(f, A)
    assert io.read_matrix("a.dat").format == "npy"


# ---------------------------------------------------------------- CSV dialects


@pytest.mark.parametrize(
    "text",
    [
        "1,2,3\n4,5,6\n",
        "\ufeff1,2,3\r\n4,5,6\r\n",
        "# a comment\n1,2,3\n\n# another\n4,5,6\n\n\n",
        "1;2;3\n4;5;6\n",
        "1\t2\t3\n4\t5\t6\n",
        "1 2  3\n  4 5 6\n",
        '"1","2","3"\n"4","5","6"\n',
        "1, 2, 3\n4, 5, 6",
    ],
    ids=["plain", "bom-crlf", "comments-blanks", "semicolon", "tab", "spaces", "quoted", "no-final-newline"],
)
def test_csv_dialects(here, text):
    write("d.csv", text.encode("utf-8"))
    m = io.read_matrix("d.csv")
    np.testing.assert_array_equal(m.X, [[1, 2, 3], [4, 5, 6]])
    assert m.row_labels is None and m.col_labels is None


def test_csv_header_and_index_detected(here):
    write("d.csv", ',"x, y",b\nr1,1,2\nr2,3,4\n')
    m = io.read_matrix("d.csv")
    assert m.col_labels == ["x, y", "b"] and m.row_labels == ["r1", "r2"]
    np.testing.assert_array_equal(m.X, [[1, 2], [3, 4]])


def test_csv_index_detected_without_header(here):
    write("d.csv", "apple,1,2\npear,3,4\n")
    m = io.read_matrix("d.csv")
    assert m.row_labels == ["apple", "pear"] and m.col_labels is None


def test_csv_numeric_row_labels_under_empty_corner(here):
    write("d.csv", ",a,b\n10,1,2\n20,3,4\n")  # pandas to_csv with an integer index
    m = io.read_matrix("d.csv")
    assert m.row_labels == ["10", "20"] and m.col_labels == ["a", "b"]


def test_csv_r_layout_header_one_short(here):
    write("d.csv", '"a","b"\n"x",1,2\n"y",3,4\n')
    m = io.read_matrix("d.csv")
    assert m.row_labels == ["x", "y"] and m.col_labels == ["a", "b"]


def test_csv_forcing_header_and_index(here):
    write("d.csv", "5,6,7\n1,2,3\n")
    m = io.read_matrix("d.csv", header=True, index_col=True)
    assert m.col_labels == ["6", "7"] and m.row_labels == ["1"]
    np.testing.assert_array_equal(m.X, [[2, 3]])
    write("e.csv", "a,b\n1,2\n")
    with pytest.raises(DataError) as e:
        io.read_matrix("e.csv", header=False)
    assert message(e) == "e.csv: row 1, column 1 (line 1, field 1): 'a' is not a number"


def test_csv_nan_and_inf_parse(here):
    write("d.csv", "nan,1\ninf,-inf\n")
    X = io.read_matrix("d.csv").X
    assert np.isnan(X[0, 0]) and X[1, 0] == np.inf and X[1, 1] == -np.inf


def test_csv_gz(here):
    with gzip.open("d.csv.gz", "wt") as f:
        f.write("a,b\n1,2\n")
    m = io.read_matrix("d.csv.gz")
    assert m.col_labels == ["a", "b"] and m.X.tolist() == [[1, 2]]
    assert m.sha256 == io.file_sha256("d.csv.gz")


def test_csv_single_column(here):
    write("d.csv", "score\n1\n2\n")
    m = io.read_matrix("d.csv")
    assert m.X.shape == (2, 1) and m.col_labels == ["score"]


def test_csv_2000_square_parses_exactly(here):
    # 17 significant digits round-trip every float64. The speed of this parse against
    # numpy.loadtxt is bench/io_bench.py's (no timing here: a loaded CI machine made it flaky).
    rng = np.random.default_rng(0)
    X = rng.random((2000, 2000))
    np.savetxt("big.csv", X, delimiter=",", fmt="%.17g")
    m = io.read_matrix("big.csv")
    np.testing.assert_array_equal(m.X, X)


# ---------------------------------------------------------------- stdin


def test_stdin_csv(here):
    raw = b"a,b\n1,2\n"
    m = io.read_matrix("-", stdin=stdio.BytesIO(raw))
    assert m.path == "-" and m.format == "csv" and m.col_labels == ["a", "b"]
    import hashlib

    assert m.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("fmt", ["npy", "npz", "h5", "mtx"])
def test_stdin_binary_formats(here, fmt):
    {"npy": lambda: np.save("a.npy", A), "npz": lambda: np.savez("a.npz", X=A),
     "h5": lambda: io.write_matrix("a.h5", A), "mtx": lambda: scipy.io.mmwrite("a.mtx", A)}[fmt]()
    raw = open(f"a.{fmt}", "rb").read()
    m = io.read_matrix("-", input_format=fmt, stdin=stdio.BytesIO(raw))
    np.testing.assert_array_equal(m.X, A)


def test_stdin_empty(here):
    with pytest.raises(DataError) as e:
        io.read_matrix("-", stdin=stdio.BytesIO(b""))
    assert message(e) == "-: the file is empty"


def test_write_to_stdout(here):
    out = stdio.StringIO()
    io.write_matrix("-", np.array([[1.5, 2.0]]), row_labels=["r"], col_labels=["a", "b"], stdout=out)
    assert out.getvalue() == ",a,b\nr,1.5,2.0\n"


def test_broken_pipe_propagates():
    class Closed(stdio.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        io.write_matrix("-", A, stdout=Closed())
    with pytest.raises(BrokenPipeError):
        io.write_report("-", {"k": 1, "shape": [1, 1]}, stdout=Closed())


# ---------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("d.csv", "1,2,3,4,5\n1,2,3,4,5\n\n# x\n1,2,3,4\n", "d.csv: line 5 has 4 fields, expected 5"),
        ("d.csv", "a,b\n1,2\n3,abc\n", "d.csv: row 2, column 2 (line 3, field 2): 'abc' is not a number"),
        ("d.csv", ",a,b\nr1,1,2\nr2,x,2\n", "d.csv: row 2, column 1 (line 3, field 2): 'x' is not a number"),
        ("d.csv", "1,2\n3,\n", "d.csv: row 2, column 2 (line 2, field 2) is empty; nmf needs a number in every "
         "cell; write a missing value as nan (nmf fit --missing nan leaves them out)"),
        ("d.csv", "1,2\n3,NA\n", "d.csv: row 2, column 2 (line 2, field 2): 'NA' is not a number; write a missing "
         "value as nan (nmf fit --missing nan leaves them out)"),
        ("d.csv", "1,5;2\n3;4\n",
         "d.csv: row 1, column 1 (line 1, field 1): '1,5' is not a number; use '.' as the decimal point"),
        ("d.csv", "", "d.csv: the file is empty"),
        ("d.csv", "\n# only comments\n\n", "d.csv: the file is empty"),
        ("d.csv", "a,b\n", "d.csv: the file has a header row but no data rows"),
        ("d.csv", b"1,2\n3,\xff\n", "d.csv: line 2, byte 3: 0xff is not valid UTF-8; save the file as UTF-8"),
        ("d.csv.gz", b"\x1f\x8bnot gzip", "d.csv.gz: not a valid gzip file, or it is corrupt"),
        ("d.csv.gz", gzip.compress(b"1,2\n3,4\n")[:-9], "d.csv.gz: the gzip stream is truncated"),
        ("d.npz", b"PK\x03\x04garbage", "d.npz: not a valid npz (zip) file"),
        ("d.npy", b"not an npy file", "d.npy: is not an NPY file (the magic string is missing)"),
        ("d.mtx", "hello\n", "d.mtx: not a MatrixMarket file (the first line must start with %%MatrixMarket)"),
        ("d.mtx", "%%MatrixMarket matrix coordinate complex general\n2 2 1\n1 1 1 0\n",
         "d.mtx: holds complex numbers; nmf needs real numbers (integers or floats)"),
        ("d.mtx", "%%MatrixMarket matrix coordinate real general\n10 10 1000\n1 1 1\n",
         "d.mtx: the size line claims 1000 entries but the file holds only 6 more bytes; "
         "the file is truncated or corrupt"),
        ("d.mtx", "%%MatrixMarket matrix array real general\n1000000 1000000\n1\n",
         "d.mtx: the size line claims 1000000 x 1000000 values but the file holds only 2 more bytes; "
         "the file is truncated or corrupt"),
        ("d.mtx", "%%MatrixMarket matrix coordinate real general\n2 x 1\n",
         "d.mtx: line 2: the size line must hold 3 non-negative integers (rows columns entries)"),
        # headers the format forbids, which scipy's reader aborts or segfaults on (found by test_io_fuzz)
        ("d.mtx", "%%MatrixMarket matrix array pattern general\n3 3\n3 3 1\n",
         "d.mtx: a MatrixMarket array cannot be 'pattern' (only coordinate files list bare positions)"),
        ("d.mtx", "%%MatrixMarket matrix array real symmetric\n2 3\n1\n2\n3\n4\n5\n6\n",
         "d.mtx: line 2: a symmetric MatrixMarket matrix must be square; the size line says 2 x 3"),
        ("d.mtx", "%%MatrixMarket matrix array double skew-symmetric\n% c\n2 3\n1\n2\n3\n4\n5\n6\n",
         "d.mtx: line 3: a skew-symmetric MatrixMarket matrix must be square; the size line says 2 x 3"),
        ("d.mtx", "%%MatrixMarket matrix coordinate unsigned-integer skew-symmetric\n2 2 1\n2 1 1\n",
         "d.mtx: a skew-symmetric MatrixMarket matrix cannot hold unsigned integers"),
        ("d.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "d.h5: not an HDF5 file, or the file is corrupt"),
    ],
)
def test_bad_content_messages(here, name, data, expected):
    write(name, data.encode() if isinstance(data, str) else data)
    with pytest.raises(DataError) as e:
        io.read_matrix(name)
    assert message(e) == expected
    assert e.value.exit_code == 65


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.zeros((2, 2, 2)), "x.npy: the array is 3-D; nmf needs a 2-D matrix (rows x columns)"),
        (np.zeros(3), "x.npy: the array is 1-D; nmf needs a 2-D matrix (rows x columns)"),
        (np.zeros((0, 3)), "x.npy: the array is 0 x 3; nmf needs at least one row and one column"),
        (np.zeros((2, 2), complex), "x.npy: holds complex numbers (complex128); nmf needs real numbers (integers or floats)"),
        (np.zeros((2, 2), bool), "x.npy: holds booleans (bool); nmf needs real numbers (integers or floats)"),
        (np.array([["a"]]), "x.npy: holds text (str32); nmf needs real numbers (integers or floats)"),
        (np.zeros((2, 2), dtype=[("a", "f8"), ("b", "i4")]),
         "x.npy: holds a structured array (a, b); nmf needs a plain numeric matrix"),
    ],
)
def test_npy_structure_refused(here, array, expected):
    np.save("x.npy", array)
    with pytest.raises(DataError) as e:
        io.read_matrix("x.npy")
    assert message(e) == expected


def test_pickled_npy_refused_without_unpickling(here, monkeypatch):
    np.save("x.npy", np.array([[1, None]], dtype=object), allow_pickle=True)

    def boom(*args, **kwargs):
        raise AssertionError("pickle was loaded")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    with pytest.raises(DataError) as e:
        io.read_matrix("x.npy")
    assert message(e) == "x.npy: holds Python objects (a pickle); nmf never loads pickles"
    np.savez("x.npz", X=np.array([[1, None]], dtype=object))
    with pytest.raises(DataError) as e:
        io.read_matrix("x.npz")
    assert message(e) == "x.npz: member 'X': holds Python objects (a pickle); nmf never loads pickles"


def npy_header_only(shape, descr="<f8", data=b""):
    f = stdio.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return f.getvalue() + data


def test_truncated_npy_refused(here):
    write("x.npy", npy_header_only((10**7, 10**6), data=b"\0" * 63))
    assert os.path.getsize("x.npy") == 191
    with pytest.raises(DataError) as e:
        io.read_matrix("x.npy")
    assert message(e) == (
        "x.npy: the header claims 10000000 x 1000000 float64 (72.8 TiB) but the file holds 63 bytes of data; "
        "the file is truncated or corrupt"
    )


def test_too_large_for_memory_refused_with_estimate(here, monkeypatch):
    np.save("x.npy", np.zeros((100, 100)))
    monkeypatch.setattr("nmfcli.io._common.available_memory", lambda: 50_000)
    with pytest.raises(UnavailableError) as e:  # exit 69: the machine is too small, the data are fine
        io.read_matrix("x.npy")
    assert message(e) == (
        "x.npy: the array (100 x 100 float64) needs 78.1 KiB of memory but only 48.8 KiB is available; "
        "use a smaller input or read it lazily"
    )
    assert isinstance(io.read_matrix("x.npy", lazy=True).X, np.memmap)


def test_missing_file(here):
    for name in ("nope.csv", "nope.npy", "nope.h5", "nope.h5::/X", "nope.zarr"):
        with pytest.raises(MissingInputError) as e:
            io.read_matrix(name)
        assert message(e) == f"{name.split('::')[0]}: no such file"
        assert e.value.exit_code == 66


def test_folder_as_file(here):
    os.mkdir("d.csv")
    with pytest.raises(MissingInputError) as e:
        io.read_matrix("d.csv")
    assert message(e) == "d.csv: is a folder, not a file"


def test_bad_options(here):
    with pytest.raises(UsageError) as e:
        io.read_matrix("a.csv", dtype="int8")
    assert message(e) == "dtype must be float32 or float64, not 'int8'"
    with pytest.raises(UsageError) as e:
        io.read_matrix("a.csv", input_format="xls")
    assert message(e) == "unknown input format 'xls'; choose one of csv, npy, npz, mtx, h5, zarr"


def test_npz_several_arrays_refused(here):
    np.savez("x.npz", a=A, b=A)
    with pytest.raises(DataError) as e:
        io.read_matrix("x.npz")
    assert message(e) == (
        "x.npz: holds 2 arrays (a, b) and is not a scipy.sparse file; nmf reads a sparse matrix saved by "
        "scipy.sparse.save_npz or an npz holding one 2-D array"
    )


def test_npz_sparse_out_of_bounds_refused(here):
    np.savez("x.npz", format=b"csr", shape=np.array([2, 2]), data=np.ones(2),
             indices=np.array([0, 5]), indptr=np.array([0, 1, 2]))
    with pytest.raises(DataError) as e:
        io.read_matrix("x.npz")
    assert message(e) == "x.npz: an index of the sparse matrix is outside 0..1"
    np.savez("y.npz", format=b"csr", shape=np.array([2, 2]), data=np.ones(2),
             indices=np.array([0, 1]), indptr=np.array([0, 1]))
    with pytest.raises(DataError) as e:
        io.read_matrix("y.npz")
    assert message(e) == "y.npz: the sparse matrix 'indptr' has 2 entries, expected 3 for shape 2 x 2"


# ---------------------------------------------------------------- HDF5


def test_h5_choosing_datasets(here):
    with h5py.File("m.h5", "w") as f:
        f["X"] = A
        f["group/Y"] = A[:2]
        f["labels"] = np.arange(3)
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5::/foo")
    assert message(e) == "m.h5: no dataset '/foo'; datasets in this file: /X, /group/Y, /labels"
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5")
    assert message(e) == "m.h5: holds several matrices (/X, /group/Y); name one as m.h5::/X"
    assert io.read_matrix("m.h5::/group/Y").X.shape == (2, 3)
    assert io.read_matrix("m.h5", dataset="group/Y").X.shape == (2, 3)
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5::/labels")
    assert message(e) == "m.h5: dataset '/labels' is 1-D; nmf needs a 2-D matrix (rows x columns)"
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5::/group")
    assert message(e) == (
        "m.h5: '/group' is a group, not a dataset or sparse matrix; datasets in this file: /X, /group/Y, /labels"
    )
    with pytest.raises(UsageError):
        io.read_matrix("m.h5::/X", dataset="/group/Y")


def test_h5_single_dataset_with_sibling_labels(here):
    with h5py.File("m.h5", "w") as f:
        f["data/X"] = A
        f["data/row_labels"] = np.array([b"a", b"b", b"c"])
        f["data/X"].attrs["col_labels"] = np.array(["x", "y", "z"], dtype=h5py.string_dtype())
    m = io.read_matrix("m.h5")
    assert m.row_labels == ["a", "b", "c"] and m.col_labels == ["x", "y", "z"]


def test_h5_wrong_label_count(here):
    with h5py.File("m.h5", "w") as f:
        f["X"] = A
        f["X"].attrs["row_labels"] = np.array(["a", "b"], dtype=h5py.string_dtype())
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5")
    assert message(e) == "m.h5: 'row_labels' of '/X' has 2 entries but the matrix needs 3"


def test_h5_external_link_refused(here):
    with h5py.File("other.h5", "w") as f:
        f["X"] = A
    with h5py.File("m.h5", "w") as f:
        f["ext"] = h5py.ExternalLink("other.h5", "/X")
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5::/ext")
    assert message(e) == (
        "m.h5: '/ext' goes through an external link to other.h5:/X; nmf reads only data stored inside the file"
    )
    with pytest.raises(DataError) as e:  # the link is not followed when looking for candidates either
        io.read_matrix("m.h5")
    assert message(e) == "m.h5: no 2-D dataset or sparse matrix group in this file; datasets in this file: (none)"


def test_h5_external_storage_refused(here):
    np.zeros((3, 3)).tofile("raw.bin")
    with h5py.File("m.h5", "w") as f:
        f.create_dataset("X", shape=(3, 3), dtype="f8", external=[("raw.bin", 0, 72)])
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5")
    assert message(e) == (
        "m.h5: dataset '/X' keeps its data in external files (raw.bin); nmf reads only data stored inside the file"
    )


def test_h5_virtual_dataset_refused(here):
    with h5py.File("src.h5", "w") as f:
        f["X"] = A
    layout = h5py.VirtualLayout(shape=(3, 3), dtype="f8")
    layout[:] = h5py.VirtualSource("src.h5", "X", shape=(3, 3))
    with h5py.File("m.h5", "w") as f:
        f.create_virtual_dataset("X", layout)
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5")
    assert message(e) == (
        "m.h5: dataset '/X' is a virtual dataset mapping other files; nmf reads only data stored inside the file"
    )


def test_h5_huge_unwritten_dataset_refused(here):
    with h5py.File("m.h5", "w") as f:
        f.create_dataset("X", shape=(10**7, 10**6), dtype="f8", chunks=(1000, 1000))
    with pytest.raises(UnavailableError) as e:  # exit 69, as every refusal for memory
        io.read_matrix("m.h5")
    assert message(e).startswith("m.h5: dataset '/X' (10000000 x 1000000 float64) needs 72.8 TiB of memory but only ")
    assert isinstance(io.read_matrix("m.h5", lazy=True).X, h5py.Dataset)


def test_h5_text_dataset_refused(here):
    with h5py.File("m.h5", "w") as f:
        f.create_dataset("X", data=np.array([["a", "b"]], dtype=h5py.string_dtype()))
    with pytest.raises(DataError) as e:
        io.read_matrix("m.h5")
    assert message(e) == (
        "m.h5: dataset '/X' holds text or variable-length data; nmf needs real numbers (integers or floats)"
    )


def anndata_file(name, S, fmt="csr"):
    M = S.tocsr() if fmt == "csr" else S.tocsc()
    with h5py.File(name, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        g = f.create_group("X")
        g.attrs["encoding-type"] = f"{fmt}_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        g.attrs["shape"] = np.array(S.shape)
        g["data"], g["indices"], g["indptr"] = M.data, M.indices, M.indptr
        obs = f.create_group("obs")
        obs.attrs["_index"] = "cell"
        obs["cell"] = np.array([f"c{i}" for i in range(S.shape[0])], dtype=h5py.string_dtype())
        var = f.create_group("var")
        var.attrs["_index"] = "_index"
        var["_index"] = np.array([f"g{i}" for i in range(S.shape[1])], dtype=h5py.string_dtype())
        f["obsm/X_pca"] = np.zeros((S.shape[0], 2))  # a second 2-D candidate; AnnData means /X


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_h5_anndata_sparse_group(here, fmt):
    S = sp.random(8, 5, density=0.4, format="csr", random_state=4)
    anndata_file("a.h5ad", S, fmt)
    m = io.read_matrix("a.h5ad")
    assert sp.isspmatrix_csr(m.X)
    np.testing.assert_array_equal(m.X.toarray(), S.toarray())
    assert m.row_labels == [f"c{i}" for i in range(8)] and m.col_labels == [f"g{i}" for i in range(5)]


def test_h5sparse_layout(here):
    S = sp.random(4, 6, density=0.5, format="csr", random_state=5)
    with h5py.File("s.h5", "w") as f:
        g = f.create_group("mat")
        g.attrs["h5sparse_format"] = "csr"
        g.attrs["h5sparse_shape"] = S.shape
        g["data"], g["indices"], g["indptr"] = S.data, S.indices, S.indptr
    np.testing.assert_array_equal(io.read_matrix("s.h5").X.toarray(), S.toarray())


# ---------------------------------------------------------------- writing


def test_write_refuses_to_replace_without_force(here):
    io.write_matrix("a.csv", A)
    with pytest.raises(OutputError) as e:
        io.write_matrix("a.csv", A * 2)
    assert message(e) == "a.csv: already exists; use --force to replace it"
    assert e.value.exit_code == 73
    io.write_matrix("a.csv", A * 2, force=True)
    np.testing.assert_array_equal(io.read_matrix("a.csv").X, A * 2)


def test_write_unknown_extension(here):
    with pytest.raises(UsageError) as e:
        io.write_matrix("a.xls", A)
    assert message(e) == "a.xls: cannot tell the output format from '.xls'; use a .csv, .tsv, .npy, .npz or .h5 file name"


def test_write_into_missing_folder(here):
    with pytest.raises(OutputError) as e:
        io.write_matrix("no/such/a.csv", A)
    assert message(e) == "no/such/a.csv: the folder no/such does not exist"


def test_atomic_path_keeps_old_file_on_error(here):
    write("out.txt", "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path("out.txt", force=True) as tmp:
            assert os.path.dirname(os.path.abspath(tmp)) == str(here)
            assert os.path.basename(tmp).startswith(".out.txt.tmp-")
            write(tmp, "half")
            raise RuntimeError("crash")
    assert open("out.txt").read() == "old"
    assert os.listdir(".") == ["out.txt"]


def test_atomic_path_replaces_on_success(here):
    write("out.txt", "old")
    with io.atomic_path("out.txt", force=True) as tmp:
        write(tmp, "new")
    assert open("out.txt").read() == "new" and os.listdir(".") == ["out.txt"]


def test_atomic_path_refuses_existing(here):
    write("out.txt", "old")
    with pytest.raises(OutputError) as e:
        with io.atomic_path("out.txt"):
            raise AssertionError("not reached")
    assert message(e) == "out.txt: already exists; use --force to replace it"
    assert os.listdir(".") == ["out.txt"]


def test_failed_write_leaves_no_temp_file(here, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    from nmfcli.errors import ReadWriteError

    with pytest.raises(ReadWriteError) as e:
        io.write_matrix("a.npy", A)
    assert message(e) == "a.npy: writing failed (No space left on device)"
    assert e.value.exit_code == 74
    assert os.listdir(".") == []


def test_unwritable_folder(here):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    os.mkdir("ro")
    os.chmod("ro", 0o500)
    with pytest.raises(OutputError) as e:
        io.write_matrix("ro/a.csv", A)
    assert message(e) == "ro/a.csv: cannot be created (Permission denied)"


# ---------------------------------------------------------------- the output lock

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from nmfcli import io
    with io.output_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_output_lock_excludes_another_process_and_frees_on_death(here):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, "out"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as e:
            with io.output_lock("out"):
                pass
        assert message(e) == (
            "out: another nmf run is writing here (lock held); wait for it or use another output folder"
        )
        assert e.value.exit_code == 75
    finally:
        proc.kill()
        proc.wait()
    with io.output_lock("out"):  # the kernel dropped the dead holder's lock: nothing stale
        pass


def test_output_lock_is_reusable_in_process(here):
    os.mkdir("out")
    with io.output_lock("out"):
        pass
    with io.output_lock("out"):
        assert os.path.exists("out/.nmf.lock")
    assert os.path.isdir("out")


def test_output_lock_removes_a_folder_it_made_if_nothing_was_written(here):
    with pytest.raises(DataError):
        with io.output_lock("new"):
            assert os.listdir("new") == [".nmf.lock"]
            raise DataError("the fit failed")
    assert not os.path.exists("new")
    with io.output_lock("kept"):
        write("kept/W.csv", "1\n")
    assert sorted(os.listdir("kept")) == [".nmf.lock", "W.csv"]


# ---------------------------------------------------------------- model, report, checkpoint


def make_model():
    rng = np.random.default_rng(0)
    return {
        "H": rng.random((3, 5)),
        "W": rng.random((4, 3)).astype(np.float32),
        "history": np.array([3.0, 2.0, 1.5]),
        "history_iter": np.array([1, 2, 3], dtype=np.int64),
        "options": {"solver": "cd", "tol": 1e-4, "init": None, "l1_ratio": 0.0},
        "metrics": {"rel_error": 0.125},
        "versions": {"nmfcli": "0.1.0", "numpy": np.__version__},
        "row_labels": ["a", "b", "c", "d"],
        "col_labels": None,
        "k": 3,
        "loss": "frobenius",
        "beta": 2.0,
        "solver": "cd",
        "n_iter": 3,
        "converged": True,
        "stop_reason": "tol",
        "objective": float("nan"),
    }


def test_model_round_trip(here):
    model = make_model()
    io.write_model("m.h5", model)
    back = io.read_model("m.h5")
    assert back.keys() == model.keys()
    for key, value in model.items():
        if isinstance(value, np.ndarray):
            assert back[key].dtype == value.dtype
            np.testing.assert_array_equal(back[key], value)
        elif key == "objective":
            assert np.isnan(back[key])
        else:
            assert back[key] == value and type(back[key]) is type(value)
    assert io.detect_kind("m.h5") == "model"
    with pytest.raises(OutputError):
        io.write_model("m.h5", model)
    io.write_model("m.h5", model, force=True)


def test_read_model_of_a_plain_matrix(here):
    io.write_matrix("x.h5", A)
    with pytest.raises(DataError) as e:
        io.read_model("x.h5")
    assert message(e) == "x.h5: not an nmfcli model (no 'nmfcli_model' attribute); make one with `nmf fit`"
    assert io.detect_kind("x.h5") == "matrix"
    with pytest.raises(MissingInputError):
        io.read_model("nope.h5")


def test_checkpoint_round_trip_overwrites(here):
    io.write_checkpoint("c.h5", {"W": A, "H": A, "iteration": 5, "rng_state": {"seed": 1}})
    io.write_checkpoint("c.h5", {"W": A * 2, "H": A, "iteration": 6, "rng_state": {"seed": 1}})
    state = io.read_checkpoint("c.h5")
    assert state["iteration"] == 6 and state["rng_state"] == {"seed": 1}
    np.testing.assert_array_equal(state["W"], A * 2)
    assert io.detect_kind("c.h5") == "checkpoint"
    with pytest.raises(DataError) as e:
        io.read_model("c.h5")
    assert "not an nmfcli model" in message(e)
    with pytest.raises(DataError) as e:
        io.read_checkpoint("m.h5" if os.path.exists("m.h5") else io.write_matrix("x.h5", A) or "x.h5")
    assert message(e) == "x.h5: not an nmfcli checkpoint (no 'nmfcli_checkpoint' attribute)"


def test_checkpoint_copies_in_a_streamed_factor_block_by_block(here, monkeypatch):
    """W given as a spec (a W an engine wrote to a file block by block) is copied into the
    checkpoint, a few rows at a time, and comes back as a spec into the checkpoint: it stands
    on its own once the streamed file is gone."""
    from nmfcli.io import _hdf5

    W = np.arange(70.0).reshape(35, 2)
    with h5py.File("w.tmp.h5", "w") as f:
        f.create_dataset("X", data=W)
    monkeypatch.setattr(_hdf5, "_COPY_BYTES", 10 * 2 * 8)  # 10 rows a block: 4 blocks
    io.write_checkpoint("c.h5", {"W": "w.tmp.h5::/X", "W_before": None, "H": A, "iteration": 5})
    os.remove("w.tmp.h5")
    state = io.read_checkpoint("c.h5")
    assert state["W"] == "c.h5::/W" and state["W_before"] is None and state["iteration"] == 5
    np.testing.assert_array_equal(state["H"], A)
    source = io.row_source(state["W"])
    assert source.shape == (35, 2)
    np.testing.assert_array_equal(source.read(0, 35), W)
    with h5py.File("c.h5", "a") as f:  # a damaged list of streamed datasets is refused, not trusted
        f.attrs["nmfcli_streamed"] = '["H", "nope"]'
    with pytest.raises(DataError) as e:
        io.read_checkpoint("c.h5")
    assert message(e) == "c.h5: attribute 'nmfcli_streamed' does not name 2-D datasets of this file; the file is damaged"


def test_permute_columns_in_place_block_by_block(here, monkeypatch):
    from nmfcli.io import _hdf5

    W = np.arange(105.0).reshape(35, 3)
    with h5py.File("w.h5", "w") as f:
        f.create_dataset("X", data=W)
    monkeypatch.setattr(_hdf5, "_COPY_BYTES", 10 * 3 * 8)  # 10 rows a block: 4 blocks
    io.permute_columns("w.h5::/X", [2, 0, 1])
    with h5py.File("w.h5", "r") as f:
        np.testing.assert_array_equal(f["X"][...], W[:, [2, 0, 1]])
    with pytest.raises(UsageError) as e:
        io.permute_columns("w.npy", [0])
    assert message(e) == "w.npy: only an HDF5 dataset can be reordered in place"


def test_report_round_trip_and_nan_as_null(here):
    report = {"k": np.int64(3), "shape": (4, 5), "loss": np.float32(0.5), "bad": float("nan"),
              "history": np.array([1.0, np.inf]), "nested": {"x": [np.float64(1.25)]}}
    io.write_report("r.json", report)
    text = open("r.json").read()
    assert "NaN" not in text and "Infinity" not in text and text.startswith('{\n  "k": 3')
    assert io.read_report("r.json") == {"k": 3, "shape": [4, 5], "loss": 0.5, "bad": None,
                                        "history": [1.0, None], "nested": {"x": [1.25]}}
    assert io.detect_kind("r.json") == "report"
    out = stdio.StringIO()
    io.write_report("-", {"k": 1, "shape": [1, 1]}, stdout=out)
    assert json.loads(out.getvalue()) == {"k": 1, "shape": [1, 1]}
    with pytest.raises(OutputError):
        io.write_report("r.json", report)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"k": 1', "r.json: not valid JSON (line 1, column 8: Expecting ',' delimiter)"),
        ("[1, 2]", "r.json: not an nmfcli report (a JSON object with 'k' and 'shape' keys is expected)"),
        ('{"k": 1}', "r.json: not an nmfcli report (a JSON object with 'k' and 'shape' keys is expected)"),
    ],
)
def test_bad_reports(here, text, expected):
    write("r.json", text)
    with pytest.raises(DataError) as e:
        io.read_report("r.json")
    assert message(e) == expected


def test_detect_kind_by_extension_and_content(here):
    assert io.detect_kind("-") == "matrix"
    assert io.detect_kind("missing.json") == "report"
    assert io.detect_kind("missing.csv") == "matrix"
    write("noext", '{"k": 1, "shape": [1, 1]}')
    assert io.detect_kind("noext") == "report"
    io.write_matrix("a.csv", A)
    assert io.detect_kind("a.csv") == "matrix"
    assert io.detect_kind("m.h5::/X") == "matrix"


def test_available_memory_and_sha256(here):
    assert io.available_memory() > 1 << 20
    write("a.bin", b"abc")
    assert io.file_sha256("a.bin") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_all_errors_are_nmf_errors():
    for cls in (DataError, MissingInputError, OutputError, LockedError, UnavailableError, UsageError):
        assert issubclass(cls, NMFError)


def test_csv_bad_cell_far_down_is_located(here):
    lines = ["a,b", "# comment"] + [f"{i},{i}" for i in range(9000)]
    lines[2 + 8500] = "1,oops"
    write("d.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        io.read_matrix("d.csv")
    assert message(e) == "d.csv: row 8501, column 2 (line 8503, field 2): 'oops' is not a number"
    lines[2 + 8500] = "1,2,3"
    write("d.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        io.read_matrix("d.csv")
    assert message(e) == "d.csv: line 8503 has 3 fields, expected 2"
    lines[2 + 8500] = "1,2"
    write("d.csv", "\n".join(lines) + "\n")
    X = io.read_matrix("d.csv").X
    assert X.shape == (9000, 2) and X[8500].tolist() == [1, 2] and X[8999].tolist() == [8999, 8999]


# ---------------------------------------------------------------------------- replace_together


def _write_set(folder, tag):
    with io.replace_together(folder, ["W.npy", "report.json"]) as staged:
        np.save(staged["W.npy"], np.full((2, 2), float(tag)))
        io.write_report(staged["report.json"], {"k": 2, "shape": [2, 2], "tag": tag})


def test_replace_together_swaps_the_whole_set_in_one_step(tmp_path):
    out = tmp_path / "out"
    with io.output_lock(str(out)):
        _write_set(str(out), 1)
        lock_inode = (out / ".nmf.lock").stat().st_ino
        folder_inode = out.stat().st_ino
        (out / "checkpoint.h5").write_bytes(b"ckpt")
        _write_set(str(out), 2)
        assert out.stat().st_ino != folder_inode, "the folder was exchanged, not edited file by file"
        assert (out / ".nmf.lock").stat().st_ino == lock_inode, "the held lock travels with the folder"
        assert (out / "checkpoint.h5").read_bytes() == b"ckpt"
    assert np.load(out / "W.npy")[0, 0] == 2.0 and io.read_report(str(out / "report.json"))["tag"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no staging folder is left"


def test_replace_together_leaves_other_peoples_files_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    folder_inode = out.stat().st_ino
    _write_set(str(out), 1)
    assert out.stat().st_ino == folder_inode, "a folder with other files is never swapped"
    assert (out / "notes.txt").read_text() == "mine"
    assert np.load(out / "W.npy")[0, 0] == 1.0


def test_replace_together_failure_changes_nothing(tmp_path):
    out = tmp_path / "out"
    _write_set(str(out.mkdir() or out), 1)
    with pytest.raises(RuntimeError):
        with io.replace_together(str(out), ["W.npy", "report.json"]) as staged:
            np.save(staged["W.npy"], np.zeros((2, 2)))
            raise RuntimeError("killed half-way")
    assert np.load(out / "W.npy")[0, 0] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_together_removes_staging_of_dead_runs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = tmp_path / ".out.staging-999999999-abcd1234"
    stale.mkdir()
    (stale / "W.npy").write_bytes(b"half")
    _write_set(str(out), 1)
    assert not stale.exists()
