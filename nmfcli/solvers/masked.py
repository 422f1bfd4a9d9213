"""Multiplicative updates with missing entries: the beta-divergence over the observed entries only.

X0 is X with its missing entries set to 0 and M the mask of observed entries (1.0, else
0.0), both dense m×n. The objective is Σ over observed (i, j) of d_β(X_ij | (WH)_ij),
and each update is scikit-learn's multiplicative update with every sum over the entries
of X restricted to the observed ones (Lee & Seung's weighted updates; the weights are the
mask). Entries of X0 that are 0 already drop out of the terms that multiply X, so only the
terms in W·H alone need the mask: W·Hᵀ's (WH)^(β−1), Σ WH for KL, the entry count for
Itakura-Saito, Σ (WH)^β for other β. With M all ones these are scikit-learn's updates and
divergence (its clamps and thresholds included), in another order of summation.

Dense and in memory: every update forms W·H (m×n) once.
"""

import numpy as np

from nmfcli.solvers.losses import EPSILON, power
from nmfcli.solvers.mu import FLOAT64_EPS, _step


def _blocks(X0, M, WH, beta):
    """(numerator block, denominator block) of the update: X0⊙(WH)^(β−2) and M⊙(WH)^(β−1), with
    scikit-learn's clamps (WH raised to ε under a negative power: for β < 2 in the first, β < 1
    in the second); for β = 2, X0 and M⊙WH; for β = 1, X0 / max(WH, ε) and M."""
    if beta == 2:
        return X0, M * WH
    C = np.maximum(WH, EPSILON)
    numerator = X0 / C if beta == 1 else X0 * power(np, C if beta < 2 else WH, beta - 2)
    if beta == 1:
        return numerator, M
    return numerator, M * power(np, C if beta < 1 else WH, beta - 1)


def update_W(X0, M, W, H, beta, l1, l2, gamma):
    """One multiplicative update of W (m×k) over the observed entries, in place."""
    numerator, denominator = _blocks(X0, M, W @ H, beta)
    W *= _step(np, W, numerator @ H.T, denominator @ H.T, l1, l2, gamma)
    if beta < 1:
        W[W < FLOAT64_EPS] = 0.0


def update_H(X0, M, W, H, beta, l1, l2, gamma):
    """One multiplicative update of H (k×n) over the observed entries, in place."""
    numerator, denominator = _blocks(X0, M, W @ H, beta)
    H *= _step(np, H, W.T @ numerator, W.T @ denominator, l1, l2, gamma)
    if beta <= 1:
        H[H < FLOAT64_EPS] = 0.0


def divergence(X0, M, W, H, beta):
    """D_β(X ‖ WH) over the observed entries, by scikit-learn's formulas (entries of X at or
    below EPSILON left out of the log and ratio terms)."""
    WH = W @ H
    if beta == 2:
        return 0.5 * squared_error(X0, M, WH)
    keep = X0 > EPSILON
    C = np.where(keep, np.maximum(WH, EPSILON), 1.0)
    X_kept = np.where(keep, X0, 0.0)
    if beta == 1:
        ratio = np.where(keep, X0, 1.0) / C
        return float(np.sum(X_kept * np.log(ratio)) - np.sum(X_kept) + np.sum(M * WH))
    if beta == 0:
        ratio = np.where(keep, X0 / C, 1.0)
        # every observed entry counts −1, those at or below EPSILON only that (as scikit-learn's m·n)
        return float(np.sum(np.where(keep, ratio - np.log(ratio), 0.0)) - np.sum(M))
    X_safe = np.where(keep, X0, 1.0)  # no 0 ** negative
    partial = float(np.sum(np.where(keep, power(np, X_safe, beta), 0.0)) - beta * np.sum(X_kept * power(np, C, beta - 1)))
    return (partial + float(np.sum(M * power(np, WH, beta))) * (beta - 1)) / (beta * (beta - 1))


def squared_error(X0, M, WH):
    """‖M⊙(X − WH)‖²."""
    D = M * (X0 - WH)
    return float(np.sum(D * D))
