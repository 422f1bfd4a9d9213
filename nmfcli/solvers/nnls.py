"""Exact non-negative least squares for many right-hand sides at once.

Solves, for every column c of C (k×p), min_{x ≥ 0} ½ xᵀGx − cᵀx with one shared
Gram matrix G (k×k): with G = HHᵀ and C = HXᵀ this is min ‖X − WH‖ over W ≥ 0
row by row. Block principal pivoting (Kim & Park, SIAM J. Sci. Comput. 2011)
exchanges whole groups of variables between the passive and the active set, and
falls back to exchanging one variable (Murty's rule) when a column stops making
progress, which guarantees termination. Each pass solves all columns' passive-set
systems as one batch of small linear systems.

The pivoting bookkeeping selects columns by data-dependent index sets, so this
runs on numpy and CuPy (which mirrors numpy) but not on a strict array-API namespace.
"""

import functools

import numpy as np

from nmfcli.solvers.cd import sweep
from nmfcli.solvers.xp import namespace

# Columns solved per batch: the batch holds chunk·k² entries.
CHUNK_ENTRIES = 1 << 21


def nnls(G, C, *, warm_start_sweeps=3, max_iter=None, map_chunks=None):
    """Return (X, n_iter): X (k×p, C's dtype) ≥ 0 solving every column's problem exactly, and the passes used.

    G is k×k, shared by every column, or p×k×k, a Gram matrix for each column (a fit over
    the observed entries of X: each row sees the components at its own entries). A
    variable whose row of G is zero (a component with nothing where the column is seen)
    stays 0. ``map_chunks(f, chunks)`` runs f on every chunk of columns, in any order (the
    numpy engine's runs them on several threads); the default is a plain loop.
    """
    solve = functools.partial(_solve_passive, map_chunks=map_chunks or _each)
    xp = namespace(C)
    k, p = C.shape
    if p == 0:
        return xp.zeros_like(C), 0
    # Solved in float64 whatever the data's dtype: G = HHᵀ of fitted components is often
    # conditioned near 1e8, beyond float32 (a float32 solve left the objective 4-12% above
    # the optimum on such data). The k×k systems are cheap; the products with X were not.
    dtype = C.dtype
    G, C = xp.astype(G, xp.float64, copy=False), xp.astype(C, xp.float64, copy=False)
    # A few coordinate sweeps from zero give a passive set close to the final one,
    # so pivoting usually ends in one or two passes instead of ~k.
    X = xp.zeros_like(C)
    for _ in range(warm_start_sweeps):
        if G.ndim == 2:
            sweep(X, G, C, violation=False)
        else:
            _sweep_each(X, G, C)
    passive = X > 0
    X, Y = solve(G, C, passive)
    scale = _scales(xp, G, C)
    alpha = xp.full(p, 3)
    beta = xp.full(p, k + 1)
    max_iter = max_iter if max_iter is not None else 5 * k + 50
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        infeasible = (passive & (X < -scale["x"])) | (~passive & (Y < -scale["y"]))
        count = infeasible.sum(axis=0)
        todo = xp.flatnonzero(count)
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
        # Backup rule: flip only the last infeasible variable of a column that keeps failing
        # (all such columns at once: one pass, no per-column round trip to a GPU).
        backup = todo[~full_exchange]
        if backup.size:
            last = k - 1 - xp.argmax(infeasible[::-1, backup], axis=0)
            passive[last, backup] = ~passive[last, backup]
        X[:, todo], Y[:, todo] = solve(G if G.ndim == 2 else G[todo], C[:, todo], passive[:, todo])
    return xp.astype(xp.maximum(X, 0), dtype, copy=False), n_iter


def _scales(xp, G, C):
    """Tolerances below which a negative x or gradient counts as zero (rounding, not infeasibility)."""
    eps = float(np.finfo(C.dtype).eps)
    tiny = float(np.finfo(C.dtype).tiny)
    c_scale = xp.abs(C).max(axis=0) + tiny
    g_scale = float(xp.abs(G).max()) + tiny if G.ndim == 2 else xp.abs(G).max(axis=(1, 2)) + tiny
    return {"y": 64 * eps * c_scale, "x": 64 * eps * c_scale / g_scale}


def _sweep_each(X, G, C):
    """cd.sweep without the violation, for a Gram matrix per column (G p×k×k): in place."""
    for t in range(X.shape[0]):
        h = G[:, t, t]
        grad = np.einsum("ps,sp->p", G[:, t, :], X) - C[t]
        X[t] = np.where(h > 0, np.maximum(X[t] - grad / np.where(h > 0, h, 1.0), 0.0), X[t])


def _each(f, chunks):
    for chunk in chunks:
        f(chunk)


def _solve_passive(G, C, passive, map_chunks=_each):
    """Least squares on each column's passive set; returns (X, gradient GX − C with zeros on the passive set)."""
    xp = namespace(C)
    k, p = C.shape
    X = xp.zeros_like(C)
    chunk = max(1, CHUNK_ENTRIES // max(k * k, 1))
    eye = xp.eye(k, dtype=G.dtype)

    def solve(s):
        P = passive[:, s].T  # (b, k)
        # Restrict G to the passive set and put 1 on the diagonal of the rest:
        # the same solution on the passive set, and 0 elsewhere.
        A = (G[None, :, :] if G.ndim == 2 else G[s]) * (P[:, :, None] & P[:, None, :])
        A += eye * ~P[:, :, None]
        b = (C[:, s].T * P)[:, :, None]
        try:
            sol = xp.linalg.solve(A, b)[:, :, 0]
            if xp is not np and not bool(xp.all(xp.isfinite(sol))):
                # CuPy reports a singular system with NaN instead of raising, unless told to.
                raise np.linalg.LinAlgError("singular passive set")
        except np.linalg.LinAlgError:  # a singular passive set (e.g. duplicate components)
            sol = xp.stack([xp.linalg.lstsq(Ai, bi[:, 0], rcond=None)[0] for Ai, bi in zip(A, b)])
        X[:, s] = sol.T  # chunks are disjoint column ranges

    map_chunks(solve, [slice(start, min(start + chunk, p)) for start in range(0, p, chunk)])
    Y = (G @ X if G.ndim == 2 else xp.einsum("pts,sp->tp", G, X)) - C
    Y[passive] = 0
    X[~passive] = 0
    return X, Y
