"""nmfcli.summary: the statistics and rankings inspect prints, checked against obvious slow code."""

import numpy as np
import pytest
import scipy.sparse as sp

from nmfcli import summary


def test_matrix_stats_dense_counts_everything():
    X = np.array([[0.0, 1.0, -2.0], [0.0, 0.0, 0.0], [np.nan, np.inf, 4.0]])
    s = summary.matrix_stats(X)
    assert s["shape"] == [3, 3] and s["dtype"] == "float64" and not s["sparse"]
    assert s["negative"] == 1 and s["nan"] == 1 and s["inf"] == 1
    assert s["zero_rows"] == 1 and s["zero_cols"] == 0
    assert s["nnz"] == 5 and s["density"] == pytest.approx(5 / 9)
    finite = [0, 1, -2, 0, 0, 0, 4]
    assert s["min"] == -2 and s["max"] == 4 and s["mean"] == pytest.approx(np.mean(finite))


def test_matrix_stats_sparse_equals_dense():
    rng = np.random.default_rng(0)
    X = rng.random((8, 6))
    X[X < 0.6] = 0
    X[:, 2] = 0
    X[3] = 0
    dense, sparse = summary.matrix_stats(X), summary.matrix_stats(sp.csr_matrix(X))
    for key in ("shape", "nnz", "density", "negative", "nan", "inf", "zero_rows", "zero_cols"):
        assert dense[key] == sparse[key], key
    for key in ("min", "max", "mean"):
        assert dense[key] == pytest.approx(sparse[key])
    assert sparse["sparse"] and sparse["zero_cols"] == 1 and sparse["zero_rows"] == 1


def test_stored_zeros_in_sparse_count_as_zero():
    X = sp.csr_matrix((np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 1, 2])), shape=(2, 2))
    s = summary.matrix_stats(X)
    assert s["nnz"] == 1 and s["zero_rows"] == 1 and s["zero_cols"] == 1


def test_top_features_order_labels_and_zeros():
    H = np.array([[0.1, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 2.0]])
    top = summary.top_features(H, ["a", "b", "c", "d"], 3)
    assert top[0] == [("b", 0.5), ("d", 0.5), ("a", 0.1)]
    assert top[1] == [("d", 2.0)]  # zero weights are not features
    assert summary.top_features(H, None, 1) == [[("1", 0.5)], [("3", 2.0)]]


def test_first_label_mismatch():
    assert summary.first_label_mismatch(["a", "b", "c"], ["a", "x", "y"]) == (2, "b", "x")
    assert summary.first_label_mismatch(["a"], ["a"]) is None
    assert summary.first_label_mismatch(None, ["a"]) is None


def test_memory_estimate_counts_X_and_the_core_estimate():
    from nmfcli import core

    X = np.zeros((100, 50), dtype=np.float32)
    assert summary.matrix_bytes(X) == 100 * 50 * 4
    assert summary.fit_memory(X, 5) == 100 * 50 * 4 + core.estimate_fit_bytes((100, 50), 5, np.float32)
    S = sp.random(100, 50, density=0.1, format="csr", random_state=0)
    assert summary.matrix_bytes(S) == S.data.nbytes + S.indices.nbytes + S.indptr.nbytes


def test_component_names_and_bytes():
    assert summary.component_names(3) == ["c0", "c1", "c2"]
    assert summary.format_bytes(1536) == "1.5 KiB" and summary.format_bytes(10) == "10 bytes"
    assert summary.beta_of("kl") == 1.0 and summary.beta_of("0.5") == 0.5 and summary.beta_of("x") is None
