"""Row blocks of X and the per-block kernels the out-of-core engines run.

X (m×n) is split into row blocks X_b. Everything a solver needs from X is a sum
over blocks (WᵀX = Σ W_bᵀX_b, WᵀW = Σ W_bᵀW_b, ‖X‖², every beta-divergence) or
row-local (the W update of hals, cd and mu reads only X_b, W_b and the global
H and HHᵀ). The functions here work on one block with the solver kernels
themselves (cd.sweep, mu.update_W, nnls, the numpy engine's products), so a
blockwise fit does the same arithmetic as the in-memory one. They are pure
functions of small, picklable arguments: the Dask engine ships them to worker
processes, and a serial loop can run them one block at a time.

A block is given either as an array (dense or CSR, already in memory) or as an
:class:`nmfcli.io.RowBlock`, a description (file, dataset, rows) that io reads in
the process running the task (io owns every file format; the engines only decide
how to stream).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from nmfcli.engines import blas
from nmfcli.engines.numpy import NumpyEngine
from nmfcli.errors import UsageError
from nmfcli.io import RowBlock, row_source
from nmfcli.solvers import cd, mu
from nmfcli.solvers.losses import beta_divergence, squared_error
from nmfcli.solvers import nnls as nnls_solver
from nmfcli.solvers.nnls import nnls

# A row block holds about this many bytes of X when the caller names no size: a task
# holds the block and up to three block-sized temporaries (X − WH in the divergence).
BLOCK_BYTES = 16 << 20


# --------------------------------------------------------------------------- sources


def open_spec(spec, chunk_rows=None):
    """(shape, stored dtype, [io.RowBlock...]) for a path spec; io reads the metadata only."""
    source = row_source(spec)
    rows = row_step(source.shape, source.dtype, chunk_rows)
    return tuple(source.shape), np.dtype(source.dtype), source.blocks(rows, align=chunk_rows is None)


def row_step(shape, dtype, chunk_rows=None):
    """Rows per block: the caller's, or about BLOCK_BYTES of X."""
    if chunk_rows is not None:
        return max(1, int(chunk_rows))
    return max(1, min(shape[0], BLOCK_BYTES // max(1, shape[1] * np.dtype(dtype).itemsize)))


# --------------------------------------------------------------------------- one block


def BlockEngine(X):
    """The numpy engine holding one block (its own constructor, so it follows the engine's conventions)."""
    return NumpyEngine(X, X.dtype)


def canonical(X, dtype):
    """A block as the numpy engine holds X: C-ordered dense, or CSR without duplicates or zeros."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=dtype, copy=True)
        X.sum_duplicates()
        X.eliminate_zeros()
        return X
    return np.ascontiguousarray(X, dtype=dtype)


def load(src, dtype):
    """The block as an array: read from its file, or the in-memory block itself."""
    if isinstance(src, RowBlock):
        return canonical(src.read(), dtype)
    return src


def read_block(src, dtype):
    """Read a source into worker memory once (persisted X), canonical like :func:`load`."""
    return canonical(src.read() if isinstance(src, RowBlock) else src, dtype)


def block_stats(src, dtype, offset):
    """‖X_b‖², ΣX_b, whether a zero is stored or implied, and the first NaN/Inf and negative entry."""
    X = load(src, dtype)
    if sp.issparse(X):
        coo = X.tocoo()
        data, rows, cols = coo.data, coo.row, coo.col
        has_zero = X.nnz < X.shape[0] * X.shape[1] or bool(np.any(data == 0))
    else:
        data, rows, cols = X.ravel(), None, None
        has_zero = bool(np.any(data == 0))
    bad = {}
    for key, mask in (("nonfinite", ~np.isfinite(data)), ("negative", data < 0)):
        count = int(np.count_nonzero(mask))
        if count:
            flat = int(np.flatnonzero(mask)[0])
            i, j = np.unravel_index(flat, X.shape) if rows is None else (rows[flat], cols[flat])
            bad[key] = (count, float(data[flat]), offset + int(i), int(j))
    finite = (data[np.isfinite(data)] if "nonfinite" in bad else data).astype(np.float64)  # float64 sums
    with np.errstate(over="ignore"):  # (a sum past float64 is refused by the caller, from "max")
        sqnorm = float(np.dot(finite, finite))
    return {"sqnorm": sqnorm, "sum": float(np.sum(finite)),
            "max": float(np.max(finite)) if finite.size else 0.0,
            "has_zero": has_zero, "bad": bad, "rows": X.shape[0]}


def frobenius_w_step(src, dtype, Wt, H, G, l1_W, l2_W, want_pg, mode, finish):
    """The W half of a hals/cd iteration on one block: Wᵀ_b (k×m_b) against the global G = HHᵀ + l2.

    mode "cd": one sweep returning scikit-learn's violation; "hals": one sweep, and the
    squared change it made (the inner stopping rule sums it over blocks). With ``finish``
    the block's share of WᵀX, WᵀW and the W penalty comes back too, from the same read of X_b.
    Returns (new Wᵀ_b, R_b or None, stats).
    """
    eng = BlockEngine(load(src, dtype))
    Wt = np.array(Wt, copy=True)  # the input belongs to the worker's store
    _, R = cd.gram_and_cross_from(G, eng.HXt(H), l1_W, 0.0)
    stats = {}
    if want_pg:
        stats["pg"] = float(cd.projected_gradient_norm(Wt, G, R))
    if mode == "cd":
        stats["violation"] = float(cd.sweep(Wt, G, R))
    else:
        previous = Wt.copy()
        cd.sweep(Wt, G, R, violation=False)
        diff = (Wt - previous).ravel()
        stats["change"] = float(np.dot(diff, diff))
    if finish:
        stats.update(frobenius_products(eng, Wt, l1_W, l2_W))
        R = None
    return Wt, R, stats


def sweep_round(Wt, R, G):
    """One more inner sweep of hals on a block: (new Wᵀ_b, the squared change)."""
    Wt = np.array(Wt, copy=True)
    previous = Wt.copy()
    cd.sweep(Wt, G, R, violation=False)
    diff = (Wt - previous).ravel()
    return Wt, float(np.dot(diff, diff))


def frobenius_products(eng, Wt, l1_W, l2_W):
    return {"WtX": eng.WtX(Wt.T), "WtW": Wt @ Wt.T, "penalty_W": cd.penalty(Wt, l1_W, l2_W)}


def frobenius_finish(src, dtype, Wt, l1_W, l2_W):
    """WᵀX_b, WᵀW_b and the W penalty of a block whose Wᵀ_b is final."""
    return frobenius_products(BlockEngine(load(src, dtype)), Wt, l1_W, l2_W)


def mu_step(src, dtype, W, H, beta, l1_W, l2_W, gamma, update_W, h_side, W_before=None, extrapolation=None,
            bound=None):
    """The W half of a multiplicative-update iteration on one block, and the block's share of the H update.

    W_b (m_b×k) is updated by ``mu.update_W`` itself (row-local); then, for the H
    update, WᵀX_b and WᵀW_b (beta 2) or the two products of ``mu_products`` (other
    betas), and for beta 1 the column sums of W_b.

    emu's step (core._emu_loop, per block): with ``extrapolation`` (its β), W_b starts
    from mu.extrapolate(W_b, W_before_b); ``bound`` says which update gives the bound.
    "H": the H update's (the divergence's terms for KL and Itakura-Saito, from
    mu_products, and W_b's penalties after its update); "W" (H fixed): W_b's update's
    own bound, and W_b's L2 penalty where that update starts. Both add up over blocks.
    """
    eng = BlockEngine(load(src, dtype))
    stats = {}
    if update_W:
        W = np.array(W, copy=True) if extrapolation is None else \
            mu.extrapolate(W, np.array(W_before, copy=True), extrapolation)
        if bound == "W":
            stats["penalty_W"] = cd.penalty(W, 0.0, l2_W)
        block_bound = mu.update_W(eng, W, H, beta, l1_W, l2_W, gamma, {}, keep_cache=False, bound=bound == "W")
        if bound == "W":
            stats["bound"] = block_bound
    if bound == "H":
        stats["penalty_W"] = cd.penalty(W, l1_W, l2_W)
    if h_side:
        if beta == 2:
            stats["WtX"], stats["WtW"] = eng.WtX(W), W.T @ W
        else:
            products = eng.mu_products(W, H, beta, "H", divergence=bound == "H" and beta in (0, 1))
            stats["numerator"] = products[0]
            if products[1] is not None:
                stats["denominator"] = products[1]
            if len(products) == 3:
                stats["terms"] = products[2]
            if beta == 1:
                stats["W_sum"] = np.sum(W, axis=0)
    return W, stats


def extrapolate_block(Wt, Wt_before, beta):
    """ehals's extrapolation of a block of Wᵀ (cd.extrapolate), without X."""
    return cd.extrapolate(Wt, np.array(Wt_before, copy=True), beta)


def emu_step(src, dtype, W, W_before, H, **kwargs):
    """mu_step with the block's W before its last step (blocks are the map's positional arguments)."""
    return mu_step(src, dtype, W, H, W_before=W_before, **kwargs)


def power_sum(src, dtype, beta):
    """Σ X_b^β (emu's slack, core._emu_rounding)."""
    return {"power_sum": BlockEngine(load(src, dtype)).power_sum(beta)}


def divergence(src, dtype, W, H, beta, l1_W, l2_W, transposed, squared=False):
    """The block's beta-divergence (additive over row blocks), its W penalty and, if asked, ‖X_b − W_bH‖²."""
    eng = BlockEngine(load(src, dtype))
    W = W.T if transposed else W
    out = {"divergence": float(beta_divergence(eng, W, H, beta)), "penalty_W": cd.penalty(W, l1_W, l2_W)}
    if squared:
        out["squared_error"] = float(squared_error(eng, W, H))
    return out


def nnls_rows(src, dtype, H, G, l1_W, l2_W=0.0):
    """W_b (m_b×k) solving min ‖X_b − W_bH‖ (+ penalties in G and l1) over W_b ≥ 0, certified
    row by row (solvers.nnls; the block's failed rows re-solved on the square-root form):
    (W_b, Certificate)."""
    eng = BlockEngine(load(src, dtype))
    _, R = cd.gram_and_cross_from(G, eng.HXt64(H), l1_W, 0.0)
    H64 = np.asarray(H, dtype=np.float64)

    def reduce(rows):
        return nnls_solver.reduce_dense(H64.T, eng.rows_dense64(rows).T)

    Wt, cert = nnls(np.asarray(G, dtype=np.float64), R, reduce=reduce, l1=l1_W, l2=l2_W)
    return np.ascontiguousarray(Wt.T.astype(eng.dtype)), cert


def frobenius_finish64(src, dtype, Wt):
    """WᵀX_b and WᵀW_b accumulated in float64 (the exact solve's Gram matrix and cross term)."""
    eng = BlockEngine(load(src, dtype))
    Wt64 = np.asarray(Wt, dtype=np.float64)
    return {"WtX": eng.WtX64(Wt64.T), "WtW": Wt64 @ Wt64.T}


def qr_columns(src, dtype, Wt, cols):
    """The R factor of [W_b | X_b[:, cols]] in float64 ((k + f) × (k + f)): one block's share
    of a tall-skinny QR, which the exact solve's refinement stacks and factors again."""
    eng = BlockEngine(load(src, dtype))
    A = np.hstack([np.asarray(Wt, dtype=np.float64).T, eng.cols_dense64(cols)])
    return nnls_solver._square(np.linalg.qr(A, mode="r"), A.shape[1])


def times(src, dtype, Q):
    """X_b·Q (m_b×r)."""
    return np.asarray(load(src, dtype) @ Q)


def t_times(src, dtype, P):
    """X_bᵀ·P_b (n×r), P_b being the block's rows of an m×r matrix."""
    X = load(src, dtype)
    return np.asarray(X.T @ P)


def add(*parts):
    """Sum dicts of arrays/scalars key by key (the tree reduction's node)."""
    out = {}
    for part in parts:
        for key, value in part.items():
            if key == "n_iter":
                out[key] = max(out.get(key, 0), value)
            elif key in out:
                out[key] = out[key] + value
            else:
                out[key] = value.copy() if isinstance(value, np.ndarray) else value
    return out


def full(rows, cols, value, dtype):
    return np.full((rows, cols), value, dtype=dtype)


def transpose(A):
    return np.ascontiguousarray(A.T)


def pick(result, index):
    return result[index]


# --------------------------------------------------------------------------- serial loop


class Done:
    """A finished task's value, standing where the Dask engine holds a future."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _value(arg):
    return arg.value if isinstance(arg, Done) else arg


class SerialClient:
    """The part of distributed.Client the Dask engine's loop uses, run at once in this process.

    Each task runs when it is submitted, reading its block of X from the file and
    dropping it after, so the loop of :mod:`nmfcli.engines.dask` becomes the numpy
    engine's out-of-core mode: one block of X in memory at a time, no cluster, no Dask.
    """

    def submit(self, func, *args, pure=None, **kwargs):
        return Done(func(*map(_value, args), **{key: _value(v) for key, v in kwargs.items()}))

    def map(self, func, items, pure=None, **kwargs):
        return [self.submit(func, item, **kwargs) for item in items]

    def scatter(self, data, broadcast=False, hash=None):
        if isinstance(data, list):
            return [Done(part) for part in data]
        # The caller may change a scattered array in place later (H); a cluster would hold a copy.
        return Done(np.array(data, copy=True) if isinstance(data, np.ndarray) else data)

    def gather(self, futures):
        return [_value(f) for f in futures] if isinstance(futures, list) else _value(futures)

    def compute(self, delayed):
        return [Done(d.compute(scheduler="synchronous")) for d in delayed]

    def scheduler_info(self):
        return {"workers": {}}  # no worker memory: file-backed X is read per pass, never persisted


def fit_blocks(X, k, *, chunk_rows=None, output=None, **kwargs):
    """:func:`nmfcli.core.fit` over row blocks of X in this process (engine "numpy" with chunk_rows).

    X is a path spec (``FILE.h5::/X``, ``S.zarr``, an ``.npy`` file, a folder of NPY/NPZ
    row blocks) read one block at a time, or an array cut into blocks. The loop, results
    and options are the Dask engine's (:func:`nmfcli.engines.dask.fit_dask`) on a
    :class:`SerialClient`; ``output`` writes W to HDF5/zarr block by block.
    """
    from nmfcli.engines.dask import fit_dask

    _refuse_cluster_options(kwargs)
    with blas.fit_threads():  # as an in-memory fit: BLAS threads for the products with X only
        return fit_dask(X, k, scheduler=SerialClient(), chunk_rows=chunk_rows, output=output,
                        persist=False, **kwargs)


def transform_blocks(X, H, *, chunk_rows=None, output=None, **kwargs):
    """:func:`nmfcli.core.transform` over row blocks of X in this process; W, or the ``output`` spec."""
    from nmfcli.engines.dask import transform_dask

    _refuse_cluster_options(kwargs)
    with blas.fit_threads():
        return transform_dask(X, H, scheduler=SerialClient(), chunk_rows=chunk_rows, output=output,
                              persist=False, **kwargs)


def _refuse_cluster_options(kwargs):
    for key in ("scheduler", "workers", "memory_limit", "persist"):
        if key in kwargs:
            raise UsageError(f"engine option {key!r} needs engine 'dask'; the numpy engine takes chunk_rows and output")
