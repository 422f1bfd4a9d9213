"""One engine over any array namespace: numpy (+ scipy.sparse), CuPy (+ cupyx.scipy.sparse), or a strict stand-in.

The engine owns X and computes the few products the solvers need. Dense code
uses only array-API operations; sparse X uses the scipy.sparse-like module the
engine was given, which CuPy mirrors.
"""

import contextlib
import types

import numpy as np

from nmfcli.engines.sparse_products import with_values
from nmfcli.errors import UsageError
from nmfcli.solvers import cd
from nmfcli.solvers.losses import BLOCK_ENTRIES, EPSILON, dense_divergence_sums, power, row_blocks
from nmfcli.solvers.xp import scalar


class ArrayEngine:
    """Holds X (dense, or CSR when a sparse module is given) in namespace ``xp``."""

    name = "array-api"

    def __init__(self, X, dtype, xp, sparse=None, name=None):
        self.xp = xp
        self.sparse = sparse
        self.dtype = np.dtype(dtype)
        self.xp_dtype = getattr(xp, self.dtype.name)
        if name:
            self.name = name
        self.is_sparse = hasattr(X, "tocsr")
        if self.is_sparse:
            if sparse is None:
                raise UsageError(f"engine '{self.name}' takes dense X only")
            X = self._to_sparse(X)
        else:
            X = self.asarray(X)
        self.X = X
        self.shape = tuple(X.shape)
        self._sqnorm = None
        self._power_sums = {}
        self._rows = None
        self._cols = None

    # --- moving arrays ---------------------------------------------------------
    def asarray(self, a):
        """A host or device array as a C-ordered array of this engine (a copy when it moves)."""
        xp = self.xp
        if xp is np:
            return np.ascontiguousarray(a, dtype=self.dtype)
        if getattr(a, "__array_namespace__", None) is not None and a.__array_namespace__() is xp:
            return xp.asarray(a, dtype=self.xp_dtype)
        return xp.asarray(np.ascontiguousarray(a, dtype=self.dtype))

    def to_host(self, a):
        """A numpy copy of a device array (the only device-to-host copy of a result)."""
        if isinstance(a, np.ndarray):
            return a
        get = getattr(a, "get", None)  # CuPy
        if get is not None:
            return get()
        return np.asarray(a)

    def asindex(self, a):
        """An integer index array of this engine."""
        return a if self.xp is np else self.xp.asarray(a)

    def contiguous_copy(self, a):
        """A C-ordered copy: the k-major factors are swept row by row."""
        if self.xp is np:
            return np.array(a, order="C", copy=True)
        return self.xp.asarray(a, copy=True)

    def _to_sparse(self, X):
        import scipy.sparse as host_sparse

        X = host_sparse.csr_matrix(X, dtype=self.dtype, copy=True)
        X.sum_duplicates()
        X.eliminate_zeros()
        if self.sparse is host_sparse:
            return X
        return self.sparse.csr_matrix(X)  # cupyx copies the host CSR to the device

    def session(self):
        """A context for a whole fit or transform on this engine (the numpy engine sets BLAS threads)."""
        return contextlib.nullcontext()

    def sweeping(self, A):
        """A context for the sweeps over the rows of factor A (the numpy engine sets BLAS threads)."""
        return contextlib.nullcontext()

    # What solver "auto" runs for the Frobenius loss on this engine, and which of the
    # extrapolated solvers run here (core.engine_solver; the blockwise loops answer the
    # same questions).
    default_frobenius_solver = "ehals"
    extrapolated = ("ehals", "emu")
    # ehals and emu test each extrapolated step where the arrays live (core._ehals_loop): a
    # read of its result would make the host wait for the device every iteration.
    decides_on_device = True
    # Dense X is processed in row blocks of about this many entries (losses.row_blocks).
    block_entries = BLOCK_ENTRIES

    @property
    def where(self):
        """Where this engine's fits run, for messages ("on the numpy engine")."""
        return f"on the {self.name} engine"

    # The inner HALS sweeps (cd.block_sweeps' ``sweeps``); None: the solvers' own, row by row.
    # The CuPy engine fuses each sweep into one kernel and stops them on the device.
    inner_sweeps = None

    def block_sweeps(self, A, G, R, max_inner, delta):
        """cd.block_sweeps of factor A (Gram matrix G, cross term R), with this engine's ``inner_sweeps``."""
        cd.block_sweeps(A, G, R, max_inner, delta, self.inner_sweeps)

    def map_chunks(self, f, chunks):
        """Run f on every chunk, in any order (the numpy engine uses several threads)."""
        for chunk in chunks:
            f(chunk)

    # --- whole-X reductions ----------------------------------------------------
    def sqnorm(self):
        """‖X‖², computed once in float64 whatever X's dtype (one scalar copied to the host)."""
        if self._sqnorm is None:
            xp = self.xp
            flat = xp.reshape(self.data(), (-1,))
            total = 0.0
            # float64 blocks: a float32 sum of squares overflows past ~1e19 and loses the
            # small entries; vecdot contracts without a temporary of the block's squares.
            step = 1 << 22
            vecdot = getattr(xp, "vecdot", None)
            size = int(flat.shape[0])
            for lo in range(0, size, step):
                part = xp.astype(flat[lo:min(lo + step, size)], xp.float64)
                total += float(vecdot(part, part) if vecdot else xp.sum(part * part))
            self._sqnorm = total
        return self._sqnorm

    def data(self):
        """The stored entries of X (all of them when dense, the nonzeros when sparse)."""
        return self.X.data if self.is_sparse else self.X

    # --- the products with X ------------------------------------------------
    def XHt(self, H):
        """X·Hᵀ, shape (m, k)."""
        if self.is_sparse:
            return self.sparse_XV(H.T)
        return self.X @ H.T

    def HXt(self, H):
        """H·Xᵀ, shape (k, m), C-ordered: the k-major form the HALS sweeps read row by row."""
        if self.is_sparse:
            return self.contiguous_copy(self.sparse_XV(H.T).T)
        return H @ self.X.T

    def WtX(self, W):
        """Wᵀ·X, shape (k, n), C-ordered; W may be given as the transposed view of Wᵀ."""
        if self.is_sparse:
            return self.contiguous_copy(self.sparse_XtV(W).T)
        return W.T @ self.X

    def HXt64(self, H):
        """H·Xᵀ (k×m) accumulated in float64 whatever X's dtype, in row blocks of X (the exact
        solves' cross term: float32 products leave it indefinite on ill-conditioned components)."""
        xp = self.xp
        H = xp.astype(H, xp.float64)
        if self.dtype == np.float64:
            return self.HXt(H)
        out = xp.empty((H.shape[0], self.shape[0]), dtype=xp.float64)
        for rows, block in self._rows_in_float64():
            out[:, rows] = (block @ H.T).T
        return out

    def WtX64(self, W):
        """Wᵀ·X (k×n) accumulated in float64 whatever X's dtype, in row blocks of X."""
        xp = self.xp
        W = xp.astype(W, xp.float64)
        if self.dtype == np.float64:
            return self.WtX(W)
        out = xp.zeros((W.shape[1], self.shape[1]), dtype=xp.float64)
        for rows, block in self._rows_in_float64():
            out += xp.asarray((block.T @ W[rows]).T) if self.is_sparse else W[rows].T @ block
        return out

    def _rows_in_float64(self, entries=1 << 22):
        """(rows, X[rows] as float64) for row blocks of about ``entries`` entries (sparse stays sparse)."""
        m = self.shape[0]
        step = max(1, entries // max(1, self.shape[1]))
        for lo in range(0, m, step):
            rows = slice(lo, min(lo + step, m))
            block = self.X[rows]
            yield rows, block.astype(np.float64) if self.is_sparse else self.xp.astype(block, self.xp.float64)

    def rows_dense64(self, rows):
        """X's rows ``rows`` (an index array) as a dense float64 host array (the exact solve's refinement)."""
        block = self.X[rows]
        block = block.toarray() if self.is_sparse else block
        return np.asarray(self.to_host(block), dtype=np.float64)

    def cols_dense64(self, cols):
        """X's columns ``cols`` as a dense float64 host array (m×len(cols))."""
        block = self.X[:, cols]
        block = block.toarray() if self.is_sparse else block
        return np.asarray(self.to_host(block), dtype=np.float64)

    def sparse_XV(self, V, values=None):
        """X·V for sparse X and dense V; with ``values``, the matrix of X's pattern holding
        them instead of X's (the numpy engine spreads these two products over threads)."""
        return (self.X if values is None else with_values(self.X, values)) @ V

    def sparse_XtV(self, V, values=None):
        """Xᵀ·V for sparse X and dense V; ``values`` as in sparse_XV."""
        return (self.X if values is None else with_values(self.X, values)).T @ V

    # --- elementwise terms for beta-divergences ---------------------------------
    def power_sum(self, beta):
        """Σ X^β over X's stored entries, dense X in row blocks (computed once for each β)."""
        sums = self._power_sums
        if beta not in sums:
            xp = self.xp
            if self.is_sparse:
                sums[beta] = float(xp.sum(power(xp, self.X.data, beta), dtype=xp.float64))
            else:
                sums[beta] = sum(float(xp.sum(power(xp, self.X[rows, :], beta), dtype=xp.float64))
                                 for rows in row_blocks(*self.shape, self.block_entries))
        return sums[beta]

    def WH_at_X(self, W, H):
        """W·H where X is stored: dense (m, n) array, or the values at X's nonzeros (1-D)."""
        if not self.is_sparse:
            return W @ H
        xp = self.xp
        rows, cols = self._entry_indices()
        # One component at a time, from contiguous rows of Wᵀ and H: gathers of single
        # entries are 2-5× faster than gathering nnz×k rows for row-wise dot products, and
        # memory stays O(nnz).
        Wt = self.contiguous_copy(W.T)
        out = xp.take(Wt[0, :], rows) * xp.take(H[0, :], cols)
        for t in range(1, W.shape[1]):
            out += xp.take(Wt[t, :], rows) * xp.take(H[t, :], cols)
        return out

    def _entry_indices(self):
        """(row, column) of every stored entry of sparse X, built once, as intp.

        intp because numpy's take converts int32 indices on every call (10× slower).
        """
        if self._rows is None:
            X = self.X
            self._rows = self.asindex(np.repeat(np.arange(X.shape[0]), np.diff(self.to_host(X.indptr))))
            self._cols = self.asindex(np.asarray(self.to_host(X.indices), dtype=np.intp))
        return self._rows, self._cols

    def divergence_sums(self, W, H, beta):
        """For dense X: (the divergence's terms on X's entries, Σ (WH)^β) (losses.beta_divergence)."""
        return dense_divergence_sums(self, W, H, beta)

    def mu_products(self, W, H, beta, side, divergence=False):
        """The two products of a multiplicative update for beta != 2.

        side "W": ([X ⊙ (WH)^(β−2)]·Hᵀ, (WH)^(β−1)·Hᵀ); side "H": Wᵀ·[...] likewise.
        The second is None for β = 1 (it is then a column or row sum of a factor).
        W·H is clamped below at EPSILON as scikit-learn does, and it is formed one row
        block at a time, so no m×n temporary exists for dense X.

        With ``divergence`` (β = 1 or 0 only), a third value: the divergence's terms over X's
        entries at (W, H), from the arrays the update forms anyway, their logs in float32 (see
        log_sum): Σ X·log(X/WH) for KL (the divergence is that + ΣWH − ΣX), Σ X/WH − log(X/WH)
        for Itakura-Saito (the divergence is that − m·n).
        """
        xp = self.xp
        k = W.shape[1]
        m, n = self.shape
        shape = (m, k) if side == "W" else (k, n)
        numerator = xp.zeros(shape, dtype=W.dtype)
        denominator = None if beta == 1 else xp.zeros(shape, dtype=W.dtype)
        if divergence and beta not in (0, 1):
            raise ValueError("divergence is for beta = 1 or 0 only")
        terms = 0.0
        if self.is_sparse:
            WH = self.WH_at_X(W, H)
            ratio = x_times_power(xp, self.X.data, WH, beta)
            numerator = (self.sparse_XV(H.T, ratio) if side == "W"
                         else self.contiguous_copy(self.sparse_XtV(W, ratio).T))
            if divergence:
                terms = (self.log_sum(ratio, self.X.data) if beta == 1
                         else self._is_terms(self.X.data, 1.0 / xp.maximum(WH, EPSILON)))
        shared_power = beta not in (0, 1)  # one power gives both blocks (ratio_and_power)
        for rows in row_blocks(m, n, self.block_entries):
            if self.is_sparse and denominator is None:
                break
            WH = self._WH_block(W, H, rows)
            if shared_power and not self.is_sparse:
                ratio, WH = self._ratio_and_power_block(self.X[rows, :], WH, beta)
                if side == "W":
                    numerator[rows, :] = ratio @ H.T
                    denominator[rows, :] = WH @ H.T
                else:
                    numerator = numerator + W[rows, :].T @ ratio
                    denominator = denominator + W[rows, :].T @ WH
                continue
            if not self.is_sparse:
                ratio = self._ratio_block(self.X[rows, :], WH, beta, keep_WH=denominator is not None)
                if side == "W":
                    numerator[rows, :] = ratio @ H.T
                else:
                    numerator = numerator + W[rows, :].T @ ratio
                if divergence and beta == 1:
                    terms += self.log_sum(ratio, self.X[rows, :])
            if denominator is not None:
                WH = self._power_block(WH, beta)
                if side == "W":
                    denominator[rows, :] = WH @ H.T
                else:
                    denominator = denominator + W[rows, :].T @ WH
                if divergence and not self.is_sparse:
                    terms += self._is_terms(self.X[rows, :], WH)
        if divergence:
            return numerator, denominator, terms
        return numerator, denominator

    def log_sum(self, values, weights=None):
        """Σ weights ⊙ log(values) (Σ log(values) without weights) as xp.scalar gives it (a
        float on numpy); ``values`` may be overwritten.

        The log is taken in float32, where it is 3-5× cheaper than in float64 (numpy's float64
        log is not vectorised without AVX-512), after raising the values to float32's smallest
        normal number, so where a zero of X makes the ratio X/WH zero the weight X adds 0. Each
        log is off by about 2⁻²⁴: emu compares these sums with that much slack (core._emu_loop).
        """
        xp = self.xp
        logs = xp.astype(xp.log(xp.maximum(xp.astype(values, xp.float32), TINY32)), values.dtype)
        return scalar(xp, xp.sum(logs if weights is None else weights * logs))

    def _is_terms(self, X, inverse):
        """Σ q − log q for q = X ⊙ inverse (inverse = 1 / max(WH, EPSILON)): the Itakura-Saito terms."""
        q = X * inverse
        return scalar(self.xp, self.xp.sum(q)) - self.log_sum(q)

    # The three block-sized steps of mu_products; the numpy engine does them in buffers it keeps.
    def _WH_block(self, W, H, rows):
        """W·H for a block of rows."""
        return W[rows, :] @ H

    def _ratio_block(self, X, WH, beta, keep_WH):
        """X ⊙ WH^(β−2) for a block (WH is left as it is)."""
        return x_times_power(self.xp, X, WH, beta)

    def _power_block(self, WH, beta):
        """WH^(β−1), clamped below at EPSILON first for β < 1 (WH may be consumed)."""
        if beta < 1:
            WH = self.xp.maximum(WH, EPSILON)
        return power(self.xp, WH, beta - 1)

    def _ratio_and_power_block(self, X, WH, beta):
        """ratio_and_power for a block (WH may be consumed)."""
        return ratio_and_power(self.xp, X, WH, beta)


TINY32 = float(np.finfo(np.float32).tiny)


def x_times_power(xp, X, WH, beta):
    """X ⊙ WH^(β−2), with scikit-learn's clamp and order of operations."""
    if beta < 2:
        WH = xp.maximum(WH, EPSILON)
    if beta == 1:
        return X / WH
    if beta == 0:
        return (WH**-1) ** 2 * X
    return power(xp, WH, beta - 2) * X


def ratio_and_power(xp, X, WH, beta):
    """(X ⊙ WH^(β−2), WH^(β−1)) for β not in {0, 1}, with scikit-learn's clamps (WH raised to
    EPSILON in the first for β < 2, in the second for β < 1), from one power instead of two:
    the one's power times WH (raised where the one's was) is the other's. A general power
    costs 16-23 ns an entry in float64, the product 1."""
    if beta < 1:  # X·max(WH, EPSILON)^(β−2) as X / max(WH, EPSILON) times the other block
        WH = xp.maximum(WH, EPSILON)
        powered = power(xp, WH, beta - 1)
        return X / WH * powered, powered
    if beta < 2:  # WH^(β−1) unclamped; at EPSILON and above it is max(WH, EPSILON)^(β−1)
        powered = power(xp, WH, beta - 1)
        clamped = xp.maximum(powered, EPSILON ** (beta - 1))  # max(WH, EPSILON)^(β−1)
        if beta == 1.5:  # max(WH, EPSILON)^(−½) is its reciprocal: two passes fewer
            return X / clamped, powered
        return X * (clamped / xp.maximum(WH, EPSILON)), powered
    ratio = power(xp, WH, beta - 2)
    return ratio * X, ratio * WH


def with_array_api_names(module):
    """module, or a copy of it with the array-API names the solvers use filled in where it lacks them.

    For a numpy-like library that predates the standard (an older CuPy): ``linalg.diagonal``,
    ``asarray(copy=)``, ``astype`` and ``vecdot``, each made from the library's own functions.
    """
    fills = {}
    if not hasattr(module.linalg, "diagonal"):
        linalg = types.ModuleType(module.linalg.__name__)
        linalg.__dict__.update(vars(module.linalg))
        linalg.diagonal = lambda x, /: module.diagonal(x, axis1=-2, axis2=-1)
        fills["linalg"] = linalg
    try:
        module.asarray(module.zeros(1), copy=True)
    except TypeError:
        def asarray(obj, /, *, dtype=None, device=None, copy=None):
            return module.array(obj, dtype=dtype, copy=True) if copy else module.asarray(obj, dtype=dtype)

        fills["asarray"] = asarray
    if not hasattr(module, "astype"):
        fills["astype"] = lambda x, dtype, /, *, copy=True: x.astype(dtype, copy=copy)
    if not hasattr(module, "vecdot"):
        fills["vecdot"] = lambda x1, x2, /, *, axis=-1: module.sum(x1 * x2, axis=axis)
    if not fills:
        return module
    filled = types.ModuleType(module.__name__)
    filled.__dict__.update(vars(module))
    filled.__dict__.update(fills)
    return filled
