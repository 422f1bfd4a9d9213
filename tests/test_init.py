"""The starts (nmfcli.init): NNDSVD's degenerate singular pairs, and scikit-learn's draws."""

import numpy as np
import pytest

import nmfcli
from nmfcli import init


def degenerate_svd(M, k, seed, n_oversamples=10):
    """An SVD of the 4×3 matrix below whose second pair has u ≥ 0 and v ≤ 0: both of NNDSVD's
    parts of that pair vanish (scikit-learn divides 0 by 0 there)."""
    U = np.array([[0.5, 1.0], [0.5, 0.0], [0.5, 0.0], [0.5, 0.0]])
    V = np.array([[0.6, 0.6, 0.529150262], [-1.0, 0.0, 0.0]])
    return U, np.array([3.0, 1.0]), V


@pytest.mark.parametrize("variant", ["nndsvd", "nndsvda", "nndsvdar"])
def test_a_singular_pair_with_one_sign_in_each_factor_starts_at_zero_or_the_fill(monkeypatch, variant):
    X = np.full((4, 3), 0.5)
    monkeypatch.setattr(init, "randomized_svd", degenerate_svd)
    W, H = init.nndsvd_factors(X, 2, variant, seed=0)
    assert np.all(np.isfinite(W)) and np.all(np.isfinite(H))
    if variant == "nndsvd":
        assert not W[:, 1].any() and not H[1].any()
    elif variant == "nndsvda":
        assert np.all(W[:, 1] == X.mean()) and np.all(H[1] == X.mean())
    else:
        assert np.all(W[:, 1] > 0) and np.all(W[:, 1] < X.mean())
    # the first pair is the leading one, as it came
    np.testing.assert_allclose(W[:, 0], np.sqrt(3.0) * 0.5)


def test_a_fit_from_a_degenerate_start_is_finite(monkeypatch):
    monkeypatch.setattr(init, "randomized_svd", degenerate_svd)
    result = nmfcli.fit(np.full((4, 3), 0.5), 2, init="nndsvda", max_iter=20)
    assert np.all(np.isfinite(result.W)) and np.all(np.isfinite(result.H))


@pytest.mark.parametrize("variant", ["nndsvd", "nndsvda", "nndsvdar"])
def test_nndsvd_is_scikit_learns_on_ordinary_data(variant):
    from sklearn.decomposition import _nmf as sk_nmf

    X = np.random.default_rng(0).random((30, 20))
    W, H = init.nndsvd_factors(X, 5, variant, seed=3)
    W1, H1 = sk_nmf._initialize_nmf(X, 5, init=variant, random_state=3)
    np.testing.assert_allclose(W, W1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H, H1, rtol=1e-10, atol=1e-12)


def test_random_start_is_scikit_learns_draw():
    from sklearn.decomposition import _nmf as sk_nmf

    X = np.random.default_rng(1).random((12, 9))
    W, H = init.random_factors(X.mean(), 4, X.shape, np.float64, 5)
    W1, H1 = sk_nmf._initialize_nmf(X, 4, init="random", random_state=5)
    np.testing.assert_array_equal(np.abs(W), W1)
    np.testing.assert_array_equal(np.abs(H), H1)
