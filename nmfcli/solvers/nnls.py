"""Exact non-negative least squares for many right-hand sides at once, certified.

Solves, for every column c of C (k×p), min_{x ≥ 0} ½ xᵀGx − cᵀx with one shared
Gram matrix G (k×k) or one per column (p×k×k): with G = HHᵀ and C = HXᵀ this is
min ‖X − WH‖ over W ≥ 0 row by row.

Three stages:

1. Block principal pivoting (Kim & Park, SIAM J. Sci. Comput. 2011) on (G, C):
   whole groups of variables move between the passive and the active set, with
   Murty's single-variable rule as the backup when a column stops making progress.
   Each pass solves all columns' passive-set systems as one batch; fast, but G
   squares the condition number of the components.
2. Certification of every column by its KKT conditions: x ≥ 0, g ≥ −tol where
   x = 0 and |g| ≤ tol where x > 0, with g = Gx − c. Because G, C, x (and the data)
   are non-negative, the rounding of G and C formed in float64 is at most about
   n·ε·(Gx + |c|) entrywise; tol is KKT_TOL times that scale (plus the rounding of
   the solve), so a certified column's objective is within about KKT_TOL·‖x_row‖²
   of the optimum, whatever the conditioning.
3. The columns that fail are solved again by Lawson & Hanson's active-set method
   on the square-root form of the problem, min ‖d − Rx‖ with R from a QR
   factorisation of the components themselves (``reduce``), which does not
   square the condition number; their certificate is then taken again. A column
   that still fails is counted in ``Certificate.uncertified``: never silently.

G and C are used in float64 whatever the data's dtype.
"""

import functools
from dataclasses import dataclass

import numpy as np

from nmfcli.solvers.cd import sweep
from nmfcli.solvers.xp import namespace

# Columns solved per batch: the batch holds chunk·k² entries.
CHUNK_ENTRIES = 1 << 21
# A column is certified when its worst KKT violation is at most KKT_TOL times its scale
# (see _violations): its objective is then within about KKT_TOL·‖x‖² of the optimum.
KKT_TOL = 1e-9
# Columns reduced to square-root form at once by ``reduce`` (its QR holds (k + this) columns).
REFINE_BATCH = 256


@dataclass
class Certificate:
    """How an NNLS solve ended.

    Attributes
    ----------
    passes : int
        Block-pivoting passes (the most any column needed).
    max_violation : float
        The worst scaled KKT violation over all columns (0 for an exact solution; a
        column is certified at most ``tol``).
    refined : int
        Columns re-solved by the active-set method on the square-root form.
    uncertified : int
        Columns whose answer still violates the KKT conditions beyond ``tol``.
    tol : float
        The tolerance the certificate was taken at.
    """

    passes: int = 0
    max_violation: float = 0.0
    refined: int = 0
    uncertified: int = 0
    tol: float = KKT_TOL

    @property
    def certified(self):
        return self.uncertified == 0

    def merge(self, other):
        """The certificate of two disjoint sets of columns solved separately."""
        return Certificate(max(self.passes, other.passes), max(self.max_violation, other.max_violation),
                           self.refined + other.refined, self.uncertified + other.uncertified, self.tol)

    def as_dict(self):
        return {"kkt_violation": float(self.max_violation), "kkt_tol": float(self.tol),
                "certified": bool(self.certified), "uncertified": int(self.uncertified),
                "refined": int(self.refined), "passes": int(self.passes)}


def nnls(G, C, *, reduce=None, l1=0.0, l2=0.0, warm_start_sweeps=3, max_iter=None, map_chunks=None,
         tol=KKT_TOL, certify=True):
    """Return (X, Certificate): X (k×p, C's dtype) ≥ 0 solving every column's problem.

    G is k×k, shared by every column, or p×k×k, a Gram matrix for each column (a fit over
    the observed or weighted entries: each row sees the components at its own entries). G
    and C include the penalties (l2 on G's diagonal, −l1 in C); ``l1`` and ``l2`` repeat them
    for the square-root form. ``reduce(cols)`` returns (R, D): for the columns ``cols`` (an
    index array), the square-root form of their problems, min ‖D[:, j] − R x‖ (R k×k
    shared, or len(cols)×k×k one per column) without the penalties; without it, failed
    columns cannot be re-solved and are only counted. ``map_chunks(f, chunks)`` runs f on
    every chunk of columns, in any order (the numpy engine's runs them on several threads).
    ``certify=False`` skips the certificate and the re-solve (what they cost: ``make bench``);
    the Certificate then has max_violation NaN.
    """
    solve = functools.partial(_solve_passive, map_chunks=map_chunks or _each)
    xp = namespace(C)
    k, p = C.shape
    if p == 0 or k == 0:
        return xp.zeros_like(C), Certificate(tol=tol)
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
    if max_iter is None:
        # On a numerically singular G (components that are dependent, or more of them than
        # columns) the passive-set solves return noise and pivoting cycles to its limit: the
        # columns go straight to the re-solve on the square-root form instead.
        max_iter = 0 if reduce is not None and _nearly_singular(xp, G) else 2 * k + 20
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
    X = xp.maximum(X, 0)
    if not certify:
        return xp.astype(X, dtype, copy=False), Certificate(passes=n_iter, max_violation=float("nan"), tol=tol)
    violation = _violations(xp, G, C, X)
    cert = Certificate(passes=n_iter, tol=tol)
    failed = xp.flatnonzero(~(violation <= tol))  # NaN (a solve gone wrong) fails too
    if failed.size and reduce is not None:
        cert.refined = int(failed.size)
        failed_host = np.asarray(_to_host(failed))
        Gh, Ch, Xh = (np.asarray(_to_host(a)) for a in (G, C[:, failed], X[:, failed]))
        Gh = Gh if Gh.ndim == 2 else Gh[failed_host]
        for lo in range(0, failed_host.size, REFINE_BATCH):
            part = slice(lo, min(lo + REFINE_BATCH, failed_host.size))
            R, D = reduce(failed_host[part])
            for j, col in enumerate(range(part.start, part.stop)):
                Rj = R if np.ndim(R) == 2 else R[j]
                Gj = Gh if Gh.ndim == 2 else Gh[col]
                Xh[:, col] = lawson_hanson(np.asarray(Rj, dtype=np.float64), np.asarray(D[:, j], dtype=np.float64),
                                           Gj, Ch[:, col], Xh[:, col], l1=l1, l2=l2, tol=tol)
        X[:, failed] = xp.asarray(Xh) if xp is not np else Xh
        violation[failed] = _violations(xp, G if G.ndim == 2 else G[failed], C[:, failed], X[:, failed])
    cert.uncertified = int(xp.sum(~(violation <= tol)))
    cert.max_violation = float(xp.max(xp.where(xp.isnan(violation), float("inf"), violation)))
    return xp.astype(X, dtype, copy=False), cert


# G counts as numerically singular past this condition number (1/(1000ε)).
SINGULAR_CONDITION = 1.0 / (1000 * float(np.finfo(np.float64).eps))


def _nearly_singular(xp, G):
    """Is a shared G (k×k) conditioned beyond SINGULAR_CONDITION? (False for one G per column.)"""
    if G.ndim != 2:
        return False
    values = np.linalg.eigvalsh(np.asarray(_to_host(G)))
    return bool(values[0] <= values[-1] / SINGULAR_CONDITION)


def _to_host(a):
    get = getattr(a, "get", None)
    return get() if get is not None else a


def _violations(xp, G, C, X):
    """Each column's worst KKT violation, relative to the column's scale.

    g = GX − C; the violation of entry t is max(−g, 0) where x = 0 and |g| where x > 0, less
    the rounding a float64 solve leaves in g (_relative), divided by |GX|ₜ + |cₜ| (G, C and X
    are non-negative sums, so this is the size of the terms g is the difference of, whatever
    the conditioning). A zero column of C with x = 0 has violation 0.
    """
    GX = G @ X if G.ndim == 2 else xp.einsum("pts,sp->tp", G, X)
    g = GX - C
    bad = xp.where(X > 0, xp.abs(g), xp.maximum(-g, 0.0))
    return xp.max(_relative(xp, bad, G, C, X, GX), axis=0)


def _relative(xp, bad, G, C, X, GX):
    """bad, less the rounding of a backward-stable least-squares solve, relative to |GX| + |C|.

    Such a solve's gradient entry t is off by about ε‖aₜ‖·Σₛ‖aₛ‖xₛ (aₜ the components, whose
    norms are √Gₜₜ): 8kε√Gₜₜ·Σₛ√Gₛₛ·xₛ here, entry by entry, so that a component a million
    times smaller than another is held to its own scale."""
    eps = float(np.finfo(np.float64).eps)
    k = G.shape[-1]
    if G.ndim == 2:
        norms = xp.sqrt(xp.maximum(xp.linalg.diagonal(G), 0.0))[:, None]  # (k, 1)
    else:
        norms = xp.sqrt(xp.maximum(xp.linalg.diagonal(G), 0.0)).T  # (k, p): the last two axes
    rounding = 8 * k * eps * norms * xp.sum(norms * X, axis=0)[None, :]
    size = xp.abs(GX) + xp.abs(C) + float(np.finfo(np.float64).tiny)
    return xp.maximum(bad - rounding, 0.0) / size


def lawson_hanson(R, d, G, c, x0, *, l1=0.0, l2=0.0, tol=KKT_TOL, max_iter=None):
    """min ½‖d − Rx‖² + ½ l2‖x‖² + l1·Σx over x ≥ 0 (Lawson & Hanson 1974, ch. 23), from x0.

    R (q×k) is the square-root form of the problem whose Gram form is (G, c) = (RᵀR + l2·I,
    Rᵀd − l1): each passive-set subproblem is solved by an SVD of R's passive columns, which
    does not square their condition number (rank-deficient sets get the minimum-norm
    solution). The start x0 ≥ 0 (block pivoting's answer) is made feasible for its support
    first; the KKT test that admits a variable is _violations' on (G, c).
    """
    k = R.shape[1]
    if l2:
        R = np.vstack([R, np.sqrt(l2) * np.eye(k)])
        d = np.concatenate([d, np.zeros(k)])
    x = np.asarray(x0, dtype=np.float64)
    x = np.where(np.isfinite(x) & (x > 0), x, 0.0)  # (a start gone NaN restarts from zero there)
    passive = x > 0
    max_iter = max_iter if max_iter is not None else 3 * k + 10
    eps = float(np.finfo(np.float64).eps)
    dropped = None  # the variable the last inner loop dropped: not to enter again at once (cycling)
    for _ in range(max_iter):
        # Inner loop: the least-squares solution on the passive set, stepping back to the
        # boundary while it leaves the orthant (each step drops at least one variable).
        for _ in range(k + 1):
            z = np.zeros(k)
            if passive.any():
                z[passive] = _passive_solution(R[:, passive], d, l1)
            bad = passive & (z <= 0)
            if not bad.any():
                x = z
                break
            step = np.min(x[bad] / (x[bad] - z[bad]))
            x = x + step * (z - x)
            before = passive.copy()
            passive &= x > eps * np.max(np.abs(x), initial=0.0)
            x[~passive] = 0.0
            dropped = before & ~passive
        Gx = G @ x
        g = Gx - c
        pull = _relative(np, np.maximum(-g, 0.0)[:, None], G, c[:, None], x[:, None], Gx[:, None])[:, 0]
        entering = ~passive & (pull > tol)
        if dropped is not None and (entering & ~dropped).any():
            entering &= ~dropped  # another candidate first; max_iter bounds any cycle left
        dropped = None
        if not entering.any():
            break
        passive[np.argmax(np.where(entering, pull, -np.inf))] = True
    return x


def _passive_solution(A, b, l1):
    """argmin ½‖b − Az‖² + l1·Σz (unconstrained), the minimum-norm one: with the columns of A
    scaled to unit norm (D) and AD⁻¹ = USVᵀ, z = D⁻¹(VS⁻¹Uᵀb − VS⁻²V·D⁻¹l1), over the singular
    values above rounding. The scaling keeps a component far smaller than the others accurate
    to its own size (an SVD is accurate relative to the largest singular value only)."""
    scale = np.sqrt(np.einsum("ij,ij->j", A, A))
    scale[scale == 0] = 1.0
    U, s, Vt = np.linalg.svd(A / scale, full_matrices=False)
    keep = s > s[0] * max(A.shape) * np.finfo(np.float64).eps if s.size and s[0] > 0 else s > 0
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    z = Vt.T @ ((U.T @ b) / s)
    if l1:
        z -= Vt.T @ ((Vt @ (l1 / scale)) / (s * s))
    return z / scale


def reduce_dense(A, B, weights=None):
    """The square-root form of min ‖B[:, j] − A x‖ (A q×k, B q×f; ``weights`` q×f ≥ 0: each
    column's entries weighted): (R, D) with ‖B_j − Ax‖² = ‖D_j − Rx‖² + const, from a QR of
    [A | B] (shared R) or of each column's weighted [√w⊙A | √w⊙b] (one R per column)."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    k = A.shape[1]
    if weights is None:
        R = np.linalg.qr(np.hstack([A, B]), mode="r")
        R = _square(R, k + B.shape[1])
        return R[:k, :k], R[:k, k:]
    Rs, D = np.empty((B.shape[1], k, k)), np.empty((k, B.shape[1]))
    for j in range(B.shape[1]):
        root = np.sqrt(np.asarray(weights[:, j], dtype=np.float64))
        Rj = _square(np.linalg.qr(np.column_stack([A * root[:, None], B[:, j] * root]), mode="r"), k + 1)
        Rs[j], D[:, j] = Rj[:k, :k], Rj[:k, k]
    return Rs, D


def _square(R, size):
    """R padded with zero rows to size × size (a QR of a matrix with fewer rows than columns)."""
    if R.shape[0] < size:
        R = np.vstack([R, np.zeros((size - R.shape[0], R.shape[1]))])
    return R


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
            if not bool(xp.all(xp.isfinite(sol))):
                # CuPy reports a singular system with NaN instead of raising, unless told to;
                # numpy can overflow on a nearly singular one.
                raise np.linalg.LinAlgError("singular passive set")
        except np.linalg.LinAlgError:  # a singular passive set (e.g. duplicate components)
            sol = xp.stack([xp.linalg.lstsq(Ai, bi[:, 0], rcond=None)[0] for Ai, bi in zip(A, b)])
        X[:, s] = sol.T  # chunks are disjoint column ranges

    map_chunks(solve, [slice(start, min(start + chunk, p)) for start in range(0, p, chunk)])
    Y = (G @ X if G.ndim == 2 else xp.einsum("pts,sp->tp", G, X)) - C
    Y[passive] = 0
    X[~passive] = 0
    return X, Y
