"""Every engine runs the same solvers and must give the numpy engine's numbers.

array_api_strict stands in for CuPy on machines without a GPU: it runs the
whole GPU code path on the CPU and rejects numpy-only habits (``out=``,
boolean-mask assignment, implicit host copies). The CuPy cases carry the
``gpu`` marker and skip cleanly where CuPy or a device is missing.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import nmfcli
from nmfcli import core
from nmfcli.errors import UnavailableError, UsageError


def _cupy_usable():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "skip"
        return False


STRICT = pytest.param("array-api-strict", id="strict")
CUPY = pytest.param("cupy", id="cupy", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")])
ENGINES = [STRICT, CUPY]
CASES = [("ehals", 2.0), ("hals", 2.0), ("cd", 2.0), ("mu", 2.0), ("mu", 1.0), ("emu", 1.0), ("mu", 0.0), ("emu", 0.0),
         ("mu", 0.5), ("emu", 0.5), ("mu", 1.5), ("emu", 1.5), ("mu", 3.0), ("emu", 3.0)]


def data(dtype=np.float64, m=60, n=40, seed=0):
    return (np.abs(np.random.RandomState(seed).randn(m, n)) + 0.01).astype(dtype)


def tolerance(engine, dtype):
    if engine == "array-api-strict":
        return 1e-10 if dtype == np.float64 else 1e-4
    return 1e-5 if dtype == np.float64 else 1e-3


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("solver,beta", CASES)
@pytest.mark.parametrize("alpha", [0.0, 0.01])
def test_engine_matches_numpy_float64(engine, solver, beta, alpha):
    X = data()
    kw = dict(solver=solver, loss=beta, max_iter=40, alpha_W=alpha, l1_ratio=0.5)
    namespaces = set()
    got = nmfcli.fit(X, 4, engine=engine, callback=lambda info: namespaces.add(
        type(info.W).__module__.split(".")[0]), **kw)
    ref = nmfcli.fit(X, 4, **kw)
    assert namespaces and "numpy" not in namespaces, "the engine must iterate on its own arrays"
    assert isinstance(got.W, np.ndarray) and isinstance(got.H, np.ndarray)
    scale = max(np.abs(ref.W).max(), 1e-300)
    assert np.abs(got.W - ref.W).max() / scale <= tolerance(engine, np.float64)
    assert got.n_iter == ref.n_iter
    # The GPU sums in other orders (cuBLAS, the fused sweep): the objective agrees to the tolerance.
    rel = 1e-9 if engine == "array-api-strict" else tolerance(engine, np.float64)
    assert got.metrics["objective"] == pytest.approx(ref.metrics["objective"], rel=rel)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("solver,beta", [("hals", 2.0), ("mu", 1.0), ("emu", 1.0)])
def test_engine_float32(engine, solver, beta):
    X = data(np.float32)
    got = nmfcli.fit(X, 4, engine=engine, solver=solver, loss=beta, max_iter=30)
    ref = nmfcli.fit(X, 4, solver=solver, loss=beta, max_iter=30)
    assert got.W.dtype == np.float32 and got.H.dtype == np.float32
    assert got.metrics["objective"] == pytest.approx(ref.metrics["objective"], rel=1e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_fixed_factors_keep_the_fixed_one(engine):
    X = data()
    H = np.random.RandomState(1).rand(3, X.shape[1])
    for loss in ("kl", "is"):
        r = nmfcli.fit(X, 3, loss=loss, fix_H=H, engine=engine, max_iter=30)
        ref = nmfcli.fit(X, 3, loss=loss, fix_H=H, max_iter=30)
        assert np.array_equal(r.H, H)
        np.testing.assert_allclose(r.W, ref.W, rtol=1e-8 if engine == "array-api-strict" else tolerance(engine, np.float64))


def sparse_data(dtype=np.float64):
    X = sp.random(300, 200, density=0.05, random_state=0, format="csr", dtype=np.float64)
    X.data += 0.1
    return X.astype(dtype)


SPARSE_CASES = [("ehals", 2.0), ("hals", 2.0), ("cd", 2.0), ("mu", 2.0), ("mu", 1.0), ("emu", 1.0), ("mu", 0.5),
                ("emu", 0.5), ("emu", 3.0)]


@pytest.mark.parametrize("solver,beta", SPARSE_CASES)
def test_generic_sparse_path_matches_numpy(solver, beta):
    # The array-API engine's own sparse code (CuPy's), run on numpy + scipy.sparse.
    X = sparse_data()
    got = nmfcli.fit(X, 5, engine="array-api-numpy", solver=solver, loss=beta, max_iter=30)
    ref = nmfcli.fit(X, 5, solver=solver, loss=beta, max_iter=30)
    assert got.options["engine"] == "array-api-numpy"
    np.testing.assert_allclose(got.W, ref.W, rtol=1e-10, atol=1e-12)
    H = ref.H
    np.testing.assert_allclose(nmfcli.transform(X, H, engine="array-api-numpy"), nmfcli.transform(X, H),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("entries", [7 * 40, 1 << 27], ids=["7-rows", "whole"])
@pytest.mark.parametrize("solver,beta", [("mu", 1.0), ("emu", 0.0), ("emu", 1.5), ("ehals", 2.0)])
def test_row_blocks_of_any_size_give_the_same_fit(entries, solver, beta, monkeypatch):
    # The CuPy engine takes row blocks of up to 2²⁷ entries where the CPU's hold 2¹⁸: only the
    # order of the sums changes (the products, the divergence and the stopping test).
    from nmfcli.engines.array_api import ArrayEngine

    X = data()
    ref = nmfcli.fit(X, 4, solver=solver, loss=beta, max_iter=30)
    monkeypatch.setattr(ArrayEngine, "block_entries", entries)
    got = nmfcli.fit(X, 4, engine="array-api-numpy", solver=solver, loss=beta, max_iter=30)
    np.testing.assert_allclose(got.W, ref.W, rtol=1e-10, atol=1e-12)
    assert got.metrics["beta_divergence"] == pytest.approx(ref.metrics["beta_divergence"], rel=1e-12)


def test_generic_exact_solve_in_blocks_gives_the_same_bits(monkeypatch):
    # The blocks that a progress callback brings, on the array-API engine's path (CuPy's).
    X, H = data(), nmfcli.fit(data(), 5, max_iter=30).H
    whole = nmfcli.transform(X, H, engine="array-api-numpy")
    monkeypatch.setattr(core, "MIN_SOLVE_BLOCK", 7)
    seen = []
    blocks = nmfcli.transform(X, H, engine="array-api-numpy", progress=lambda done, total: seen.append(done))
    assert np.array_equal(blocks, whole) and len(seen) > 2 and seen[-1] == X.shape[0]


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("solver,beta", SPARSE_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cupy_sparse_matches_numpy(solver, beta, dtype):
    X = sparse_data(dtype)
    got = nmfcli.fit(X, 5, engine="cupy", solver=solver, loss=beta, max_iter=30)
    ref = nmfcli.fit(X, 5, solver=solver, loss=beta, max_iter=30)
    assert got.W.dtype == dtype and got.options["engine"] == "cupy"
    rel = tolerance("cupy", dtype)
    assert got.metrics["objective"] == pytest.approx(ref.metrics["objective"], rel=rel)
    if dtype == np.float64:
        np.testing.assert_allclose(got.W, ref.W, rtol=0, atol=rel * np.abs(ref.W).max())


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_cupy_exact_transform_matches_numpy_and_scipy(sparse):
    from scipy.optimize import nnls as scipy_nnls

    X = sparse_data() if sparse else data()
    H = nmfcli.fit(X, 5, max_iter=30).H
    got = nmfcli.transform(X, H, engine="cupy")
    ref = nmfcli.transform(X, H)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    with pytest.MonkeyPatch.context() as patch:  # in blocks, as with a progress bar
        patch.setattr(core, "MIN_SOLVE_BLOCK", 7)
        seen = []
        blocks = nmfcli.transform(X, H, engine="cupy", progress=lambda done, total: seen.append(done))
    assert np.array_equal(blocks, got) and seen[-1] == X.shape[0]
    dense = X.toarray() if sparse else X
    for i in (0, 7, 29):
        np.testing.assert_allclose(got[i], scipy_nnls(H.T, dense[i])[0], rtol=1e-6, atol=1e-8)


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
def test_cupy_transform_with_duplicate_components_is_finite():
    # Two equal rows of H make passive-set systems singular; CuPy must fall back as numpy does.
    X = data()
    H = nmfcli.fit(X, 3, max_iter=20).H
    H = np.vstack([H, H[:1]])
    got = nmfcli.transform(X, H, engine="cupy")
    ref = nmfcli.transform(X, H)
    assert np.isfinite(got).all() and (got >= 0).all()
    assert np.linalg.norm(X - got @ H) == pytest.approx(np.linalg.norm(X - ref @ H), rel=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", [7, 70], ids=["unrolled", "any-k"])
@pytest.mark.parametrize("graph", [True, False], ids=["graph", "launches"])
def test_cupy_fused_sweeps_equal_the_row_by_row_sweeps(dtype, k, graph, monkeypatch):
    import cupy

    from nmfcli.engines import cupy as cupy_engine
    from nmfcli.solvers import cd

    monkeypatch.setattr(cupy_engine, "GRAPH", graph)

    rng = np.random.default_rng(0)
    p = 1000  # 1000 columns: several blocks, the last one partly empty
    B = rng.random((k, k))
    G = B @ B.T + 0.1 * np.eye(k)
    G[3, :] = G[:, 3] = 0  # a flat row: kept as it is
    A0 = rng.random((k, p))
    R = G @ rng.random((k, p)) - 0.3
    Gs, Rs = (a.astype(dtype) for a in cd._scaled(G, R))
    engine = cupy_engine.CupyEngine(np.ones((2, 2)), dtype)
    assert engine.inner_sweeps is not None and cupy_engine._sweep_kernel(dtype, k) is not None, "it must compile"

    def host(max_inner, delta):
        A = A0.astype(dtype)
        cd.inner_sweeps(A, Gs, Rs, max_inner, delta)
        return A

    # delta 0.5 stops early (its result differs from 12 full sweeps); the device must stop at the same sweep.
    assert np.abs(host(12, 0.5) - host(12, 0.0)).max() > 1e-3
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for max_inner, delta in [(1, 0.1), (3, 0.0), (12, 0.5), (12, 0.0)]:
        fused = cupy.asarray(A0.astype(dtype))
        engine.inner_sweeps(fused, cupy.asarray(Gs), cupy.asarray(Rs), max_inner, delta)
        expected = host(max_inner, delta)
        np.testing.assert_allclose(cupy.asnumpy(fused), expected, rtol=tol, atol=tol)
        np.testing.assert_array_equal(cupy.asnumpy(fused)[3], A0[3].astype(dtype))
    assert bool(engine._graphs) == graph and all(engine._graphs.values()), "the graphs must record"


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("graph", [True, False], ids=["graph", "launches"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("solver,loss,iterations", [("hals", "frobenius", 25), ("ehals", "frobenius", 25),
                                                    ("emu", "kl", 40)])
def test_cupy_objective_history_matches_numpy(graph, sparse, solver, loss, iterations, monkeypatch):
    # Every recorded objective, the first ones included (the iterations that record graphs):
    # ehals read ~1e-31 there on the H100 while graphs overwrote them, and acted on it.
    from nmfcli.engines import cupy as cupy_engine

    monkeypatch.setattr(cupy_engine, "GRAPH", graph)
    X = sparse_data() if sparse else data()
    got = nmfcli.fit(X, 5, engine="cupy", solver=solver, loss=loss, max_iter=iterations, tol=0)
    ref = nmfcli.fit(X, 5, solver=solver, loss=loss, max_iter=iterations, tol=0)
    assert got.options["solver"] == solver
    np.testing.assert_allclose(got.history, ref.history, rtol=1e-6)


def random_scaled(rng, k, p):
    """(Gs, Rs) of cd's scaled sweep for a random positive definite k×k Gram matrix and k×p cross term."""
    from nmfcli.solvers import cd

    B = rng.random((k, k))
    return cd._scaled(B @ B.T + 0.1 * np.eye(k), rng.random((k, k)) @ rng.random((k, p)))


@pytest.fixture
def graph_engine(monkeypatch):
    """(cupy, a float64 CupyEngine that replays its sweeps as CUDA graphs)."""
    import cupy

    from nmfcli.engines import cupy as cupy_engine

    monkeypatch.setattr(cupy_engine, "GRAPH", True)
    return cupy, cupy_engine.CupyEngine(np.ones((2, 2)), np.float64)


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
def test_cupy_graph_replays_write_only_into_buffers_they_own(graph_engine):
    # The first graphs kept no reference to the buffer their kernels sum changes into: CuPy's
    # pool handed it to the next small array, and every replay zeroed and overwrote it.
    cupy, engine = graph_engine
    rng = np.random.default_rng(2)
    Gs, Rs = (cupy.asarray(a) for a in random_scaled(rng, 6, 500))
    A = cupy.asarray(rng.random((6, 500)))
    engine.inner_sweeps(A, Gs, Rs, 10, 0.1)  # records
    sentinels = [cupy.full(n, 12345.0) for n in (1, 2, 8, 10, 16, 64) for _ in range(50)]
    for _ in range(3):
        engine.inner_sweeps(A, Gs, Rs, 10, 0.1)  # replays
    assert all(bool((s == 12345.0).all()) for s in sentinels), "a replay wrote into memory it does not own"


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
def test_cupy_graph_replays_the_sweeps_with_new_inputs(graph_engine):
    # One factor swept in three outer iterations: the graph recorded for it must read each call's Gs and Rs.
    from nmfcli.solvers import cd

    cupy, engine = graph_engine
    rng = np.random.default_rng(1)
    host = rng.random((6, 500))
    device = cupy.asarray(host)
    for _ in range(3):
        Gs, Rs = random_scaled(rng, 6, 500)
        cd.inner_sweeps(host, Gs, Rs, 10, 0.1)
        engine.inner_sweeps(device, cupy.asarray(Gs), cupy.asarray(Rs), 10, 0.1)
        np.testing.assert_allclose(cupy.asnumpy(device), host, rtol=1e-10, atol=1e-12)
    assert len(engine._graphs) == 1, "one graph for the one factor, replayed"


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
@pytest.mark.parametrize("room", [True, False], ids=["kept", "no-room"])
def test_cupy_sparse_wtx_with_and_without_a_copy_of_xt(room, monkeypatch):
    import cupy

    from nmfcli.engines import cupy as cupy_engine

    X = sparse_data()
    if not room:  # enough for X, not for a second copy
        monkeypatch.setattr(cupy.cuda.runtime, "memGetInfo", lambda: (cupy_engine._device_bytes(X, np.float64) + 1,
                                                                      1 << 30))
    engine = cupy_engine.CupyEngine(X, np.float64)
    assert (engine._Xt is not None) == room
    W = np.random.default_rng(0).random((X.shape[0], 5))
    got = engine.WtX(cupy.asarray(np.ascontiguousarray(W.T)).T)
    assert got.flags.c_contiguous
    np.testing.assert_allclose(cupy.asnumpy(got), (X.T @ W).T, rtol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
def test_cupy_says_when_x_does_not_fit(monkeypatch):
    import cupy

    monkeypatch.setattr(cupy.cuda.runtime, "memGetInfo", lambda: (1 << 20, 1 << 30))
    with pytest.raises(UnavailableError, match=r"^X needs about 15\.3 MiB on the GPU but 1\.0 MiB is free; use"):
        nmfcli.fit(np.ones((1000, 1000)), 2, engine="cupy")


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
def test_auto_engine_picks_cupy_with_a_gpu():
    result = nmfcli.fit(data(), 2, engine="auto", max_iter=3)
    assert result.options["engine"] == "cupy" and result.options["solver"] == "ehals"


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
def test_cli_fit_on_cupy(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO

    X = data()
    np.save(tmp_path / "X.npy", X)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "nmfcli", "fit", "X.npy", "--k", "3", "--engine", "cupy",
                           "--max-iter", "50", "-o", "out"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ref = nmfcli.fit(X, 3, max_iter=50)  # "auto" is ehals on both engines
    W = np.load(tmp_path / "out" / "W.npy")
    np.testing.assert_allclose(W, ref.W, rtol=0, atol=1e-5 * np.abs(ref.W).max())


def test_array_api_names_are_filled_in_for_an_older_library():
    import types

    from nmfcli.engines.array_api import with_array_api_names

    assert with_array_api_names(np) is np  # numpy 2 has them all
    old = types.ModuleType("old")
    old.__dict__.update({k: v for k, v in vars(np).items() if k not in ("astype", "vecdot")})
    old.linalg = types.ModuleType("old.linalg")
    old.linalg.__dict__.update({k: v for k, v in vars(np.linalg).items() if k != "diagonal"})
    real_asarray = np.asarray
    old.asarray = lambda obj, dtype=None: real_asarray(obj, dtype=dtype)  # no copy=
    xp = with_array_api_names(old)
    a = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(xp.linalg.diagonal(np.arange(9.0).reshape(3, 3)), [0.0, 4.0, 8.0])
    assert xp.linalg.solve is np.linalg.solve
    copy = xp.asarray(a, copy=True)
    copy[0, 0] = 9
    assert a[0, 0] == 0 and xp.asarray(a) is a
    assert xp.astype(a, np.float32).dtype == np.float32
    assert xp.vecdot(a, a) == pytest.approx([5.0, 50.0])
    assert not hasattr(old, "vecdot"), "the library itself is left as it is"


@pytest.mark.parametrize("solver,loss,plain", [("ehals", 2.0, "hals"), ("emu", 1.0, "mu"), ("emu", 0.0, "mu"),
                                               ("emu", 1.5, "mu")])
def test_the_solvers_read_from_the_device_only_for_their_stopping_test(solver, loss, plain, monkeypatch):
    # No per-iteration round trip to a GPU beyond the stopping test, checked every
    # CHECK_EVERY iterations; ehals and emu decide on their extrapolated steps on the device,
    # so they read no more than hals and mu. The strict namespace stands in for the device:
    # every float(), bool() or int() of one of its arrays, and every copy to the host, is a
    # read that would wait for a GPU.
    import array_api_strict

    from nmfcli.engines.array_api import ArrayEngine
    from nmfcli.solvers import cd, mu

    Array = type(array_api_strict.asarray(0.0))
    reads = []
    for name in ("__float__", "__bool__", "__int__", "__index__"):
        if hasattr(Array, name):
            original = getattr(Array, name)
            monkeypatch.setattr(Array, name, lambda self, _original=original: reads.append(1) or _original(self))
    to_host = ArrayEngine.to_host
    monkeypatch.setattr(ArrayEngine, "to_host", lambda self, a: reads.append(1) or to_host(self, a))
    # The strict engine runs the solvers' host-side inner loop (a read per sweep); the CuPy
    # engine stops its sweeps on the device. Stand in for that with two sweeps, no reads.
    monkeypatch.setattr(cd, "inner_sweeps", lambda A, Gs, Rs, max_inner, delta: [
        cd._sweeper(A, Gs, Rs)() for _ in range(2)])

    def reads_in(solver, max_iter, callback=None):
        reads.clear()
        result = nmfcli.fit(data(), 4, engine="array-api-strict", solver=solver, loss=loss, max_iter=max_iter, tol=0,
                            callback=callback)
        assert result.n_iter == max_iter
        return len(reads)

    def extra(solver, callback=None):  # in 40 iterations: the fixed costs (start, final metrics) cancel
        return reads_in(solver, 60, callback) - reads_in(solver, 20, callback)

    tests = 40 // (cd.CHECK_EVERY if plain == "hals" else mu.CHECK_EVERY)
    assert 0 < extra(plain) <= 3 * tests, f"{plain}: {extra(plain)} reads in 40 iterations"
    assert extra(solver) <= extra(plain), f"{solver}: {extra(solver)} reads in 40 iterations, {plain}: {extra(plain)}"
    # A callback that does not ask for the objective (the CLI's, between refreshes of its bar) reads nothing.
    assert extra(solver, callback=lambda info: None) == extra(solver)


STEP_CASES = [("ehals", 2.0, False), ("emu", 1.0, False), ("emu", 0.0, False), ("emu", 1.5, False),
              ("emu", 1.0, True)]


def overshooting(monkeypatch):
    """β that grows three times as fast (many steps rejected), and the host's decisions, as they are made."""
    from nmfcli.solvers import cd

    monkeypatch.setattr(cd, "GAMMA", 3.0)
    decisions = []
    host_beta = cd.ehals_beta
    monkeypatch.setattr(cd, "ehals_beta", lambda state, kept: decisions.append(kept) or host_beta(state, kept))
    return decisions


def step_fit_options(solver, loss, fixed, X):
    kw = dict(solver=solver, loss=loss, tol=0)
    if fixed:  # transform's flow: one free factor
        kw["fix_H"] = np.random.RandomState(3).rand(4, X.shape[1])
    return kw


@pytest.mark.parametrize("engine", ["array-api-strict", "array-api-numpy", CUPY])
@pytest.mark.parametrize("solver,loss,fixed", STEP_CASES)
def test_steps_decided_on_the_device_follow_the_host(engine, solver, loss, fixed, monkeypatch):
    # The numpy engine keeps or rejects each extrapolated step on the host; the array-API
    # engines (CuPy's path) choose between the step's arrays and the current ones on the
    # device. With many rejections, both must follow the same iterates.
    decisions = overshooting(monkeypatch)
    X = data()
    kw = step_fit_options(solver, loss, fixed, X)
    ref = nmfcli.fit(X, 4, max_iter=60, **kw)
    assert decisions.count(False) >= 2 and decisions.count(True) >= 10, decisions
    decisions.clear()
    got = nmfcli.fit(X, 4, engine=engine, max_iter=60, **kw)
    assert decisions == [], "the engine must decide on the device"
    rel = 1e-10 if engine != "cupy" else tolerance(engine, np.float64)
    np.testing.assert_allclose(got.W, ref.W, rtol=0, atol=rel * np.abs(ref.W).max())
    np.testing.assert_allclose(got.history, ref.history, rtol=rel)


@pytest.mark.parametrize("solver,loss,fixed", STEP_CASES)
def test_a_device_decided_fit_resumes_bit_for_bit(solver, loss, fixed, monkeypatch):
    # A checkpoint reads the device's β (and emu's bound, inf there after a rejection, None in
    # the checkpoint); the resumed fit must go on exactly as the uninterrupted one.
    from conftest import checkpoint_at

    overshooting(monkeypatch)
    X = data()
    kw = step_fit_options(solver, loss, fixed, X)
    full = nmfcli.fit(X, 4, engine="array-api-numpy", max_iter=40, **kw)
    after_rejection = []
    for stop in (6, 7, 13, 17, 21, 25, 31, 36, 38):  # for this data, emu's cases reject a step before some
        saved, callback = checkpoint_at(stop)
        nmfcli.fit(X, 4, engine="array-api-numpy", max_iter=40, callback=callback, **kw)
        state = saved["solver_state"]
        assert all(value is None or type(value) is float for value in state.values()), state
        after_rejection.append(state.get("bound", 0.0) is None)
        resumed = nmfcli.fit(X, 4, engine="array-api-numpy", max_iter=40, resume=saved, **kw)
        assert np.array_equal(resumed.W, full.W) and np.array_equal(resumed.H, full.H), stop
        assert resumed.history == full.history
    assert solver == "ehals" or any(after_rejection), "no checkpoint came right after a rejection"


def test_strict_engine_refuses_sparse_with_a_usage_error():
    with pytest.raises(UsageError, match="takes dense X only"):
        nmfcli.fit(sp.random(10, 10, density=0.5, format="csr", random_state=0), 2,
                   engine="array-api-strict")


def test_cupy_missing_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name.startswith("cupy") or name == "nmfcli.engines.cupy":
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    monkeypatch.delitem(__import__("sys").modules, "nmfcli.engines.cupy", raising=False)
    with pytest.raises(UnavailableError, match=r"pip install 'nmfcli\[gpu\]'"):
        nmfcli.fit(data(), 2, engine="cupy")


def test_auto_engine_is_numpy_without_a_gpu():
    if _cupy_usable():
        pytest.skip("a GPU is present")
    assert nmfcli.fit(data(), 2, engine="auto", max_iter=3).options["engine"] == "numpy"
