"""The numpy engine: dense ndarrays and scipy.sparse CSR matrices on the CPU."""

import numpy as np
import scipy.sparse

from nmfcli.engines.array_api import ArrayEngine
from nmfcli.solvers.losses import EPSILON, row_blocks


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

    def mu_products(self, W, H, beta, side):
        """ArrayEngine.mu_products for dense X, computed in two row-block buffers kept between calls.

        Same arithmetic, operation for operation (in-place operators take numpy's
        same fast paths as the expressions they replace), but no fresh block-sized
        temporaries: freed and re-allocated every iteration, those cost page faults
        that tripled the time of a KL fit on a 100×625 matrix.
        """
        if self.is_sparse:
            return super().mu_products(W, H, beta, side)
        k = W.shape[1]
        m, n = self.shape
        shape = (m, k) if side == "W" else (k, n)
        numerator = np.zeros(shape, dtype=W.dtype)
        denominator = None if beta == 1 else np.zeros(shape, dtype=W.dtype)
        for rows in row_blocks(m, n):
            r = rows.stop - rows.start
            WH = self._buffer("WH", r, n, W.dtype)
            np.matmul(W[rows, :], H, out=WH)
            ratio = WH if denominator is None else self._buffer("ratio", r, n, W.dtype)
            _x_times_power_into(ratio, self.X[rows, :], WH, beta)
            if side == "W":
                np.matmul(ratio, H.T, out=numerator[rows, :])
            else:
                numerator += W[rows, :].T @ ratio
            if denominator is not None:
                if beta < 1:
                    np.maximum(WH, EPSILON, out=WH)
                WH **= beta - 1
                if side == "W":
                    np.matmul(WH, H.T, out=denominator[rows, :])
                else:
                    denominator += W[rows, :].T @ WH
        return numerator, denominator


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
