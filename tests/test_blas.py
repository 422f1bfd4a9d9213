"""BLAS threads during a fit: one thread, the outer count for the products with X, restored after.

These need a BLAS whose thread count can be set (the OpenBLAS that numpy's and
scipy's wheels ship); elsewhere they skip, since the engine then leaves threads
alone and only speed depends on it.
"""

import os

import numpy as np
import pytest

import nmfcli
from nmfcli.engines import blas

LIBRARIES = blas.libraries()
needs_blas = pytest.mark.skipif(not LIBRARIES, reason="no BLAS with a settable thread count is loaded")


@pytest.fixture
def two_threads():
    """Every library at 2 threads for the test, then back to what it had."""
    before = [(lib, lib.get()) for lib in LIBRARIES]
    for lib in LIBRARIES:
        lib.set(2)
    yield
    for lib, count in before:
        lib.set(count)


def counts():
    return [lib.get() for lib in LIBRARIES]


def data(m=80, n=50):
    return np.abs(np.random.RandomState(0).randn(m, n)) + 0.01


@needs_blas
def test_numpy_openblas_is_found_where_numpy_uses_openblas():
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    if "openblas" not in config.lower():
        pytest.skip(f"numpy uses {config}")
    assert any("openblas" in lib.path.lower() for lib in LIBRARIES)


@needs_blas
def test_fit_threads_is_one_thread_products_get_the_outer_count_and_all_comes_back(two_threads):
    with blas.fit_threads():
        assert counts() == [1] * len(LIBRARIES)
        with blas.product_threads():
            assert counts() == [2] * len(LIBRARIES)
        assert counts() == [1] * len(LIBRARIES)
        with blas.fit_threads():  # a nested fit leaves the outer one's setting
            pass
        assert counts() == [1] * len(LIBRARIES)
    assert counts() == [2] * len(LIBRARIES)


@needs_blas
def test_product_threads_outside_a_fit_changes_nothing(two_threads):
    LIBRARIES[0].set(1)
    with blas.product_threads():
        assert counts()[0] == 1
    assert counts()[0] == 1


@needs_blas
def test_a_fit_runs_on_one_thread_and_restores_the_counts(two_threads):
    seen = []
    nmfcli.fit(data(), 3, max_iter=3, callback=lambda info: seen.append(counts()))
    assert seen == [[1] * len(LIBRARIES)] * 3
    assert counts() == [2] * len(LIBRARIES)


@needs_blas
def test_a_fit_that_raises_still_restores_the_counts(two_threads):
    def fail(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nmfcli.fit(data(), 3, max_iter=5, callback=fail)
    assert counts() == [2] * len(LIBRARIES)


@needs_blas
@pytest.mark.parametrize("loss", ["frobenius", "kl"])
def test_the_thread_count_does_not_change_the_fit(two_threads, loss, monkeypatch):
    X = data(300, 120)
    threaded = nmfcli.fit(X, 4, loss=loss, max_iter=20, tol=0)
    monkeypatch.setattr(blas, "product_threads", blas.fit_threads)  # every call on one thread
    single = nmfcli.fit(X, 4, loss=loss, max_iter=20, tol=0)
    np.testing.assert_allclose(single.W, threaded.W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(single.H, threaded.H, rtol=1e-10, atol=1e-12)


@needs_blas
def test_the_exact_solve_on_threads_equals_the_serial_solve(two_threads, monkeypatch):
    """The numpy engine runs the exact solve's column chunks on one thread per outer BLAS thread."""
    import threading

    from nmfcli.engines.numpy import NumpyEngine
    from nmfcli.solvers import nnls

    monkeypatch.setattr(nnls, "CHUNK_ENTRIES", 16 * 10)  # 10 columns a chunk at k = 4
    rng = np.random.RandomState(3)
    B = rng.randn(4, 30)
    G = B @ B.T
    C = rng.randn(4, 200) * 5
    engine = NumpyEngine(data(), np.float64)
    threads = set()

    def map_chunks(f, chunks):
        def recorded(chunk):
            threads.add(threading.get_ident())
            return f(chunk)

        engine.map_chunks(recorded, chunks)

    with blas.fit_threads():
        parallel, _ = nnls.nnls(G, C, map_chunks=map_chunks)
    serial, _ = nnls.nnls(G, C)
    np.testing.assert_array_equal(parallel, serial)
    # On the pool's threads (at most the outer count), not on the caller's.
    assert threads and threading.get_ident() not in threads and len(threads) <= 2


@needs_blas
def test_without_proc_maps_the_wheels_own_blas_folders_are_searched(monkeypatch):
    """Off Linux there is no /proc/self/maps: numpy's and scipy's wheel folders are looked in."""
    linux = {lib.path for lib in LIBRARIES}
    monkeypatch.setattr(blas.sys, "platform", "darwin")
    found = {lib.path for lib in blas.libraries()}
    wheel_libraries = {p for p in linux if ".libs" in p or ".dylibs" in p}
    if not wheel_libraries:
        pytest.skip("numpy's BLAS does not come from its wheel here")
    assert {os.path.realpath(p) for p in wheel_libraries} <= {os.path.realpath(p) for p in found}


def test_libraries_are_scanned_again_only_after_an_import(monkeypatch):
    import sys
    import types

    scans = []
    real = blas._loaded_paths
    monkeypatch.setattr(blas, "_loaded_paths", lambda: scans.append(1) or real())
    monkeypatch.setattr(blas, "_scanned", (None, []))
    first = blas.libraries()
    assert blas.libraries() == first and len(scans) == 1, "a second call must not scan again"
    monkeypatch.setitem(sys.modules, "nmfcli_test_new_module", types.ModuleType("nmfcli_test_new_module"))
    assert blas.libraries() == first and len(scans) == 2, "an import may bring a BLAS: scan again"
