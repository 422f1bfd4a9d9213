"""The exact solve (solvers.nnls): every row certified, checked against scipy.optimize.nnls on hard data.

Hard data here: components of real fits at k near or above the data's rank, rank-deficient
(duplicated) components, nearly collinear ones, float32, condition numbers far beyond 1/ε,
scales from 1e-30 to 1e30, zero rows. The oracle is scipy's Lawson-Hanson on the components
themselves; objectives are compared (the minimiser need not be unique), and the KKT
conditions are checked here, written out in float64 from the residual.
"""

import os

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nmfcli
from nmfcli.solvers import nnls as nnls_solver

# The certificate's tolerance bounds a row's excess objective by about 2·KKT_TOL·‖x‖²:
# rows are compared to scipy at 1e-6 relative, above a floor of 10× that guarantee.
FLOOR = 20 * nnls_solver.KKT_TOL
EXAMPLES = int(os.environ.get("NMF_TORTURE_EXAMPLES", "120"))


def row_objectives(X, W, H):
    """½‖x − Hᵀw‖² of every row, in float64 from the factors as returned."""
    R = np.asarray(X, dtype=np.float64) - np.asarray(W, dtype=np.float64) @ np.asarray(H, dtype=np.float64)
    return 0.5 * np.einsum("ij,ij->i", R, R)


def scipy_objectives(X, H, dtype=np.float64):
    """scipy's optimal objective of every row, or that of its solution rounded to ``dtype`` where
    that is higher: an answer in float32 cannot hold what float32 cannot represent."""
    A = np.asarray(H, dtype=np.float64).T
    out = []
    for x in np.asarray(X, dtype=np.float64):
        w, residual = scipy.optimize.nnls(A, x, maxiter=50 * A.shape[1])
        rounded = x - A @ w.astype(dtype).astype(np.float64)
        out.append(max(0.5 * residual * residual, 0.5 * float(rounded @ rounded)))
    return np.array(out)


def assert_matches_scipy(X, H, W):
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    assert np.all(W >= 0)
    ours, oracle = row_objectives(X, W, H), scipy_objectives(X, H, W.dtype)
    norms = 0.5 * np.einsum("ij,ij->i", X.astype(np.float64), X.astype(np.float64))
    excess = ours - oracle
    # W is the float64 optimum rounded to W's dtype: each entry moves by up to ε|w| (or the
    # smallest subnormal), which moves Hᵀw by up to δ and the objective by ‖r‖‖δ‖ + ½‖δ‖².
    info = np.finfo(W.dtype)
    delta = (np.abs(np.asarray(W, dtype=np.float64)) * float(info.eps) + float(info.smallest_subnormal)) \
        @ np.abs(np.asarray(H, dtype=np.float64))
    shift = np.linalg.norm(delta, axis=1)
    rounding = np.sqrt(2 * oracle) * shift + 0.5 * shift**2
    allowed = 1e-6 * oracle + FLOOR * norms + rounding + 1e-300
    worst = int(np.argmax(excess / allowed))
    assert np.all(excess <= allowed), (worst, ours[worst], oracle[worst], norms[worst])


def kkt_violation(X, H, W):
    """The worst KKT violation of every row, from the residual (no Gram matrix), relative to |H||x| + |H||Hᵀw|."""
    X, H, W = (np.asarray(a, dtype=np.float64) for a in (X, H, W))
    grad = (W @ H - X) @ H.T
    size = X @ H.T + (W @ H) @ H.T + 1e-300
    bad = np.where(W > 0, np.abs(grad), np.maximum(-grad, 0.0))
    return (bad / size).max(axis=1)


def digits():
    from sklearn.datasets import load_digits

    return load_digits().data


# --------------------------------------------------------------------------- real fits at large k


@pytest.mark.parametrize("k", [50, 64])
def test_transform_with_the_components_of_a_real_fit_at_large_k_equals_scipy(k):
    X = digits()
    H = nmfcli.fit(X, k, max_iter=100, init="random").H  # rank(X) is 61: k = 64 is beyond it
    rows = X[::6]
    result = nmfcli.transform(rows, H, details=True)
    assert result.stop_reason == "exact" and result.metrics["kkt"]["certified"]
    assert_matches_scipy(rows, H, result.W)


def test_more_components_than_columns_equals_scipy():
    rng = np.random.default_rng(0)
    X = rng.random((50, 30))
    H = nmfcli.fit(X, 40, init="random", max_iter=300).H  # k = 40 > n = 30: HHᵀ is singular
    assert_matches_scipy(X, H, nmfcli.transform(X, H))


def test_fix_H_reports_the_certificate_and_the_true_error():
    rng = np.random.default_rng(1)
    X = rng.random((50, 30))
    H = np.vstack([rng.random((20, 30))] * 2)  # every component twice: rank-deficient
    result = nmfcli.fit(X, 40, fix_H=H)
    assert result.converged and result.stop_reason == "exact"
    assert result.metrics["kkt"]["kkt_violation"] <= nnls_solver.KKT_TOL
    true = np.linalg.norm(X - result.W @ H) / np.linalg.norm(X)
    assert result.metrics["relative_error"] == pytest.approx(true, rel=1e-9)
    assert_matches_scipy(X, H, result.W)


def test_float32_nearly_collinear_components_equal_scipy():
    rng = np.random.default_rng(2)
    base = rng.random(100)
    H = (base + 1e-3 * rng.random((20, 100))).astype(np.float32)
    X = (rng.random((200, 20)) @ H + 0.01 * rng.random((200, 100))).astype(np.float32)
    W = nmfcli.transform(X, H)
    assert W.dtype == np.float32
    assert_matches_scipy(X, H, W)


def test_fix_W_is_certified_too():
    rng = np.random.default_rng(3)
    W = np.hstack([rng.random((60, 8))] * 2)  # duplicated basis vectors
    X = rng.random((60, 25))
    result = nmfcli.fit(X, 16, fix_W=W)
    assert result.metrics["kkt"]["certified"]
    assert_matches_scipy(X.T, W.T, result.H.T)


def test_transform_of_all_zero_rows_is_zero():
    H = np.random.default_rng(4).random((3, 10))
    W = nmfcli.transform(np.zeros((5, 10)), H)
    assert W.shape == (5, 3) and not W.any()


# --------------------------------------------------------------------------- the certificate


def test_an_unconverged_solve_is_never_passed_off_as_exact():
    """Block pivoting stopped after no pass and nothing to re-solve with: the rows are counted
    as uncertified, not returned as optimal."""
    rng = np.random.default_rng(5)
    H = rng.random((12, 40))
    X = rng.random((30, 40))
    G, C = H @ H.T, H @ X.T
    _, cert = nnls_solver.nnls(G, C, max_iter=0, warm_start_sweeps=0, reduce=None)
    assert cert.uncertified > 0 and not cert.certified and cert.max_violation > cert.tol
    solved, cert = nnls_solver.nnls(G, C, max_iter=0, warm_start_sweeps=0,
                                    reduce=lambda cols: nnls_solver.reduce_dense(H.T, X[cols].T))
    assert cert.certified and cert.refined > 0
    assert_matches_scipy(X, H, solved.T)


def test_a_solve_that_went_nan_is_caught_and_solved_again(monkeypatch):
    """NaN compares false with everything: a certificate that tested violation > tol would pass it."""
    rng = np.random.default_rng(11)
    H, X = rng.random((6, 20)), rng.random((8, 20))
    real = nnls_solver._solve_passive

    def poisoned(G, C, passive, **kw):
        solution, gradient = real(G, C, passive, **kw)
        solution[:, 0] = np.nan
        return solution, gradient

    monkeypatch.setattr(nnls_solver, "_solve_passive", poisoned)
    G, C = H @ H.T, H @ X.T
    _, cert = nnls_solver.nnls(G, C, reduce=None)
    assert cert.uncertified >= 1 and cert.max_violation == np.inf
    solved, cert = nnls_solver.nnls(G, C, reduce=lambda cols: nnls_solver.reduce_dense(H.T, X[cols].T))
    assert cert.certified and np.all(np.isfinite(solved))
    assert_matches_scipy(X, H, solved.T)


def test_the_certificate_agrees_with_kkt_written_from_the_residual():
    rng = np.random.default_rng(6)
    H = rng.random((10, 30)) * np.logspace(0, 6, 10)[:, None]  # component norms 1 to 1e6
    X = rng.random((40, 30)) * 1e3
    result = nmfcli.fit(X, 10, fix_H=H)
    assert result.metrics["kkt"]["certified"]
    assert kkt_violation(X, H, result.W).max() <= 1e-7


def test_lawson_hanson_on_a_rank_deficient_square_root_form():
    rng = np.random.default_rng(7)
    A = rng.random((20, 4))
    A = np.hstack([A, A[:, :2] + A[:, 2:]])  # rank 4, 6 columns
    b = rng.random(20)
    R, D = nnls_solver.reduce_dense(A, b[:, None])
    x = nnls_solver.lawson_hanson(R, D[:, 0], A.T @ A, A.T @ b, np.zeros(6))
    _, residual = scipy.optimize.nnls(A, b)
    assert 0.5 * np.sum((A @ x - b) ** 2) <= 0.5 * residual**2 * (1 + 1e-9) + 1e-14
    assert np.all(x >= 0)


def test_penalties_in_the_square_root_form_match_the_gram_form():
    """l1 and l2 reach the re-solve through l1, l2: its answer is the penalised optimum."""
    rng = np.random.default_rng(8)
    A, b = rng.random((15, 5)), rng.random(15)
    l1, l2 = 0.3, 0.7
    G, c = A.T @ A + l2 * np.eye(5), A.T @ b - l1
    R, D = nnls_solver.reduce_dense(A, b[:, None])
    x = nnls_solver.lawson_hanson(R, D[:, 0], G, c, np.zeros(5), l1=l1, l2=l2)
    reference, _ = nnls_solver.nnls(G, c[:, None])
    np.testing.assert_allclose(x, reference[:, 0], atol=1e-10)


def test_strict_transform_exits_3_only_for_uncertified_rows(tmp_path, monkeypatch, capsys):
    import json

    from nmfcli.cli import run

    rng = np.random.default_rng(9)
    np.save(tmp_path / "X.npy", rng.random((20, 8)))
    np.save(tmp_path / "H.npy", rng.random((3, 8)))
    args = ["transform", str(tmp_path / "X.npy"), "--components", str(tmp_path / "H.npy"), "-o",
            str(tmp_path / "W.npy"), "--strict", "--report", str(tmp_path / "r.json")]
    assert run(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["kkt"]["certified"] and report["stop_reason"] == "exact"
    # the same solve with re-solving switched off and no pivoting: uncertified, exit 3, W still written
    (tmp_path / "W.npy").unlink()
    real = nnls_solver.nnls
    monkeypatch.setattr("nmfcli.core.nnls", lambda G, C, **kw: real(G, C, **{**kw, "reduce": None, "max_iter": 0,
                                                                          "warm_start_sweeps": 0}))
    capsys.readouterr()
    assert run(args + ["--force"]) == 3
    err = capsys.readouterr().err
    assert "could not be certified optimal" in err and err.count("Error:") == 1
    assert (tmp_path / "W.npy").exists()
    assert not json.loads((tmp_path / "r.json").read_text())["kkt"]["certified"]


# --------------------------------------------------------------------------- the torture suite


@st.composite
def problems(draw):
    """(X, H): components conditioned from 1 to 1e30 (column scales, duplicates), data from
    1e-30 to 1e30, float32 or float64, dense or sparse, with zero rows and columns."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    k = draw(st.integers(1, 12))
    n = draw(st.integers(max(1, k // 2), 30))
    m = draw(st.integers(1, 12))
    H = rng.random((k, n))
    spread = draw(st.sampled_from([0.0, 3.0, 8.0, 15.0]))  # condition of the components' scales, 10^spread
    H *= np.logspace(0, spread, k)[:, None]
    if k > 1 and draw(st.booleans()):
        H[-1] = H[0]  # a duplicated component
    if draw(st.booleans()):
        H[:, rng.integers(n)] = 0  # a zero column
    X = rng.random((m, n)) * 10.0 ** draw(st.sampled_from([-30, -8, 0, 8, 30]))
    if draw(st.booleans()):
        X[rng.integers(m)] = 0  # a zero row
    if draw(st.booleans()):
        X = rng.random((m, k)) @ H  # exactly representable rows (optimum 0)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    X, H = X.astype(dtype), H.astype(dtype)
    if draw(st.booleans()):
        X = sp.csr_matrix(X)
    return X, H


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_torture_transform_equals_scipy_and_is_certified(problem):
    X, H = problem
    if not np.all(np.isfinite(H)) or float(np.abs(H).max()) == 0:
        return
    result = nmfcli.transform(X, H, details=True)
    W = result.W
    assert W.dtype == X.dtype and np.all(np.isfinite(W)) and np.all(W >= 0)
    assert result.metrics["kkt"]["certified"], result.metrics["kkt"]
    assert_matches_scipy(X, H, W)


def test_out_of_core_solves_are_certified_and_re_solved_block_by_block():
    """The blockwise engine (out of core here; Dask runs the same block functions) certifies
    its rows per block, and re-solves H's failed columns through a tall-skinny QR over blocks."""
    rng = np.random.default_rng(10)
    X = rng.random((40, 12))
    H = np.vstack([rng.random((5, 12))] * 2)  # duplicated components: singular HHᵀ
    result = nmfcli.transform(X, H, engine_options={"chunk_rows": 7}, details=True)
    assert result.metrics["kkt"]["certified"] and result.metrics["kkt"]["refined"] > 0
    assert_matches_scipy(X, H, np.asarray(result.W))
    W = np.hstack([rng.random((40, 4))] * 2)
    fitted = nmfcli.fit(X, 8, fix_W=W, engine_options={"chunk_rows": 7})
    assert fitted.metrics["kkt"]["certified"] and fitted.metrics["kkt"]["refined"] > 0
    assert_matches_scipy(X.T, W.T, fitted.H.T)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_array_api_engine_certifies_as_numpy_does(sparse, dtype):
    """The generic engine over numpy (the code path the CuPy engine runs: its float64 products,
    its rows for the re-solve) gives the same certified answer on rank-deficient components."""
    rng = np.random.default_rng(12)
    X = rng.random((50, 30)).astype(dtype)
    H = np.vstack([rng.random((20, 30))] * 2).astype(dtype)
    X = sp.csr_matrix(X) if sparse else X
    generic = nmfcli.fit(X, 40, fix_H=H, engine="array-api-numpy")
    reference = nmfcli.fit(X, 40, fix_H=H)
    assert generic.metrics["kkt"]["certified"] and generic.metrics["kkt"]["refined"] > 0
    assert generic.W.dtype == dtype
    assert generic.metrics["objective"] == pytest.approx(reference.metrics["objective"], rel=1e-9)
    assert_matches_scipy(X, H, generic.W)
