"""Labels for every format: --row-labels/--column-labels FILE (one label a line) for fit,
transform and inspect, and the names HDF5 and AnnData files hold, through to every output."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import labels, low_rank, nmf_in_process, write_csv
from nmfcli import errors
from nmfcli import io as nio

M, N, K = 20, 9, 3


nmf = nmf_in_process


@pytest.fixture
def d(tmp_path):
    X = low_rank(M, N, seed=7)
    X[X < 0.4] = 0
    X[:, 0] += 0.1
    sp.save_npz(tmp_path / "docs.npz", sp.csr_matrix(X))
    np.save(tmp_path / "docs.npy", X)
    (tmp_path / "vocab.txt").write_text("".join(f"term{j}\n" for j in range(N)))
    (tmp_path / "titles.txt").write_text("\r\n".join(f"doc {i}" for i in range(M)))  # CR-LF, no final newline
    return tmp_path


def test_fit_puts_given_labels_into_model_report_and_factors(capsys, d):
    code, out, err = nmf(capsys, "fit", d / "docs.npz", "-k", K, "--column-labels", d / "vocab.txt",
                         "--row-labels", d / "titles.txt", "--format", "csv", "-o", d / "m", "--json", "-q")
    assert code == 0, err
    vocab, titles = labels("term", N), [f"doc {i}" for i in range(M)]
    report = json.loads(out)
    assert report["col_labels"] == vocab and report["row_labels"] == titles
    model = nio.read_model(d / "m" / "model.h5")
    assert model["col_labels"] == vocab and model["row_labels"] == titles
    H = nio.read_matrix(d / "m" / "H.csv")
    W = nio.read_matrix(d / "m" / "W.csv")
    assert H.col_labels == vocab and W.row_labels == titles
    code, out, _ = nmf(capsys, "inspect", d / "m" / "model.h5", "--top", 3)
    assert code == 0
    topics = [line for line in out.splitlines() if line.startswith(("  c0:", "  c1:", "  c2:"))][:K]
    assert all(line.split(": ", 1)[1].startswith("term") for line in topics), topics


def test_transform_takes_labels_and_checks_them_against_the_model(capsys, d):
    assert nmf(capsys, "fit", d / "docs.npz", "-k", K, "--column-labels", d / "vocab.txt", "-o", d / "m", "-q")[0] == 0
    code, out, err = nmf(capsys, "transform", d / "docs.npy", "--model", d / "m", "--row-labels", d / "titles.txt",
                         "--column-labels", d / "vocab.txt")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == ",c0,c1,c2"
    assert [line.split(",")[0] for line in lines[1:]] == [f"doc {i}" for i in range(M)]
    (d / "other.txt").write_text("".join(f"term{j}\n" for j in range(N - 1)) + "oops\n")
    code, _, err = nmf(capsys, "transform", d / "docs.npy", "--model", d / "m", "--column-labels", d / "other.txt")
    assert code == errors.EXIT_DATA
    assert err == (f"Error: {d / 'docs.npy'}: column {N} is 'oops' but {d / 'm'}'s column {N} is 'term{N - 1}'; "
                   "the columns must match, in the same order\n")


def test_label_count_must_match(capsys, d):
    (d / "short.txt").write_text("a\nb\n")
    code, _, err = nmf(capsys, "fit", d / "docs.npz", "-k", K, "--column-labels", d / "short.txt", "-o", d / "m")
    assert code == errors.EXIT_DATA
    assert err == (f"Error: {d / 'short.txt'}: has 2 labels but {d / 'docs.npz'} has {N} columns; "
                   "give one label a column\n")
    assert not (d / "m").exists()


def test_missing_or_empty_label_file(capsys, d):
    code, _, err = nmf(capsys, "fit", d / "docs.npz", "-k", K, "--row-labels", d / "nope.txt", "-o", d / "m")
    assert code == errors.EXIT_NO_INPUT
    assert err == f"Error: {d / 'nope.txt'}: no such file\n"
    (d / "empty.txt").write_text("")
    code, _, err = nmf(capsys, "fit", d / "docs.npz", "-k", K, "--row-labels", d / "empty.txt", "-o", d / "m")
    assert code == errors.EXIT_DATA
    assert err == f"Error: {d / 'empty.txt'}: the label file is empty; it needs one label a line\n"


def test_given_labels_must_agree_with_the_ones_the_input_holds(capsys, d):
    X = np.load(d / "docs.npy")
    write_csv(d / "docs.csv", X, None, labels("w", N))
    code, _, err = nmf(capsys, "fit", d / "docs.csv", "-k", K, "--column-labels", d / "vocab.txt", "-o", d / "m")
    assert code == errors.EXIT_DATA
    assert err == (f"Error: {d / 'vocab.txt'}: column 1 is 'term0' but {d / 'docs.csv'}'s column 1 is 'w0'; "
                   "the columns must match, in the same order\n")


def test_inspect_labels_a_model_fitted_without_them(capsys, d):
    assert nmf(capsys, "fit", d / "docs.npz", "-k", K, "-o", d / "m", "-q")[0] == 0
    code, out, _ = nmf(capsys, "inspect", d / "m", "--json")
    assert all(f["label"].isdigit() for f in json.loads(out)["components"][0]["top_features"])
    code, out, err = nmf(capsys, "inspect", d / "m", "--json", "--column-labels", d / "vocab.txt",
                         "--row-labels", d / "titles.txt")
    assert code == 0, err
    info = json.loads(out)
    assert all(f["label"].startswith("term") for c in info["components"] for f in c["top_features"])
    assert all(f["label"].startswith("doc ") for c in info["components"] for f in c["top_rows"])


def _anndata(path, X, obs, var):
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.create_dataset("X", data=X)
        for key, names in (("obs", obs), ("var", var)):
            g = f.create_group(key)
            g.attrs["_index"] = "_index"
            g.create_dataset("_index", data=np.array(names, dtype=h5py.string_dtype()))


@pytest.mark.parametrize("blocks", [False, True], ids=["in-memory", "row-blocks"])
def test_anndata_names_flow_to_every_output(capsys, d, blocks):
    X = np.load(d / "docs.npy")
    cells, genes = [f"cell{i}" for i in range(M)], [f"gene{j}" for j in range(N)]
    _anndata(d / "cells.h5ad", X, cells, genes)
    extra = ["--chunk-rows", 7] if blocks else []
    code, out, err = nmf(capsys, "fit", d / "cells.h5ad", "-k", K, "--format", "h5", "-o", d / "m", "--json", "-q",
                         *extra)
    assert code == 0, err
    report = json.loads(out)
    assert report["row_labels"] == cells and report["col_labels"] == genes
    H = nio.read_matrix(d / "m" / "H.h5")
    assert H.col_labels == genes and H.row_labels == ["c0", "c1", "c2"]
    code, out, err = nmf(capsys, "transform", d / "cells.h5ad", "--model", d / "m", *extra)
    assert code == 0, err
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == cells
