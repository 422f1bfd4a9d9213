"""Coordinate descent (scikit-learn's ``cd``) and accelerated HALS for the Frobenius loss.

Both minimise ½‖X − WH‖² + l1_W‖W‖₁ + ½ l2_W‖W‖² + (the same for H) by exact
minimisation over one row of a factor at a time (Cichocki & Phan 2009). Row t of
Wᵀ depends only on Wᵀ, HHᵀ and HXᵀ, so one sweep over the k rows is the same
arithmetic as scikit-learn's Cython loop over (t, i), vectorised over i.

Factors are kept k-major (Wᵀ is k×m, H is k×n, both C-ordered) so each update
reads and writes a contiguous row.
"""

import numpy as np


def sweep(A, G, R):
    """Update the rows of A (k×p) in place; return the ℓ1 norm of the projected gradient.

    Minimises ½ tr(AᵀGA) − tr(RᵀA) over A ≥ 0, one row at a time, in order.
    The returned "violation" is scikit-learn's: |grad| where a > 0, |min(grad, 0)| where a = 0.
    """
    violation = 0.0
    for t in range(A.shape[0]):
        a = A[t]
        grad = G[t] @ A
        grad -= R[t]
        pg = np.where(a == 0, np.minimum(grad, 0), grad)
        violation += float(np.abs(pg).sum(dtype=A.dtype))
        hess = G[t, t]
        if hess != 0:
            grad /= hess
            np.subtract(a, grad, out=a)
            np.maximum(a, 0, out=a)
    return violation


def gram_and_cross(F, FXt, l1, l2):
    """(FFᵀ + l2·I, FXᵀ − l1): the penalised Gram and cross terms of one block update."""
    G = F @ F.T
    if l2:
        G.flat[:: G.shape[0] + 1] += l2
    R = FXt - l1 if l1 else FXt
    return G, R


def frobenius_objective(sqnorm_X, WtX, H, WtW, HHt):
    """½‖X − WH‖² from products already at hand: ½(‖X‖² − 2⟨WᵀX, H⟩ + ⟨WᵀW, HHᵀ⟩)."""
    value = 0.5 * (sqnorm_X - 2.0 * float(np.vdot(WtX, H)) + float(np.vdot(WtW, HHt)))
    return max(value, 0.0)


def penalty(A, l1, l2):
    """l1‖A‖₁ + ½ l2‖A‖² for a non-negative factor A."""
    value = 0.0
    if l1:
        value += l1 * float(A.sum(dtype=np.float64))
    if l2:
        value += 0.5 * l2 * float(np.vdot(A, A))
    return value


def cd_iteration(engine, Wt, H, reg, HHt=None):
    """One outer iteration of scikit-learn's coordinate descent (shuffle=False).

    Returns (violation, objective, HHt of the new H) — the last is reused next time.
    """
    l1_W, l1_H, l2_W, l2_H = reg
    if HHt is None:
        HHt = H @ H.T
    G = HHt.copy()
    if l2_W:
        G.flat[:: G.shape[0] + 1] += l2_W
    R = engine.HXt(H)
    if l1_W:
        R -= l1_W
    violation = sweep(Wt, G, R)

    WtW = Wt @ Wt.T
    WtX = engine.WtX(Wt.T)
    G, R = gram_and_cross_from(WtW, WtX, l1_H, l2_H)
    violation += sweep(H, G, R)

    HHt = H @ H.T
    objective = frobenius_objective(engine.sqnorm(), WtX, H, WtW, HHt)
    objective += penalty(Wt, l1_W, l2_W) + penalty(H, l1_H, l2_H)
    return violation, objective, HHt


def gram_and_cross_from(G0, FXt, l1, l2):
    """Add the penalties to a Gram matrix and cross term computed elsewhere (copies, never in place)."""
    G = G0.copy() if l2 else G0
    if l2:
        G.flat[:: G.shape[0] + 1] += l2
    R = FXt - l1 if l1 else FXt
    return G, R


def inner_sweep_limit(rows, cols, k):
    """How many cheap sweeps one pair of products with X buys (Gillis & Glineur 2012, α = 0.5).

    A product with X costs about m·n·k flops, a sweep about rows·k²;
    the paper spends half that ratio on inner sweeps.
    """
    work_X = rows * cols * k
    work_sweep = max(rows * k * (k + 1), 1)
    return max(1, int(1 + 0.5 * (1 + (work_X + cols * k) / work_sweep)))


def _block_sweeps(A, G, R, max_inner, delta):
    """Sweep A until a sweep changes it by less than delta times the first change."""
    previous = A.copy()
    violation = sweep(A, G, R)
    first_change = None
    for _ in range(max_inner - 1):
        change = float(np.linalg.norm(A - previous))
        if first_change is None:
            first_change = change
        if change <= delta * first_change or first_change == 0:
            break
        previous[...] = A
        sweep(A, G, R)
    return violation


def hals_iteration(engine, Wt, H, reg, HHt, max_inner, delta=0.1):
    """One outer iteration of accelerated HALS: one product with X per factor, several sweeps.

    The violation is that of the first sweep of each block, i.e. the projected
    gradient at the point the iteration started from, like ``cd``'s.
    Returns (violation, objective, HHt of the new H).
    """
    l1_W, l1_H, l2_W, l2_H = reg
    if HHt is None:
        HHt = H @ H.T
    G, R = gram_and_cross_from(HHt, engine.HXt(H), l1_W, l2_W)
    violation = _block_sweeps(Wt, G, R, max_inner, delta)

    WtW = Wt @ Wt.T
    WtX = engine.WtX(Wt.T)
    G, R = gram_and_cross_from(WtW, WtX, l1_H, l2_H)
    violation += _block_sweeps(H, G, R, max_inner, delta)

    HHt = H @ H.T
    objective = frobenius_objective(engine.sqnorm(), WtX, H, WtW, HHt)
    objective += penalty(Wt, l1_W, l2_W) + penalty(H, l1_H, l2_H)
    return violation, objective, HHt
