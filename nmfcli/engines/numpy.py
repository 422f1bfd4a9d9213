"""The numpy engine: dense ndarrays and scipy.sparse CSR matrices on the CPU."""

import numpy as np
import scipy.sparse

from nmfcli.engines import blas
from nmfcli.engines.array_api import ArrayEngine
from nmfcli.solvers.losses import EPSILON


class NumpyEngine(ArrayEngine):
    name = "numpy"

    def __init__(self, X, dtype):
        super().__init__(X, dtype, np, scipy.sparse)
        self._buffers = {}

    def _buffer(self, name, rows, cols, dtype):
        """A C-ordered rows×cols work array kept between calls (its first rows·cols entries)."""
        size = rows * cols
        buf = self._buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(rows, cols)

    # A fit runs its BLAS calls on one thread, and only the dense products with X on
    # the process's thread count (see engines/blas.py). scipy.sparse's products use no BLAS.
    def session(self):
        return blas.fit_threads()

    def XHt(self, H):
        with blas.product_threads():
            return super().XHt(H)

    def HXt(self, H):
        with blas.product_threads():
            return super().HXt(H)

    def WtX(self, W):
        with blas.product_threads():
            return super().WtX(W)

    def mu_products(self, W, H, beta, side):
        if self.is_sparse:
            return super().mu_products(W, H, beta, side)
        with blas.product_threads():
            return super().mu_products(W, H, beta, side)

    def WH_at_X(self, W, H):
        if not self.is_sparse:
            return super().WH_at_X(W, H)
        # ArrayEngine's gathers, with the two nnz-sized temporaries in kept buffers (fresh
        # ones cost page faults on every call, as in mu_products below). mode="clip" lets
        # take write into out directly; every index is in range, so it clips nothing.
        rows, cols = self._entry_indices()
        nnz = rows.shape[0]
        Wt = np.ascontiguousarray(W.T)
        a = self._buffer("gather_W", 1, nnz, W.dtype)[0]
        b = self._buffer("gather_H", 1, nnz, W.dtype)[0]
        out = np.take(Wt[0], rows)
        out *= np.take(H[0], cols, out=b, mode="clip")
        for t in range(1, W.shape[1]):
            np.take(Wt[t], rows, out=a, mode="clip")
            a *= np.take(H[t], cols, out=b, mode="clip")
            out += a
        return out

    # mu_products' block-sized steps, in two buffers kept between calls: fresh block-sized
    # temporaries, freed and re-allocated every iteration, cost page faults that tripled
    # the time of a KL fit on a 100×625 matrix. Same operations in the same order (in-place
    # operators take numpy's same fast paths as the expressions they replace).
    def _WH_block(self, W, H, rows):
        out = self._buffer("WH", rows.stop - rows.start, H.shape[1], W.dtype)
        return np.matmul(W[rows, :], H, out=out)

    def _ratio_block(self, X, WH, beta, keep_WH):
        out = self._buffer("ratio", WH.shape[0], WH.shape[1], WH.dtype) if keep_WH else WH
        _x_times_power_into(out, X, WH, beta)
        return out

    def _power_block(self, WH, beta):
        if beta < 1:
            np.maximum(WH, EPSILON, out=WH)
        WH **= beta - 1
        return WH


def _x_times_power_into(out, X, WH, beta):
    """out ← X ⊙ WH^(β−2) (array_api.x_times_power's clamp and order of operations); WH is kept
    unless out is WH."""
    if beta < 2:
        np.maximum(WH, EPSILON, out=out)
    elif out is not WH:
        out[...] = WH
    if beta == 1:
        np.divide(X, out, out=out)
    elif beta == 0:
        out **= -1
        out **= 2
        out *= X
    else:
        out **= beta - 2
        out *= X
