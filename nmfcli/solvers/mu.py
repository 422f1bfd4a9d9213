"""Multiplicative updates for the beta-divergence family (Lee & Seung 2001; Févotte & Idier 2011).

The same semantics as scikit-learn's ``solver="mu"``: its EPSILON clamps, the
exponent γ of the maximisation-minimisation step for β < 1 and β > 2, the
thresholding of tiny entries for β ≤ 1, and its stopping rule (every 10
iterations, stop when the decrease of √(2·D) relative to its initial value is
below tol).
"""

import numpy as np

from nmfcli.solvers.losses import EPSILON
from nmfcli.solvers.xp import namespace

CHECK_EVERY = 10
FLOAT64_EPS = float(np.finfo(np.float64).eps)


def gamma_for(beta):
    """The MM exponent that makes each update non-increasing (Févotte & Idier 2011)."""
    if beta < 1:
        return 1.0 / (2.0 - beta)
    if beta > 2:
        return 1.0 / (beta - 1.0)
    return 1.0


def converged(state, error, tol):
    """scikit-learn's stop, tested every CHECK_EVERY iterations: the error √(2·D) fell by less than
    tol times its value at the initial factors since the last test (never when tol is 0).

    ``state`` holds "error_at_init" and "previous_error"; the latter is updated here.
    """
    if not tol > 0:
        return False
    done = (state["previous_error"] - error) / state["error_at_init"] < tol
    state["previous_error"] = error
    return done


def update_W(engine, W, H, beta, l1, l2, gamma, cache, keep_cache):
    """One multiplicative update of W (m×k), in place. ``cache`` holds products of a fixed H."""
    xp = namespace(W)
    if beta == 2:
        XHt = cache.get("XHt")
        if XHt is None:
            XHt = engine.XHt(H)
        numerator = XHt
        HHt = cache.get("HHt")
        if HHt is None:
            HHt = H @ H.T
        if keep_cache:
            cache["XHt"], cache["HHt"] = XHt, HHt
        denominator = W @ HHt
    else:
        numerator, denominator = engine.mu_products(W, H, beta, "W")
        if beta == 1:
            H_sum = cache.get("H_sum")
            if H_sum is None:
                H_sum = xp.sum(H, axis=1)
            if keep_cache:
                cache["H_sum"] = H_sum
            denominator = H_sum[None, :]  # broadcast by the division
    _apply(xp, W, numerator, denominator, l1, l2, gamma)
    if beta < 1:
        W[...] = xp.where(W < FLOAT64_EPS, 0.0, W)


def update_H(engine, W, H, beta, l1, l2, gamma):
    """One multiplicative update of H (k×n), in place."""
    xp = namespace(H)
    if beta == 2:
        numerator = engine.WtX(W)
        denominator = (W.T @ W) @ H  # the order numpy's multi_dot picks for k < m
    else:
        numerator, denominator = engine.mu_products(W, H, beta, "H")
        if beta == 1:
            W_sum = xp.sum(W, axis=0)
            W_sum = xp.where(W_sum == 0, 1.0, W_sum)
            denominator = W_sum[:, None]
    _apply(xp, H, numerator, denominator, l1, l2, gamma)
    if beta <= 1:
        H[...] = xp.where(H < FLOAT64_EPS, 0.0, H)


def _apply(xp, A, numerator, denominator, l1, l2, gamma):
    """A ← A ⊙ (numerator / denominator)^γ, with scikit-learn's penalties and zero guard."""
    if l1 > 0:
        denominator = denominator + l1
    if l2 > 0:
        denominator = denominator + l2 * A
    denominator = xp.where(denominator == 0, EPSILON, denominator)
    delta = numerator / denominator
    if gamma != 1:
        delta = delta**gamma
    A *= delta
