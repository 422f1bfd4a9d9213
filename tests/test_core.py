"""The core against independent oracles: scikit-learn, scipy.optimize.nnls, closed forms."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import nnls as scipy_nnls

import nmfcli
from nmfcli import core
from nmfcli.errors import DataError, UsageError
from nmfcli.init import nndsvd_factors, random_factors
from conftest import checkpoint_at, emu_slack

sk_nmf = pytest.importorskip("sklearn.decomposition._nmf")
from sklearn.decomposition import NMF as SkNMF  # noqa: E402

ISSUE_X = np.array([[1, 1], [2, 1], [3, 1.2], [4, 1], [5, 0.8], [6, 1]])


def rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-300)


def dense(seed=0, m=40, n=30):
    return np.abs(np.random.RandomState(seed).randn(m, n)) ** 2


def sparse(seed=0, m=50, n=40, density=0.3):
    return sp.random(m, n, density=density, random_state=seed, format="csr")


def sk_fit(X, k, **kw):
    model = SkNMF(k, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W = model.fit_transform(X)
    return W, model


# --------------------------------------------------------------------------- the users' two cases


def test_issue_case_cd_random_seed0():
    result = nmfcli.fit(ISSUE_X, 2, init="random", seed=0, solver="cd")
    W = [[0, 0.46880684], [0.55699523, 0.3894146], [1.00331638, 0.41925352],
         [1.6733999, 0.22926926], [2.34349311, 0.03927954], [2.78981512, 0.06911798]]
    H = [[2.09783018, 0.30560234], [2.13443044, 2.13171694]]
    np.testing.assert_allclose(result.W, W, atol=1e-6)
    np.testing.assert_allclose(result.H, H, atol=1e-6)


def test_issue_case_fixed_basis_is_exact_where_sklearn_stops_early():
    H = np.array([[0.4, 0.2], [0.4, 0.1]])
    result = nmfcli.fit(ISSUE_X, 2, fix_H=H)
    expected = [[3, 0], [5, 0], [4.5, 3], [0, 10], [0, 12.23529412], [0, 14.70588235]]
    np.testing.assert_allclose(result.W, expected, atol=1e-6)
    assert result.H is not H and np.array_equal(result.H, H)
    np.testing.assert_allclose(nmfcli.transform(ISSUE_X, H), expected, atol=1e-6)
    # scikit-learn's cd transform stops early on this case; ours must not.
    model = SkNMF(2, solver="cd", init="custom")
    model.components_ = H
    model.n_components_ = 2
    model.n_features_in_ = 2
    model._n_components = 2
    model._beta_loss = 2
    sk_W = model._fit_transform(ISSUE_X, H=H, update_H=False)[0]
    assert np.abs(sk_W - np.array(expected)).max() > 1e-3


# --------------------------------------------------------------------------- initialisation


@pytest.mark.parametrize("init", ["random", "nndsvd", "nndsvda", "nndsvdar"])
@pytest.mark.parametrize("make", [dense, sparse])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_init_equals_sklearn(init, make, dtype):
    X = make(3).astype(dtype)
    W1, H1 = sk_nmf._initialize_nmf(X, 6, init=init, random_state=7)
    if init == "random":
        W2, H2 = random_factors(X.mean(), 6, X.shape, X.dtype, 7)
    else:
        W2, H2 = nndsvd_factors(X, 6, init, 7)
    assert W2.dtype == W1.dtype and H2.dtype == H1.dtype
    np.testing.assert_array_equal(W2, W1)
    np.testing.assert_array_equal(H2, H1)


@pytest.mark.parametrize("shape,k", [((360, 360), 10), ((100, 1300), 30), ((2000, 64), 10)])
def test_the_float32_start_is_sklearns_bit_for_bit(shape, k):
    """The norms that scale each nndsvd component are math.sqrt's Python floats, as scikit-learn's:
    a float32 square root had rounded them 1 ulp away on these shapes."""
    X = np.abs(np.random.RandomState(0).randn(*shape)).astype(np.float32)
    W1, H1 = sk_nmf._initialize_nmf(X, k, init="nndsvda", random_state=0)
    W2, H2 = nndsvd_factors(X, k, "nndsvda", 0)
    np.testing.assert_array_equal(W2, W1)
    np.testing.assert_array_equal(H2, H1)


def test_default_init_follows_sklearn():
    X = dense(0, 10, 8)
    assert nmfcli.fit(X, 3, max_iter=1).options["init"] == "nndsvda"
    assert nmfcli.fit(X, 9, max_iter=1).options["init"] == "random"


# --------------------------------------------------------------------------- solvers against sklearn


@pytest.mark.parametrize("make", [dense, sparse])
@pytest.mark.parametrize("alpha,l1_ratio", [(0.0, 0.0), (0.01, 0.3), (0.02, 1.0)])
def test_cd_equals_sklearn(make, alpha, l1_ratio):
    X = make(1)
    kw = dict(init="nndsvdar", random_state=0, max_iter=400, alpha_W=alpha, l1_ratio=l1_ratio)
    W, model = sk_fit(X, 5, solver="cd", **kw)
    r = nmfcli.fit(X, 5, solver="cd", seed=0, max_iter=400, init="nndsvdar",
                   alpha_W=alpha, l1_ratio=l1_ratio)
    assert rel(r.W, W) <= 1e-6 and rel(r.H, model.components_) <= 1e-6
    assert r.n_iter == model.n_iter_
    assert r.metrics["reconstruction_error"] == pytest.approx(model.reconstruction_err_, rel=1e-9)


@pytest.mark.parametrize("beta", [2, 1, 0, 0.5, 1.5, 3])
@pytest.mark.parametrize("make", [dense, sparse])
def test_mu_equals_sklearn(beta, make):
    X = make(2)
    if beta <= 0:
        if sp.issparse(X):
            pytest.skip("beta <= 0 needs X without zeros")
        X = X + 0.1
    for alpha_W, alpha_H in ((0.0, "same"), (0.001, 0.002)):
        W, model = sk_fit(X, 4, solver="mu", beta_loss=beta, init="nndsvda", random_state=0,
                          max_iter=300, alpha_W=alpha_W, alpha_H=alpha_H, l1_ratio=0.5)
        r = nmfcli.fit(X, 4, solver="mu", loss=beta, seed=0, max_iter=300, init="nndsvda",
                       alpha_W=alpha_W, alpha_H=alpha_H, l1_ratio=0.5)
        assert np.abs(W).max() > 0, "the case must not collapse to zero"
        assert rel(r.W, W) <= 1e-6 and rel(r.H, model.components_) <= 1e-6
        assert r.n_iter == model.n_iter_


@pytest.mark.parametrize("beta", [1, 0.5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mu_in_row_blocks_equals_sklearn(monkeypatch, beta, dtype):
    """Dense X in several row blocks, the last one shorter: the numpy engine's kept block
    buffers and arrays of EPSILON must fit every block, and the sums must add up."""
    from nmfcli.solvers import losses

    monkeypatch.setattr(losses, "BLOCK_ENTRIES", 300)  # 10 rows of 30 a block: 4 blocks of 10, one of 3
    X = dense(3, m=43, n=30).astype(dtype)
    W, model = sk_fit(X, 4, solver="mu", beta_loss=beta, init="nndsvda", random_state=0, max_iter=200)
    r = nmfcli.fit(X, 4, solver="mu", loss=beta, seed=0, max_iter=200, init="nndsvda")
    tol = 1e-6 if dtype == np.float64 else 2e-3
    assert rel(r.W, W) <= tol and rel(r.H, model.components_) <= tol
    assert r.n_iter == model.n_iter_
    expected = sk_nmf._beta_divergence(X.astype(np.float64), r.W.astype(np.float64), r.H.astype(np.float64), beta)
    assert r.metrics["beta_divergence"] == pytest.approx(expected, rel=1e-9 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_power_forms_are_within_a_few_roundings_of_the_power(dtype):
    """losses.power's square roots and products against numpy's power, and the numpy
    engine's in-place copy of them against the generic forms, bit for bit."""
    from nmfcli.engines.numpy import power_into
    from nmfcli.solvers.losses import POWER_FORMS, power

    base = np.random.RandomState(0).rand(5000).astype(dtype) * 10.0 + np.finfo(np.float32).eps
    assert {0.5, 1.5, 3.0, -1.5, -2.5} <= set(POWER_FORMS) and 0.0 not in POWER_FORMS
    for exponent in sorted(POWER_FORMS) + [0.3, -1.7]:
        exact = base.astype(np.float64) ** exponent
        got = power(np, base, exponent)
        assert got.dtype == dtype
        assert np.abs(got / exact - 1).max() <= 4 * np.finfo(dtype).eps, exponent
        assert np.array_equal(power_into(np.empty_like(base), base, exponent), got), exponent


@pytest.mark.parametrize("beta", [0.5, 1.5, 3.0, 1.3, -0.5])
def test_shared_power_keeps_sklearns_clamps(beta):
    """ratio_and_power (one power for both of mu's blocks) against the two powers scikit-learn
    takes, on W·H with zeros and entries below EPSILON, where the clamps differ."""
    from nmfcli.engines.array_api import ratio_and_power
    from nmfcli.engines.numpy import NumpyEngine
    from nmfcli.solvers.losses import EPSILON

    rng = np.random.RandomState(0)
    X = rng.rand(40, 30) + 0.1
    WH = rng.rand(40, 30)
    WH[:5] = 0.0
    WH[5:10] = EPSILON * rng.rand(5, 30)
    clamped = np.maximum(WH, EPSILON)
    expected_ratio = X * (clamped if beta < 2 else WH) ** (beta - 2)
    expected_power = (clamped if beta < 1 else WH) ** (beta - 1)
    ratio, powered = ratio_and_power(np, X, WH, beta)
    np.testing.assert_allclose(ratio, expected_ratio, rtol=1e-14)
    np.testing.assert_allclose(powered, expected_power, rtol=1e-14)
    in_place = NumpyEngine(X, np.float64)._ratio_and_power_block(X, WH.copy(), beta)
    assert np.array_equal(in_place[0], ratio) and np.array_equal(in_place[1], powered)


@pytest.mark.parametrize("tiny_fraction", [0.0, 0.005, 0.3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_divergence_with_zeros_and_entries_below_epsilon_equals_sklearn(tiny_fraction, dtype):
    """The numpy engine's in-place KL sum leaves out X's entries in (0, EPSILON] as
    scikit-learn does: a few are taken out afterwards, many take the general path."""
    rng = np.random.RandomState(1)
    X = np.where(rng.rand(120, 70) < 0.3, 0.0, rng.rand(120, 70))
    X = np.where(rng.rand(120, 70) < tiny_fraction, 1e-7, X).astype(dtype)
    W = rng.rand(120, 4).astype(dtype)
    H = rng.rand(4, 70).astype(dtype)
    expected = sk_nmf._beta_divergence(X.astype(np.float64), W.astype(np.float64), H.astype(np.float64), 1)
    got = core.metrics(X, W, H, loss="kl")["beta_divergence"]
    assert got == pytest.approx(expected, rel=1e-10 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("beta", [2, 1, 0, 0.5, 3, "frobenius", "kullback-leibler", "itakura-saito"])
@pytest.mark.parametrize("make", [dense, sparse])
def test_beta_divergence_equals_sklearn(beta, make):
    X = make(4)
    rng = np.random.RandomState(0)
    W = rng.rand(X.shape[0], 3)
    H = rng.rand(3, X.shape[1])
    expected = sk_nmf._beta_divergence(X, W, H, beta)
    got = core.metrics(X, W, H, loss=beta)
    assert got["beta_divergence"] == pytest.approx(expected, rel=1e-10)
    assert got["reconstruction_error"] == pytest.approx(
        sk_nmf._beta_divergence(X, W, H, beta, square_root=True), rel=1e-10)
    Xd = X.toarray() if sp.issparse(X) else X
    assert got["relative_error"] == pytest.approx(
        np.linalg.norm(Xd - W @ H) / np.linalg.norm(Xd), rel=1e-9)


def test_hals_reaches_cd_loss_from_same_init():
    cases = [dense(5, 200, 120), sparse(6, 300, 200, 0.05), np.abs(np.random.RandomState(3).rand(80, 60))]
    for X in cases:
        for k in (3, 10):
            cd = nmfcli.fit(X, k, solver="cd", max_iter=1000)
            hals = nmfcli.fit(X, k, solver="hals", max_iter=1000)
            assert hals.metrics["objective"] <= cd.metrics["objective"] * (1 + 1e-3), (X.shape, k)


# --------------------------------------------------------------------------- exact transform


def test_transform_matches_scipy_nnls_row_by_row():
    rng = np.random.RandomState(0)
    H = rng.rand(8, 30)
    X = rng.rand(200, 30) * 2
    X[rng.rand(*X.shape) < 0.3] = 0
    W = nmfcli.transform(X, H)
    expected = np.array([scipy_nnls(H.T, x)[0] for x in X])
    assert np.abs(W - expected).max() <= 1e-8
    assert (W >= 0).all()
    assert (W == 0).any(), "the case must exercise the constraint"
    Ws = nmfcli.transform(sp.csr_matrix(X), H)
    assert np.abs(Ws - expected).max() <= 1e-8


def test_float32_transform_reaches_the_float64_optimum():
    # Components of a real fit are ill-conditioned (cond(HHᵀ) ~ 7e7 here): a float32 solve of
    # the normal equations left the objective 11% above the optimum.
    rng = np.random.default_rng(0)
    X = (rng.random((300, 30)) @ rng.random((30, 400))).astype(np.float32)
    X += 0.05 * X.mean() * rng.random(X.shape, dtype=np.float32)
    H = nmfcli.fit(X, 20, max_iter=100).H
    assert np.linalg.cond(H.astype(np.float64) @ H.T.astype(np.float64)) > 1e7, "the case must be ill-conditioned"
    W32 = nmfcli.transform(X, H)
    W64 = nmfcli.transform(X.astype(np.float64), H.astype(np.float64))
    assert W32.dtype == np.float32

    def error(W):
        return np.linalg.norm(X.astype(np.float64) - W.astype(np.float64) @ H.astype(np.float64)) ** 2

    assert error(W32) <= error(W64) * (1 + 1e-6)


@pytest.mark.parametrize("sparse", [False, True])
def test_exact_solve_in_blocks_reports_progress_and_gives_the_same_bits(monkeypatch, sparse):
    rng = np.random.RandomState(4)
    H = rng.rand(6, 25)
    X = rng.rand(230, 25) * (rng.rand(230, 25) < 0.6)
    X = sp.csr_matrix(X) if sparse else X
    whole = nmfcli.transform(X, H)
    monkeypatch.setattr(core, "MIN_SOLVE_BLOCK", 17)
    seen = []
    blocks = nmfcli.transform(X, H, progress=lambda done, total: seen.append((done, total)))
    assert np.array_equal(blocks, whole), "each row is its own problem: blocks cannot change a bit"
    assert np.abs(whole - np.array([scipy_nnls(H.T, x)[0] for x in (X.toarray() if sparse else X)])).max() <= 1e-8
    assert len(seen) == 14 and seen[-1] == (230, 230)  # ceil(230 / 17) blocks of 17 rows
    assert all(total == 230 for _, total in seen) and [d for d, _ in seen] == sorted({d for d, _ in seen})
    # W fixed: H's columns, n of them
    seen.clear()
    fixed_W = nmfcli.fit(X, 6, fix_W=whole, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (25, 25) and len(seen) == 2
    assert np.array_equal(fixed_W.H, nmfcli.fit(X, 6, fix_W=whole).H)


def test_transform_progress_counts_iterations_for_other_losses():
    rng = np.random.RandomState(5)
    H = rng.rand(4, 15) + 0.1
    X = rng.rand(40, 15) + 0.1
    seen = []
    W = nmfcli.transform(X, H, loss="kl", max_iter=30, tol=0, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 30) for i in range(1, 31)]
    assert np.array_equal(W, nmfcli.transform(X, H, loss="kl", max_iter=30, tol=0))


def test_transform_is_not_the_pseudo_inverse_projection():
    rng = np.random.RandomState(1)
    H = rng.rand(5, 12)
    X = rng.rand(20, 12)
    projection = X @ np.linalg.pinv(H)
    assert (projection < 0).any()
    assert (nmfcli.transform(X, H) >= 0).all()


def test_transform_with_l2_penalty_matches_augmented_nnls():
    rng = np.random.RandomState(2)
    H = rng.rand(6, 20)
    X = rng.rand(30, 20)
    alpha = 0.05
    W = nmfcli.transform(X, H, alpha_W=alpha)
    l2 = X.shape[1] * alpha  # scikit-learn's scaling by n_features
    A = np.vstack([H.T, np.sqrt(l2) * np.eye(6)])
    expected = np.array([scipy_nnls(A, np.concatenate([x, np.zeros(6)]))[0] for x in X])
    assert np.abs(W - expected).max() <= 1e-8


def test_fit_with_W_fixed_solves_H_exactly():
    rng = np.random.RandomState(3)
    W = rng.rand(25, 4)
    X = rng.rand(25, 15)
    r = nmfcli.fit(X, 4, fix_W=W)
    assert np.array_equal(r.W, W)
    expected = np.array([scipy_nnls(W, x)[0] for x in X.T]).T
    assert np.abs(r.H - expected).max() <= 1e-8


def test_mu_with_fixed_basis_keeps_it_bit_identical():
    rng = np.random.RandomState(4)
    H = rng.rand(3, 10)
    X = rng.rand(12, 10) + 0.1
    r = nmfcli.fit(X, 3, loss="kl", fix_H=H, max_iter=50)
    assert np.array_equal(r.H, H)
    assert (r.W >= 0).all()


# --------------------------------------------------------------------------- properties


def test_sparse_equals_dense():
    Xs = sparse(7, 60, 40, 0.2)
    for solver, loss in (("hals", 2), ("cd", 2), ("mu", 2), ("mu", 1), ("emu", 1), ("mu", 1.5)):
        a = nmfcli.fit(Xs, 4, solver=solver, loss=loss, max_iter=60)
        b = nmfcli.fit(Xs.toarray(), 4, solver=solver, loss=loss, max_iter=60)
        assert rel(a.W, b.W) < 1e-9 and rel(a.H, b.H) < 1e-9, (solver, loss)
        assert a.n_iter == b.n_iter


@pytest.mark.parametrize("solver,loss", [("hals", 2), ("cd", 2), ("mu", 2), ("mu", 1), ("emu", 1), ("mu", 0)])
def test_float32_stays_float32(solver, loss):
    X = (dense(8) + 0.1).astype(np.float32)
    r = nmfcli.fit(X, 3, solver=solver, loss=loss, max_iter=30)
    assert r.W.dtype == np.float32 and r.H.dtype == np.float32
    assert nmfcli.transform(X, r.H).dtype == np.float32
    r64 = nmfcli.fit(X, 3, solver=solver, loss=loss, max_iter=30, dtype="float64")
    assert r64.W.dtype == np.float64


def test_same_seed_same_bits():
    X = dense(9, 70, 50)
    for init in ("random", "nndsvdar"):
        a = nmfcli.fit(X, 5, init=init, seed=11)
        b = nmfcli.fit(X, 5, init=init, seed=11)
        assert np.array_equal(a.W, b.W) and np.array_equal(a.H, b.H)
        c = nmfcli.fit(X, 5, init=init, seed=12)
        assert not np.array_equal(a.W, c.W)


@pytest.mark.parametrize("solver,loss", [("ehals", 2), ("hals", 2), ("cd", 2), ("mu", 1), ("emu", 1)])
def test_resume_is_bit_identical(solver, loss):
    X = dense(10, 50, 40) + 0.01
    full = nmfcli.fit(X, 4, solver=solver, loss=loss, tol=0, max_iter=40)
    saved = {}

    def stop_at_17(info):
        if info.iteration == 17:
            saved.update(info.checkpoint())
            return "interrupted"

    part = nmfcli.fit(X, 4, solver=solver, loss=loss, tol=0, max_iter=40, callback=stop_at_17)
    assert part.stop_reason == "interrupted" and part.n_iter == 17 and not part.converged
    resumed = nmfcli.fit(X, 4, solver=solver, loss=loss, tol=0, max_iter=40, resume=saved)
    assert np.array_equal(resumed.W, full.W) and np.array_equal(resumed.H, full.H)
    assert resumed.history == full.history and resumed.n_iter == full.n_iter


def test_hals_resumed_just_before_a_check_stops_where_the_full_fit_does():
    """hals tests its stop every 10 iterations from products a resumed fit no longer has cached."""
    X = dense(10, 50, 40) + 0.01
    full = nmfcli.fit(X, 4, solver="hals", tol=0.05, max_iter=500)
    assert full.converged and full.n_iter % 10 == 0 and full.n_iter >= 20, full.n_iter
    saved = {}

    def stop_before_the_check(info):
        if info.iteration == full.n_iter - 1:
            saved.update(info.checkpoint())
            return "interrupted"

    nmfcli.fit(X, 4, solver="hals", tol=0.05, max_iter=500, callback=stop_before_the_check)
    resumed = nmfcli.fit(X, 4, solver="hals", tol=0.05, max_iter=500, resume=saved)
    assert resumed.converged and resumed.n_iter == full.n_iter
    assert np.array_equal(resumed.W, full.W) and np.array_equal(resumed.H, full.H)


@pytest.mark.parametrize("solver", ["ehals", "hals"])
def test_objective_history_matches_direct_computation(solver):
    X = dense(11, 40, 30)
    seen = []
    r = nmfcli.fit(X, 4, solver=solver, tol=0, max_iter=15,
                   callback=lambda info: seen.append(
                       0.5 * np.linalg.norm(X - info.W @ info.H) ** 2))
    np.testing.assert_allclose(r.history[:len(seen)], seen, rtol=1e-9)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(r.history, r.history[1:]))


@pytest.mark.parametrize("loss,solver,max_iter,make", [
    *((loss, solver, max_iter, make) for make in (dense, sparse) for loss, solver, max_iter in [
        ("kl", "mu", 20),  # stops on an iteration whose divergence the loop measured (and reuses)
        ("kl", "mu", 17),  # stops between two measured iterations
        ("kl", "emu", 20),
        ("kl", "emu", 17),
        ("frobenius", "mu", 20),
        ("frobenius", "ehals", 12),
        ("frobenius", "cd", 12),
    ]),
    ("is", "mu", 30, lambda *a: dense(*a) + 0.1),  # Itakura-Saito refuses zeros
    ("is", "emu", 30, lambda *a: dense(*a) + 0.1),
])
def test_reported_metrics_are_those_of_the_returned_factors(loss, solver, max_iter, make):
    X = make(12, 50, 30)
    r = nmfcli.fit(X, 4, loss=loss, solver=solver, tol=0, max_iter=max_iter, init="random")
    beta = {"kl": 1, "is": 0, "frobenius": 2}[loss]
    Xd = X.toarray() if sp.issparse(X) else X
    expected = sk_nmf._beta_divergence(Xd, r.W, r.H, beta)
    assert r.n_iter == max_iter
    assert r.metrics["beta_divergence"] == pytest.approx(expected, rel=1e-9)
    assert r.metrics["reconstruction_error"] == pytest.approx(np.sqrt(2 * expected), rel=1e-9)
    assert r.metrics["relative_error"] == pytest.approx(
        np.linalg.norm(Xd - r.W @ r.H) / np.linalg.norm(Xd), rel=1e-9)
    if solver in ("mu", "emu") and max_iter % 10 == 0:
        assert r.history[-1] == pytest.approx(r.metrics["objective"], rel=1e-12)


def test_exact_recovery_of_low_rank_data():
    """A separable X = WH (W and H contain an identity block) has a unique NMF, which must be found."""
    rng = np.random.RandomState(12)
    for k in (2, 4):
        W = np.vstack([np.eye(k), rng.rand(56, k)])
        H = np.hstack([np.eye(k), rng.rand(k, 44)])
        X = W @ H
        for solver in ("hals", "cd"):
            r = nmfcli.fit(X, k, solver=solver, tol=1e-12, max_iter=2000)
            assert r.metrics["relative_error"] < 1e-9, (k, solver)


# --------------------------------------------------------------------------- validation messages


@pytest.mark.parametrize("X,message", [
    (np.array([[1.0, -2.0], [-3.0, 4.0]]),
     "X has 2 negative values; the first is -2 at row 1, column 2; NMF needs non-negative data"),
    (np.array([[1.0, np.nan], [3.0, 4.0]]),
     "X has 1 NaN or infinite value; the first is nan at row 1, column 2; to leave NaN entries out of the fit "
     "as missing values, use missing='nan' (nmf fit --missing nan)"),
    (np.zeros((3, 3)), "X is all zeros; there is nothing to factorize"),
    (np.ones(3), "X must be a 2-D matrix (rows x columns); got 1-D with shape (3,)"),
    (np.ones((2, 2, 2)), "X must be a 2-D matrix (rows x columns); got 3-D with shape (2, 2, 2)"),
    (np.ones((2, 2), dtype=bool), "X holds boolean values; nmf needs real numbers"),
    (np.ones((2, 2), dtype=complex), "X holds complex values; nmf needs real numbers"),
    (np.array([["a", "b"]]), "X holds string values; nmf needs real numbers"),
    (np.zeros((0, 3)), "X is empty (shape 0 x 3)"),
])
def test_bad_data_messages(X, message):
    with pytest.raises(DataError) as err:
        nmfcli.fit(X, 1)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)


def test_zeros_with_itakura_saito_refused():
    with pytest.raises(DataError, match="contains zeros, where the is loss"):
        nmfcli.fit(np.array([[0.0, 1.0], [1.0, 2.0]]), 1, loss="is")


@pytest.mark.parametrize("kwargs,message", [
    (dict(k=0), "k must be a positive integer; got 0"),
    (dict(k=5, init="nndsvda"), "k=5 is larger than min(rows, columns) = 3, which init 'nndsvda' needs; "
                "use a smaller k or init 'random'"),
    (dict(k=2, solver="xx"), "solver must be one of ehals, hals, cd, emu, mu, anls; got 'xx'"),
    (dict(k=2, solver="cd", loss="kl"),
     "solver 'cd' minimises the Frobenius loss only; use solver 'mu' for loss 'kl'"),
    (dict(k=2, loss="banana"),
     "loss must be one of frobenius, kl, is or a real number (beta); got 'banana'"),
    (dict(k=2, init="zeros"), "init must be one of nndsvda, nndsvd, nndsvdar, random, custom; got 'zeros'"),
    (dict(k=2, l1_ratio=2), "l1_ratio must be between 0 and 1; got 2"),
    (dict(k=2, alpha_W=float("inf")), "alpha_W must be a finite number >= 0; got inf"),
    (dict(k=2, alpha_H=float("nan")), "alpha_H must be a finite number >= 0 or 'same'; got nan"),
])
def test_bad_option_messages(kwargs, message):
    X = dense(0, 4, 3)
    k = kwargs.pop("k")
    with pytest.raises(UsageError) as err:
        nmfcli.fit(X, k, **kwargs)
    assert str(err.value) == message


def test_k_larger_than_data_allowed_with_random_init():
    r = nmfcli.fit(dense(0, 4, 3), 5, init="random", max_iter=5)
    assert r.W.shape == (4, 5)


def test_fixed_factor_shape_mismatch():
    with pytest.raises(DataError, match="fixed H has shape 2 x 4; expected 2 x 3"):
        nmfcli.fit(dense(0, 4, 3), 2, fix_H=np.ones((2, 4)))


# --------------------------------------------------------------------------- estimator


def test_estimator_in_a_sklearn_pipeline():
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler

    X = dense(13, 30, 12)
    pipe = make_pipeline(MaxAbsScaler(), nmfcli.NMF(3, solver="cd"))
    W = pipe.fit_transform(X)
    est = pipe[-1]
    assert W.shape == (30, 3) and est.components_.shape == (3, 12)
    assert est.n_iter_ >= 1 and est.reconstruction_err_ > 0
    W2 = pipe.transform(X)
    assert (W2 >= 0).all()
    assert clone(est).get_params() == est.get_params()
    np.testing.assert_allclose(est.inverse_transform(W), W @ est.components_)
    sk_W, sk = sk_fit(MaxAbsScaler().fit_transform(X), 3, solver="cd", random_state=0)
    assert rel(W, sk_W) < 1e-6


def test_estimator_does_not_import_sklearn():
    import subprocess
    import sys

    code = ("import sys, numpy as np, nmfcli; m = nmfcli.NMF(2).fit(np.ones((4, 3)) + "
            "np.eye(4, 3)); assert 'sklearn' not in sys.modules, 'sklearn imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fixed_factor_fits_report_the_start_they_really_used():
    X = dense(14, 12, 8) + 0.1
    H = np.random.RandomState(0).rand(3, 8)
    assert nmfcli.fit(X, 3, fix_H=H).options["init"] == "none"  # exact solve: no start
    assert nmfcli.fit(X, 3, fix_H=H, loss="kl", max_iter=5).options["init"] == "constant"
    W0 = np.full((12, 3), 0.5)
    assert nmfcli.fit(X, 3, fix_H=H, loss="kl", max_iter=5, W0=W0, init="custom").options["init"] == "custom"


@pytest.mark.parametrize("n", [40, 600])  # short rows max against a 0-d zero, long ones against a row of zeros
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_sweeps_are_the_row_by_row_definition(n, dtype):
    """The numpy sweep's prebuilt row operands give, bit for bit, A[t] ← max(0, Rs[t] − Gs[t]·A)
    row after row, every sweep reading the rows already updated."""
    from nmfcli.solvers import cd

    rng = np.random.RandomState(0)
    k = 6
    B = rng.rand(k, 3 * k).astype(dtype)
    Gs, Rs = cd._scaled(B @ B.T, (rng.rand(k, n) - 0.3).astype(dtype))
    A = rng.rand(k, n).astype(dtype)
    expected = A.copy()
    for _ in range(3):
        for t in range(k):
            expected[t] = np.maximum(Rs[t] - Gs[t] @ expected, 0.0)
    cd.inner_sweeps(A, Gs, Rs, 3, 0.0)
    assert (A == 0).any() and (A > 0).any(), "the case must clip some entries and keep others"
    assert np.array_equal(A, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kept_sweeps_are_block_sweeps_bit_for_bit(dtype):
    """The numpy engine's kept buffers and row operands give block_sweeps's iterates, bit for bit,
    call after call: new Gram matrices and cross terms each time, two buffers a factor swept in
    turn (as ehals does), factors of one shape sharing the scaled buffers, a flat row (zero
    Hessian, kept as it is) and a cross term in float64 for a float32 factor."""
    from nmfcli.solvers import cd

    rng = np.random.RandomState(1)
    k, shapes = 5, {"Wt": 30, "H": 30, "H2": 700}  # Wt and H of one shape, as for a square X
    kept, factors, expected = cd.KeptSweeps(), {}, {}
    for name, p in shapes.items():
        for copy in range(2):
            factors[name, copy] = rng.rand(k, p).astype(dtype)
            expected[name, copy] = factors[name, copy].copy()
    for call in range(12):
        name, p = list(shapes.items())[call % 3]
        copy = (call // 3) % 2
        B = rng.rand(k, 3 * k).astype(dtype)
        G = B @ B.T
        if call == 4:
            G[2, :] = G[:, 2] = 0  # a flat row
        R = rng.rand(k, p) - 0.3
        R = R if call % 2 else R.astype(dtype)
        kept(factors[name, copy], G, R, 4, 0.1)
        cd.block_sweeps(expected[name, copy], G, R, 4, 0.1)
        assert np.array_equal(factors[name, copy], expected[name, copy]), (call, name, copy)
    A = factors["H2", 0]
    assert (A == 0).any() and (A > 0).any(), "the case must clip some entries and keep others"


@pytest.mark.parametrize("shape", [(100, 625, 50), (1797, 64, 50), (20000, 64, 50), (100, 625, 10),
                                   (20000, 64, 10), (5000, 2000, 10), (30, 20, 2), (10**6, 50, 100)])
def test_inner_sweep_limits_lower_the_floor_only_for_ehals_where_sweeps_cost_more(shape):
    """Plain hals sweeps at least MIN_INNER times; ehals the same, but where a sweep of each factor
    costs more than the rest of an iteration (the model's ρ₂ < (MIN_INNER − 1) / slope), where it
    sweeps fewer, never less than once and never fewer than Gillis & Glineur's 1 + ρ/2."""
    from nmfcli.solvers import cd

    m, n, k = shape
    plain, extrapolated = cd.inner_sweep_limits(m, n, k), cd.inner_sweep_limits(m, n, k, extrapolated=True)
    t_product = 2.0 * m * n * k / cd._PRODUCT_FLOPS_PER_S
    t_sweeps = [k * (cd._CALL_OVERHEAD_S + rows * (k + 8) / cd._SWEEP_FLOPS_PER_S) for rows in (m, n)]
    rho2 = (2 * t_product + cd._ITERATION_CALLS * cd._CALL_OVERHEAD_S) / sum(t_sweeps)
    for p, e, t in zip(plain, extrapolated, t_sweeps):
        gillis = int(min(cd.MAX_INNER, 1 + 0.5 * t_product / t))
        assert p == max(cd.MIN_INNER, gillis)
        assert 1 <= e <= p and e >= gillis
        if rho2 >= (cd.MIN_INNER - 1) / cd.EXTRAPOLATED_FLOOR_SLOPE:
            assert e == p
    if shape in {(100, 625, 50), (1797, 64, 50)}:  # faces and digits at k = 50: measured, 3 pays
        assert extrapolated == (3, 3)
    if shape in {(100, 625, 10), (30, 20, 2)}:  # small data: the iteration's other calls dominate
        assert extrapolated == plain


def test_ehals_reaches_hals_objective_in_fewer_iterations():
    """The extrapolation must pay: from the same start, ehals gets to plain hals's 60-iteration objective sooner."""
    X = dense(3, 120, 80) + 0.01
    hals = nmfcli.fit(X, 8, solver="hals", tol=0, max_iter=60)
    target = hals.history[-1]
    ehals = nmfcli.fit(X, 8, solver="ehals", tol=0, max_iter=60,
                       callback=lambda info: "target" if info.objective <= target else None)
    assert ehals.stop_reason == "target" and ehals.n_iter <= 40, ehals.n_iter


@pytest.mark.parametrize("solver", ["ehals", "emu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ehals_and_emu_never_return_an_iterate_worse_than_the_best_they_recorded(solver, dtype):
    """Whatever the BLAS kernel's rounding: the factors returned are, by their objective
    computed here in float64, no worse than the best iterate the fit recorded."""
    rng = np.random.RandomState(0)
    X = (rng.rand(120, 6) @ rng.rand(6, 80) + 0.3 * rng.rand(120, 80)).astype(dtype)
    beta = 2.0 if solver == "ehals" else 1.0
    seen = []

    def keep(info):
        seen.append((info.objective, info.W.astype(np.float64), info.H.astype(np.float64)))

    r = nmfcli.fit(X, 5, solver=solver, loss=beta, tol=0, max_iter=150, callback=keep)

    def exact(W, H):
        WH = np.asarray(W, dtype=np.float64) @ np.asarray(H, dtype=np.float64)
        X64 = X.astype(np.float64)
        if beta == 2:
            return 0.5 * np.sum((X64 - WH) ** 2)
        return np.sum(X64 * np.log(X64 / WH) - X64 + WH)

    recorded = [s for s in seen if s[0] is not None]
    best = min(recorded, key=lambda s: s[0])
    assert exact(r.W, r.H) <= exact(best[1], best[2]) * (1 + 1e-9)
    assert r.metrics["objective"] == pytest.approx(exact(r.W, r.H), rel=1e-6)


def test_ehals_rejects_a_step_that_raises_the_objective(monkeypatch):
    """Extrapolating to zero factors (a HALS iteration from there stays at ½‖X‖²): every such step is rejected."""
    from nmfcli.solvers import cd

    betas = []

    def to_zero(A, before, beta):
        betas.append(beta)
        before[...] = 0.0
        return before

    monkeypatch.setattr(cd, "extrapolate", to_zero)
    seen = []
    X = dense(4, 60, 50) + 0.01
    r = nmfcli.fit(X, 5, solver="ehals", tol=0, max_iter=25, callback=lambda info: seen.append(
        0.5 * np.linalg.norm(X - info.W @ info.H) ** 2))
    assert len(betas) == 2 * (25 - 4)  # iterations 1, 2, 10 and 20 are plain; W and H each time
    plain = {1, 2, 10, 20}
    for i in range(1, 25):  # history[i] is iteration i + 1's
        if i + 1 in plain:
            assert r.history[i] < r.history[i - 1]
        else:
            assert r.history[i] == r.history[i - 1], "a rejected step keeps the iterate"
    assert betas[2] < betas[0], "a rejected step shrinks the extrapolation"
    np.testing.assert_allclose(seen, r.history, rtol=1e-9)


def test_auto_runs_the_extrapolated_solvers_where_the_engine_runs_them():
    from nmfcli.engines.dask import Blockwise

    def solver_on(engine, loss, solver):
        return core.engine_solver(solver, core.check_options(loss, solver, 0.0, "same", 0.0, 10, 1e-4)[2], engine)

    numpy_engine = core.get_engine("numpy", np.ones((2, 2)), np.float64)
    assert solver_on(numpy_engine, "frobenius", "auto") == "ehals"
    assert solver_on(Blockwise, "frobenius", "auto") == "ehals"
    assert solver_on(Blockwise, "kl", "auto") == "emu"
    assert solver_on(Blockwise, 1.5, "auto") == "emu"
    assert solver_on(Blockwise, "frobenius", "hals") == "hals"
    assert solver_on(Blockwise, "frobenius", "ehals") == "ehals"
    with pytest.raises(UsageError, match="solver 'ehals' minimises the Frobenius loss only"):
        core.check_options("kl", "ehals", 0.0, "same", 0.0, 10, 1e-4)
    # KL: emu where the engine runs the extrapolated solvers, mu elsewhere (the cupy engine too)
    assert solver_on(numpy_engine, "kl", "auto") == "emu"
    assert solver_on(numpy_engine, "is", "auto") == "emu"
    assert solver_on(numpy_engine, 1.5, "auto") == "emu"

    class NoExtrapolation:
        default_frobenius_solver, extrapolated, where = "hals", (), "on the test engine"

    assert solver_on(NoExtrapolation, "kl", "auto") == "mu"
    with pytest.raises(UsageError, match=r"^solver 'emu' does not run on the test engine; use solver 'mu'$"):
        solver_on(NoExtrapolation, "kl", "emu")
    assert solver_on(Blockwise, "kl", "emu") == "emu"
    with pytest.raises(UsageError, match=r"^solver 'ehals' does not run on the test engine; use solver 'hals'$"):
        solver_on(NoExtrapolation, "frobenius", "ehals")
    with pytest.raises(UsageError, match=r"^solver 'emu' minimises the other beta-divergences; use solver 'ehals' "
                                         r"for loss 'frobenius'$"):
        core.check_options(2, "emu", 0.0, "same", 0.0, 10, 1e-4)


def test_a_mu_checkpoint_resumes_under_auto_as_mu():
    """auto ran mu for KL before emu existed; its checkpoints (no W_before) go on as mu, bit for bit."""
    X = dense(10, 50, 40) + 0.01
    full = nmfcli.fit(X, 4, loss="kl", solver="mu", tol=0, max_iter=30)
    saved, stop_at_12 = checkpoint_at(12)
    nmfcli.fit(X, 4, loss="kl", solver="mu", tol=0, max_iter=30, callback=stop_at_12)
    assert "W_before" not in saved
    resumed = nmfcli.fit(X, 4, loss="kl", tol=0, max_iter=30, resume=saved)
    assert resumed.options["solver"] == "mu"
    assert np.array_equal(resumed.W, full.W) and resumed.history == full.history


@pytest.mark.parametrize("which", ["H", "W"])
def test_emu_with_a_fixed_factor_extrapolates_the_free_one(which):
    """transform's flow (KL against fixed components), asked for: emu reaches mu's 200-iteration
    divergence in at most half the iterations, from mu's start, and the fixed factor comes back
    bit-identical. "auto" runs mu there (see core.engine_solver)."""
    X = dense(5, 80, 60) + 0.01
    fixed = np.random.RandomState(3).rand(*((4, 60) if which == "H" else (80, 4)))
    kw = {f"fix_{which}": fixed}
    plain = nmfcli.fit(X, 4, loss="kl", solver="mu", tol=0, max_iter=200, **kw)
    auto = nmfcli.fit(X, 4, loss="kl", tol=0, max_iter=200, **kw)
    assert auto.options["solver"] == "mu" and np.array_equal(auto.W, plain.W) and np.array_equal(auto.H, plain.H)
    target = plain.history[-1]
    r = nmfcli.fit(X, 4, loss="kl", solver="emu", tol=0, max_iter=200, **kw,
                   callback=lambda info: "target" if info.objective is not None and info.objective <= target else None)
    assert r.options["solver"] == "emu" and r.options["init"] == "constant"
    assert np.array_equal(r.H if which == "H" else r.W, fixed)
    assert r.stop_reason == "target" and r.n_iter <= 100, r.n_iter


def objective_plus_constant(X, W, H, beta, reg):
    """D_β(X ‖ WH) + the penalties + ΣX (KL) or m·n (Itakura-Saito), by scikit-learn's
    divergence: what emu's bound bounds."""
    l1_W, l1_H, l2_W, l2_H = reg
    Xd = X.toarray() if sp.issparse(X) else X
    penalties = l1_W * W.sum() + l1_H * H.sum() + 0.5 * (l2_W * (W * W).sum() + l2_H * (H * H).sum())
    constant = Xd.sum() if beta == 1 else Xd.size if beta == 0 else -np.sum(Xd[Xd > 0] ** beta) / (beta * (beta - 1))
    return sk_nmf._beta_divergence(Xd, W, H, beta) + constant + penalties


@pytest.mark.parametrize("make,loss,alpha,l1_ratio,fixed", [
    (dense, "kl", 0.0, 0.0, None), (sparse, "kl", 0.0, 0.0, None), (dense, "kl", 0.02, 1.0, None),
    (lambda *a: dense(*a) + 0.1, "is", 0.0, 0.0, None), (lambda *a: dense(*a) + 0.1, "is", 0.02, 1.0, None),
    (dense, "kl", 0.02, 1.0, "H"), (sparse, "kl", 0.0, 0.0, "W"), (lambda *a: dense(*a) + 0.1, "is", 0.0, 0.0, "H"),
    (dense, 0.5, 0.0, 0.0, None), (sparse, 1.5, 0.0, 0.0, None), (dense, 3.0, 0.02, 1.0, None),
    (dense, 1.5, 0.02, 1.0, "H"), (sparse, 0.5, 0.0, 0.0, "W"), (lambda *a: dense(*a) + 0.1, -0.5, 0.0, 0.0, None),
])
def test_emu_bound_is_above_the_objective_and_never_rises(make, loss, alpha, l1_ratio, fixed):
    """Every kept step's bound (from the last update's own arrays, less what its step is sure to
    gain) is at least the exact objective of the iterate it keeps, and the bounds fall."""
    X = make(6, 60, 45)
    rng = np.random.RandomState(4)
    kw = {"fix_H": rng.rand(5, 45)} if fixed == "H" else {"fix_W": rng.rand(60, 5)} if fixed == "W" else {}
    beta = {"kl": 1, "is": 0}.get(loss, loss)
    reg = core.regularization(X.shape, alpha, "same", l1_ratio)
    slack = emu_slack(X, beta)
    seen = []

    def check(info):
        bound = info.checkpoint()["solver_state"]["bound"]
        if bound is not None:
            exact = objective_plus_constant(X, info.W, info.H, beta, reg)
            assert exact <= bound + slack, (info.iteration, exact, bound)
            seen.append(bound)

    r = nmfcli.fit(X, 5, loss=loss, solver="emu", tol=0, max_iter=80, alpha_W=alpha, l1_ratio=l1_ratio,
                   callback=check, **kw)
    assert r.n_iter == 80 and len(seen) >= 70
    assert all(b <= a + slack for a, b in zip(seen, seen[1:]))
    # and the bound is tight: within 1% of the objective's distance to its value at the end
    exact = objective_plus_constant(X, r.W, r.H, beta, reg)
    assert seen[-1] - exact <= 0.01 * (seen[0] - exact)


def test_emu_reaches_mu_divergence_in_fewer_iterations():
    """The extrapolation must pay: from the same start, emu gets to mu's 150-iteration divergence
    in at most half the iterations (divergences are measured every 10th iteration)."""
    X = dense(3, 120, 80) + 0.01
    target = nmfcli.fit(X, 8, loss="kl", solver="mu", tol=0, max_iter=150).history[-1]
    r = nmfcli.fit(X, 8, loss="kl", solver="emu", tol=0, max_iter=150,
                   callback=lambda info: "target" if info.objective is not None and info.objective <= target else None)
    assert r.stop_reason == "target" and r.n_iter <= 75, r.n_iter


def test_emu_rejects_a_step_that_raises_the_bound(monkeypatch):
    """Extrapolating to constant factors (from which mu stays rank one): every such step is
    rejected, the iterate kept, β shrunk, and the next step is plain mu; so 20 iterations of
    emu are 10 of mu, bit for bit."""
    from nmfcli.solvers import mu

    betas = []

    def far_off(A, before, beta):
        betas.append(beta)
        before[...] = float(A.mean())
        return before

    monkeypatch.setattr(mu, "extrapolate", far_off)
    X = dense(4, 60, 50) + 0.01
    r = nmfcli.fit(X, 5, loss="kl", solver="emu", tol=0, max_iter=20)
    plain = nmfcli.fit(X, 5, loss="kl", solver="mu", tol=0, max_iter=10)
    assert len(betas) == 2 * 10  # iterations 2, 4, ..., 20; W and H each time
    assert np.array_equal(r.W, plain.W) and np.array_equal(r.H, plain.H)
    assert betas[2] < betas[0], "a rejected step shrinks the extrapolation"


def test_kl_gain_is_what_the_multiplicative_step_is_sure_to_lower_the_objective_by():
    from nmfcli.solvers import mu

    rng = np.random.RandomState(8)
    X = rng.rand(30, 20) * (rng.rand(30, 20) > 0.3)
    W, H = rng.rand(30, 4), rng.rand(4, 20)
    H[0, :3] = 0.0  # zeros of H stay zero, and gain nothing
    eng = core.get_engine("numpy", X, np.float64)
    for l1 in (0.0, 0.5):
        before = sk_nmf._beta_divergence(X, W, H, 1) + l1 * H.sum()
        numerator, _ = eng.mu_products(W, H, 1, "H")
        denominator = W.sum(axis=0)[:, None] + l1
        gain = mu._kl_gain(np, H, numerator, denominator, numerator / denominator)
        H_next = H.copy()
        bound = mu.update_H(eng, W, H_next, 1, l1, 0.0, 1.0, bound=True)
        after = sk_nmf._beta_divergence(X, W, H_next, 1) + l1 * H_next.sum()
        assert gain > 0 and before - after >= gain * (1 - 1e-9), (before - after, gain)
        assert bound == pytest.approx(before - gain + X.sum(), rel=1e-6)  # float32 logs


def test_is_gain_is_what_the_multiplicative_step_is_sure_to_lower_the_objective_by():
    from nmfcli.solvers import mu

    rng = np.random.RandomState(9)
    X = rng.rand(30, 20) + 0.05
    W, H = rng.rand(30, 4), rng.rand(4, 20)
    eng = core.get_engine("numpy", X, np.float64)
    for l1 in (0.0, 0.5):
        before = sk_nmf._beta_divergence(X, W, H, 0) + l1 * H.sum()
        numerator, denominator = eng.mu_products(W, H, 0, "H")
        gain = mu._is_gain(np, H, denominator + l1, np.sqrt(numerator / (denominator + l1)))
        H_next = H.copy()
        bound = mu.update_H(eng, W, H_next, 0, l1, 0.0, mu.gamma_for(0), bound=True)
        after = sk_nmf._beta_divergence(X, W, H_next, 0) + l1 * H_next.sum()
        assert gain > 0 and before - after >= gain * (1 - 1e-9), (before - after, gain)
        assert bound == pytest.approx(before - gain + X.size, rel=1e-6)  # float32 logs


@pytest.mark.parametrize("beta", [0.5, 1.5, 3.0, -0.5, 1.2, 2.5])
@pytest.mark.parametrize("side", ["H", "W"])
def test_beta_gain_is_what_the_multiplicative_step_is_sure_to_lower_the_objective_by(beta, side):
    """For β other than 0, 1 and 2, with and without l1 (where for β > 1 scikit-learn's step is
    not the majorisation's minimiser): the gain is at most the true decrease, and the bound
    (the divergence from the update's inner products, less the gain) is the exact divergence
    less that gain, but for the constant ΣX^β/(β(β−1)) it leaves out."""
    from nmfcli.solvers import mu

    rng = np.random.RandomState(10)
    X = rng.rand(30, 20) + (0.05 if beta <= 0 else 0.0)
    if beta > 0:
        X[rng.rand(30, 20) < 0.2] = 0.0
    W, H = rng.rand(30, 4), rng.rand(4, 20)
    (W if side == "W" else H)[0, :3] = 0.0  # zeros stay zero, and gain nothing
    eng = core.get_engine("numpy", X, np.float64)
    constant = float(np.sum(X[X > 0] ** beta)) / (beta * (beta - 1))
    for l1 in (0.0, 0.5):
        A = W if side == "W" else H
        before = sk_nmf._beta_divergence(X, W, H, beta) + l1 * A.sum()
        numerator, denominator = eng.mu_products(W, H, beta, side)
        step = (numerator / (denominator + l1)) ** mu.gamma_for(beta)
        gain = mu._beta_gain(np, A, numerator, denominator, step, beta, l1)
        W_next, H_next = W.copy(), H.copy()
        if side == "W":
            bound = mu.update_W(eng, W_next, H_next, beta, l1, 0.0, mu.gamma_for(beta), {}, False, bound=True)
        else:
            bound = mu.update_H(eng, W_next, H_next, beta, l1, 0.0, mu.gamma_for(beta), bound=True)
        after = sk_nmf._beta_divergence(X, W_next, H_next, beta) + l1 * (W_next if side == "W" else H_next).sum()
        assert gain > 0 and before - after >= gain * (1 - 1e-9), (l1, before - after, gain)
        assert bound == pytest.approx(before - gain - constant, rel=1e-9, abs=1e-9 * abs(constant))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_log_sum_is_the_sum_to_float32_rounding(dtype):
    rng = np.random.RandomState(2)
    X = (rng.rand(70, 50) * (rng.rand(70, 50) > 0.4)).astype(dtype)
    WH = (rng.rand(70, 50) + 0.2).astype(dtype)
    ratio = X / WH
    exact = float(np.sum(X[X > 0].astype(np.float64) * np.log(ratio[X > 0].astype(np.float64))))
    scale = float(np.sum(X, dtype=np.float64))
    for engine in ("numpy", "array-api-numpy"):
        eng = core.get_engine(engine, X, dtype)
        got = eng.log_sum(ratio.copy(), X)
        assert abs(got - exact) <= 2.0**-22 * scale, (engine, got, exact)
        unweighted = float(np.sum(np.log(WH.astype(np.float64))))
        assert abs(eng.log_sum(WH.copy()) - unweighted) <= 2.0**-22 * WH.size, engine
    Xs = sp.csr_matrix(X)
    got = core.get_engine("numpy", Xs, dtype).log_sum(Xs.data / WH[Xs.nonzero()], Xs.data)
    assert abs(got - exact) <= 2.0**-22 * scale


def test_emu_extrapolation_moves_along_the_last_step_in_log_coordinates():
    from nmfcli.solvers import mu

    xps = pytest.importorskip("array_api_strict")
    A = np.array([[1.0, 2.0, 0.0, 3.0, 5.0], [4.0, 0.0, 1e-300, 1.0, 1.0]])
    before = np.array([[0.5, 2.0, 1.0, 0.0, 50.0], [1.0, 0.0, 1.0, 1.0, 1.0]])
    expected = A * np.clip(np.where(before > 0, A / np.where(before > 0, before, 1.0), 1.0), 0.5, 2.0) ** 0.4
    # doubled (clipped from 4 to 2), kept, a zero stays zero, before = 0 keeps A, halved (from 0.1)
    np.testing.assert_allclose(mu.extrapolate(A, before.copy(), 0.4), expected, rtol=1e-6)  # float32 inside
    strict = mu.extrapolate(xps.asarray(A.copy()), xps.asarray(before.copy()), 0.4)
    np.testing.assert_array_equal(np.asarray(strict), mu.extrapolate(A, before.copy(), 0.4))  # the same steps
    assert expected[0, 2] == 0.0 and expected[1, 1] == 0.0 and expected[0, 3] == 3.0


def test_a_checkpoint_from_before_ehals_resumes_under_auto_as_hals():
    """auto ran hals before ehals existed; its checkpoints (no W_before) must go on bit-identically."""
    X = dense(10, 50, 40) + 0.01
    full = nmfcli.fit(X, 4, solver="hals", tol=0, max_iter=30)
    saved = {}

    def stop_at_12(info):
        if info.iteration == 12:
            saved.update(info.checkpoint())
            return "interrupted"

    nmfcli.fit(X, 4, solver="hals", tol=0, max_iter=30, callback=stop_at_12)
    assert "W_before" not in saved
    resumed = nmfcli.fit(X, 4, tol=0, max_iter=30, resume=saved)
    assert resumed.options["solver"] == "hals"
    assert np.array_equal(resumed.W, full.W) and resumed.history == full.history


# ---------------------------------------------------------------- component order across fits

def _best_pairing(H, R):
    """Brute force over every one-to-one pairing: the largest summed cosine (the oracle)."""
    import itertools

    unit = lambda A: A / np.linalg.norm(A, axis=1, keepdims=True)  # noqa: E731
    C = unit(H) @ unit(R).T
    small, large = sorted(C.shape)
    if C.shape[0] == small:
        return max(sum(C[i, p[i]] for i in range(small)) for p in itertools.permutations(range(large), small))
    return max(sum(C[p[j], j] for j in range(small)) for p in itertools.permutations(range(large), small))


@pytest.mark.parametrize("k_fit, k_ref", [(5, 5), (6, 4), (3, 5)])
def test_match_components_finds_the_best_pairing(k_fit, k_ref):
    rng = np.random.default_rng(k_fit * 10 + k_ref)
    for _ in range(20):
        H, R = rng.random((k_fit, 12)) ** 3, rng.random((k_ref, 12)) ** 3
        m = nmfcli.match_components(H, R)
        assert sorted(m.order) == list(range(k_fit))
        paired = [(pos, ref) for pos, ref in enumerate(m.matched) if ref is not None]
        assert len(paired) == min(k_fit, k_ref) and [ref for _, ref in paired] == sorted(ref for _, ref in paired)
        assert paired == [(i, ref) for i, (_, ref) in enumerate(paired)]  # paired components come first
        cos = [float(H[m.order[pos]] @ R[ref] / np.linalg.norm(H[m.order[pos]]) / np.linalg.norm(R[ref]))
               for pos, ref in paired]
        np.testing.assert_allclose([m.similarity[pos] for pos, _ in paired], cos, rtol=1e-12)
        assert sum(cos) == pytest.approx(_best_pairing(H, R), rel=1e-12)
        if k_fit > k_ref:  # the rest follow in their own order
            rest = m.order[k_ref:]
            assert rest == sorted(rest) and m.similarity[k_ref:] == [None] * (k_fit - k_ref)


def test_match_components_undoes_a_permutation_and_ignores_scale():
    rng = np.random.default_rng(7)
    R = rng.random((8, 30))
    perm = rng.permutation(8)
    H = R[perm] * rng.uniform(0.1, 10, size=(8, 1))
    m = nmfcli.match_components(H, R)
    assert m.matched == list(range(8)) and np.array_equal(perm[m.order], np.arange(8))
    np.testing.assert_allclose(m.similarity, 1.0, rtol=1e-12)
    H[3] = 0.0  # a dead component resembles nothing
    assert nmfcli.match_components(H, R).similarity[int(perm[3])] == 0.0
    with pytest.raises(DataError, match="same number of columns"):
        nmfcli.match_components(H[:, :5], R)
