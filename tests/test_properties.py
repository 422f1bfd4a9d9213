"""Properties that hold for any non-negative X (hypothesis draws the data)."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import nmfcli
from nmfcli import core
from conftest import emu_slack

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def matrices(draw, min_side=2, max_side=12, positive=False):
    m = draw(st.integers(min_side, max_side))
    n = draw(st.integers(min_side, max_side))
    low = 0.01 if positive else 0.0
    values = st.floats(low, 100.0, allow_nan=False, allow_infinity=False)
    X = draw(arrays(np.float64, (m, n), elements=values))
    X[X < 1e-6] = low  # no subnormal noise: the values must survive a cast to float32
    if not positive and draw(st.booleans()):
        X[X < np.median(X)] = 0.0  # sparse-ish data
    if not X.any():
        X[0, 0] = 1.0
    return X


@example(X=np.array([[1.0, 0.0], [0.0, 0.0]]), k=1, solver="mu", init="nndsvd")  # exact at the start: error 0
@SETTINGS
@given(X=matrices(), k=st.integers(1, 4), solver=st.sampled_from(["ehals", "hals", "cd", "mu"]),
       init=st.sampled_from(["random", "nndsvd", "nndsvda", "nndsvdar"]))
def test_factors_are_non_negative_and_finite(X, k, solver, init):
    if init != "random" and k > min(X.shape):
        init = "random"
    r = nmfcli.fit(X, k, solver=solver, init=init, max_iter=30)
    for A in (r.W, r.H):
        assert np.isfinite(A).all() and (A >= 0).all()
    assert r.metrics["relative_error"] <= 1.0 + 1e-9 or init == "random"


@SETTINGS
@given(X=matrices(positive=True), k=st.integers(1, 3), beta=st.sampled_from([2.0, 1.0, 0.0, 0.5, 1.5, 3.0]))
def test_mu_objective_never_rises(X, k, beta):
    """Each multiplicative update is a majorisation-minimisation step (Févotte & Idier 2011)."""
    seen = []

    def record(info):
        seen.append(core.metrics(X, info.W, info.H, loss=beta)["beta_divergence"])

    nmfcli.fit(X, k, solver="mu", loss=beta, init="random", tol=0, max_iter=25, callback=record)
    # The divergence is a difference of sums of size ~ X.size·max(X)^max(β, 1): allow its rounding.
    rounding = 1e-12 * X.size * max(1.0, float(X.max())) ** max(beta, 1.0)
    for before, after in zip(seen, seen[1:]):
        assert after <= before + rounding


@SETTINGS
@given(data=st.data(), k=st.integers(1, 3), loss=st.sampled_from(["kl", "is", 0.5, 1.5, 3.0, -0.5]),
       alpha=st.sampled_from([0.0, 0.05]))
def test_emu_factors_are_non_negative_and_its_bound_never_rises(data, k, loss, alpha):
    """emu's kept steps never raise its bound on the objective beyond its rounding (the float32
    logs of KL and Itakura-Saito, the inner products of other β), whatever the data (zeros
    where β > 0, dying components), and its factors stay finite."""
    X = data.draw(matrices(positive=loss in ("is", -0.5)))
    bounds = []

    def record(info):
        bound = info.checkpoint()["solver_state"]["bound"]
        if bound is not None:
            bounds.append(bound)

    r = nmfcli.fit(X, k, loss=loss, solver="emu", init="random", tol=0, max_iter=25, alpha_W=alpha,
                   l1_ratio=1.0, callback=record)
    for A in (r.W, r.H):
        assert np.isfinite(A).all() and (A >= 0).all()
    slack = emu_slack(X, {"kl": 1, "is": 0}.get(loss, loss))
    for before, after in zip(bounds, bounds[1:]):
        assert after <= before + slack + 1e-12 * abs(before)


@SETTINGS
@given(X=matrices(), k=st.integers(1, 3), solver=st.sampled_from(["ehals", "hals", "cd"]))
def test_frobenius_objective_never_rises(X, k, solver):
    r = nmfcli.fit(X, k, solver=solver, init="random", tol=0, max_iter=25)
    scale = max(r.history[0], 1.0)
    for before, after in zip(r.history, r.history[1:]):
        assert after <= before + 1e-9 * scale


@SETTINGS
@given(X=matrices(positive=True), k=st.integers(1, 3), loss=st.sampled_from(["frobenius", "kl", "is"]),
       which=st.sampled_from(["W", "H"]))
def test_fixed_factor_is_returned_bit_identical(X, k, loss, which):
    rng = np.random.RandomState(0)
    fixed = rng.rand(X.shape[0], k) if which == "W" else rng.rand(k, X.shape[1])
    kwargs = {"fix_W": fixed} if which == "W" else {"fix_H": fixed}
    r = nmfcli.fit(X, k, loss=loss, max_iter=20, **kwargs)
    assert np.array_equal(r.W if which == "W" else r.H, fixed)
    assert ((r.H if which == "W" else r.W) >= 0).all()


@SETTINGS
@given(seed=st.integers(0, 10_000), m=st.integers(8, 25), n=st.integers(8, 25), k=st.integers(1, 3))
def test_exact_recovery_of_exactly_low_rank_data(seed, m, n, k):
    rng = np.random.RandomState(seed)
    W = rng.rand(m, k) + 0.1
    H = rng.rand(k, n) + 0.1
    X = W @ H
    r = nmfcli.fit(X, k, tol=1e-14, max_iter=5000)
    assert r.metrics["relative_error"] < 1e-4


@SETTINGS
@given(X=matrices(), k=st.integers(1, 3), solver=st.sampled_from(["ehals", "hals", "cd", "mu"]))
def test_sparse_input_gives_the_dense_answer(X, k, solver):
    """Same model from a CSR copy of X. Compared as W·H: on degenerate data (dying
    components) rounding may move a factor's mass between equivalent solutions;
    factor-by-factor equality on generic data is in test_core.test_sparse_equals_dense."""
    a = nmfcli.fit(X, k, solver=solver, init="random", max_iter=20)
    b = nmfcli.fit(sp.csr_matrix(X), k, solver=solver, init="random", max_iter=20)
    scale = max(float(X.max()), 1.0)
    np.testing.assert_allclose(b.W @ b.H, a.W @ a.H, rtol=1e-6, atol=1e-9 * scale)
    assert b.metrics["objective"] == pytest.approx(a.metrics["objective"], rel=1e-6, abs=1e-9 * scale**2)


@SETTINGS
@given(X=matrices(), k=st.integers(1, 3), solver=st.sampled_from(["ehals", "hals", "cd", "mu"]))
def test_float32_is_preserved(X, k, solver):
    r = nmfcli.fit(X.astype(np.float32), k, solver=solver, init="random", max_iter=10)
    assert r.W.dtype == np.float32 and r.H.dtype == np.float32


@SETTINGS
@given(X=matrices(), k=st.integers(1, 4))
def test_transform_satisfies_the_kkt_conditions(X, k):
    """W ≥ 0, gradient ≥ 0, and W ⊙ gradient = 0: optimality of the NNLS solve."""
    H = np.random.RandomState(k).rand(k, X.shape[1]) + 0.05
    W = nmfcli.transform(X, H)
    grad = (W @ H - X) @ H.T
    scale = np.abs(X @ H.T).max() + 1.0
    assert (W >= 0).all()
    assert (grad >= -1e-9 * scale).all()
    assert (np.abs(W * grad) <= 1e-9 * scale * (W.max() + 1)).all()
