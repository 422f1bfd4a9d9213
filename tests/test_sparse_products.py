"""The numpy engine's threaded products with sparse X (engines/sparse_products.py).

X·V must be scipy's product bit for bit whatever the thread count; Xᵀ·V must not depend
on the thread count and must equal scipy's product to rounding; a fit on sparse X must
not depend on the thread count either; and the NNDSVD start must stay scikit-learn's,
bit for bit. The products split only above MIN_WORK, which these tests set to 0 so
that small matrices take the threaded path. The pool they run on (engines/threads.py)
is the exact solve's too.
"""

import threading

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import _nmf as sk_nmf

import nmfcli
from nmfcli.engines import sparse_products, threads
from nmfcli.engines.sparse_products import SparseProducts
from nmfcli.init import nndsvd_factors


@pytest.fixture
def always_split(monkeypatch):
    monkeypatch.setattr(sparse_products, "MIN_WORK", 0)


def random_csr(m, n, density, seed, dtype=np.float64, index_dtype=np.int32):
    X = sp.random(m, n, density=density, format="csr", random_state=seed, dtype=dtype)
    X.indices = X.indices.astype(index_dtype)
    X.indptr = X.indptr.astype(index_dtype)
    return X


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 60), n=st.integers(0, 60), c=st.integers(0, 6),
       density=st.sampled_from([0.0, 0.05, 0.3, 1.0]), seed=st.integers(0, 10**6),
       dtype=st.sampled_from([np.float64, np.float32]), index_dtype=st.sampled_from([np.int32, np.int64]))
def test_products_match_scipy_for_any_thread_count(m, n, c, density, seed, dtype, index_dtype):
    saved = sparse_products.MIN_WORK
    sparse_products.MIN_WORK = 0
    try:
        X = random_csr(m, n, density, seed, dtype, index_dtype)
        rng = np.random.default_rng(seed)
        V, U = rng.random((n, c)).astype(dtype), rng.random((m, c)).astype(dtype)
        values = rng.random(X.nnz).astype(dtype)
        products = SparseProducts(X)
        XV = [products.XV(V, workers=w) for w in (1, 2, 3)]
        XtV = [products.XtV(U, workers=w) for w in (1, 2, 3)]
        with_values = sp.csr_matrix((values, X.indices, X.indptr), shape=X.shape)
        for got in XV:
            assert got.dtype == dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, X @ V)
        for got in XtV:
            assert got.dtype == dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, XtV[0])
        np.testing.assert_allclose(XtV[0], X.T @ U, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)
        np.testing.assert_array_equal(products.XtV(U, workers=2, blocks=1), X.T @ U)
        np.testing.assert_array_equal(products.XV(V, values, workers=2), with_values @ V)
        np.testing.assert_allclose(products.XtV(U, values, workers=2), with_values.T @ U,
                                   rtol=1e-5 if dtype == np.float32 else 1e-12)
    finally:
        sparse_products.MIN_WORK = saved


def test_transposed_product_is_split_into_blocks(always_split):
    # Otherwise the test above would pass with one call, and prove nothing about the order.
    X = random_csr(400, 50, 0.2, 0)
    U = np.random.default_rng(0).random((400, 3))
    split = SparseProducts(X).XtV(U, workers=2)
    one = SparseProducts(X).XtV(U, workers=2, blocks=1)
    assert not np.array_equal(split, one)
    np.testing.assert_allclose(split, one, rtol=1e-12)


def test_products_run_in_blocks_on_the_pool(always_split, monkeypatch):
    calls = []
    real = sparse_products.csr_matvecs

    def spy(*args):
        calls.append((threading.get_ident(), args[0]))
        return real(*args)

    monkeypatch.setattr(sparse_products, "csr_matvecs", spy)
    X = random_csr(2000, 300, 0.1, 1)
    SparseProducts(X).XV(np.ones((300, 4)), workers=2)
    assert len(calls) == 2 and sum(rows for _, rows in calls) == 2000
    assert threading.get_ident() not in {thread for thread, _ in calls}


@pytest.mark.parametrize("solver,loss", [("ehals", "frobenius"), ("hals", "frobenius"), ("cd", "frobenius"),
                                         ("mu", "frobenius"), ("mu", "kl"), ("emu", "kl")])
def test_sparse_fit_does_not_depend_on_the_thread_count(always_split, monkeypatch, solver, loss):
    X = random_csr(120, 80, 0.2, 3)
    fits = []
    for workers in (1, 3):
        monkeypatch.setattr(threads, "count", lambda requested=None, w=workers: w)
        fits.append(nmfcli.fit(X, 5, solver=solver, loss=loss, max_iter=30, tol=0))
    np.testing.assert_array_equal(fits[0].W, fits[1].W)
    np.testing.assert_array_equal(fits[0].H, fits[1].H)
    dense = nmfcli.fit(X.toarray(), 5, solver=solver, loss=loss, max_iter=30, tol=0)
    np.testing.assert_allclose(fits[0].W @ fits[0].H, dense.W @ dense.H, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
@pytest.mark.parametrize("init", ["nndsvd", "nndsvda", "nndsvdar"])
def test_threaded_start_on_sparse_X_is_sklearns_bit_for_bit(always_split, monkeypatch, shape, init):
    monkeypatch.setattr(threads, "count", lambda requested=None: 2)
    X = random_csr(*shape, 0.1, 4)
    W1, H1 = sk_nmf._initialize_nmf(X, 6, init=init, random_state=7)
    W2, H2 = nndsvd_factors(X, 6, init, 7)
    np.testing.assert_array_equal(W2, W1)
    np.testing.assert_array_equal(H2, H1)


@pytest.mark.parametrize("broken", [None, lambda *args: None, lambda *args: 1 / 0])
def test_scipys_public_products_serve_when_its_loops_are_missing_or_changed(monkeypatch, broken):
    monkeypatch.setattr(sparse_products, "csr_matvecs", broken)
    sparse_products._loops_work.cache_clear()
    try:
        X = random_csr(50, 40, 0.2, 5)
        V, U = np.ones((40, 3)), np.ones((50, 3))
        products = SparseProducts(X)
        assert not products._direct
        np.testing.assert_array_equal(products.XV(V), X @ V)
        np.testing.assert_array_equal(products.XtV(U), X.T @ U)
    finally:
        monkeypatch.undo()
        sparse_products._loops_work.cache_clear()


def test_a_task_on_the_pool_runs_its_own_threaded_work_in_place():
    # Tasks that waited for tasks of the same pool could wait for ever once every thread is taken.
    inner = []

    def task(i):
        threads.run(lambda j: inner.append((i, j, threading.current_thread().name)), range(3), 2)

    threads.run(task, range(4), 2)
    assert sorted((i, j) for i, j, _ in inner) == [(i, j) for i in range(4) for j in range(3)]
    names = {(i, name) for i, _, name in inner}
    assert all(sum(1 for i2, _ in names if i2 == i) == 1 for i in range(4))  # each task's work on its thread


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_gets_pools_of_its_own(always_split):
    # The parent's pool threads do not exist in a forked child: using the inherited pool hung.
    import multiprocessing

    X = random_csr(400, 300, 0.1, 6)
    V = np.ones((300, 4))
    SparseProducts(X).XV(V, workers=2)  # the parent now keeps a pool of two threads
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        result = pool.apply_async(_threaded_product_in_child, (X, V))
        got = result.get(timeout=30)
    np.testing.assert_array_equal(got, X @ V)


def _threaded_product_in_child(X, V):
    sparse_products.MIN_WORK = 0
    return SparseProducts(X).XV(V, workers=2)
