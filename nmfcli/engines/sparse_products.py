"""Products of a CSR matrix with dense factors (X·V and Xᵀ·V), on the process's threads.

scipy.sparse multiplies on one thread; its loops (``csr_matvecs``, ``csc_matvecs``)
release the GIL and add into an output they are given, so threads can share the work:

- X·V: each thread takes a block of X's rows and writes those rows of the result,
  each computed exactly as one call computes it: the same bits for any thread count.
- Xᵀ·V: every entry is a sum over X's rows. The rows are split into blocks fixed by
  the data and V's width alone, never by the thread count; each block's product goes
  into its own buffer (kept between calls: fresh ones cost page faults that ate the
  gain), and the buffers are added in block order, so the result does not depend on
  how many threads ran it. It differs from one scipy call in the last bits, as any
  other order of summation would.

The same loops take other values on X's pattern (``values``), as the multiplicative
updates' X/(WH) at X's nonzeros, without building a matrix for them.

On 2 cores, 20000×10000 with 2·10⁶ nonzeros times 10 columns: 15-18 ms either product
in one scipy call, 9 ms on two threads.
"""

import functools

import numpy as np
import scipy.sparse as sp

from nmfcli.engines import threads

try:  # scipy's compiled loops, which scipy.sparse's own products call (checked before use)
    from scipy.sparse._sparsetools import csc_matvecs, csr_matvecs
except ImportError:  # pragma: no cover - a scipy that moved them: its public products
    csr_matvecs = csc_matvecs = None

# Products of fewer multiply-adds (nonzeros × columns of V) run as one scipy call on one
# thread: below this (a few ms of work), what two threads save is within what they cost and
# what the shared VM's second core gives or takes from one run to the next (a 2535×3677
# TF-IDF matrix with 68,599 nonzeros, k = 50: 2.4 ms on one thread, 1.7 or 2.7 on two).
MIN_WORK = 1 << 23
# Xᵀ·V's blocks: at most MAX_BLOCKS (so at most as many threads), and no more buffers than
# leave their total size under X's nonzeros (a wide V over few nonzeros gets fewer blocks).
MAX_BLOCKS = 8


class SparseProducts:
    """X·V and Xᵀ·V for one scipy.sparse CSR matrix X and dense V (C-ordered results).

    ``values``: other values on X's pattern (X.data's shape and dtype) to multiply by instead.
    """

    def __init__(self, X):
        self.X = X
        self._partials = {}  # (columns, dtype) -> kept buffers of Xᵀ·V's blocks after the first
        self._direct = (X.format == "csr" and X.indptr.dtype == X.indices.dtype
                        and X.data.dtype.kind == "f" and _loops_work())

    def XV(self, V, values=None, workers=None):
        """X·V, shape (m, c) for V of shape (n, c); the same bits for any thread count."""
        X = self.X
        data = X.data if values is None else values
        m, n = X.shape
        if not self._runs_direct(V, data):
            return np.asarray(self._matrix(values) @ V)
        V = np.ascontiguousarray(V)
        c = V.shape[1]
        out = np.zeros((m, c), dtype=data.dtype)
        if X.nnz * c < MIN_WORK:
            csr_matvecs(m, n, c, X.indptr, X.indices, data, V.ravel(), out.ravel())
            return out

        def rows(block):
            start, stop = block
            csr_matvecs(stop - start, n, c, X.indptr[start:stop + 1], X.indices, data, V.ravel(),
                        out[start:stop].ravel())

        workers = threads.count(workers)
        threads.run(rows, row_blocks(X.indptr, workers), workers)
        return out

    def XtV(self, V, values=None, workers=None, blocks=None):
        """Xᵀ·V, shape (n, c) for V of shape (m, c); blocks fixed by X and c, added in order.

        ``blocks=1``: one scipy call on one thread, scipy's own order of summation.
        """
        X = self.X
        data = X.data if values is None else values
        m, n = X.shape
        if not self._runs_direct(V, data):
            return np.asarray(self._matrix(values).T @ V)
        V = np.ascontiguousarray(V)
        c = V.shape[1]
        out = np.zeros((n, c), dtype=data.dtype)
        if blocks is None:
            blocks = 1 if X.nnz * c < MIN_WORK else max(1, min(MAX_BLOCKS, 1 + X.nnz // max(n * c, 1)))
        blocks = row_blocks(X.indptr, blocks)
        buffers = [out] + self._buffers(len(blocks) - 1, n, c, data.dtype)

        def partial(i):
            (start, stop), Y = blocks[i], buffers[i]
            if i:
                Y.fill(0)
            # Xᵀ is CSC with X's arrays: its columns start..stop are X's rows.
            csc_matvecs(n, stop - start, c, X.indptr[start:stop + 1], X.indices, data,
                        V[start:stop].ravel(), Y.ravel())

        threads.run(partial, range(len(blocks)), workers)
        for Y in buffers[1:]:
            out += Y
        return out

    def _runs_direct(self, V, data):
        return (self._direct and isinstance(V, np.ndarray) and V.ndim == 2
                and V.dtype == data.dtype and data.shape == self.X.data.shape)

    def _matrix(self, values):
        return self.X if values is None else with_values(self.X, values)

    def _buffers(self, count, rows, cols, dtype):
        key = (cols, np.dtype(dtype))
        kept = self._partials.get(key, [])
        if len(kept) < count:
            kept = kept + [np.empty((rows, cols), dtype=dtype) for _ in range(count - len(kept))]
            self._partials[key] = kept
        return kept[:count]


def with_values(X, values):
    """A matrix of X's format and pattern (sharing its index arrays) holding ``values`` at its
    nonzeros; for scipy.sparse and cupyx.scipy.sparse alike."""
    return type(X)((values, X.indices, X.indptr), shape=X.shape)


@functools.cache
def _loops_work():
    """Do scipy's private loops take the arguments this module gives them? (Checked once on a
    small matrix against scipy's public products; if not, those run, on one thread.)"""
    if csr_matvecs is None:
        return False
    X = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    V = np.arange(6.0).reshape(3, 2)
    U = np.arange(4.0).reshape(2, 2)
    try:
        XV, XtV = np.zeros((2, 2)), np.zeros((3, 2))
        csr_matvecs(1, 3, 2, X.indptr[1:3], X.indices, X.data, V.ravel(), XV[1:].ravel())
        csc_matvecs(3, 2, 2, X.indptr, X.indices, X.data, U.ravel(), XtV.ravel())
    except Exception:  # noqa: BLE001 - any failure means "use the public products"
        return False
    return np.array_equal(XV[1:], (X @ V)[1:]) and not XV[0].any() and np.array_equal(XtV, X.T @ U)


def row_blocks(indptr, count):
    """Up to ``count`` (start, stop) ranges of a CSR matrix's rows with about equal nonzeros."""
    m = len(indptr) - 1
    cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], count + 1)[1:-1], side="left")
    bounds = np.unique(np.concatenate(([0], np.clip(cuts, 0, m), [m]))).tolist()
    return list(zip(bounds[:-1], bounds[1:])) or [(0, m)]


def spans(length, work, workers=None):
    """[start, stop) ranges splitting range(length) evenly, one a thread when ``work`` (its
    multiply-adds) is at least MIN_WORK, else one."""
    count = threads.count(workers) if work >= MIN_WORK else 1
    bounds = np.linspace(0, length, max(1, min(count, length)) + 1).astype(np.int64).tolist()
    return list(zip(bounds[:-1], bounds[1:]))
