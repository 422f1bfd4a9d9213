"""The numpy engine: dense ndarrays and scipy.sparse CSR matrices on the CPU."""

import numpy as np
import scipy.sparse as sp

from nmfcli.solvers.losses import EPSILON, row_blocks


class NumpyEngine:
    """Holds X (dense C-ordered or CSR, never densified) and computes products with it."""

    name = "numpy"
    xp = np

    def __init__(self, X, dtype):
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=dtype, copy=True)
            X.sum_duplicates()
            X.eliminate_zeros()
        else:
            X = np.ascontiguousarray(X, dtype=dtype)
        self.X = X
        self.is_sparse = sp.issparse(X)
        self.shape = X.shape
        self.dtype = np.dtype(dtype)
        self._sqnorm = None

    # --- moving arrays (identity on the CPU) ---------------------------------
    def asarray(self, a):
        return np.asarray(a, dtype=self.dtype)

    def to_host(self, a):
        return np.asarray(a)

    # --- whole-X reductions ----------------------------------------------------
    def sqnorm(self):
        """‖X‖², computed once."""
        if self._sqnorm is None:
            data = self.X.data if self.is_sparse else self.X.ravel()
            self._sqnorm = float(np.dot(data, data))
        return self._sqnorm

    def mean(self):
        return self.X.mean()

    def min(self):
        return self.X.min()

    def data(self):
        """The stored entries of X (all of them when dense, the nonzeros when sparse)."""
        return self.X.data if self.is_sparse else self.X

    # --- the products with X ------------------------------------------------
    def XHt(self, H):
        """X·Hᵀ, shape (m, k)."""
        return np.asarray(self.X @ H.T)

    def HXt(self, H):
        """H·Xᵀ, shape (k, m), C-ordered: the k-major form the HALS sweeps read row by row."""
        if self.is_sparse:
            return np.ascontiguousarray((self.X @ H.T).T)
        return H @ self.X.T

    def WtX(self, W):
        """Wᵀ·X, shape (k, n), C-ordered; W may be given as the transposed view of Wᵀ."""
        if self.is_sparse:
            return np.ascontiguousarray((self.X.T @ W).T)
        return W.T @ self.X

    # --- elementwise terms for beta-divergences ---------------------------------
    def WH_at_X(self, W, H):
        """W·H where X is stored: dense (m, n) array, or the values at X's nonzeros (1-D)."""
        if not self.is_sparse:
            return W @ H
        X = self.X
        rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        out = np.empty(X.nnz, dtype=np.result_type(W, H))
        # Batched row-wise dot products: memory stays O(batch·k), not O(nnz·k).
        batch = max(4096, (1 << 22) // max(W.shape[1], 1))
        Ht = np.ascontiguousarray(H.T)
        for start in range(0, X.nnz, batch):
            s = slice(start, start + batch)
            np.einsum("ij,ij->i", W[rows[s]], Ht[X.indices[s]], out=out[s])
        return out

    def sparse_like_X(self, values):
        """A CSR matrix with X's pattern and the given values at its nonzeros."""
        X = self.X
        return sp.csr_matrix((values, X.indices, X.indptr), shape=X.shape)

    def mu_products(self, W, H, beta, side):
        """The two products of a multiplicative update for beta != 2.

        side "W": ([X ⊙ (WH)^(β−2)]·Hᵀ, (WH)^(β−1)·Hᵀ); side "H": Wᵀ·[...] likewise.
        The second is None for β = 1 (it is then a column or row sum of a factor).
        W·H is clamped below at EPSILON as scikit-learn does, and it is formed one row
        block at a time, so no m×n temporary exists for dense X.
        """
        k = W.shape[1]
        m, n = self.shape
        shape = (m, k) if side == "W" else (k, n)
        numerator = np.zeros(shape, dtype=np.result_type(W, H))
        denominator = None if beta == 1 else np.zeros(shape, dtype=numerator.dtype)
        if self.is_sparse:
            values = self.WH_at_X(W, H)
            ratio = _x_times_power(self.X.data, values, beta)
            R = self.sparse_like_X(ratio)
            if side == "W":
                numerator[...] = R @ H.T
            else:
                numerator[...] = (R.T @ W).T
        for rows in row_blocks(m, n):
            if not self.is_sparse or denominator is not None:
                WH = W[rows] @ H
            if not self.is_sparse:
                ratio = _x_times_power(self.X[rows], WH.copy() if denominator is not None else WH, beta)
                if side == "W":
                    numerator[rows] = ratio @ H.T
                else:
                    numerator += W[rows].T @ ratio
            if denominator is not None:
                if beta < 1:
                    WH[WH < EPSILON] = EPSILON
                WH **= beta - 1
                if side == "W":
                    denominator[rows] = WH @ H.T
                else:
                    denominator += W[rows].T @ WH
        return numerator, denominator


def _x_times_power(X, WH, beta):
    """X ⊙ WH^(β−2) in place in WH, with scikit-learn's clamp and operation order."""
    if beta < 2:
        WH[WH < EPSILON] = EPSILON
    if beta == 1:
        np.divide(X, WH, out=WH)
    elif beta == 0:
        WH **= -1
        WH **= 2
        WH *= X
    else:
        WH **= beta - 2
        WH *= X
    return WH
