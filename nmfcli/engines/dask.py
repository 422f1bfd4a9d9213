"""The Dask engine: the same solvers over row blocks of X held by worker processes.

X is a list of row blocks X_b, each either persisted in a worker's memory or
read from its file by the task that needs it (so X may exceed the cluster's
memory). W is row-blocked with X and never leaves the workers until the end;
H, HHᵀ and WᵀW are k×n and k×k arrays on the client, scattered to the workers
each iteration. The W update is row-local and runs per block with the solver
kernels themselves (:mod:`nmfcli.engines.chunked`); WᵀX, WᵀW and the
divergences are tree reductions over blocks; the H update runs on the client
with the same kernels as the numpy engine. Each iteration submits the same
fixed number of tasks on futures and drops the previous ones, so the graph
does not grow with the iteration count.

Iterates, stopping rules, history and the callback protocol are those of
:func:`nmfcli.core.fit`, so results equal the numpy engine's to rounding
(sums over blocks are associated differently).

Limits: nndsvd* inits hold m×(k+10) temporaries on the client (as the numpy
engine's do); a random init draws W on the client one block at a time, in the
order of the numpy engine's RandomState stream, and scatters each block.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp

from nmfcli.engines import chunked
from nmfcli.errors import DataError, UnavailableError, UsageError
from nmfcli.init import nndsvd_factors
from nmfcli.io import RowBlock, row_source, row_writer
from nmfcli.solvers import cd, mu
from nmfcli.solvers.losses import reconstruction_error
from nmfcli.solvers import nnls as nnls_solver
from nmfcli.solvers.nnls import nnls

MISSING = "engine 'dask' needs dask.distributed; install it with: pip install 'nmfcli[dask]'"
FAN_IN = 8
DELTA = 0.1  # the inner stopping rule of accelerated HALS, as in cd.hals_iteration


class Blockwise:
    """What the blockwise loop (this engine's, and the numpy engine's out of core) runs, for
    core.engine_solver: both extrapolated solvers, and ehals for "auto" under the Frobenius
    loss (out of core, low rank 5000×2000 and image patches 20000×64, k = 10: scikit-learn's
    error in 16 and 14 iterations against hals's 31 and 29, 1.6-2.0× sooner)."""

    default_frobenius_solver = "ehals"
    extrapolated = ("ehals", "emu")
    where = "on the dask engine or out of core (--chunk-rows)"


def _distributed():
    """The distributed module, or UnavailableError with the install hint."""
    try:
        import dask.array  # noqa: F401
        import distributed
    except ImportError:
        raise UnavailableError(MISSING) from None
    return distributed


@contextmanager
def _session(scheduler, workers, memory_limit):
    """A Client: on the given scheduler (address or Client), or on a LocalCluster of processes for this run."""
    if isinstance(scheduler, chunked.SerialClient):  # the numpy engine's out-of-core mode: no Dask at all
        yield scheduler
        return
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    cluster = None
    if scheduler is None:
        cluster = distributed.LocalCluster(
            n_workers=int(workers or min(4, os.cpu_count() or 1)), threads_per_worker=1, processes=True,
            memory_limit=memory_limit or "auto", dashboard_address=None, silence_logs=logging.ERROR)
        scheduler = cluster
    client = distributed.Client(scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------- X in blocks


class _Blocks:
    """X as row blocks on the cluster, and the few collective operations the loops need."""

    def __init__(self, client, sources, offsets, shape, dtype):
        self.client = client
        self.sources = sources  # futures of persisted blocks, or chunked.RowSource
        self.offsets = offsets  # row offset of each block, then m
        self.shape = shape
        self.dtype = dtype
        self.tasks = 0

    @classmethod
    def from_input(cls, client, X, dtype, chunk_rows, persist):
        if isinstance(X, (str, os.PathLike)):
            shape, stored, sources = chunked.open_spec(os.fspath(X), chunk_rows)
            dtype = _resolve_dtype(stored, dtype)
            offsets = [s.start for s in sources] + [shape[0]]
            if persist is None:
                limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
                persist = bool(limits) and all(limits) and shape[0] * shape[1] * dtype.itemsize <= 0.3 * sum(limits)
            if persist:
                sources = client.map(chunked.read_block, sources, dtype=dtype, pure=False)
            return cls(client, sources, offsets, shape, dtype)
        if hasattr(X, "to_delayed") and hasattr(X, "chunks"):  # a dask array
            if X.ndim != 2:
                raise DataError(f"X must be a 2-D matrix (rows x columns); got {X.ndim}-D with shape {X.shape}")
            dtype = _resolve_dtype(X.dtype, dtype)
            rows = chunked.row_step(X.shape, dtype, chunk_rows) if chunk_rows else X.chunks[0]
            X = X.rechunk({0: rows, 1: -1})  # once, before the loop: never rechunk per iteration
            parts = client.compute(list(X.to_delayed().ravel()))
            sources = client.map(chunked.canonical, parts, dtype=dtype, pure=False)
            offsets = list(np.cumsum((0,) + X.chunks[0]))
            return cls(client, sources, [int(o) for o in offsets], tuple(X.shape), dtype)
        if not sp.issparse(X):
            X = np.asarray(X)
            if X.ndim != 2:
                raise DataError(
                    f"X must be a 2-D matrix (rows x columns); got {X.ndim}-D with shape {X.shape}")
        dtype = _resolve_dtype(X.dtype, dtype)
        if sp.issparse(X):
            X = sp.csr_matrix(X)
        rows = chunked.row_step(X.shape, dtype, chunk_rows)
        offsets = list(range(0, X.shape[0], rows)) + [X.shape[0]]
        parts = client.scatter([X[a:b] for a, b in zip(offsets[:-1], offsets[1:])])
        sources = client.map(chunked.canonical, parts, dtype=dtype, pure=False)
        return cls(client, sources, offsets, tuple(X.shape), dtype)

    @property
    def row_slices(self):
        return [slice(a, b) for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def map(self, func, *per_block, on_submit=None, **same):
        """func(source_b, dtype, *per_block_b, **same) on every block: a list of futures.

        ``on_submit(b)`` is called after block b's task is submitted (on the serial client:
        after it ran)."""
        self.tasks += len(self.sources)
        futures = []
        for b, (src, *args) in enumerate(zip(self.sources, *per_block) if per_block else
                                         ((src,) for src in self.sources)):
            futures.append(self.client.submit(func, src, self.dtype, *args, pure=False, **same))
            if on_submit is not None:
                on_submit(b)
        return futures

    def each(self, func, *per_block, **same):
        """func(*per_block_b, **same) on every block, without X."""
        self.tasks += len(per_block[0])
        return [self.client.submit(func, *args, pure=False, **same) for args in zip(*per_block)]

    def pick(self, futures, index):
        self.tasks += len(futures)
        return [self.client.submit(chunked.pick, f, index, pure=False) for f in futures]

    def reduce(self, futures):
        """Σ over blocks of dicts of arrays, as a tree of FAN_IN-way sums on the workers; gathered."""
        while len(futures) > 1:
            self.tasks += (len(futures) + FAN_IN - 1) // FAN_IN
            futures = [self.client.submit(chunked.add, *futures[i:i + FAN_IN], pure=False)
                       for i in range(0, len(futures), FAN_IN)]
        return self.client.gather(futures[0])

    def scatter(self, A):
        return self.client.scatter(A, broadcast=True, hash=False)

    def scatter_rows(self, A, transposed=False):
        """Scatter the row blocks of a client array (m×k); as k×m_b blocks when ``transposed``."""
        parts = [np.ascontiguousarray(A[s].T if transposed else A[s]) for s in self.row_slices]
        return self.client.scatter(parts, hash=False)

    def gather_rows(self, futures, transposed=False):
        parts = self.client.gather(futures)
        return np.concatenate([p.T if transposed else p for p in parts], axis=0)


def _resolve_dtype(stored, dtype):
    stored = np.dtype(stored)
    if stored.kind not in "fiu":
        what = {"b": "boolean", "c": "complex", "O": "object", "U": "string", "S": "bytes"}.get(
            stored.kind, str(stored))
        raise DataError(f"X holds {what} values; nmf needs real numbers")
    if dtype is None:
        dtype = stored if stored in (np.float32, np.float64) else np.float64
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise UsageError(f"dtype must be one of float32, float64; got {dtype}")
    return dtype


def _check_data(blocks, beta, loss_name):
    """One pass over X: ‖X‖² and mean, refusing NaN, Inf, negatives and (for beta ≤ 0) zeros as core does."""
    parts = blocks.client.gather(blocks.map(chunked.block_stats, blocks.offsets[:-1]))
    for key, what in (("nonfinite", "NaN or infinite"), ("negative", "negative")):
        found = [p["bad"][key] for p in parts if key in p["bad"]]
        if found:
            count = sum(f[0] for f in found)
            _, value, i, j = found[0]
            raise DataError(
                f"X has {count} {what} value{'s' if count > 1 else ''}; "
                f"the first is {value:g} at row {i + 1}, column {j + 1}"
                + ("; NMF needs non-negative data" if key == "negative" else ""))
    total = sum(p["sum"] for p in parts)
    if total == 0:
        raise DataError("X is all zeros; there is nothing to factorize")
    if beta <= 0 and any(p["has_zero"] for p in parts):
        raise DataError(
            f"X contains zeros, where the {loss_name} loss (beta={beta:g} <= 0) is undefined; "
            "add a small positive constant or use loss kl or frobenius")
    m, n = blocks.shape
    top = max(p["max"] for p in parts)
    _check_scale(top, blocks.dtype, n)
    return sum(p["sqnorm"] for p in parts), total / (m * n)


# The row-block loops take X as stored (the in-memory fit rescales data far from 1 by a power of
# four instead); X whose squares or Gram matrices would leave the dtype's range is refused.
ROW_BLOCK_MARGIN = 1e6


def _check_scale(top, dtype, n):
    info = np.finfo(dtype)
    squares = top * top
    if squares * max(n, 1) > float(info.max) / ROW_BLOCK_MARGIN or squares < float(info.tiny) * ROW_BLOCK_MARGIN:
        raise DataError(
            f"X has entries up to {top:g}, whose squares leave {dtype}'s range in the row-block products; fit it "
            "in memory (without --engine dask or --chunk-rows), which rescales such data exactly, or scale X by a "
            "power of ten first")


class _Operator:
    """X (or Xᵀ) as a linear operator over the blocks, so init.nndsvd_factors runs unchanged."""

    __array_ufunc__ = None  # make ndarray @ _Operator defer to __rmatmul__
    ndim = 2

    def __init__(self, blocks, mean, transposed=False):
        self.blocks, self._mean, self.transposed = blocks, mean, transposed
        self.shape = blocks.shape[::-1] if transposed else blocks.shape
        self.dtype = blocks.dtype

    @property
    def T(self):
        return _Operator(self.blocks, self._mean, not self.transposed)

    def mean(self):
        return self._mean

    def _times(self, Q):  # X·Q, m×r, gathered in row order
        Qf = self.blocks.scatter(np.asarray(Q))
        return self.blocks.gather_rows(self.blocks.map(chunked.times, Q=Qf))

    def _t_times(self, P):  # Xᵀ·P, n×r, reduced over blocks
        parts = self.blocks.scatter_rows(np.asarray(P))
        futures = self.blocks.map(_as_dict(chunked.t_times), parts)
        return self.blocks.reduce(futures)["value"]

    def __matmul__(self, Q):
        return self._t_times(Q) if self.transposed else self._times(Q)

    def __rmatmul__(self, A):
        return (self._times(A.T) if self.transposed else self._t_times(A.T)).T


class _as_dict:
    """Wrap a block function so its array result can go through the dict reduction."""

    def __init__(self, func):
        self.func = func

    def __call__(self, *args, **kwargs):
        return {"value": self.func(*args, **kwargs)}


class _LazyFactor:
    """W for the callback: the blocks stay on the workers until something asks for the array."""

    def __init__(self, blocks, futures, transposed, k):
        self._blocks, self._futures, self._transposed = blocks, futures, transposed
        self.shape = (blocks.shape[0], k)
        self.dtype = blocks.dtype
        self.ndim = 2

    def __array__(self, dtype=None, copy=None):
        W = self._blocks.gather_rows(self._futures, self._transposed)
        return W if dtype is None else W.astype(dtype, copy=False)


# --------------------------------------------------------------------------- fit


def fit_dask(X, k, *, solver="auto", loss="frobenius", init=None, seed=0, max_iter=200, tol=1e-4,
             alpha_W=0.0, alpha_H="same", l1_ratio=0.0, W0=None, H0=None, fix_W=None, fix_H=None,
             dtype=None, callback=None, resume=None, scheduler=None, workers=None, chunk_rows=None,
             memory_limit=None, output=None, output_before=None, persist=None, progress=None):
    """:func:`nmfcli.core.fit` on a Dask cluster; the same arguments, result, callback and progress protocol.

    Parameters beyond core.fit's (the engine_options)
    -------------------------------------------------
    X : ndarray, scipy.sparse matrix, dask array, or a path spec
        ``FILE.h5::/X``, a zarr store (``S.zarr`` or ``S.zarr::name``), an ``.npy`` file
        (memory-mapped) or a folder of NPY/NPZ row blocks, read on the workers.
    scheduler : str or distributed.Client, optional
        Address of a running scheduler; None starts a LocalCluster of processes for this run.
    workers : int, optional
        Worker processes of that LocalCluster (default min(4, CPUs)).
    chunk_rows : int, optional
        Rows per block (default: about 16 MiB of X; whole storage chunks for HDF5/zarr).
    memory_limit : str or int, optional
        Memory limit per worker of the LocalCluster (e.g. "1GB").
    output : str, optional
        ``FILE.h5[::/name]`` or ``STORE.zarr``: W is written there block by block and
        ``FitResult.W`` is that spec (a string), so W never has to fit on the client.
    output_before : str, optional
        With ``output``: where ehals's and emu's final checkpoint keeps W_before (the
        iterate their next extrapolation starts from), written block by block as W is;
        ``FitResult.checkpoint["W_before"]`` is then that spec. Without it that checkpoint
        has no W_before and a fit resumed from it takes one plain step first.
    persist : bool, optional
        Keep file-backed X in the workers' memory (default: when it takes under 30% of it);
        otherwise each pass reads the blocks from the file again.
    """
    start = time.perf_counter()
    serial = isinstance(scheduler, chunked.SerialClient)
    if not serial:
        _distributed()
    from nmfcli import core  # the shared validators and result types (core imports this module lazily)

    if fix_W is not None and fix_H is not None:
        raise UsageError("fix_W and fix_H cannot both be given: nothing would be left to fit")
    loss_name, beta, checked = core.check_options(loss, solver, alpha_W, alpha_H, l1_ratio, max_iter, tol)
    solver = core.engine_solver(solver, checked, Blockwise, resume, fixed=fix_W is not None or fix_H is not None,
                                beta=beta)

    with _session(scheduler, workers, memory_limit) as client:
        blocks = _Blocks.from_input(client, X, dtype, chunk_rows, persist)
        dtype = blocks.dtype
        _, n = shape = blocks.shape
        init = core.check_init(init, k, shape, W0, H0, fix_W, fix_H)
        sqnorm, mean = _check_data(blocks, beta, loss_name)
        W0, H0, fix_W, fix_H = core.check_factors(k, shape, dtype, init, W0, H0, fix_W, fix_H)

        options = dict(
            k=int(k), solver=core.reported_solver(solver, beta, fix_W, fix_H), loss=loss_name, beta=beta,
            init=core.reported_init(init, beta, fix_W, fix_H, W0, H0), seed=seed,
            max_iter=int(max_iter), tol=float(tol), alpha_W=float(alpha_W),
            alpha_H=alpha_H if alpha_H == "same" else float(alpha_H), l1_ratio=float(l1_ratio),
            dtype=str(dtype), engine="numpy" if serial else "dask",
            fixed="W" if fix_W is not None else "H" if fix_H is not None else None,
        )
        run = _Run(blocks, options, core.regularization(shape, alpha_W, alpha_H, l1_ratio), beta, sqnorm,
                   callback, start, core, (output, output_before), progress)
        # hals/cd keep Wᵀ blocks (k×m_b), mu and emu W blocks (m_b×k)
        transposed = solver not in core.MULTIPLICATIVE

        if options["solver"] == "nnls":
            return core._check_finite_result(run.exact(fix_W, fix_H))
        if resume is not None:
            H = np.array(resume["H"], dtype=dtype)
            if H.shape != (k, n):
                raise DataError("the checkpoint's factors do not match the data and k")
            W = run.resumed_factor(resume["W"], transposed)
        else:
            W, H = run.initial_factors(k, init, seed, mean, W0, H0, fix_W, fix_H, transposed)
        if fix_W is not None:
            W = blocks.scatter_rows(fix_W, transposed)
        if fix_H is not None:
            H = fix_H
        # H in one layout whatever it came from (a start can be Fortran-ordered, a checkpoint's H is
        # not): the products' rounding depends on it, and a resumed fit must go on bit for bit.
        H = np.array(H, dtype=dtype, order="C")
        loop = {"emu": run.emu_loop, "mu": run.mu_loop, "ehals": run.ehals_loop}.get(solver, run.cd_loop)
        return core._check_finite_result(loop(W, H, resume))


def transform_dask(X, H, *, loss="frobenius", alpha_W=0.0, l1_ratio=0.0, dtype=None, max_iter=1000,
                   tol=1e-8, progress=None, details=False, **engine_options):
    """:func:`nmfcli.core.transform` block by block: W ≥ 0 for fixed components H (exact for Frobenius).

    Returns W (m×k), or the ``output`` spec it was written to (the whole FitResult with ``details``).
    """
    H = np.asarray(H)
    if H.ndim != 2:
        raise DataError(f"the components must be a 2-D matrix; got {H.ndim}-D")
    from nmfcli import core

    result = fit_dask(X, H.shape[0], solver="auto", loss=loss, alpha_W=alpha_W, alpha_H=0.0,
                      l1_ratio=l1_ratio, fix_H=H, dtype=dtype, max_iter=max_iter, tol=tol,
                      callback=core.iteration_progress(progress), progress=progress, **engine_options)
    return result if details else result.W


class _Run:
    """One fit on the cluster: the loops of core, with X's products and W's update done per block."""

    def __init__(self, blocks, options, reg, beta, sqnorm, callback, start, core, outputs=(None, None),
                 progress=None):
        self.blocks, self.options, self.reg, self.beta = blocks, options, reg, beta
        self.sqnorm, self.callback, self.start, self.core = sqnorm, callback, start, core
        self.output, self.output_before = outputs
        self.progress = progress
        self.tasks_per_iteration = []

    # ---- factors
    def initial_factors(self, k, init, seed, mean, W0, H0, fix_W, fix_H, transposed):
        blocks, dtype = self.blocks, self.blocks.dtype
        m, n = blocks.shape
        value = np.sqrt(mean / k) if self.options["solver"] in self.core.MULTIPLICATIVE else 0.0
        if fix_H is not None and W0 is None:
            # scikit-learn's transform start, created on the workers (never embedded in the graph).
            rows = [s.stop - s.start for s in blocks.row_slices]
            shape = [(k, r) if transposed else (r, k) for r in rows]
            return blocks.each(chunked.full, [s[0] for s in shape], [s[1] for s in shape],
                               value=value, dtype=dtype), fix_H
        if fix_W is not None and H0 is None:
            return None, np.full((k, n), value, dtype=dtype)
        if init == "custom":
            return (blocks.scatter_rows(W0, transposed) if W0 is not None else None), H0
        if init == "random":
            # init.random_factors draws H (k×n) then W (m×k) row-major from one RandomState;
            # drawing W block by block in row order continues the same stream exactly.
            avg = np.sqrt(mean / k)
            rng = np.random.RandomState(seed)
            H = np.abs(avg * rng.standard_normal(size=(k, n)).astype(dtype, copy=False)).astype(dtype)
            parts = []
            for s in blocks.row_slices:
                Wb = np.abs(avg * rng.standard_normal(size=(s.stop - s.start, k)).astype(dtype, copy=False))
                Wb = Wb.astype(dtype)
                parts.append(np.ascontiguousarray(Wb.T if transposed else Wb))
            return blocks.client.scatter(parts, hash=False), H
        W, H = nndsvd_factors(_Operator(blocks, mean), k, init, seed)
        return blocks.scatter_rows(np.asarray(W, dtype=dtype), transposed), np.asarray(H, dtype=dtype)

    def resumed_factor(self, W, transposed):
        """A checkpoint's W (or W_before) as blocks: scattered from an array, or read on the
        workers from a stored one (a spec: what a checkpoint written with ``output`` keeps)."""
        blocks = self.blocks
        if not isinstance(W, str):
            W = np.asarray(W, dtype=blocks.dtype)
            if W.shape != (blocks.shape[0], self.options["k"]):
                raise DataError("the checkpoint's factors do not match the data and k")
            return blocks.scatter_rows(W, transposed)
        source = row_source(W)
        if source.shape != (blocks.shape[0], self.options["k"]):
            raise DataError(f"{W}: the checkpoint's factors do not match the data and k")
        parts = [RowBlock(source, s.start, s.stop) for s in blocks.row_slices]
        futures = blocks.client.map(chunked.read_block, parts, dtype=blocks.dtype, pure=False)
        return blocks.each(chunked.transpose, futures) if transposed else futures

    def store(self, W, transposed, spec):
        """W's blocks gathered on the client (spec None), or written block by block to spec by io
        (then that spec)."""
        if spec is None:
            return self.blocks.gather_rows(W, transposed)
        rows = self.blocks.offsets[1] - self.blocks.offsets[0]
        writer = row_writer(spec, (self.blocks.shape[0], self.options["k"]), self.blocks.dtype, rows)
        try:
            for s, future in zip(self.blocks.row_slices, W):
                block = future.result()
                writer.write(s.start, s.stop, block.T if transposed else block)
        finally:
            writer.close()
        return writer.spec

    def final_before(self, W_before, transposed):
        """The final checkpoint's W_before: gathered as W is, written beside a streamed W to
        ``output_before``, or None (a streamed W without it)."""
        if self.output is None:
            return self.store(W_before, transposed, None)
        return None if self.output_before is None else self.store(W_before, transposed, self.output_before)

    # ---- reporting
    def ask(self, run, n_iter, W, H, transposed, before=None):
        """What calls the callback after iteration n_iter (None when there is none), as core's loops do.

        ``before``: the extrapolated solvers' (W_before blocks, H_before), which their checkpoints keep too.
        """
        if self.callback is None:
            return None

        def ask():
            lazy = _LazyFactor(self.blocks, W, transposed, self.options["k"])
            return self.core._call(self.callback, n_iter, self.options["max_iter"], run.history, self.start, lazy, H,
                                   lambda: self.callback_checkpoint(run, n_iter, W, lazy, H, before, transposed))
        return ask

    def callback_checkpoint(self, run, n_iter, W, lazy, H, before, transposed):
        """A callback's checkpoint: W gathered on the client, or, where W streams to ``output``,
        written there block by block (W_before beside it, as the final checkpoint keeps it), so a
        W larger than the client's memory is never gathered. Those are specs into files the next
        checkpoint and the end of the fit overwrite: write the checkpoint at once
        (io.write_checkpoint copies them in)."""
        if self.output is None:
            return self.checkpoint(run, n_iter, np.asarray(lazy), H, before, transposed)
        return self.checkpoint(run, n_iter, self.store(W, transposed, self.output), H, before, transposed,
                               final=True)

    def checkpoint(self, run, n_iter, W, H, before=None, transposed=False, final=False):
        """core.checkpoint's state; with ehals's or emu's ``before``, their W_before (blocks, of
        Wᵀ when ``transposed``: gathered here as m×k, or, for the ``final`` one and a streamed
        callback's, as final_before keeps it) and H_before."""
        state = self.core.checkpoint(n_iter, W, np.array(H, copy=True), run)
        if before is not None:
            W_before, H_before = before
            state["W_before"] = (self.final_before(W_before, transposed) if final else
                                 self.store(W_before, transposed, None))
            state["H_before"] = np.array(H_before, copy=True)
        return state

    def result(self, W, H, run, checkpoint, transposed):
        l1_W, _, l2_W, _ = self.reg
        s = self.blocks.reduce(self.blocks.map(chunked.divergence, W, H=self.blocks.scatter(H), beta=self.beta,
                                               l1_W=l1_W, l2_W=l2_W, transposed=transposed, squared=True))
        divergence = s["divergence"] if self.beta != 2 else s["squared_error"] / 2.0
        metrics = {
            "objective": self.objective(divergence, s["penalty_W"], H),
            "beta_divergence": float(divergence),
            "reconstruction_error": reconstruction_error(divergence),
            "relative_error": float(np.sqrt(s["squared_error"]) / np.sqrt(self.sqnorm)) if self.sqnorm else 0.0,
        }
        W_out = self.store(W, transposed, self.output)
        if checkpoint:
            checkpoint["W"] = np.array(W_out, copy=True) if not isinstance(W_out, str) else W_out
        return self.core.FitResult(
            W=W_out, H=H, n_iter=int(run.n_iter), converged=bool(run.converged), stop_reason=run.stop_reason,
            history=[float(v) for v in run.history], history_iter=[int(i) for i in run.history_iter],
            metrics=metrics, options=self.options, time_s=time.perf_counter() - self.start,
            checkpoint=checkpoint)

    # ---- exact solve of a free factor (Frobenius, one factor fixed)
    def exact(self, fix_W, fix_H):
        blocks = self.blocks
        l1_W, l1_H, l2_W, l2_H = self.reg
        if fix_H is not None:
            H64 = np.asarray(fix_H, dtype=np.float64)
            G, _ = cd.gram_and_cross_from(H64 @ H64.T, None, 0.0, l2_W)
            serial = isinstance(blocks.client, chunked.SerialClient)
            res = blocks.map(chunked.nnls_rows, H=blocks.scatter(fix_H), G=G, l1_W=l1_W, l2_W=l2_W,
                             on_submit=self._block_solved if self.progress and serial else None)
            if self.progress and not serial:
                self._report_solved(res)
            W = blocks.pick(res, 0)
            cert = functools.reduce(lambda a, b: a.merge(b), blocks.client.gather(blocks.pick(res, 1)))
            del res
            result = self.result(W, fix_H, self.core.FitLoop.exact(cert), {}, False)
            result.metrics["kkt"] = cert.as_dict()
            return result
        Wt = blocks.scatter_rows(fix_W, transposed=True)
        s = blocks.reduce(blocks.map(chunked.frobenius_finish64, Wt))
        G, R = cd.gram_and_cross_from(s["WtW"], s["WtX"], l1_H, l2_H)
        k = G.shape[0]

        def reduce(cols):
            # A tall-skinny QR of [W | X[:, cols]] over the row blocks: R of the stacked block Rs.
            parts = blocks.client.gather(blocks.map(chunked.qr_columns, Wt, cols=np.asarray(cols)))
            R_all = nnls_solver._square(np.linalg.qr(np.vstack(parts), mode="r"), k + len(cols))
            return R_all[:k, :k], R_all[:k, k:]

        H, cert = nnls(G, R, reduce=reduce, l1=l1_H, l2=l2_H)
        H = H.astype(blocks.dtype)
        if self.progress:
            self.progress(H.shape[1], H.shape[1])
        result = self.result(Wt, H, self.core.FitLoop.exact(cert), {}, True)
        result.metrics["kkt"] = cert.as_dict()
        return result

    def _block_solved(self, index):
        """progress after block ``index``'s exact solve on the serial client, which solves the blocks in order."""
        self.progress(self.blocks.offsets[index + 1], self.blocks.shape[0])

    def _report_solved(self, futures):
        """progress(rows solved, m) as a cluster finishes the blocks' exact solves, in any order."""
        rows = [b - a for a, b in zip(self.blocks.offsets[:-1], self.blocks.offsets[1:])]
        index = {future.key: i for i, future in enumerate(futures)}
        done = 0
        for future in _distributed().as_completed(futures):
            done += rows[index[future.key]]
            self.progress(done, self.blocks.shape[0])

    # ---- hals and cd
    def cd_loop(self, Wt, H, resume):
        """core._cd_loop with the W sweeps run per block and WᵀX, WᵀW reduced over blocks."""
        blocks, options = self.blocks, self.options
        solver, max_iter, tol = options["solver"], options["max_iter"], options["tol"]
        inner = self._inner_sweeps(H.shape[0])
        run = self.core.FitLoop(resume, {"violation_init": None})
        cache = {}
        for n_iter in range(run.first, max_iter + 1):
            tasks = blocks.tasks
            check = solver == "hals" and cd.hals_check_due(n_iter, run.state["violation_init"])
            Wt, violation, objective = self._frobenius_iteration(Wt, H, cache, check, inner)
            if solver == "cd":
                done = cd.cd_converged(run.state, violation, tol)
            else:
                done = cd.hals_converged(run.state, violation, tol)
            run.record(n_iter, objective)
            self.tasks_per_iteration.append(blocks.tasks - tasks)
            if run.finish_iteration(n_iter, done, self.ask(run, n_iter, Wt, H, True)):
                break
        return self.result(Wt, H, run, self.checkpoint(run, run.n_iter, None, H), True)

    def ehals_loop(self, Wt, H, resume):
        """core._ehals_loop with Wᵀ's blocks extrapolated where they live (chunked.extrapolate_block)
        and the iteration of cd_loop's hals: its objective comes from the products reduced over
        blocks anyway, so the test costs no pass over X. Rejected steps only drop new blocks."""
        blocks, options = self.blocks, self.options
        max_iter, tol = options["max_iter"], options["tol"]
        inner = self._inner_sweeps(H.shape[0], extrapolated=True)
        run = self.core.FitLoop(resume, {"violation_init": None, "beta": cd.BETA_START, "beta_cap": 1.0})
        Wt_before, H_before = Wt, H  # futures and H_before are never changed in place
        if resume is not None and resume.get("W_before") is not None:
            Wt_before = self.resumed_factor(resume["W_before"], transposed=True)
            H_before = np.array(resume["H_before"], dtype=blocks.dtype)
        objective = run.history[-1] if run.history else None
        slack = float(np.finfo(blocks.dtype).eps) * self.sqnorm  # as core._ehals_loop's
        cache = {}
        for n_iter in range(run.first, max_iter + 1):
            tasks = blocks.tasks
            check = cd.hals_check_due(n_iter, run.state["violation_init"])
            plain = check or objective is None
            if plain:
                Wt_next, H_next = Wt, np.array(H, copy=True)
            else:
                b = run.state["beta"]
                Wt_next = blocks.each(chunked.extrapolate_block, Wt, Wt_before, beta=b)
                H_next = cd.extrapolate(H, np.array(H_before, copy=True), b)
            next_cache = cache if check else {}
            Wt_next, violation, next_objective = self._frobenius_iteration(Wt_next, H_next, next_cache, check, inner)
            accepted = cd.step_kept(run.state, plain, next_objective, objective, slack)
            if accepted:
                Wt_before, Wt, H_before, H = Wt, Wt_next, H, H_next
                objective, cache = next_objective, next_cache
            else:
                Wt_before, H_before = Wt, H
            del Wt_next
            done = cd.hals_converged(run.state, violation, tol)
            run.record(n_iter, objective)
            self.tasks_per_iteration.append(blocks.tasks - tasks)
            if run.finish_iteration(n_iter, done, self.ask(run, n_iter, Wt, H, True, (Wt_before, H_before))):
                break
        final = self.checkpoint(run, run.n_iter, None, H, (Wt_before, H_before), transposed=True, final=True)
        return self.result(Wt, H, run, final, True)

    def _inner_sweeps(self, k, extrapolated=False):
        m, n = self.blocks.shape
        return cd.inner_sweep_limits(m, n, k, extrapolated)

    def _frobenius_iteration(self, Wt, H, cache, check, inner):
        """One cd or hals iteration (options' solver) from Wᵀ's blocks and H, which is updated in place:
        (Wᵀ's new blocks, the violation (cd's; hals's with ``check``, else None), the objective).
        ``cache`` holds HHᵀ, WᵀW and WᵀX of the iterate it starts from (what it lacks is
        computed) and is updated to the new one's."""
        blocks = self.blocks
        l1_W, l1_H, l2_W, l2_H = self.reg
        HHt = cache.get("HHt")
        if HHt is None:
            HHt = H @ H.T
        G, _ = cd.gram_and_cross_from(HHt, None, 0.0, l2_W)
        Hf = blocks.scatter(H)
        if self.options["solver"] == "cd":
            res = blocks.map(chunked.frobenius_w_step, Wt, H=Hf, G=G, l1_W=l1_W, l2_W=l2_W,
                             want_pg=False, mode="cd", finish=True)
            Wt = blocks.pick(res, 0)
            s = blocks.reduce(blocks.pick(res, 2))
            del res
            violation = s["violation"]
            GH, RH = cd.gram_and_cross_from(s["WtW"], s["WtX"], l1_H, l2_H)
            violation += float(cd.sweep(H, GH, RH))
        else:
            violation = None
            if check:
                if "WtX" not in cache:  # after a resume
                    s = blocks.reduce(blocks.map(chunked.frobenius_finish, Wt, l1_W=0.0, l2_W=0.0))
                    cache.update(WtW=s["WtW"], WtX=s["WtX"])
                GH, RH = cd.gram_and_cross_from(cache["WtW"], cache["WtX"], l1_H, l2_H)
                violation = float(cd.projected_gradient_norm(H, GH, RH))
            Wt, s = self._hals_W(Wt, Hf, G, inner[0], violation is not None)
            if violation is not None:
                violation += s["pg"]
            GH, RH = cd.gram_and_cross_from(s["WtW"], s["WtX"], l1_H, l2_H)
            cd.block_sweeps(H, GH, RH, inner[1], DELTA)
        del Hf
        HHt = H @ H.T
        cache.update(HHt=HHt, WtW=s["WtW"], WtX=s["WtX"])
        objective = cd.frobenius_objective(self.sqnorm, s["WtX"], H, s["WtW"], HHt)
        return Wt, violation, objective + s["penalty_W"] + cd.penalty(H, l1_H, l2_H)

    def _hals_W(self, Wt, Hf, G, max_inner, want_pg):
        """The W half of accelerated HALS: sweeps per block, stopped by the global rule of cd._block_sweeps."""
        blocks = self.blocks
        l1_W, _, l2_W, _ = self.reg
        single = max_inner <= 1
        res = blocks.map(chunked.frobenius_w_step, Wt, H=Hf, G=G, l1_W=l1_W, l2_W=l2_W,
                         want_pg=want_pg, mode="hals", finish=single)
        Wt = blocks.pick(res, 0)
        if single:
            s = blocks.reduce(blocks.pick(res, 2))
            return Wt, s
        R = blocks.pick(res, 1)
        parts = blocks.client.gather(blocks.pick(res, 2))
        del res
        pg = sum(p.get("pg", 0.0) for p in parts)
        # Sweep until one changes Wᵀ (all blocks together) by less than DELTA times the first change.
        change = first_change = sum(p["change"] for p in parts)
        for _ in range(max_inner - 1):
            if change <= DELTA * DELTA * first_change or first_change == 0:
                break
            res = blocks.each(chunked.sweep_round, Wt, R, G=G)
            Wt = blocks.pick(res, 0)
            change = sum(blocks.client.gather(blocks.pick(res, 1)))
            del res
        del R
        s = blocks.reduce(blocks.map(chunked.frobenius_finish, Wt, l1_W=l1_W, l2_W=l2_W))
        s["pg"] = pg
        return Wt, s

    def objective(self, divergence, penalty_W, H):
        """The divergence plus both factors' penalties (W's summed over its blocks): core._objective's."""
        _, l1_H, _, l2_H = self.reg
        return float(divergence) + penalty_W + cd.penalty(H, l1_H, l2_H)

    # ---- multiplicative updates
    def divergence(self, W, H):
        l1_W, _, l2_W, _ = self.reg
        s = self.blocks.reduce(self.blocks.map(chunked.divergence, W, H=self.blocks.scatter(H), beta=self.beta,
                                               l1_W=l1_W, l2_W=l2_W, transposed=False))
        return s["divergence"], s["penalty_W"]

    def _mu_start(self, run, W, H):
        """core._mu_start: the divergence at the initial factors, recorded as iteration 0 (not on a resume)."""
        if not run.resumed:
            divergence, penalty_W = self.divergence(W, H)
            error_at_init = reconstruction_error(divergence)
            run.state.update(error_at_init=error_at_init, previous_error=error_at_init)
            run.record(0, self.objective(divergence, penalty_W, H))

    def _mu_test(self, run, n_iter, W, H):
        """core._mu_test: every mu.CHECK_EVERY iterations, the exact divergence and the stop; else False."""
        if n_iter % mu.CHECK_EVERY:
            return False
        divergence, penalty_W = self.divergence(W, H)
        run.record(n_iter, self.objective(divergence, penalty_W, H))
        return mu.converged(run.state, reconstruction_error(divergence), self.options["tol"])

    def power_sum(self, beta):
        """Σ X^β over the blocks."""
        return self.blocks.reduce(self.blocks.map(chunked.power_sum, beta=beta))["power_sum"]

    def mu_loop(self, W, H, resume):
        """core._mu_loop with update_W per block and the H update from products reduced over blocks."""
        blocks, options, beta = self.blocks, self.options, self.beta
        max_iter = options["max_iter"]
        l1_W, _, l2_W, _ = self.reg
        update_W_, update_H_ = options["fixed"] != "W", options["fixed"] != "H"
        gamma = mu.gamma_for(beta)
        run = self.core.FitLoop(resume, {})
        self._mu_start(run, W, H)
        for n_iter in range(run.first, max_iter + 1):
            tasks = blocks.tasks
            res = blocks.map(chunked.mu_step, W, H=blocks.scatter(H), beta=beta, l1_W=l1_W, l2_W=l2_W,
                             gamma=gamma, update_W=update_W_, h_side=update_H_)
            if update_W_:
                W = blocks.pick(res, 0)
            if update_H_:
                self._mu_update_H(H, blocks.reduce(blocks.pick(res, 1)), gamma)
            elif not isinstance(blocks.client, chunked.SerialClient):
                _distributed().wait(W)
            del res
            done = self._mu_test(run, n_iter, W, H)
            if n_iter % mu.CHECK_EVERY:
                self.tasks_per_iteration.append(blocks.tasks - tasks)
            if run.finish_iteration(n_iter, done, self.ask(run, n_iter, W, H, False)):
                break
        return self.result(W, H, run, self.checkpoint(run, run.n_iter, None, H), False)

    def emu_loop(self, W, H, resume):
        """core._emu_loop with the W updates (from W blocks extrapolated on the workers) per block,
        and the H update, its bound included, from products reduced over blocks: the bound is
        a sum over blocks (the divergence is, and so are the terms it is read from). Rejected
        steps cost nothing more: the blocks' futures are dropped and the current ones kept."""
        blocks, options, beta = self.blocks, self.options, self.beta
        l1_W, l1_H, l2_W, l2_H = self.reg
        free_W, free_H = options["fixed"] != "W", options["fixed"] != "H"
        gamma = mu.gamma_for(beta)
        core = self.core
        run = core.FitLoop(resume, {"beta": mu.EMU_BETA_START, "beta_cap": 1.0, "bound": None})
        self._mu_start(run, W, H)
        W_before, H_before = W, H  # a step from an iterate to itself: none (futures and H are never changed in place)
        if resume is not None and resume.get("W_before") is not None:
            W_before = self.resumed_factor(resume["W_before"], transposed=False) if free_W else W
            H_before = np.array(resume["H_before"], dtype=blocks.dtype) if free_H else H
        slack = core.SLACK_ROUNDINGS * core._emu_rounding(beta, blocks.dtype, blocks.shape, lambda: self.sqnorm,
                                                           self.power_sum)
        for n_iter in range(run.first, options["max_iter"] + 1):
            tasks = blocks.tasks
            bound = run.state["bound"]
            plain = bound is None
            b = run.state["beta"]
            H_next = H if not free_H else np.array(H, copy=True) if plain else \
                mu.extrapolate(H, np.array(H_before, copy=True), b)
            res = blocks.map(chunked.emu_step, W, W_before, H=blocks.scatter(H_next), beta=beta, l1_W=l1_W, l2_W=l2_W,
                             gamma=gamma, update_W=free_W, h_side=free_H, extrapolation=None if plain else b,
                             bound="H" if free_H else "W")
            W_next = blocks.pick(res, 0) if free_W else W
            s = blocks.reduce(blocks.pick(res, 1))
            del res
            # core._emu_loop's bound and penalties, summed over blocks
            if free_H:
                next_bound = mu.update_H(_Reduced(s), _ReducedW(s), H_next, beta, l1_H, l2_H, gamma, bound=True)
                next_bound += s["penalty_W"] + cd.penalty(H_next, 0.0, l2_H)
            else:
                next_bound = s["bound"] + s["penalty_W"] + cd.penalty(H_next, l1_H, l2_H)
            accepted = cd.step_kept(run.state, plain, next_bound, bound, slack)
            if accepted:
                W_before, W, H_before, H = W, W_next, H, H_next
                run.state["bound"] = float(next_bound if plain else min(next_bound, bound))
            else:
                W_before, H_before = W, H
                run.state["bound"] = None
            del W_next
            done = self._mu_test(run, n_iter, W, H)
            if n_iter % mu.CHECK_EVERY:
                self.tasks_per_iteration.append(blocks.tasks - tasks)
            if run.finish_iteration(n_iter, done, self.ask(run, n_iter, W, H, False, (W_before, H_before))):
                break
        final = self.checkpoint(run, run.n_iter, None, H, (W_before, H_before), final=True)
        return self.result(W, H, run, final, False)

    def _mu_update_H(self, H, s, gamma):
        """mu.update_H itself, fed the products reduced over blocks instead of W and X."""
        _, l1_H, _, l2_H = self.reg
        mu.update_H(_Reduced(s), _ReducedW(s), H, self.beta, l1_H, l2_H, gamma)


class _Reduced:
    """An engine whose products with X are the block sums already at hand."""

    def __init__(self, s):
        self.s = s

    def WtX(self, W):
        return self.s["WtX"]

    def mu_products(self, W, H, beta, side, divergence=False):
        if divergence:
            return self.s["numerator"], self.s.get("denominator"), self.s["terms"]
        return self.s["numerator"], self.s.get("denominator")


class _ReducedW:
    """Stands for W in mu.update_H, which reads only WᵀW and the column sums of W."""

    __array_ufunc__ = None

    def __init__(self, s):
        self.s = s

    @property
    def T(self):
        return _ReducedWt(self.s)

    def sum(self, axis=None, dtype=None, out=None, **kwargs):
        return self.s["W_sum"].copy()


class _ReducedWt:
    __array_ufunc__ = None

    def __init__(self, s):
        self.s = s

    def __matmul__(self, other):
        return self.s["WtW"].copy()
