"""Initial factors, the same numbers as scikit-learn's ``_initialize_nmf`` for the same seed.

scikit-learn draws from ``numpy.random.RandomState(seed)`` (MT19937): H before W
for ``random``; a randomized SVD (Halko et al. 2011, as in
``sklearn.utils.extmath.randomized_svd``) for the NNDSVD family (Boutsidis &
Gallopoulos 2008), and a fresh generator from the same seed for the noise of
``nndsvdar``. Everything is drawn on the host, so every engine starts from
identical factors.
"""

import math

import numpy as np
import scipy.linalg as linalg
import scipy.sparse as sp

from nmfcli.engines import blas, sparse_products

INITS = ("nndsvda", "nndsvd", "nndsvdar", "random", "custom")


def default_init(k, shape):
    """scikit-learn's default: nndsvda when k ≤ min(m, n), else random."""
    return "nndsvda" if k <= min(shape) else "random"


def random_factors(mean_X, k, shape, dtype, seed):
    """|N(0, 1)|·√(mean(X)/k) for H then W, from RandomState(seed)."""
    m, n = shape
    avg = np.sqrt(mean_X / k)
    rng = np.random.RandomState(seed)
    H = avg * rng.standard_normal(size=(k, n)).astype(dtype, copy=False)
    W = avg * rng.standard_normal(size=(m, k)).astype(dtype, copy=False)
    np.abs(H, out=H)
    np.abs(W, out=W)
    return W, H


def nndsvd_factors(X, k, variant, seed, eps=1e-6):
    """NNDSVD of X (dense or sparse), with zeros filled per ``variant``."""
    U, S, V = randomized_svd(X, k, seed)
    W = np.zeros_like(U)
    H = np.zeros_like(V)
    # The leading singular pair of a non-negative matrix is non-negative.
    W[:, 0] = np.sqrt(S[0]) * np.abs(U[:, 0])
    H[0, :] = np.sqrt(S[0]) * np.abs(V[0, :])
    for j in range(1, k):
        x, y = U[:, j], V[j, :]
        x_p, y_p = np.maximum(x, 0), np.maximum(y, 0)
        x_n, y_n = np.abs(np.minimum(x, 0)), np.abs(np.minimum(y, 0))
        x_p_nrm, y_p_nrm = _norm(x_p), _norm(y_p)
        x_n_nrm, y_n_nrm = _norm(x_n), _norm(y_n)
        m_p, m_n = x_p_nrm * y_p_nrm, x_n_nrm * y_n_nrm
        if m_p > m_n:
            u, v, sigma = x_p / x_p_nrm, y_p / y_p_nrm, m_p
        elif m_n > 0:
            u, v, sigma = x_n / x_n_nrm, y_n / y_n_nrm, m_n
        else:
            # Both parts vanish (a singular vector with one sign only in one factor):
            # scikit-learn divides 0 by 0 here and returns NaN factors; the
            # component starts at zero instead, and the nndsvda/ar fill applies.
            continue
        lbd = np.sqrt(S[j] * sigma)
        W[:, j] = lbd * u
        H[j, :] = lbd * v
    W[W < eps] = 0
    H[H < eps] = 0
    if variant == "nndsvda":
        avg = X.mean()
        W[W == 0] = avg
        H[H == 0] = avg
    elif variant == "nndsvdar":
        rng = np.random.RandomState(seed)
        avg = X.mean()
        W[W == 0] = abs(avg * rng.standard_normal(size=len(W[W == 0])) / 100)
        H[H == 0] = abs(avg * rng.standard_normal(size=len(H[H == 0])) / 100)
    return W, H


def _norm(x):
    """Euclidean norm by a dot product, as scikit-learn's ``norm`` (bit-identical results): its
    square root is math.sqrt's, a Python float even for float32 x, and so are the products of
    norms that scale the components (in float32 a numpy square root rounded them 1 ulp away)."""
    return math.sqrt(np.dot(x.ravel(), x.ravel()))


def randomized_svd(M, k, seed, n_oversamples=10):
    """Rank-k randomized SVD with scikit-learn's defaults (n_iter auto, LU power iterations, sign flip)."""
    rng = np.random.RandomState(seed)
    n_random = k + n_oversamples
    m, n = M.shape
    n_iter = 7 if k < 0.1 * min(M.shape) else 4
    transpose = m < n
    if transpose:
        M = M.T
    Q = rng.normal(size=(M.shape[1], n_random))
    if M.dtype == np.float32:
        Q = Q.astype(np.float32, copy=False)
    normalizer = _lu if n_iter > 2 else (lambda a: a)
    times, times_T = _products(M)
    for _ in range(n_iter):
        Q = normalizer(times(Q))
        Q = normalizer(times_T(Q))
    Q, _ = linalg.qr(times(Q), mode="economic", check_finite=False)
    B = np.asarray(_product(Q.T, M)) if not sp.issparse(M) else np.asarray(times_T(Q).T)
    Uhat, s, Vt = linalg.svd(B, full_matrices=False, lapack_driver="gesdd")
    U = Q @ Uhat
    U, Vt = _svd_flip(U, Vt, u_based=not transpose)
    if transpose:
        return Vt[:k, :].T, s[:k], U[:, :k].T
    return U[:, :k], s[:k], Vt[:k, :]


def _products(M):
    """(V ↦ M·V, V ↦ Mᵀ·V). Sparse M's products with a CSR matrix's rows run on threads
    (engines/sparse_products.py); those summing over its rows stay one scipy call, whose
    order of summation is scikit-learn's, so the factors stay the same bit for bit."""
    if not sp.issparse(M):
        return (lambda V: _product(M, V)), (lambda V: _product(M.T, V))
    if M.format == "csr":
        products = sparse_products.SparseProducts(M)
        return products.XV, (lambda V: products.XtV(V, blocks=1))
    products = sparse_products.SparseProducts(M.T.tocsr())  # M CSC: Mᵀ is CSR without a copy
    return (lambda V: products.XtV(V, blocks=1)), products.XV


def _product(A, B):
    """A @ B on the process's BLAS threads within a fit; the small LU, QR and SVD run on one
    (engines/blas.py). scikit-learn runs those on the process's threads, where the BLAS rounds
    them differently, so within a fit the start can differ from scikit-learn's in the last bits
    (called outside a fit it is the same to the bit). Threads there would cost more than they
    are worth: digits' (1797×64) start took 16-55 ms on two threads against 5-7 ms within a fit."""
    with blas.product_threads():
        return A @ B


def _lu(A):
    return linalg.lu(A, permute_l=True, check_finite=False)[0]


def _svd_flip(u, v, u_based):
    """Make the largest-|.| entry of each column of u (or row of v) positive."""
    if u_based:
        idx = np.argmax(np.abs(u), axis=0)
        signs = np.sign(u[idx, np.arange(u.shape[1])])
    else:
        idx = np.argmax(np.abs(v), axis=1)
        signs = np.sign(v[np.arange(v.shape[0]), idx])
    u *= signs[np.newaxis, :]
    v *= signs[:, np.newaxis]
    return u, v
