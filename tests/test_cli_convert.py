"""`nmf convert IN OUT`: every format nmf reads to every format it writes, values and labels
intact, OUT written atomically, bad input refused with one line."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from conftest import labels, low_rank, one_error_line, run_nmf, write_csv
from nmfcli import errors
from nmfcli import io as nio
from nmfcli.cli import run

M, N = 9, 5
ROWS, COLS = labels("r", M), labels("w", N)


def nmf(capsys, *args):
    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _X():
    X = low_rank(M, N, seed=8)
    X[X < 0.5] = 0
    return X


@pytest.fixture
def d(tmp_path):
    X = _X()
    write_csv(tmp_path / "in.csv", X, ROWS, COLS)
    write_csv(tmp_path / "in.tsv.gz", X, ROWS, COLS, delimiter="\t", compress=True)
    np.save(tmp_path / "in.npy", X)
    sp.save_npz(tmp_path / "in.npz", sp.csr_matrix(X))
    scipy.io.mmwrite(str(tmp_path / "in.mtx"), sp.coo_matrix(X))
    with h5py.File(tmp_path / "in.h5", "w") as f:
        ds = f.create_dataset("data/X", data=X)
        ds.attrs["row_labels"] = np.array(ROWS, dtype=h5py.string_dtype())
        ds.attrs["col_labels"] = np.array(COLS, dtype=h5py.string_dtype())
    import zarr

    zarr.save_array(str(tmp_path / "in.zarr"), X)
    return tmp_path


LABELLED = {"in.csv", "in.tsv.gz", "in.h5"}


@pytest.mark.parametrize("source", ["in.csv", "in.tsv.gz", "in.npy", "in.npz", "in.mtx", "in.h5", "in.zarr"])
@pytest.mark.parametrize("target", ["out.csv", "out.tsv", "out.npy", "out.npz", "out.h5"])
def test_every_format_to_every_format(capsys, d, source, target):
    os.chdir(d)
    code, out, err = nmf(capsys, "convert", source, target, "-q")
    assert (code, out, err) == (0, "", "")
    back = nio.read_matrix(target)
    A = back.X.toarray() if sp.issparse(back.X) else back.X
    np.testing.assert_array_equal(A, _X())
    labelled = source in LABELLED
    if target.endswith((".npy", ".npz")):
        assert back.row_labels is None
        assert (d / "out.row_labels.txt").exists() == (d / "out.col_labels.txt").exists() == labelled
        if labelled:
            assert nio.read_labels("out.row_labels.txt") == ROWS and nio.read_labels("out.col_labels.txt") == COLS
    else:
        assert (back.row_labels, back.col_labels) == ((ROWS, COLS) if labelled else (None, None))
    if target == "out.h5":
        assert sp.issparse(back.X) == (source in ("in.npz", "in.mtx"))  # sparse stays sparse


def test_labels_of_npz_given_back_with_label_options(capsys, d):
    os.chdir(d)
    assert nmf(capsys, "convert", "in.csv", "plain.npz", "-q")[0] == 0
    code, _, err = nmf(capsys, "convert", "plain.npz", "again.csv", "--row-labels", "plain.row_labels.txt",
                       "--column-labels", "plain.col_labels.txt", "-q")
    assert code == 0, err
    again = nio.read_matrix("again.csv")
    assert (again.row_labels, again.col_labels) == (ROWS, COLS)
    np.testing.assert_array_equal(again.X, _X())


def test_dense_makes_sparse_data_readable_in_row_blocks(capsys, d):
    os.chdir(d)
    code, _, err = nmf(capsys, "convert", "in.npz", "dense.h5", "--dense", "-q")
    assert code == 0, err
    assert not sp.issparse(nio.read_matrix("dense.h5").X)
    assert nio.read_row_source("dense.h5").shape == (M, N)


def test_stdout_and_summary_line(capsys, d):
    os.chdir(d)
    code, out, err = nmf(capsys, "convert", "in.npy", "-")
    assert code == 0 and err == ""
    np.testing.assert_allclose(np.loadtxt(out.splitlines(), delimiter=","), _X(), rtol=0, atol=0)
    code, out, err = nmf(capsys, "convert", "in.npz", "out.h5")
    assert code == 0 and out == ""
    assert err.startswith(f"wrote out.h5: {M} x {N} float64 sparse, ")


def test_existing_output_is_refused_and_kept(capsys, d):
    os.chdir(d)
    (d / "out.npy").write_bytes(b"precious")
    code, _, err = nmf(capsys, "convert", "in.csv", "out.npy")
    assert code == errors.EXIT_CANT_CREATE
    assert err == "Error: out.npy: already exists; use --force to replace it\n"
    assert (d / "out.npy").read_bytes() == b"precious"
    assert not (d / "out.row_labels.txt").exists()
    assert nmf(capsys, "convert", "in.csv", "out.npy", "--force", "-q")[0] == 0
    np.testing.assert_array_equal(np.load(d / "out.npy"), _X())


def test_bad_input_leaves_nothing(capsys, d):
    os.chdir(d)
    (d / "ragged.csv").write_text("1,2,3\n4,5\n")
    code, _, err = nmf(capsys, "convert", "ragged.csv", "out.h5")
    assert code == errors.EXIT_DATA
    assert err == "Error: ragged.csv: line 2 has 2 fields, expected 3\n"
    assert sorted(p.name for p in d.iterdir() if p.name.startswith((".out", "out"))) == []


@pytest.mark.parametrize("args,code,message", [
    (["nope.csv", "out.npy"], errors.EXIT_NO_INPUT, "Error: nope.csv: no such file"),
    (["in.csv", "out.xyz"], errors.EXIT_USAGE,
     "Error: out.xyz: cannot tell the output format from its name; use a .csv, .tsv, .npy, .npz or .h5 file "
     "name, or --format"),
    (["in.csv", "in.csv", "--force"], errors.EXIT_USAGE, "Error: in.csv: is IN itself; write to another file"),
    (["in.npz", "out.csv", "--column-labels", "nope.txt"], errors.EXIT_NO_INPUT, "Error: nope.txt: no such file"),
])
def test_one_line_errors_from_a_real_process(d, args, code, message):
    proc = run_nmf("convert", *args, cwd=d)
    assert proc.returncode == code
    assert one_error_line(proc) == message
    assert not (d / "out.npy").exists() and not (d / "out.csv").exists()
