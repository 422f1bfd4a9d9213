"""Multiplicative updates over weighted entries: missing values and per-entry weights.

The objective is Σᵢⱼ Mᵢⱼ·d_β(Xᵢⱼ | (WH)ᵢⱼ) for weights M ≥ 0 (m×n, dense): the mask of
observed entries (1.0, else 0.0) for missing values, or the user's weights times that mask.
Each update is scikit-learn's multiplicative update with every sum over the entries of X
weighted by M (Lee & Seung's weighted updates). The arrays:

- X0: X with its missing entries set to 0;
- XM: M⊙X0, which the terms that multiply X read (for a 0/1 mask it is X0 itself: entries
  of X0 that are 0 already drop out of those terms);
- M: the weights, which the terms in W·H alone need: W·Hᵀ's (WH)^(β−1), Σ WH for KL, the
  entry count for Itakura-Saito, Σ (WH)^β for other β.

With M all ones these are scikit-learn's updates and divergence (its clamps and thresholds
included), in another order of summation. Dense and in memory: every update forms W·H
(m×n) once.
"""

import numpy as np

from nmfcli.solvers.losses import EPSILON, power
from nmfcli.solvers.mu import FLOAT64_EPS, _step


def _blocks(XM, M, WH, beta):
    """(numerator block, denominator block) of the update: XM⊙(WH)^(β−2) and M⊙(WH)^(β−1), with
    scikit-learn's clamps (WH raised to ε under a negative power: for β < 2 in the first, β < 1
    in the second); for β = 2, XM and M⊙WH; for β = 1, XM / max(WH, ε) and M."""
    if beta == 2:
        return XM, M * WH
    C = np.maximum(WH, EPSILON)
    numerator = XM / C if beta == 1 else XM * power(np, C if beta < 2 else WH, beta - 2)
    if beta == 1:
        return numerator, M
    return numerator, M * power(np, C if beta < 1 else WH, beta - 1)


def update_W(XM, M, W, H, beta, l1, l2, gamma):
    """One multiplicative update of W (m×k) over the weighted entries, in place."""
    numerator, denominator = _blocks(XM, M, W @ H, beta)
    W *= _step(np, W, numerator @ H.T, denominator @ H.T, l1, l2, gamma)
    if beta < 1:
        W[W < FLOAT64_EPS] = 0.0


def update_H(XM, M, W, H, beta, l1, l2, gamma):
    """One multiplicative update of H (k×n) over the weighted entries, in place."""
    numerator, denominator = _blocks(XM, M, W @ H, beta)
    H *= _step(np, H, W.T @ numerator, W.T @ denominator, l1, l2, gamma)
    if beta <= 1:
        H[H < FLOAT64_EPS] = 0.0


def divergence(X0, XM, M, W, H, beta):
    """Σ M⊙d_β(X ‖ WH) by scikit-learn's formulas (entries of X at or below EPSILON left out
    of the log and ratio terms); for a 0/1 mask, its divergence over the observed entries."""
    WH = W @ H
    if beta == 2:
        return 0.5 * squared_error(X0, M, WH)
    keep = X0 > EPSILON
    C = np.where(keep, np.maximum(WH, EPSILON), 1.0)
    XM_kept = np.where(keep, XM, 0.0)
    if beta == 1:
        ratio = np.where(keep, X0, 1.0) / C
        return float(np.sum(XM_kept * np.log(ratio), dtype=np.float64) - np.sum(XM_kept, dtype=np.float64) + np.sum(M * WH, dtype=np.float64))
    if beta == 0:
        ratio = np.where(keep, X0 / C, 1.0)
        # every weighted entry counts −M, those at or below EPSILON only that (as scikit-learn's m·n)
        return float(np.sum(np.where(keep, M * (ratio - np.log(ratio)), 0.0), dtype=np.float64) - np.sum(M, dtype=np.float64))
    X_safe = np.where(keep, X0, 1.0)  # no 0 ** negative
    partial = float(np.sum(np.where(keep, M * power(np, X_safe, beta), 0.0), dtype=np.float64)
                    - beta * np.sum(XM_kept * power(np, C, beta - 1), dtype=np.float64))
    return (partial + float(np.sum(M * power(np, WH, beta), dtype=np.float64)) * (beta - 1)) / (beta * (beta - 1))


def squared_error(X0, M, WH):
    """Σ M⊙(X − WH)² (for a 0/1 mask, ‖M⊙(X − WH)‖²)."""
    D = X0 - WH
    return float(np.sum(M * D * D, dtype=np.float64))
