"""Exact non-negative least squares for many right-hand sides at once.

Solves, for every column c of C (k×p), min_{x ≥ 0} ½ xᵀGx − cᵀx with one shared
Gram matrix G (k×k): with G = HHᵀ and C = HXᵀ this is min ‖X − WH‖ over W ≥ 0
row by row. Block principal pivoting (Kim & Park, SIAM J. Sci. Comput. 2011)
exchanges whole groups of variables between the passive and the active set, and
falls back to exchanging one variable (Murty's rule) when a column stops making
progress, which guarantees termination. Each pass solves all columns' passive-set
systems as one batch of small linear systems.
"""

import numpy as np

from nmfcli.solvers.cd import sweep

# Columns solved per batch: the batch holds chunk·k² entries.
CHUNK_ENTRIES = 1 << 21


def nnls(G, C, *, warm_start_sweeps=3, max_iter=None):
    """Return (X, n_iter): X (k×p) ≥ 0 solving every column's problem exactly, and the passes used."""
    G = np.asarray(G)
    C = np.asarray(C)
    k, p = C.shape
    if p == 0:
        return np.zeros_like(C), 0
    # A few coordinate sweeps from zero give a passive set close to the final one,
    # so pivoting usually ends in one or two passes instead of ~k.
    X = np.zeros_like(C)
    for _ in range(warm_start_sweeps):
        sweep(X, G, C)
    passive = X > 0
    X, Y = _solve_passive(G, C, passive)
    scale = _scales(G, C)
    alpha = np.full(p, 3)
    beta = np.full(p, k + 1)
    max_iter = max_iter if max_iter is not None else 5 * k + 50
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        infeasible = (passive & (X < -scale["x"])) | (~passive & (Y < -scale["y"]))
        count = infeasible.sum(axis=0)
        todo = np.flatnonzero(count)
        if todo.size == 0:
            break
        count = count[todo]
        improved = count < beta[todo]
        beta[todo[improved]] = count[improved]
        alpha[todo[improved]] = 3
        stalled = ~improved & (alpha[todo] >= 1)
        alpha[todo[stalled]] -= 1
        full_exchange = improved | stalled
        cols = todo[full_exchange]
        passive[:, cols] ^= infeasible[:, cols]
        # Backup rule: flip only the last infeasible variable of a column that keeps failing.
        for col in todo[~full_exchange]:
            row = np.flatnonzero(infeasible[:, col])[-1]
            passive[row, col] = ~passive[row, col]
        X[:, todo], Y[:, todo] = _solve_passive(G, C[:, todo], passive[:, todo])
    np.maximum(X, 0, out=X)
    return X, n_iter


def _scales(G, C):
    """Tolerances below which a negative x or gradient counts as zero (rounding, not infeasibility)."""
    eps = np.finfo(C.dtype).eps
    c_scale = np.abs(C).max(axis=0) + np.finfo(C.dtype).tiny
    g_scale = float(np.abs(G).max()) + np.finfo(C.dtype).tiny
    return {"y": 64 * eps * c_scale, "x": 64 * eps * c_scale / g_scale}


def _solve_passive(G, C, passive):
    """Least squares on each column's passive set; returns (X, gradient GX − C with zeros on the passive set)."""
    k, p = C.shape
    X = np.zeros_like(C)
    chunk = max(1, CHUNK_ENTRIES // max(k * k, 1))
    eye = np.eye(k, dtype=G.dtype)
    for start in range(0, p, chunk):
        s = slice(start, min(start + chunk, p))
        P = passive[:, s].T  # (b, k)
        # Restrict G to the passive set and put 1 on the diagonal of the rest:
        # the same solution on the passive set, and 0 elsewhere.
        A = G[np.newaxis, :, :] * (P[:, :, np.newaxis] & P[:, np.newaxis, :])
        A += eye * ~P[:, :, np.newaxis]
        b = (C[:, s].T * P)[:, :, np.newaxis]
        try:
            sol = np.linalg.solve(A, b)[:, :, 0]
        except np.linalg.LinAlgError:
            sol = np.stack([np.linalg.lstsq(Ai, bi[:, 0], rcond=None)[0] for Ai, bi in zip(A, b)])
        X[:, s] = sol.T
    Y = G @ X - C
    Y[passive] = 0
    X[~passive] = 0
    return X, Y
