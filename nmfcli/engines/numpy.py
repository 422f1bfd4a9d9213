"""The numpy engine: dense ndarrays and scipy.sparse CSR matrices on the CPU."""

import contextlib
import functools

import numpy as np
import scipy.sparse

from nmfcli.engines import blas, sparse_products, threads
from nmfcli.engines.array_api import TINY32, ArrayEngine
from nmfcli.solvers import cd
from nmfcli.solvers.losses import EPSILON, POWER_FORMS, row_blocks


# Factors of at least this many entries (2 MiB of float64) are swept on the process's BLAS threads.
LARGE_FACTOR = 1 << 18


# Below this many entries, dense X's products stay on the fit's one BLAS thread: setting
# the thread counts around a call costs ~11 µs, 5% of a KL fit on a 100×625 matrix.
SMALL_X = 1 << 17


def _on_product_threads(method, blas_when_sparse=False):
    """An ArrayEngine method whose products with X run on the process's BLAS threads.

    Not for small dense X, nor for sparse X when the method's products are scipy.sparse's
    own (which use no BLAS).
    """
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        if (self.is_sparse and not blas_when_sparse) or (not self.is_sparse and self.X.size < SMALL_X):
            return method(self, *args, **kwargs)
        with blas.product_threads():
            return method(self, *args, **kwargs)
    return run


class NumpyEngine(ArrayEngine):
    name = "numpy"
    decides_on_device = False  # on the host a read costs nothing; the test's branches skip a copy

    def __init__(self, X, dtype):
        super().__init__(X, dtype, np, scipy.sparse)
        self._buffers = {}
        self._kept_sweeps = cd.KeptSweeps()
        self._tiny = None
        self._total = None
        self._products = None

    def _buffer(self, name, rows, cols, dtype, fill=None):
        """A C-ordered rows×cols work array kept between calls (its first rows·cols entries).

        With ``fill``, an array of that value, which callers only read.
        """
        size = rows * cols
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._buffers[name] = (np.empty(size, dtype=dtype) if fill is None
                                         else np.full(size, fill, dtype=dtype))
        return buf[:size].reshape(rows, cols)

    # A fit runs its BLAS calls on one thread, and only the products with X on the process's
    # thread count (see engines/blas.py; scipy.sparse's own products use no BLAS).
    def session(self):
        return blas.fit_threads()

    def sweeping(self, A):
        # A sweep's row products read all of A: past the size of a core's cache they are
        # bound by memory bandwidth, which more threads add to (50×20000: 16 -> 12 ms a sweep).
        return blas.product_threads() if A.size >= LARGE_FACTOR else contextlib.nullcontext()

    def block_sweeps(self, A, G, R, max_inner, delta):
        # A fit sweeps the same factor buffers every iteration; their sweeps' operands are kept.
        self._kept_sweeps(A, G, R, max_inner, delta)

    def map_chunks(self, f, chunks):
        # The exact solve's batches of small LAPACK calls release the GIL: a thread per BLAS
        # thread the process was given (OPENBLAS_NUM_THREADS=1 keeps it on one core).
        threads.run(f, chunks)

    XHt = _on_product_threads(ArrayEngine.XHt)
    HXt = _on_product_threads(ArrayEngine.HXt)
    WtX = _on_product_threads(ArrayEngine.WtX)
    # (beta != 1 on sparse X forms W·H in dense row blocks)
    mu_products = _on_product_threads(ArrayEngine.mu_products, blas_when_sparse=True)

    def sparse_XV(self, V, values=None):
        return self._sparse_products().XV(V, values)

    def sparse_XtV(self, V, values=None):
        return self._sparse_products().XtV(V, values)

    def _sparse_products(self):
        if self._products is None:
            self._products = sparse_products.SparseProducts(self.X)
        return self._products

    def WH_at_X(self, W, H):
        if not self.is_sparse:
            return super().WH_at_X(W, H)
        # ArrayEngine's gathers, with the two nnz-sized temporaries in kept buffers (fresh
        # ones cost page faults on every call, as in mu_products below). mode="clip" lets
        # take write into out directly; every index is in range, so it clips nothing.
        # The entries are split among the process's threads (numpy's take and ufuncs release
        # the GIL); each entry's sum runs in the same order, so the bits do not change.
        rows, cols = self._entry_indices()
        nnz = rows.shape[0]
        Wt = np.ascontiguousarray(W.T)
        a = self._buffer("gather_W", 1, nnz, W.dtype)[0]
        b = self._buffer("gather_H", 1, nnz, W.dtype)[0]
        out = np.empty(nnz, dtype=W.dtype)

        def entries(span):
            start, stop = span
            i, j, o, x, y = rows[start:stop], cols[start:stop], out[start:stop], a[start:stop], b[start:stop]
            np.take(Wt[0], i, out=o, mode="clip")
            o *= np.take(H[0], j, out=y, mode="clip")
            for t in range(1, W.shape[1]):
                np.take(Wt[t], i, out=x, mode="clip")
                x *= np.take(H[t], j, out=y, mode="clip")
                o += x
        threads.run(entries, sparse_products.spans(nnz, nnz * W.shape[1]))
        return out

    def divergence_sums(self, W, H, beta):
        tiny = self._tiny_entries() if beta == 1 else None
        if tiny is None:
            return super().divergence_sums(W, H, beta)
        # KL on dense X: Σ X·log(X / max(WH, EPSILON)) − Σ X over the entries above EPSILON
        # (scikit-learn leaves the rest out). In-place passes over a kept row-block buffer,
        # instead of ten passes and seven fresh block-sized arrays. The ratio is raised to the
        # smallest normal number before its log, so a zero of X adds 0·log(floor) = 0: numpy's
        # log is vectorised (5.6 ns an entry in float64, 1.9 in float32, where scipy's xlogy
        # takes 10 and 8.6). The few entries in (0, EPSILON] are taken out afterwards.
        X = self.X
        floor = np.finfo(W.dtype).tiny
        total = 0.0
        for rows in row_blocks(*X.shape):
            WH = self._WH_block(W, H, rows)
            np.maximum(WH, self._filled(EPSILON, WH), out=WH)
            np.divide(X[rows, :], WH, out=WH)
            np.maximum(WH, self._filled(floor, WH), out=WH)
            np.log(WH, out=WH)
            WH *= X[rows, :]
            total += float(np.sum(WH, dtype=np.float64))
        i, j = tiny
        if i.size:
            x = X[i, j]
            WH = np.maximum(np.vecdot(W[i, :], H[:, j].T), EPSILON)
            # Imported here: scipy.special takes 0.1 s to import, a sixth of a small fit from the shell.
            import scipy.special

            total -= float(np.sum(scipy.special.xlogy(x, x / WH), dtype=np.float64))
        return total - self._sum_X_kept(), 0.0

    def log_sum(self, values, weights=None):
        # ArrayEngine.log_sum in passes over kept buffers: the values in float32, their floor,
        # their log, and a dot product or a sum (in float64 for float64 values, after the logs
        # overwrite them). The floor in float32, after the cast: np.maximum from float64 into
        # float32 is 2.5× slower than the two passes.
        like = values if values.ndim == 2 else values.reshape(1, -1)
        if like.dtype == np.float32:
            logs = like
        else:
            logs = self._buffer("logs", like.shape[0], like.shape[1], np.float32)
            np.copyto(logs, like, casting="same_kind")
        np.maximum(logs, self._filled(TINY32, logs), out=logs)
        np.log(logs, out=logs)
        if like.dtype != np.float32:
            np.copyto(like, logs)
            logs = like
        if weights is None:
            return float(np.sum(logs, dtype=np.float64))
        return float(np.dot(weights.ravel(), logs.ravel()))

    def _is_terms(self, X, inverse):
        # into the ratio block's buffer, free once the update's numerator is formed
        q = self._buffer("ratio", inverse.shape[0], inverse.shape[1], inverse.dtype) if inverse.ndim == 2 else None
        q = np.multiply(X, inverse, out=q)
        return float(np.sum(q, dtype=np.float64)) - self.log_sum(q)

    def _filled(self, value, like):
        """A kept array of ``value`` shaped as the 2-D block ``like``, for np.maximum's floors:
        numpy's max against a scalar is not vectorised, against an array it is (90 against
        18 µs for 115,000 float32 entries)."""
        return self._buffer(("filled", value), like.shape[0], like.shape[1], like.dtype, fill=value)

    def _tiny_entries(self):
        """Rows and columns of X's entries in (0, EPSILON] (found once), or None when over 1% of X."""
        if self._tiny is None:
            X = self.X
            found = []
            for rows in row_blocks(*X.shape):
                block = X[rows, :]
                i, j = np.nonzero((block > 0) & (block <= EPSILON))
                found.append((i + rows.start, j))
            i = np.concatenate([f[0] for f in found])
            j = np.concatenate([f[1] for f in found])
            self._tiny = (i, j) if i.size <= X.size // 100 else False
        return self._tiny or None

    def _sum_X_kept(self):
        """Σ X over the entries above EPSILON (found once)."""
        if self._total is None:
            X = self.X
            i, j = self._tiny
            total = sum(float(np.sum(X[rows, :], dtype=np.float64)) for rows in row_blocks(*X.shape))
            self._total = total - float(np.sum(X[i, j], dtype=np.float64))
        return self._total

    # mu_products' block-sized steps, in two buffers kept between calls: fresh block-sized
    # temporaries, freed and re-allocated every iteration, cost page faults that tripled
    # the time of a KL fit on a 100×625 matrix. Same operations in the same order (in-place
    # operators take numpy's same fast paths as the expressions they replace).
    def _WH_block(self, W, H, rows):
        out = self._buffer("WH", rows.stop - rows.start, H.shape[1], W.dtype)
        return np.matmul(W[rows, :], H, out=out)

    def _ratio_block(self, X, WH, beta, keep_WH):
        out = self._buffer("ratio", WH.shape[0], WH.shape[1], WH.dtype) if keep_WH else WH
        _x_times_power_into(out, X, WH, beta, self._filled(EPSILON, WH))
        return out

    def _power_block(self, WH, beta):
        if beta < 1:
            np.maximum(WH, self._filled(EPSILON, WH), out=WH)
        if beta == 0:
            WH **= -1
            return WH
        out = self._buffer("power", WH.shape[0], WH.shape[1], WH.dtype)
        return power_into(out, WH, beta - 1)

    def _ratio_and_power_block(self, X, WH, beta):
        # array_api.ratio_and_power's operations, in place in the kept buffers
        ratio = self._buffer("ratio", WH.shape[0], WH.shape[1], WH.dtype)
        epsilon = self._filled(EPSILON, WH)
        if 1 < beta < 2:
            powered = power_into(self._buffer("power", WH.shape[0], WH.shape[1], WH.dtype), WH, beta - 1)
            clamped = np.maximum(powered, self._filled(EPSILON ** (beta - 1), WH), out=ratio)
            if beta == 1.5:
                return np.divide(X, clamped, out=ratio), powered
            np.maximum(WH, epsilon, out=WH)
            np.divide(clamped, WH, out=ratio)
            ratio *= X
            return ratio, powered
        if beta < 1:
            np.maximum(WH, epsilon, out=WH)
            powered = power_into(ratio, WH, beta - 1)
            np.divide(X, WH, out=WH)
            WH *= powered
            return WH, powered
        if beta == 3:  # the first power is WH itself: no copy of it (the same products)
            np.multiply(WH, X, out=ratio)
            WH *= WH
            return ratio, WH
        power_into(ratio, WH, beta - 2)
        WH *= ratio
        ratio *= X
        return ratio, WH


def power_into(out, base, exponent):
    """out ← base ** exponent (array_api.power's operations, in place; out is not base)."""
    form = POWER_FORMS.get(float(exponent))
    if form is None:
        return np.power(base, exponent, out=out)
    root, factors, reciprocal = form
    if root:
        np.sqrt(base, out=out)
    elif factors >= 2:
        np.multiply(base, base, out=out)
        factors -= 2
    else:
        np.copyto(out, base)
        factors -= 1
    for _ in range(factors):
        out *= base
    if reciprocal:
        np.divide(1.0, out, out=out)
    return out


def _x_times_power_into(out, X, WH, beta, epsilon):
    """out ← X ⊙ WH^(β−2) for β = 1 or 0 (array_api.x_times_power's clamp and order of
    operations; other β take _ratio_and_power_block); WH is kept unless out is WH.
    ``epsilon``: EPSILON, as an array the shape of WH."""
    np.maximum(WH, epsilon, out=out)
    if beta == 1:
        np.divide(X, out, out=out)
    else:
        out **= -1
        out **= 2
        out *= X
