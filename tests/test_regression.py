"""The default solvers still reach scikit-learn's answer: error, never time.

From the same initial factors (nndsvda, seed 0 in both), nmfcli's default fit must end
at most 0.1% above the error scikit-learn ends at: Frobenius (``ehals``, and plain
``hals``, the default of the Dask and out-of-core engines) against scikit-learn's ``cd``,
KL and Itakura-Saito (``emu``, and plain ``mu``, the default of those engines) against
scikit-learn's ``mu``.
This guards the inner stopping rule of accelerated HALS, which a prototype showed can stall
above the reference error on small data, and the extrapolations of ehals and emu. Speed is
measured by ``bench/run.py``, not here.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import nmfcli

sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

TOLERANCE = 1.001


def digits():
    return sklearn_datasets.load_digits().data.astype(np.float64)


def tfidf_like(m=400, n=300, density=0.03, seed=0):
    """A small sparse TF-IDF-like matrix: Zipf-weighted random counts, sublinear tf, idf, unit rows."""
    rng = np.random.default_rng(seed)
    counts = sp.random(m, n, density=density, format="csr", random_state=seed,
                       data_rvs=lambda size: rng.geometric(0.5, size=size).astype(np.float64))
    counts = counts @ sp.diags(1.0 / np.arange(1, n + 1) ** 0.3)  # Zipf-like column weights
    counts = counts.tocsr()
    counts.data = 1.0 + np.log(counts.data / counts.data.min())
    df = np.bincount(counts.indices, minlength=n)
    X = counts @ sp.diags(np.log((1 + m) / (1 + df)) + 1.0)
    X = sp.csr_matrix(X)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ X)


CASES = {
    "digits": (digits, 10),
    "sparse_tfidf": (tfidf_like, 8),
}
# k = 50 on digits: where ehals sweeps each factor 3 times an iteration, not 5
# (cd.inner_sweep_limits), the floor that guards against stalling is lowest.
FROBENIUS_CASES = {**CASES, "digits_k50": (digits, 50)}


def sklearn_error(X, k, solver, beta_loss):
    model = sklearn_decomposition.NMF(k, solver=solver, beta_loss=beta_loss, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning when it runs to max_iter
        model.fit_transform(X)
    return model.reconstruction_err_


@pytest.mark.parametrize("case", sorted(FROBENIUS_CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("solver", ["auto", "hals"])
def test_default_frobenius_fit_reaches_sklearn_cd_error(case, dtype, solver):
    make, k = FROBENIUS_CASES[case]
    X = make().astype(dtype)
    reference = sklearn_error(X, k, "cd", "frobenius")
    result = nmfcli.fit(X, k, seed=0, solver=solver)
    assert result.options["solver"] == ("ehals" if solver == "auto" else solver)
    # Both errors recomputed in float64 from the factors, so float32 rounding of the
    # running objective cannot decide the comparison.
    ours = nmfcli.metrics(X.astype(np.float64), result.W, result.H)["reconstruction_error"]
    assert ours <= TOLERANCE * reference, (
        f"{result.options['solver']} ended at {ours:.6g} after {result.n_iter} iterations ({result.stop_reason}); "
        f"scikit-learn's cd at {reference:.6g}")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("solver", ["auto", "mu"])
def test_kl_fit_reaches_sklearn_mu_divergence(case, dtype, solver):
    make, k = CASES[case]
    X = make().astype(dtype)
    reference = sklearn_error(X, k, "mu", "kullback-leibler")  # √(2·D_KL)
    result = nmfcli.fit(X, k, loss="kl", seed=0, solver=solver)
    assert result.options["solver"] == ("emu" if solver == "auto" else solver)
    ours = nmfcli.metrics(X.astype(np.float64), result.W, result.H, loss="kl")["reconstruction_error"]
    assert ours <= TOLERANCE * reference, (
        f"{result.options['solver']} (kl) ended at {ours:.6g} after {result.n_iter} iterations "
        f"({result.stop_reason}); scikit-learn's mu at {reference:.6g}")


@pytest.mark.parametrize("solver", ["auto", "mu"])
def test_is_fit_reaches_sklearn_mu_divergence(solver):
    X = digits() + 0.5  # Itakura-Saito needs X without zeros
    reference = sklearn_error(X, 10, "mu", "itakura-saito")
    result = nmfcli.fit(X, 10, loss="is", seed=0, solver=solver)
    assert result.options["solver"] == ("emu" if solver == "auto" else solver)
    ours = result.metrics["reconstruction_error"]
    assert ours <= TOLERANCE * reference, (
        f"{result.options['solver']} (is) ended at {ours:.6g} after {result.n_iter} iterations "
        f"({result.stop_reason}); scikit-learn's mu at {reference:.6g}")


@pytest.mark.parametrize("beta", [0.5, 1.5, 3.0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_other_beta_fit_reaches_sklearn_mu_divergence(beta, case):
    make, k = CASES[case]
    X = make()
    reference = sklearn_error(X, k, "mu", beta)
    result = nmfcli.fit(X, k, loss=beta, seed=0)
    assert result.options["solver"] == "emu"
    ours = result.metrics["reconstruction_error"]
    assert ours <= TOLERANCE * reference, (
        f"emu (beta={beta}) ended at {ours:.6g} after {result.n_iter} iterations "
        f"({result.stop_reason}); scikit-learn's mu at {reference:.6g}")


def test_tfidf_like_is_sparse_tfidf():
    X = tfidf_like()
    assert sp.issparse(X) and X.nnz < 0.05 * X.shape[0] * X.shape[1]
    assert X.min() >= 0
    np.testing.assert_allclose(sp.linalg.norm(X[np.asarray(X.sum(axis=1)).ravel() > 0], axis=1), 1.0)
