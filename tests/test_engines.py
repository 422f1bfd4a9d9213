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
CASES = [("hals", 2.0), ("cd", 2.0), ("mu", 2.0), ("mu", 1.0), ("mu", 0.0), ("mu", 0.5), ("mu", 3.0)]


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
    assert got.metrics["objective"] == pytest.approx(ref.metrics["objective"], rel=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("solver,beta", [("hals", 2.0), ("mu", 1.0)])
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
        np.testing.assert_allclose(r.W, ref.W, rtol=1e-8)


@pytest.mark.gpu
@pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and an NVIDIA GPU")
def test_cupy_sparse_and_exact_transform():
    X = sp.random(300, 200, density=0.05, random_state=0, format="csr")
    got = nmfcli.fit(X, 5, engine="cupy", max_iter=30)
    ref = nmfcli.fit(X, 5, max_iter=30)
    np.testing.assert_allclose(got.W, ref.W, rtol=1e-5, atol=1e-9)
    H = ref.H
    np.testing.assert_allclose(nmfcli.transform(X, H, engine="cupy"), nmfcli.transform(X, H),
                               rtol=1e-6, atol=1e-9)


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
