"""The public Python API: fit, transform, reconstruct and the error metrics.

Arrays in, arrays out: nothing here touches a file, a terminal or a signal.
Inputs are validated once, here; the solvers trust them. Long fits report each
iteration to an optional callback, which may ask the loop to stop.
"""

import functools
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from nmfcli import __version__
from nmfcli.engines import get_engine
from nmfcli.errors import DataError, NMFWarning, NumericalError, UsageError
from nmfcli.init import INITS, default_init, nndsvd_factors, random_factors
from nmfcli.solvers import cd, masked, mu
from nmfcli.solvers.losses import BLOCK_ENTRIES, beta_divergence, parse_loss, reconstruction_error, squared_error
from nmfcli.solvers import nnls as nnls_solver
from nmfcli.solvers.nnls import nnls

SOLVERS = ("ehals", "hals", "cd", "emu", "mu", "anls")
MULTIPLICATIVE = ("emu", "mu")  # they cannot leave a zero: a fixed factor's partner starts from √(mean/k)
SLACK_ROUNDINGS = 8  # emu's slack, in units of its bound's expected rounding (_emu_loop)
LOSSES = ("frobenius", "kl", "is")
DTYPES = ("float32", "float64")
DEFAULT_SEED = 0
DEFAULT_MAX_ITER = 200
DEFAULT_TOL = 1e-4
STOP_REASONS = ("tol", "max_iter", "exact", "uncertified", "callback", "time", "interrupted")


@dataclass
class IterationInfo:
    """What the callback sees after each iteration. W and H are live views: copy to keep them.

    ``objective`` and ``relative_change`` are read when asked for: on a GPU that read waits
    for the device, so a callback that looks at them every iteration makes each iteration
    wait (the progress display looks a few times a second).
    """

    iteration: int
    max_iter: int
    elapsed_s: float
    W: np.ndarray
    H: np.ndarray
    _checkpoint: object = field(repr=False, default=None)
    _history: object = field(repr=False, default=None)  # () -> the objectives recorded so far, as floats

    @property
    def objective(self) -> float | None:
        """The last objective recorded (mu and emu record every 10th iteration); None before any."""
        history = self._history()
        return history[-1] if history else None

    @property
    def relative_change(self) -> float | None:
        """(previous − last) / |previous| of the last two objectives recorded; None before two."""
        history = self._history()
        if len(history) >= 2 and history[-2]:
            return (history[-2] - history[-1]) / abs(history[-2])
        return None

    def checkpoint(self):
        """Everything needed to resume bit-identically from the end of this iteration (copies)."""
        return self._checkpoint()


@dataclass
class FitResult:
    """The outcome of :func:`fit`.

    Attributes
    ----------
    W : ndarray (m, k) and H : ndarray (k, n)
        The factors, in the dtype of the fit.
    n_iter : int
        Outer iterations run (for a fixed-factor Frobenius fit: pivoting passes of the exact solve).
    converged : bool
        True when the stopping rule was met (or the solve is exact).
    stop_reason : str
        One of "tol", "max_iter", "exact", "callback", "time", "interrupted".
    history, history_iter : list
        The objective and the iteration it was measured at (every iteration for
        hals/cd, every 10th for mu, as its stopping rule checks).
    metrics : dict
        objective, beta_divergence, reconstruction_error (scikit-learn's: √(2·D)),
        relative_error (‖X − WH‖_F / ‖X‖_F).
    options : dict
        Every option the fit used, after defaults were resolved.
    checkpoint : dict
        Solver state at the end, for resuming (see :func:`fit` ``resume``).
    """

    W: np.ndarray
    H: np.ndarray
    n_iter: int
    converged: bool
    stop_reason: str
    history: list
    history_iter: list
    metrics: dict
    options: dict
    time_s: float
    checkpoint: dict = field(repr=False, default_factory=dict)


# --------------------------------------------------------------------------- validation


def _as_matrix(X, dtype, name="X", missing=None, weighted=False, hints=True):
    """X as a float32/float64 ndarray or CSR matrix, checked to be a finite non-negative 2-D matrix
    (NaN allowed, as missing entries, with ``missing="nan"``); ``weighted``: X will be weighted,
    which needs it dense; ``hints``: a bad value's message says what to do about it (for data;
    else that ``name`` must be finite and non-negative)."""
    if sp.issparse(X):
        if missing is not None:
            raise UsageError("missing='nan' needs dense X: the entries a sparse matrix leaves out are zeros, "
                             "not missing values")
        if weighted:
            raise UsageError("X is sparse, but a weighted fit (weights, or solver anls) needs it dense: the "
                             "weighted updates work on dense m x n arrays")
        if X.ndim != 2:
            raise DataError(f"{name} must be 2-D; got {X.ndim}-D")
        kind = X.dtype.kind
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(
                f"{name} must be a 2-D matrix (rows x columns); got {X.ndim}-D with shape {X.shape}"
            )
        kind = X.dtype.kind
    if kind not in "fiu":
        what = {"b": "boolean", "c": "complex", "O": "object", "U": "string", "S": "bytes"}.get(
            kind, str(X.dtype)
        )
        raise DataError(f"{name} holds {what} values; nmf needs real numbers")
    if dtype is None:
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype}")
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=dtype)
    else:
        X = np.asarray(X, dtype=dtype)
    if min(X.shape) == 0:
        raise DataError(f"{name} is empty (shape {X.shape[0]} x {X.shape[1]})")
    _check_values(X, name, allow_nan=missing == "nan", hints=hints)
    return X


def _check_values(X, name, allow_nan=False, hints=True):
    """Refuse NaN (unless ``allow_nan``), Inf and negative entries, saying how many and where the first one is
    (and, with ``hints``, for X or a factor, what to do; else that ``name`` must be finite and non-negative)."""
    if sp.issparse(X):
        coo = X.tocoo()
        data, rows, cols = coo.data, coo.row, coo.col
    else:
        data, rows, cols = X, None, None
    not_finite = (np.isinf(data), "infinite") if allow_nan else (~np.isfinite(data), "NaN or infinite")
    for bad, what in (not_finite, (data < 0, "negative")):
        count = int(np.count_nonzero(bad))
        if count:
            flat = int(np.flatnonzero(bad.ravel())[0])
            if rows is None:
                i, j = np.unravel_index(flat, X.shape)
            else:
                i, j = rows[flat], cols[flat]
            value = data.ravel()[flat] if rows is None else data[flat]
            raise DataError(
                f"{name} has {count} {what} value{'s' if count > 1 else ''}; "
                f"the first is {value:g} at row {i + 1}, column {j + 1}"
                + ("" if hints else f"; {name} must be finite and non-negative")
                + ("; NMF needs non-negative data" if hints and what == "negative" else "")
                + ("; to leave NaN entries out of the fit as missing values, use missing='nan' "
                   "(nmf fit --missing nan)" if hints and what == "NaN or infinite" and np.isnan(value) else "")
            )


def _check_factor(A, shape, dtype, name):
    A = _as_matrix(A, dtype, name)
    if sp.issparse(A):
        A = A.toarray()
    if A.shape != shape:
        raise DataError(
            f"{name} has shape {A.shape[0]} x {A.shape[1]}; expected {shape[0]} x {shape[1]}"
        )
    return np.array(A, dtype=dtype, copy=True)


def _check_k(k, shape, init):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise UsageError(f"k must be a positive integer; got {k!r}")
    if k <= 0:
        raise UsageError(f"k must be a positive integer; got {k}")
    if init in ("nndsvd", "nndsvda", "nndsvdar") and k > min(shape):
        raise UsageError(
            f"k={k} is larger than min(rows, columns) = {min(shape)}, which init '{init}' "
            "needs; use a smaller k or init 'random'"
        )


def regularization(shape, alpha_W, alpha_H, l1_ratio):
    """(l1_W, l1_H, l2_W, l2_H) scaled as scikit-learn scales them (by n_features and n_samples)."""
    m, n = shape
    alpha_H = alpha_W if isinstance(alpha_H, str) and alpha_H == "same" else alpha_H
    return (
        n * alpha_W * l1_ratio,
        m * alpha_H * l1_ratio,
        n * alpha_W * (1.0 - l1_ratio),
        m * alpha_H * (1.0 - l1_ratio),
    )


def _check_penalties(alpha_W, alpha_H, l1_ratio):
    if not (isinstance(alpha_W, (int, float)) and 0 <= alpha_W < math.inf):
        raise UsageError(f"alpha_W must be a finite number >= 0; got {alpha_W!r}")
    if not (
        (isinstance(alpha_H, str) and alpha_H == "same")
        or (isinstance(alpha_H, (int, float)) and 0 <= alpha_H < math.inf)
    ):
        raise UsageError(f"alpha_H must be a finite number >= 0 or 'same'; got {alpha_H!r}")
    if not (isinstance(l1_ratio, (int, float)) and 0 <= l1_ratio <= 1):
        raise UsageError(f"l1_ratio must be between 0 and 1; got {l1_ratio!r}")


def _resolve_loss(loss):
    parsed = parse_loss(loss)
    if parsed is None:
        raise UsageError(
            f"loss must be one of {', '.join(LOSSES)} or a real number (beta); got {loss!r}"
        )
    return parsed


# --------------------------------------------------------------------------- memory


def estimate_fit_bytes(shape, k, dtype="float64", nnz=None, beta=2.0):
    """Bytes a fit of an m×n matrix needs beyond X itself: factors, products, row-block temporaries."""
    m, n = shape
    itemsize = np.dtype(dtype).itemsize
    factors = 6 * (m + n) * k * itemsize  # W, H, their copies and the two cross products
    grams = 4 * k * k * itemsize
    blocks = 0
    if beta != 2:
        # W·H, the ratio, a temporary, and the numpy engine's kept floors (EPSILON, the log's)
        blocks = 5 * min(m * n, BLOCK_ENTRIES + n) * itemsize
        if nnz is not None:
            blocks += 3 * nnz * itemsize + nnz * 8
    return factors + grams + blocks


# --------------------------------------------------------------------------- fit


def fit(
    X,
    k,
    *,
    solver="auto",
    loss="frobenius",
    init=None,
    seed=DEFAULT_SEED,
    max_iter=DEFAULT_MAX_ITER,
    tol=DEFAULT_TOL,
    alpha_W=0.0,
    alpha_H="same",
    l1_ratio=0.0,
    W0=None,
    H0=None,
    fix_W=None,
    fix_H=None,
    dtype=None,
    engine="numpy",
    callback=None,
    resume=None,
    engine_options=None,
    progress=None,
    missing=None,
    weights=None,
    history="checks",
):
    """Factor a non-negative matrix X (m×n) into W (m×k) and H (k×n), both non-negative.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix, shape (m, n)
        Non-negative, finite data. Sparse input stays sparse.
    k : int
        Number of components.
    solver : {"auto", "ehals", "hals", "cd", "emu", "mu", "anls"}, default "auto"
        Not used for the Frobenius loss with fix_W or fix_H: that is one exact solve, which
        the result's options name "nnls". "auto" is "ehals" for the Frobenius loss and "emu"
        for every other, on every engine.
        "hals" is accelerated HALS, "ehals" the same with extrapolation (about half the
        iterations; the objective never rises beyond its rounding). "cd" is scikit-learn's
        coordinate descent (same iterates), "mu" its multiplicative updates, and "emu" those
        with extrapolation (a quarter to a half of the iterations; a bound on the objective
        never rises beyond its rounding). With fix_W or fix_H, "auto" runs "mu" for KL and
        Itakura-Saito. "anls" (Frobenius; the numpy engine in memory) alternates exact
        non-negative least-squares solves of W's rows and H's columns, each over its own
        weighted entries: the default with ``missing`` or ``weights``, where it needs far fewer
        iterations than "mu"; on complete X it runs with every weight 1 ("ehals" is cheaper).
    loss : {"frobenius", "kl", "is"} or float, default "frobenius"
        The beta-divergence minimised (2, 1, 0, or any real beta; "mu" and "emu" only for
        beta != 2).
    init : {"nndsvda", "nndsvd", "nndsvdar", "random", "custom"} or None
        None picks "nndsvda" when k <= min(m, n), else "random" (as scikit-learn).
        "custom" needs W0 and H0 (or the fixed factor and the other initial one).
    seed : int, default 0
        Seeds ``numpy.random.RandomState``, exactly as scikit-learn's ``random_state``.
    max_iter : int, default 200
    tol : float, default 1e-4
        hals, ehals: stop when the ℓ1 norm of the projected gradient falls below tol
        times its value after the first iteration; cd: when the projected-gradient
        norm of a sweep falls below tol times its first value; mu: when the
        decrease of √(2·D) over 10 iterations falls below tol times its initial
        value (the last two are scikit-learn's rules).
    alpha_W, alpha_H, l1_ratio : penalties, as in scikit-learn (alpha_H "same" copies alpha_W).
    W0, H0 : ndarray, optional
        Initial factors for init="custom".
    fix_W, fix_H : ndarray, optional
        Keep that factor fixed (returned bit-identical) and solve the other. For the
        Frobenius loss the free factor is solved exactly (non-negative least squares).
    dtype : {"float32", "float64"} or None
        None keeps X's float dtype (integers become float64).
    engine : {"numpy", "cupy", "dask", "auto"}
    engine_options : dict, optional
        Engine-specific settings; for "dask": scheduler, workers, chunk_rows,
        memory_limit, persist, and output (a .h5/.zarr path that receives W block
        by block, in which case ``FitResult.W`` is that path, not an array; and
        output_before, where ehals's and emu's final checkpoint then keeps W_before; a
        callback's checkpoint then writes its W and W_before there too and names them, so
        write it at once: the next checkpoint overwrites them). For
        "numpy", chunk_rows (and output) select the out-of-core mode: X may then
        be a path spec as for "dask", read one row block at a time in this process.
    callback : callable(IterationInfo) -> bool | str | None, optional
        Called after each iteration; a truthy return stops the fit, and a string
        return becomes ``stop_reason`` (e.g. "time", "interrupted").
    resume : dict, optional
        A ``checkpoint`` from a previous result or IterationInfo: continue where it
        stopped; the result is bit-identical to an uninterrupted run.
    missing : {None, "nan"}, default None
        "nan": NaN entries of X are missing values and take no part in the fit: the loss is
        summed over the observed entries only, by alternating exact solves (solver "anls") for
        the Frobenius loss and multiplicative updates weighted by the mask (solver "mu") for
        the others; W·H then predicts the missing entries. The start (nndsvda or random) sees
        the missing entries as the mean of the observed ones. Dense X, the numpy engine in
        memory ("auto" picks it). With a fixed factor under the Frobenius
        loss, each row (fix_H) or column (fix_W) is solved exactly over its observed entries.
        Without NaN in X the fit is the ordinary one. ``metrics["missing_entries"]`` counts them.
    weights : array (m×n), optional
        Non-negative, finite weight of each entry of X: the loss becomes Σ wᵢⱼ·d_β(Xᵢⱼ | (WH)ᵢⱼ),
        so an entry of weight 0 takes no part (as a missing one) and an entry of weight 2
        counts as twice. Fitted as ``missing`` is (solver "anls" for the Frobenius loss, "mu"
        for the others, each weighted by w; an exact weighted solve with a fixed factor under
        the Frobenius loss; dense X on the numpy engine in memory), from the start of the
        unweighted X; the metrics are weighted too (relative_error: √(Σ w·(X − WH)²) /
        √(Σ w·X²)). A sparse ``weights`` is densified (its unstored entries weigh 0); a boolean
        one counts as 1 and 0. With ``missing``, the missing entries weigh 0 whatever
        ``weights`` says there.
    history : {"checks", "all"}, default "checks"
        Which iterations ``FitResult.history`` records the objective of. "checks": those where
        the solver computes it anyway (every iteration for hals, ehals and cd; iteration 0 and
        every 10th, where the stop is tested, for mu, emu and anls). "all": every iteration,
        which for mu, emu and anls costs one more evaluation of the divergence per iteration
        (a pass over X; KL fits of 2000 x 1000 dense and 5000 x 2000 sparse X, k = 10, took
        1.1-1.6x the time). The iterates are the same.
        On the numpy and cupy engines in memory.
    progress : callable(done, total), optional
        For the exact solve (Frobenius loss with W or H fixed), which has no iterations
        to report: called after each block of the free factor's rows (fix_H) or
        columns (fix_W), ``done`` of ``total`` solved (on the Dask engine and out of core:
        after each block of X's rows). The result is the same with it or without.

    Returns
    -------
    FitResult
    """
    start = time.perf_counter()
    if history not in ("checks", "all"):
        raise UsageError(f"history must be 'checks' or 'all'; got {history!r}")
    if history == "all" and (engine == "dask" or (engine_options or {}).get("chunk_rows") is not None):
        raise UsageError("history='all' is recorded on the numpy and cupy engines in memory")
    if missing is not None or weights is not None or solver == "anls":
        _check_weighted(missing, weights, engine, engine_options, solver)
        engine = "numpy"  # "auto" too: the weighted updates run on the CPU
    if engine == "numpy" and (engine_options or {}).get("chunk_rows") is not None:
        # Out-of-core numpy: the Dask engine's blockwise loop run serially in this
        # process, reading one row block of X (an array or a file spec) at a time.
        from nmfcli.engines.chunked import fit_blocks

        return fit_blocks(
            X, k, solver=solver, loss=loss, init=init, seed=seed, max_iter=max_iter, tol=tol,
            alpha_W=alpha_W, alpha_H=alpha_H, l1_ratio=l1_ratio, W0=W0, H0=H0, fix_W=fix_W,
            fix_H=fix_H, dtype=dtype, callback=callback, resume=resume, progress=progress, **engine_options,
        )
    if engine == "dask":
        # The Dask engine runs its own blockwise loop over the same solver kernels.
        from nmfcli.engines.dask import fit_dask

        return fit_dask(
            X, k, solver=solver, loss=loss, init=init, seed=seed, max_iter=max_iter, tol=tol,
            alpha_W=alpha_W, alpha_H=alpha_H, l1_ratio=l1_ratio, W0=W0, H0=H0, fix_W=fix_W,
            fix_H=fix_H, dtype=dtype, callback=callback, resume=resume, progress=progress,
            **(engine_options or {}),
        )
    if fix_W is not None and fix_H is not None:
        raise UsageError("fix_W and fix_H cannot both be given: nothing would be left to fit")
    X = _as_matrix(X, dtype, missing=missing, weighted=weights is not None or solver == "anls")
    dtype = X.dtype
    shape = X.shape
    requested_solver = solver
    loss_name, beta, solver = check_options(loss, solver, alpha_W, alpha_H, l1_ratio, max_iter, tol)
    observed = _observed(X) if missing is not None else None
    weights = _weights_matrix(weights, X, observed)
    masked_fit = observed is not None or weights is not None or solver == "anls"
    if masked_fit:
        if requested_solver not in ("auto", "mu", "anls"):
            what = "missing values (NaN in X)" if weights is None else "weights"
            raise UsageError(f"with {what} the solvers are anls (Frobenius) and mu; got '{requested_solver}'")
        # the exact alternating solves for the Frobenius loss (far fewer iterations than mu's), else mu
        requested_solver = solver = "anls" if beta == 2 and requested_solver != "mu" else "mu"
        X_start = X if observed is None else np.where(observed, X, X[observed].mean()).astype(dtype)
        X, XM, mask = _weighted_data(X, observed, weights)
        if mask is None:  # solver anls on complete X, unweighted: every weight 1
            mask = np.ones_like(X)
    init = check_init(init, k, shape, W0, H0, fix_W, fix_H)
    if beta <= 0 and _has_zero(X_start[mask > 0] if masked_fit else X):
        raise DataError(
            f"X contains zeros, where the {loss_name} loss (beta={beta:g} <= 0) is undefined; "
            "add a small positive constant or use loss kl or frobenius"
        )
    if fix_W is None and fix_H is None and not np.any(X.data if sp.issparse(X) else X):
        # (with a fixed factor, zeros have an answer: the free factor is 0)
        raise DataError("X is all zeros; there is nothing to factorize")

    # Data far from 1 is fitted as X·4ʲ (exact: a power of two), the factors coming back divided
    # by 2ʲ: so that ‖X‖², the Gram matrices and the Hessian diagonals stay representable in
    # X's dtype, and fits of s·X are fits of X at any s (see _scale_shift).
    shift = resume.get("scale_shift", 0) if resume is not None else _scale_shift(X_start if masked_fit else X)
    if shift:
        X = _times_power_of_two(X, 2 * shift)
        if masked_fit:
            X_start, XM = _times_power_of_two(X_start, 2 * shift), _times_power_of_two(XM, 2 * shift)
        callback = _scaled_callback(callback, shift, beta)
    _check_powers(X_start if masked_fit else X, beta, loss_name)

    # with missing values or weights the engine serves the start only (X_start: the missing entries
    # at the mean of the observed ones); the weighted loop reads X (0 where missing), XM and the weights
    eng = get_engine(engine, X_start if masked_fit else X, dtype)
    solver = engine_solver(requested_solver, solver, eng, resume, fixed=fix_W is not None or fix_H is not None,
                           beta=beta)
    with eng.session():  # the numpy engine runs BLAS on one thread but for the products with X
        m, n = shape
        W0, H0, fix_W, fix_H = check_factors(k, (m, n), dtype, init, W0, H0, fix_W, fix_H)
        fix_W_given, fix_H_given = fix_W, fix_H
        if shift:
            W0, H0, fix_W, fix_H = (None if A is None else _times_power_of_two(A, shift)
                                    for A in (W0, H0, fix_W, fix_H))

        options = dict(
            k=int(k), solver=reported_solver(solver, beta, fix_W, fix_H), loss=loss_name, beta=beta,
            init=reported_init(init, beta, fix_W, fix_H, W0, H0), seed=seed,
            max_iter=int(max_iter), tol=float(tol), alpha_W=float(alpha_W),
            alpha_H=alpha_H if alpha_H == "same" else float(alpha_H), l1_ratio=float(l1_ratio),
            dtype=str(dtype), engine=eng.name, fixed="W" if fix_W is not None else "H" if fix_H is not None else None,
        )
        if missing is not None:
            options["missing"] = missing
        if weights is not None:
            options["weighted"] = True
        if history == "all":
            options["history"] = "all"
        if options["init"] == "nndsvd" and options["solver"] in MULTIPLICATIVE and resume is None:
            # as scikit-learn warns: a multiplicative update keeps every zero of the start at zero
            warnings.warn(f"init nndsvd leaves zeros in W and H that solver {options['solver']} (multiplicative "
                          "updates) can never change, so the fit ends far from the best; use init nndsvda "
                          "(or nndsvdar) instead", NMFWarning, stacklevel=2)
        reg = regularization(shape, alpha_W, alpha_H, l1_ratio)
        if shift:  # the objective scales by fᵝ: each penalty by as much (W and H by g = √f)
            reg = tuple(0.0 if not r else _ldexp(r, 2 * shift * (beta - power))
                        for r, power in zip(reg, (0.5, 0.5, 1.0, 1.0)))

        if options["solver"] == "nnls" and masked_fit:
            result = _solve_fixed_masked(X, XM, mask, fix_W, fix_H, options, reg, start, progress)
        elif options["solver"] == "nnls":
            W, H, cert = _solve_fixed_frobenius(eng, fix_W, fix_H, reg, progress)
            result = _result(eng, W, H, FitLoop.exact(cert), options, beta, reg, start, {})
            result.metrics["kkt"] = cert.as_dict()
        else:
            if resume is not None:
                W, H = np.array(resume["W"], dtype=dtype), np.array(resume["H"], dtype=dtype)
                if W.shape != (m, k) or H.shape != (k, n):
                    raise DataError("the checkpoint's factors do not match the data and k")
            else:
                W, H = _initial_factors(eng, X_start if masked_fit else X, k, init, seed, options["solver"],
                                        W0, H0, fix_W, fix_H)
            if fix_W is not None:
                W = fix_W
            if fix_H is not None:
                H = fix_H
            loop = {"mu": _mu_loop, "emu": _emu_loop, "ehals": _ehals_loop}.get(options["solver"], _cd_loop)
            if masked_fit:
                loop = functools.partial(_masked_loop, X, XM, mask)
            result = loop(eng, eng.asarray(W), eng.asarray(H), options, reg, beta, callback, resume, start)
        if missing is not None:
            result.metrics["missing_entries"] = _missing_count(observed)
        _check_finite_result(result)
        if shift:
            _unscale(result, shift, beta)
        # The fixed factor is handed back as given, not as a device round trip.
        if fix_W_given is not None:
            result.W = fix_W_given
        if fix_H_given is not None:
            result.H = fix_H_given
        return result


# Data whose largest entry lies outside [2^-SAFE_EXPONENT, 2^SAFE_EXPONENT] is fitted scaled
# (_scale_shift); inside, it is fitted as given (scikit-learn's iterates, bit for bit).
SAFE_EXPONENT = 30


def _scale_shift(X):
    """j such that X·4ʲ has its largest entry near 1, or 0 where X's is within 2^±SAFE_EXPONENT.

    A power of four: X·4ʲ and factors times 2ʲ are exact in floating point, so the fit of the
    scaled data is the fit of X, scaled, without a rounding of its own (cd, hals and the
    exact solves are homogeneous; mu's small guards against 0/0 are not, which is why data
    of ordinary size is left alone)."""
    data = X.data if sp.issparse(X) else X
    if data.size == 0:
        return 0
    top = float(np.nanmax(data))
    if not math.isfinite(top) or top <= 0 or 2.0 ** -SAFE_EXPONENT <= top <= 2.0 ** SAFE_EXPONENT:
        return 0
    return -int(round(math.log2(top) / 2))


def _check_powers(X, beta, loss_name):
    """Refuse a beta whose powers of X's entries (X^(β−1), X^(β−2) and the like, which the
    updates and the divergence compute) overflow or vanish in float64."""
    if beta in (1.0, 2.0):
        return
    data = X.data if sp.issparse(X) else X
    positive = data[data > 0]
    if positive.size == 0:
        return
    top, bottom = float(np.nanmax(positive)), float(np.nanmin(positive))
    spread = max(abs(math.log2(top)), abs(math.log2(bottom)), 1.0)
    if (abs(beta) + 2.0) * spread > 1000.0:
        name = loss_name if loss_name.startswith("beta=") else f"{loss_name} (beta={beta:g})"
        raise DataError(
            f"X holds entries from {bottom:g} to {top:g}, whose powers under the {name} loss float64 cannot hold; "
            "use a beta between -10 and 10, or frobenius, kl or is")


def _times_power_of_two(A, exponent):
    """A·2^exponent in A's dtype, exactly (ldexp: no factor to overflow; sparse stays sparse)."""
    if sp.issparse(A):
        A = A.tocsr(copy=True)
        A.data = np.ldexp(A.data, exponent)
        return A
    return np.ldexp(A, exponent)


class _ScaledInfo:
    """An IterationInfo of a fit of scaled data, as the caller's data sees it: factors and
    objectives unscaled when asked for; the checkpoint stays in the fit's scale and says so
    (``scale_shift``), so a resume fits the same scaled data."""

    def __init__(self, info, shift, beta):
        self._info, self._shift, self._beta = info, shift, beta
        self.iteration, self.max_iter, self.elapsed_s = info.iteration, info.max_iter, info.elapsed_s

    @property
    def W(self):
        return self._info.W / self._info.W.dtype.type(2.0 ** self._shift)

    @property
    def H(self):
        return self._info.H / self._info.H.dtype.type(2.0 ** self._shift)

    def _history(self):
        return [_ldexp(v, -2 * self._shift * self._beta) for v in self._info._history()]

    objective = IterationInfo.objective
    relative_change = IterationInfo.relative_change

    def checkpoint(self):
        return {**self._info.checkpoint(), "scale_shift": self._shift}


def _scaled_callback(callback, shift, beta):
    if callback is None:
        return None
    return lambda info: callback(_ScaledInfo(info, shift, beta))


def _unscale(result, shift, beta):
    """A result of the fit of X·4ʲ as the result of X's (in place)."""
    if not isinstance(result.W, str):
        result.W = _times_power_of_two(np.asarray(result.W), -shift)
    result.H = _times_power_of_two(np.asarray(result.H), -shift)
    # Objectives scale by 4^(−jβ); one beyond float64 (data near its limits: ½‖X‖² past 1e308)
    # is reported as inf: the factors and the relative error are still exact.
    result.history = [_ldexp(v, -2 * shift * beta) for v in result.history]
    for key in ("objective", "beta_divergence"):
        result.metrics[key] = _ldexp(result.metrics[key], -2 * shift * beta)
    result.metrics["reconstruction_error"] = _ldexp(result.metrics["reconstruction_error"], -shift * beta)
    if result.checkpoint:
        result.checkpoint = {**result.checkpoint, "scale_shift": shift}


def _ldexp(value, exponent):
    """value·2^exponent (a real exponent for a real β), inf where that is beyond float64."""
    try:
        return float(value) * 2.0 ** exponent if exponent != int(exponent) else math.ldexp(float(value), int(exponent))
    except OverflowError:
        return math.inf


def _check_finite_result(result):
    """A fit whose factors or objective are not finite is a failure, never an answer."""
    for name in ("W", "H"):
        A = getattr(result, name)
        if isinstance(A, str):
            continue
        if not np.all(np.isfinite(A)):
            raise NumericalError(
                f"the fit's {name} holds NaN or infinite values (solver {result.options.get('solver')}, loss "
                f"{result.options.get('loss')}); nothing was written")
    if not math.isfinite(result.metrics.get("objective", 0.0)):
        raise NumericalError(f"the fit's objective is {result.metrics['objective']} (solver "
                             f"{result.options.get('solver')}, loss {result.options.get('loss')}); nothing was written")
    return result


def check_options(loss, solver, alpha_W, alpha_H, l1_ratio, max_iter, tol):
    """The checks of fit's options that need no data (every engine's): (loss name, beta, solver).

    "auto" becomes "ehals" for the Frobenius loss and "emu" for the others;
    ``engine_solver`` then has the engine's say."""
    loss_name, beta = _resolve_loss(loss)
    if solver == "auto":
        solver = "ehals" if beta == 2 else "emu"
    if solver not in SOLVERS:
        raise UsageError(f"solver must be one of {', '.join(SOLVERS)}; got {solver!r}")
    if solver in ("ehals", "hals", "cd") and beta != 2:
        raise UsageError(
            f"solver '{solver}' minimises the Frobenius loss only; use solver 'mu' for loss '{loss_name}'"
        )
    if solver == "emu" and beta == 2:
        raise UsageError("solver 'emu' minimises the other beta-divergences; use solver 'ehals' for loss 'frobenius'")
    if solver == "anls" and beta != 2:
        raise UsageError(f"solver 'anls' minimises the Frobenius loss only; use solver 'mu' for loss '{loss_name}'")
    _check_penalties(alpha_W, alpha_H, l1_ratio)
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise UsageError(f"max_iter must be an integer >= 1; got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise UsageError(f"tol must be a number >= 0; got {tol!r}")
    return loss_name, beta, solver


def reported_solver(solver, beta, fix_W, fix_H):
    """The solver a result names: "nnls" for the exact solve that a fixed factor under the
    Frobenius loss gets whatever solver was asked for, else the solver that ran."""
    return "nnls" if beta == 2 and (fix_W is not None or fix_H is not None) else solver


# The extrapolated solvers and the plain ones they extrapolate.
PLAIN = {"ehals": "hals", "emu": "mu"}


def engine_solver(requested, solver, engine, resume=None, fixed=False, beta=None):
    """The solver that runs on ``engine`` (anything with ``default_frobenius_solver``,
    ``extrapolated`` and ``where``): "auto" takes the engine's Frobenius default, and mu
    instead of emu where the engine does not run emu (the extrapolated solvers an engine
    does not run are refused there when asked for) or, for KL and Itakura-Saito (``beta``
    1 or 0), a factor is ``fixed``. ``solver`` is check_options'.
    """
    if solver in PLAIN and requested == "auto":
        if resume is not None and "beta" not in resume.get("solver_state", {}):
            # A checkpoint of the plain solver (no extrapolation β in its state: "auto" ran
            # hals before ehals and mu before emu): go on as it was.
            return PLAIN[solver]
        if solver == "ehals":
            return engine.default_frobenius_solver
        if fixed and beta in (0, 1):
            # With a fixed factor (transform) emu pays its log pass for every single update:
            # on KL transforms of 2000-20000 × 513 it reached mu's 100-iteration divergence
            # 1.4-1.9× sooner but its 300-iteration one 1.1× later, and at transform's tol it
            # saved 13% for a divergence 2e-6 higher. "auto" keeps mu there; "emu" can be asked.
            # Other β read their bound from two inner products, no pass: emu pays there.
            return "mu"
        return solver if solver in engine.extrapolated else PLAIN[solver]
    if solver in PLAIN and solver not in engine.extrapolated:
        raise UsageError(f"solver '{solver}' does not run {engine.where}; use solver '{PLAIN[solver]}'")
    return solver


def check_init(init, k, shape, W0, H0, fix_W, fix_H):
    """The init a fit of X's shape uses (None: scikit-learn's default), checked with k."""
    custom = W0 is not None or H0 is not None
    if init is None:
        init = "custom" if custom else default_init(k if isinstance(k, (int, np.integer)) else 1, shape)
    if init not in INITS:
        raise UsageError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if custom and init != "custom":
        raise UsageError(f"W0/H0 are given but init is '{init}'; use init 'custom'")
    _check_k(k, shape, init if fix_W is None and fix_H is None else None)
    return init


def check_factors(k, shape, dtype, init, W0, H0, fix_W, fix_H):
    """The given factors checked against X's shape and cast to its dtype: (W0, H0, fix_W, fix_H)."""
    m, n = shape
    if fix_H is not None:
        fix_H = _check_factor(fix_H, (k, n), dtype, "fixed H")
    if fix_W is not None:
        fix_W = _check_factor(fix_W, (m, k), dtype, "fixed W")
    if init == "custom":
        missing = [name for name, value, free in (("W0", W0, fix_W is None), ("H0", H0, fix_H is None))
                   if free and value is None]
        if missing and fix_W is None and fix_H is None:
            raise UsageError(f"init 'custom' needs {' and '.join(missing)}")
        W0 = _check_factor(W0, (m, k), dtype, "W0") if W0 is not None else None
        H0 = _check_factor(H0, (k, n), dtype, "H0") if H0 is not None else None
    return W0, H0, fix_W, fix_H


def reported_init(init, beta, fix_W, fix_H, W0, H0):
    """The init a fit really used: with a fixed factor, the Frobenius solve needs no start
    ("none") and mu starts the free factor at √(mean(X)/k) ("constant") unless one is given."""
    if fix_W is None and fix_H is None:
        return init
    if beta == 2:
        return "none"
    free_start = W0 if fix_H is not None else H0
    return "custom" if free_start is not None else "constant"


def _has_zero(X):
    if sp.issparse(X):
        return X.nnz < X.shape[0] * X.shape[1] or bool(np.any(X.data == 0))
    return bool(np.any(X == 0))


def _initial_factors(eng, X, k, init, seed, solver, W0, H0, fix_W, fix_H):
    m, n = X.shape
    dtype = X.dtype
    if fix_H is not None and W0 is None:
        # scikit-learn's transform start: zeros for cd, √(mean/k) for mu (mu cannot leave 0).
        value = np.sqrt(X.mean() / k) if solver in MULTIPLICATIVE else 0.0
        return np.full((m, k), value, dtype=dtype), fix_H
    if fix_W is not None and H0 is None:
        value = np.sqrt(X.mean() / k) if solver in MULTIPLICATIVE else 0.0
        return fix_W, np.full((k, n), value, dtype=dtype)
    if init == "custom":
        return W0, H0
    if init == "random":
        W, H = random_factors(X.mean(), k, X.shape, dtype, seed)
    else:
        W, H = nndsvd_factors(X, k, init, seed)
    return np.asarray(W, dtype=dtype), np.asarray(H, dtype=dtype)


def _solve_fixed_frobenius(eng, fix_W, fix_H, reg, progress=None):
    """The exact non-negative least-squares solve for the free factor (progress: see fit):
    (W, H, Certificate). The Gram matrix and the cross term are formed in float64 whatever
    X's dtype; every row (fix_H) or column (fix_W) is certified by its KKT conditions, and the
    ones that fail are solved again on the square-root form (solvers.nnls)."""
    l1_W, l1_H, l2_W, l2_H = reg
    if fix_H is not None:
        H = eng.asarray(fix_H)
        H64 = np.asarray(fix_H, dtype=np.float64)
        G, R = cd.gram_and_cross_from(H64 @ H64.T, eng.HXt64(H), l1_W, l2_W)
        G = eng.xp.asarray(G) if eng.xp is not np else G

        def reduce(rows):
            return nnls_solver.reduce_dense(H64.T, eng.rows_dense64(eng.asindex(rows)).T)

        Wt, cert = _nnls_in_blocks(eng, G, R, progress, reduce, l1_W, l2_W)
        return eng.contiguous_copy(eng.xp.astype(Wt.T, eng.xp_dtype)), H, cert
    W = eng.asarray(fix_W)
    W64 = np.asarray(fix_W, dtype=np.float64)
    G, R = cd.gram_and_cross_from(W64.T @ W64, eng.WtX64(W), l1_H, l2_H)
    G = eng.xp.asarray(G) if eng.xp is not np else G

    def reduce(cols):
        return nnls_solver.reduce_dense(W64, eng.cols_dense64(eng.asindex(cols)))

    H, cert = _nnls_in_blocks(eng, G, R, progress, reduce, l1_H, l2_H)
    return W, eng.contiguous_copy(eng.xp.astype(H, eng.xp_dtype)), cert


# With a progress callback the exact solve runs in about SOLVE_BLOCKS blocks of columns (of
# at least MIN_SOLVE_BLOCK): each column is a problem of its own, so blocks give the same bits
# as one call (tested), and 100,000 rows at k = 50 took the same 12-14 s either way here.
SOLVE_BLOCKS = 20
MIN_SOLVE_BLOCK = 4096


def _nnls_in_blocks(eng, G, R, progress, reduce=None, l1=0.0, l2=0.0):
    """nnls(G, R) on the engine's chunk runner, in blocks of columns reported to ``progress``:
    (solution in R's dtype, Certificate). ``reduce``, l1, l2: as nnls takes them (with the
    columns' indices into the whole of R)."""
    p = R.shape[1]
    solve = functools.partial(nnls, map_chunks=eng.map_chunks, l1=l1, l2=l2)
    if progress is None or p == 0:
        return solve(G, R, reduce=reduce)
    size = max(MIN_SOLVE_BLOCK, -(-p // SOLVE_BLOCKS))
    out, cert = eng.xp.empty(R.shape, dtype=R.dtype), nnls_solver.Certificate()
    for start in range(0, p, size):
        stop = min(start + size, p)
        shifted = None if reduce is None else (lambda cols, start=start: reduce(np.asarray(cols) + start))
        part, part_cert = solve(G, R[:, start:stop], reduce=shifted)
        out[:, start:stop] = part
        cert = cert.merge(part_cert)
        progress(stop, p)
    return out, cert


class FitLoop:
    """What every outer loop (hals/cd and mu, in memory and on Dask) keeps the same way.

    Where it starts (iteration 1, or after a resumed checkpoint's), the solver's
    stopping state, the objective history, and the end of each iteration: stop on
    the solver's test, else let the callback stop it.
    """

    def __init__(self, resume, state, callback=None, max_iter=None, start=None):
        self.callback, self.max_iter, self.start = callback, max_iter, start
        self.state = dict(state)
        self.history, self.history_iter, self.first = [], [], 1
        if resume is not None:
            self.state.update(resume["solver_state"])
            self.history, self.history_iter = list(resume["history"]), list(resume["history_iter"])
            self.first = int(resume["iteration"]) + 1
        self.n_iter, self.stop_reason, self.converged = self.first - 1, "max_iter", False
        self._on_host = len(self.history)  # the history before this index is floats

    @classmethod
    def exact(cls, cert):
        """The bookkeeping of a solve that needs no loop (Frobenius with one factor fixed): converged,
        stop_reason "exact", when every row's certificate holds; else "uncertified", not converged."""
        run = cls(None, {})
        run.n_iter = cert.passes
        run.stop_reason, run.converged = ("exact", True) if cert.certified else ("uncertified", False)
        return run

    @property
    def resumed(self):
        return self.first > 1

    def record(self, n_iter, objective):
        """Keep the objective (a float, or a device's 0-d array: read when asked, not waited for here)."""
        self.history.append(objective)
        self.history_iter.append(n_iter)

    def finish_iteration(self, n_iter, done, ask=None):
        """True when the loop stops after iteration n_iter: the solver's test (``done``), or
        the callback, which ``ask`` calls (it is not asked once the solver has stopped)."""
        self.n_iter = n_iter
        if done:
            self.stop_reason, self.converged = "tol", True
            return True
        asked = ask() if ask is not None else None
        if asked:
            self.stop_reason = asked if isinstance(asked, str) else "callback"
            return True
        return False

    def end_iteration(self, eng, n_iter, done, W, H, save):
        """finish_iteration, asking the callback given at construction (if any) with this
        iteration's factors; ``save()`` makes the checkpoint the callback may ask for."""
        ask = None if self.callback is None else (
            lambda: _call(self.callback, n_iter, self.max_iter, lambda: self.floats(eng), self.start, W, H, save))
        return self.finish_iteration(n_iter, done, ask)

    def floats(self, eng):
        """The history as floats: the values still on a device come back in one transfer."""
        pending = [i for i in range(self._on_host, len(self.history)) if not isinstance(self.history[i], float)]
        if pending:
            values = eng.to_host(eng.xp.stack([self.history[i] for i in pending]))
            for i, value in zip(pending, values.tolist()):
                self.history[i] = value
        self._on_host = len(self.history)
        return self.history

    def checkpoint_parts(self):
        return dict(self.state), [float(v) for v in self.history], list(self.history_iter)


def _k_major(eng, W, H, extrapolated=False):
    """(Wᵀ, H, inner-sweep limits) for the hals family: both factors k-major, C-ordered copies.

    The inner-sweep budget depends on the shape only (not on nnz), so sparse and
    dense copies of the same X follow the same iterates.
    """
    Wt = eng.contiguous_copy(W.T)
    H = eng.contiguous_copy(H)
    m, n = eng.shape
    k = H.shape[0]
    return Wt, H, cd.inner_sweep_limits(m, n, k, extrapolated)


def _cd_loop(eng, W, H, options, reg, beta, callback, resume, start):
    """The outer loop of hals and cd.

    cd stops as scikit-learn's does (its sweep's projected-gradient norm / the first
    one <= tol); hals when the projected-gradient norm at the start of an iteration
    falls below tol times its value after the first iteration (cd.hals_converged),
    measured every cd.CHECK_EVERY iterations.
    """
    solver, max_iter, tol = options["solver"], options["max_iter"], options["tol"]
    Wt, H, inner = _k_major(eng, W, H)
    run = FitLoop(resume, {"violation_init": None}, callback, max_iter, start)
    HHt = None
    cache = {}
    for n_iter in range(run.first, max_iter + 1):
        if solver == "cd":
            violation, objective, HHt = cd.cd_iteration(eng, Wt, H, reg, HHt)
            done = cd.cd_converged(run.state, violation, tol)
        else:
            check = cd.hals_check_due(n_iter, run.state["violation_init"])
            violation, objective = cd.hals_iteration(eng, Wt, H, reg, cache, inner, check)
            done = cd.hals_converged(run.state, violation, tol)
        run.record(n_iter, objective)
        if run.end_iteration(eng, n_iter, done, Wt.T, H, lambda: _checkpoint(eng, n_iter, Wt.T, H, run)):
            break
    W = eng.contiguous_copy(Wt.T)
    return _result(eng, W, H, run, options, beta, reg, start, _checkpoint(eng, run.n_iter, W, H, run))


def _ehals_loop(eng, W, H, options, reg, beta, callback, resume, start):
    """HALS with extrapolation (cd.extrapolate), keeping a step only if the objective fell.

    Two buffers a factor: the current iterate, and the one before it (the direction
    of the next extrapolation), which the next step overwrites; a rejected step
    leaves the current iterate and makes the one before it equal to it (no direction).
    The stopping test is hals's, measured on plain HALS iterations.
    """
    max_iter, tol = options["max_iter"], options["tol"]
    Wt, H, inner = _k_major(eng, W, H, extrapolated=True)
    run = FitLoop(resume, {"violation_init": None, "beta": cd.BETA_START, "beta_cap": 1.0},
                  callback, max_iter, start)
    if resume is not None and resume.get("W_before") is not None:
        Wt_before = eng.contiguous_copy(eng.asarray(resume["W_before"]).T)
        H_before = eng.asarray(resume["H_before"])
    else:
        Wt_before, H_before = cd.copy_into(None, Wt), cd.copy_into(None, H)
    objective = run.history[-1] if run.history else None
    # A step is kept unless the objective rose by more than the rounding of its evaluation
    # (ε‖X‖²: its terms are products with X about as large as ‖X‖²). In float32 that rounding
    # exceeds what a late iteration gains, and a strict test rejected half of all steps for
    # noise (digits, faces, pydoc: 110-115 of 170-200 iterations), each one a wasted iteration.
    rounding = float(np.finfo(options["dtype"]).eps) * eng.sqnorm()
    best = _BestIterate(eng)
    cache = {}
    for n_iter in range(run.first, max_iter + 1):
        # ...but never more than a small part of the objective itself: near an exact fit the
        # rounding exceeds the objective, and a slack that large let it climb 4× in float32.
        slack = rounding if objective is None or eng.decides_on_device else min(rounding, ACCEPT_SHARE * objective)
        check = cd.hals_check_due(n_iter, run.state["violation_init"])
        plain = check or objective is None
        if plain:
            Wt_next, H_next = cd.copy_into(Wt_before, Wt), cd.copy_into(H_before, H)
        else:
            b = run.state["beta"]
            Wt_next, H_next = cd.extrapolate(Wt, Wt_before, b), cd.extrapolate(H, H_before, b)
        next_cache = cache if check else {}
        violation, next_objective = cd.hals_iteration(eng, Wt_next, H_next, reg, next_cache, inner, check)
        if not plain and eng.decides_on_device:
            # The test where the arrays live: the step's factors, objective and products, or
            # the current ones again (a rejection), chosen there without a read; then kept as
            # a kept step is, the current iterate becoming the one before.
            xp = eng.xp
            kept = cd.step_kept_on_device(xp, run.state, next_objective, objective, slack)
            Wt_next[...] = xp.where(kept, Wt_next, Wt)
            H_next[...] = xp.where(kept, H_next, H)
            next_objective = xp.where(kept, next_objective, xp.asarray(objective, dtype=xp.float64))
            # (a product the current iterate's cache lacks, after a resume, is left to be recomputed)
            next_cache = {key: xp.where(kept, value, cache[key]) for key, value in next_cache.items() if key in cache}
            accepted = True
        else:
            accepted = cd.step_kept(run.state, plain, next_objective, objective, slack)
        if accepted:
            Wt_before, Wt, H_before, H = Wt, Wt_next, H, H_next
            objective, cache = next_objective, next_cache
        else:
            Wt_before, H_before = cd.copy_into(Wt_next, Wt), cd.copy_into(H_next, H)
        done = cd.hals_converged(run.state, violation, tol)
        run.record(n_iter, objective)
        best.offer(objective, Wt, H, Wt_before, H_before)

        def save(n_iter=n_iter, Wt=Wt, H=H, Wt_before=Wt_before, H_before=H_before):
            return _checkpoint(eng, n_iter, Wt.T, H, run, W_before=Wt_before.T, H_before=H_before)

        if run.end_iteration(eng, n_iter, done, Wt.T, H, save):
            break
    W = eng.contiguous_copy(Wt.T)
    ckpt = _checkpoint(eng, run.n_iter, W, H, run, W_before=Wt_before.T, H_before=H_before)
    W, H = best.better(eng, W, H, beta, reg, transposed=True)
    return _result(eng, W, H, run, options, beta, reg, start, ckpt)


# ehals keeps an extrapolated step whose objective rose by at most its evaluation's rounding,
# and at most this share of the objective.
ACCEPT_SHARE = 1e-4


class _BestIterate:
    """The iterate of lowest recorded objective that ehals and emu saw (on the host engine,
    where comparing costs nothing), so that a fit never returns a worse one than it passed.

    The recorded objectives of a float32 fit carry the rounding of float32 products; the
    final choice (``better``) compares the last iterate with the best one by their objectives
    computed in float64 from the factors, and keeps the last unless the best is lower."""

    def __init__(self, eng):
        self.active = not eng.decides_on_device
        self.value, self.A, self.B, self.is_last = None, None, None, True

    def offer(self, objective, A, B, A_before=None, B_before=None):
        """The iterate (A, B) and its recorded objective. ``A_before``, ``B_before``: the iterate
        before it, still intact (ehals's); with them a copy is made only when the objective
        rises past the best, from the iterate before (the best), not at every new best."""
        if not self.active:
            return
        objective = float(objective)
        if self.value is None or objective <= self.value:
            self.value = objective
            if A_before is None:
                self.A, self.B = cd.copy_into(self.A, A), cd.copy_into(self.B, B)
            self.is_last = True
        else:
            if self.is_last and A_before is not None:
                self.A, self.B = cd.copy_into(self.A, A_before), cd.copy_into(self.B, B_before)
            self.is_last = False

    def better(self, eng, W, H, beta, reg, transposed=False):
        """(W, H): the last factors, or the best ones where they are lower in float64."""
        if not self.active or self.value is None or self.is_last:
            return W, H
        W_best = eng.contiguous_copy(self.A.T) if transposed else self.A
        if _objective(eng, W_best, self.B, beta, reg) < _objective(eng, W, H, beta, reg):
            return W_best, self.B
        return W, H


def _mu_start(eng, W, H, beta, reg, run, divergence_of=None):
    """mu's and emu's start (not on a resume): the divergence at the initial factors, which
    the stop test measures from, recorded as iteration 0. ``divergence_of(W, H)``: another
    measure of it than the engine's (the masked loop's, over the observed entries)."""
    if not run.resumed:
        divergence = beta_divergence(eng, W, H, beta) if divergence_of is None else divergence_of(W, H)
        error_at_init = reconstruction_error(divergence)
        run.state.update(error_at_init=error_at_init, previous_error=error_at_init)
        run.record(0, _objective(eng, W, H, beta, reg, divergence))


def _mu_test(eng, W, H, beta, reg, run, n_iter, tol, divergence_of=None, every=False):
    """mu's and emu's stop, tested every mu.CHECK_EVERY iterations on the exact divergence,
    which the history records: ((n_iter, divergence), done), or (None, False) between tests.
    ``divergence_of``: as in _mu_start. ``every`` (fit's history="all"): the divergence is
    measured and recorded between tests too, and the stop still tested every CHECK_EVERY."""
    if n_iter % mu.CHECK_EVERY and not every:
        return None, False
    divergence = beta_divergence(eng, W, H, beta) if divergence_of is None else divergence_of(W, H)
    run.record(n_iter, _objective(eng, W, H, beta, reg, divergence))
    if n_iter % mu.CHECK_EVERY:
        return (n_iter, divergence), False
    return (n_iter, divergence), mu.converged(run.state, reconstruction_error(divergence), tol)


def _mu_loop(eng, W, H, options, reg, beta, callback, resume, start):
    """scikit-learn's multiplicative-update loop, with its convergence test every 10 iterations."""
    max_iter, tol = options["max_iter"], options["tol"]
    l1_W, l1_H, l2_W, l2_H = reg
    update_W_, update_H_ = options["fixed"] != "W", options["fixed"] != "H"
    gamma = mu.gamma_for(beta)
    W = eng.contiguous_copy(W) if update_W_ else W
    H = eng.contiguous_copy(H) if update_H_ else H
    run = FitLoop(resume, {}, callback, max_iter, start)
    _mu_start(eng, W, H, beta, reg, run)
    measured = None  # (iteration, divergence there): the last test's, which _result reuses
    cache = {}
    for n_iter in range(run.first, max_iter + 1):
        if update_W_:
            mu.update_W(eng, W, H, beta, l1_W, l2_W, gamma, cache, keep_cache=not update_H_)
        if update_H_:
            mu.update_H(eng, W, H, beta, l1_H, l2_H, gamma)
        tested, done = _mu_test(eng, W, H, beta, reg, run, n_iter, tol, every=options.get("history") == "all")
        measured = tested or measured
        if run.end_iteration(eng, n_iter, done, W, H, lambda: _checkpoint(eng, n_iter, W, H, run)):
            break
    divergence = measured[1] if measured is not None and measured[0] == run.n_iter else None
    return _result(eng, W, H, run, options, beta, reg, start, _checkpoint(eng, run.n_iter, W, H, run),
                   divergence)


def _beyond_numpy_in_memory(engine, engine_options):
    """What takes a fit off the numpy engine in memory ("engine 'dask'", "chunk_rows"), or None."""
    if engine not in ("numpy", "auto"):
        return f"engine {engine!r}"
    return "chunk_rows" if (engine_options or {}).get("chunk_rows") is not None else None


def _check_missing(missing, engine="numpy", engine_options=None):
    """The settings missing values are fitted under: missing="nan", the numpy engine in memory."""
    if missing != "nan":
        raise UsageError(f"missing must be None or 'nan'; got {missing!r}")
    got = _beyond_numpy_in_memory(engine, engine_options)
    if got:
        raise UsageError(f"missing values (missing='nan') are fitted on the numpy engine in memory; got {got}")


def _check_weighted(missing, weights, engine="numpy", engine_options=None, solver=None):
    """The settings missing values, weights and solver anls are fitted under: the numpy engine in memory."""
    if missing is not None:
        _check_missing(missing, engine, engine_options)
    got = _beyond_numpy_in_memory(engine, engine_options)
    if got and weights is not None:
        raise UsageError(f"a weighted fit runs on the numpy engine in memory; got {got}")
    if got and solver == "anls":
        raise UsageError(f"solver 'anls' runs on the numpy engine in memory; got {got}")


def _weights_matrix(weights, X, observed):
    """``weights`` checked against dense X (same shape, finite, ≥ 0, some entry positive where X
    is observed), as a dense array of X's dtype (booleans as 1 and 0); None for None."""
    if weights is None:
        return None
    if getattr(weights, "dtype", None) == np.bool_:  # a mask of the entries that count: 1 and 0
        weights = weights.astype(X.dtype)
    M = _as_matrix(weights, X.dtype, name="weights", hints=False)
    if M.shape != X.shape:
        raise DataError(f"the weights are {_shape(M)} but X is {_shape(X)}; they must have the same shape")
    M = M.toarray() if sp.issparse(M) else M
    if not np.any(M if observed is None else M[observed]):
        raise DataError("every weight is 0" + ("" if observed is None else " where X is observed")
                        + ": nothing is left to fit")
    return M


def _weighted_data(X, observed, weights):
    """(X0, XM, M) for solvers.masked: X with 0 where it is missing, M⊙X0, and M, the weights
    (0 where X is missing; the mask of observed entries when there are no weights). Without
    weights XM is X0 itself."""
    if observed is None:
        X0, mask = X, None
    else:
        X0, mask = _without_missing(X, observed)
    if weights is None:
        return X0, X0, mask
    M = weights if mask is None else weights * mask
    return X0, M * X0, M


def _observed(X):
    """The mask of X's observed (not NaN) entries, or None when nothing is missing."""
    observed = ~np.isnan(X)
    if observed.all():
        return None
    if not observed.any():
        raise DataError("X has no observed entries: every entry is NaN")
    return observed


def _without_missing(X, observed):
    """(X with 0 where it is missing, the mask as X's dtype): what the masked updates and measures read."""
    return np.where(observed, X, 0.0).astype(X.dtype), observed.astype(X.dtype)


def _missing_count(observed):
    """metrics' "missing_entries" for _observed's mask."""
    return 0 if observed is None else int(observed.size - observed.sum())


def _masked_loop(X, XM, M, eng, W, H, options, reg, beta, callback, resume, start):
    """The fit over the weighted entries (X is 0 and M 0 where X is missing, M the weights or the
    mask of observed entries, XM = M⊙X), by options["solver"]:

    - "mu": _mu_loop's updates with every sum weighted by M (solvers.masked);
    - "anls" (Frobenius): alternating non-negative least squares, W given H (each row of X its
      own exact weighted solve, _weighted_solve), then H given W (each column's). Each half-step
      minimises the objective over its factor, so it never rises; mu's many small steps take
      hundreds of iterations to get as low as a few of these (on 2000×500 with 30% missing,
      k = 10: 5 iterations reached a lower error than 1000 of mu). W0 is not used: the first
      step solves W.

    Both stop as mu does (scikit-learn's test, every 10 iterations) and keep its history, on the
    weighted divergence."""
    max_iter, tol = options["max_iter"], options["tol"]
    l1_W, l1_H, l2_W, l2_H = reg
    W, H = np.array(W, order="C"), np.array(H, order="C")
    run = FitLoop(resume, {}, callback, max_iter, start)

    if options["solver"] == "anls":
        def step(W, H):
            W = np.ascontiguousarray(_weighted_solve(XM, M, H.T, l1_W, l2_W, X.dtype, previous=W.T)[0].T)
            return W, _weighted_solve(XM.T, M.T, W, l1_H, l2_H, X.dtype, previous=H)[0]
    else:
        gamma = mu.gamma_for(beta)

        def step(W, H):
            if options["fixed"] != "W":
                masked.update_W(XM, M, W, H, beta, l1_W, l2_W, gamma)
            if options["fixed"] != "H":
                masked.update_H(XM, M, W, H, beta, l1_H, l2_H, gamma)
            return W, H

    def divergence_of(W, H):
        return masked.divergence(X, XM, M, W, H, beta)

    _mu_start(eng, W, H, beta, reg, run, divergence_of)
    measured = None  # (iteration, divergence there): the last test's
    for n_iter in range(run.first, max_iter + 1):
        W, H = step(W, H)
        tested, done = _mu_test(eng, W, H, beta, reg, run, n_iter, tol, divergence_of,
                                every=options.get("history") == "all")
        measured = tested or measured
        if run.end_iteration(eng, n_iter, done, W, H, lambda: _checkpoint(eng, n_iter, W, H, run)):
            break
    divergence = measured[1] if measured is not None and measured[0] == run.n_iter else divergence_of(W, H)
    metrics = {"objective": _objective(eng, W, H, beta, reg, divergence),
               **_masked_error_metrics(X, XM, M, W, H, beta, divergence)}
    return FitResult(
        W=W, H=H, n_iter=int(run.n_iter), converged=bool(run.converged), stop_reason=run.stop_reason,
        history=[float(v) for v in run.history], history_iter=[int(i) for i in run.history_iter],
        metrics=metrics, options=options, time_s=time.perf_counter() - start,
        checkpoint=_checkpoint(eng, run.n_iter, W, H, run),
    )


def _solve_fixed_masked(X, XM, M, fix_W, fix_H, options, reg, start, progress=None):
    """_solve_fixed_frobenius over the weighted entries (X, XM and M as in _masked_loop):
    each row of X (fix_H; each column for fix_W) is its own weighted least-squares problem,
    whose Gram matrix weighs the components by that row's weights: Σⱼ M[i, j]·hⱼhⱼᵀ, all
    rows' at once as M times the k² products hⱼhⱼᵀ, in blocks of rows, and whose cross term
    is Σⱼ XM[i, j]·hⱼ. A row with nothing observed (every weight 0) gets 0; so does a
    component that is 0 wherever its row weighs."""
    l1_W, l1_H, l2_W, l2_H = reg
    free_W = fix_H is not None
    F = fix_H.T if free_W else fix_W  # the fixed factor, one row per column of X (or of Xᵀ)
    Xs, Ms = (XM, M) if free_W else (XM.T, M.T)
    l1, l2 = (l1_W, l2_W) if free_W else (l1_H, l2_H)
    solved, cert = _weighted_solve(Xs, Ms, F, l1, l2, X.dtype, progress)
    W, H = (np.ascontiguousarray(solved.T), fix_H) if free_W else (fix_W, solved)
    divergence = masked.divergence(X, XM, M, W, H, 2.0)
    run = FitLoop.exact(cert)
    metrics = {"objective": _objective(None, W, H, 2.0, reg, divergence),
               **_masked_error_metrics(X, XM, M, W, H, 2.0, divergence), "kkt": cert.as_dict()}
    return FitResult(W=W, H=H, n_iter=int(run.n_iter), converged=run.converged, stop_reason=run.stop_reason,
                     history=[], history_iter=[], metrics=metrics, options=options,
                     time_s=time.perf_counter() - start, checkpoint={})


# Gram matrices built at once in _weighted_solve: rows × k² entries (32 MiB of float64).
MASKED_GRAM_ENTRIES = 1 << 22


def _weighted_solve(XMs, Ms, F, l1, l2, dtype, progress=None, previous=None):
    """(A, Certificate): the k×p factor A whose column i minimises Σⱼ Ms[i, j]·(Xs[i, j] − F[j]·a)²
    (plus the penalties) over a ≥ 0, for every row i of XMs = Ms⊙Xs, exactly: row i's Gram
    matrix Σⱼ Ms[i, j]·fⱼfⱼᵀ, all rows' at once as Ms times the k² products fⱼfⱼᵀ, in blocks
    of rows, solved by block principal pivoting and certified row by row; the rows that fail
    are solved again on the square-root form of their weighted problem. F is p_cols×k.
    ``previous`` (k×p): the current factor of an alternating fit; a column keeps it where the
    solve's answer is not lower in objective (rounding), so no half-step ever raises it."""
    p, k = XMs.shape[0], F.shape[1]
    F64 = F.astype(np.float64)
    outer = (F64[:, :, None] * F64[:, None, :]).reshape(F.shape[0], k * k)  # fⱼfⱼᵀ, row j
    block = max(1, MASKED_GRAM_ENTRIES // (k * k))
    solved, cert = np.empty((k, p), dtype=dtype), nnls_solver.Certificate()
    for lo in range(0, p, block):
        rows = slice(lo, min(lo + block, p))
        Mb = np.asarray(Ms[rows], dtype=np.float64)
        XMb = np.asarray(XMs[rows], dtype=np.float64)
        G, R = cd.gram_and_cross_from((Mb @ outer).reshape(-1, k, k), (XMb @ F64).T, l1, l2)

        def reduce(cols, Mb=Mb, XMb=XMb):
            # Xs = XMs / Ms where Ms > 0; the weighted problem's rows are √m·f and √m·x.
            M_c, XM_c = Mb[cols].T, XMb[cols].T
            X_c = np.divide(XM_c, M_c, out=np.zeros_like(XM_c), where=M_c > 0)
            return nnls_solver.reduce_dense(F64, X_c, weights=M_c)

        answer, part = nnls(G, np.ascontiguousarray(R), reduce=reduce, l1=l1, l2=l2)
        if previous is not None:
            old = np.asarray(previous[:, rows], dtype=np.float64)
            new = np.asarray(answer, dtype=np.float64)
            worse = _gram_objective(G, R, new) > _gram_objective(G, R, old)
            answer = np.where(worse[None, :], previous[:, rows], answer)
        solved[:, rows] = answer
        cert = cert.merge(part)
        if progress is not None:
            progress(rows.stop, p)
    return solved, cert


def _gram_objective(G, R, A):
    """½ aᵀGa − rᵀa for each column a of A (G p×k×k, one per column): the objective up to a constant."""
    return 0.5 * np.einsum("tp,pts,sp->p", A, G, A) - np.einsum("tp,tp->p", R, A)


def _masked_error_metrics(X, XM, M, W, H, beta, divergence):
    """_error_metrics over the weighted entries (X, XM and M as in _masked_loop); the
    relative error is √(Σ M⊙(X − WH)²) / √(Σ M⊙X²)."""
    norm_X = float(np.sqrt(np.sum(XM * X)))
    squared = 2.0 * max(divergence, 0.0) if beta == 2 else masked.squared_error(X, M, W @ H)
    return {
        "beta_divergence": float(divergence),
        "reconstruction_error": reconstruction_error(divergence),
        "relative_error": float(np.sqrt(squared) / norm_X) if norm_X else 0.0,
    }


def _emu_loop(eng, W, H, options, reg, beta, callback, resume, start):
    """Multiplicative updates with extrapolation (every β but 2): ehals's scheme on mu.

    Each iteration starts from the free factors pushed along their last step in log
    coordinates, A·(A / A_before)^β with the ratio clipped (mu.extrapolate), and runs one mu
    iteration (W, then H) from there. The last update's own arrays give the divergence where
    it starts (for KL and Itakura-Saito for one float32 log pass, for other β for two inner
    products); less what its step is sure to gain, that bounds the objective of the new
    iterate from above (mu.update_H, mu.update_W). The step is kept unless that bound rose
    above the lowest kept so far by more than its rounding (_emu_rounding); a rejected step
    keeps the current iterate, shrinks β, and the next iteration is plain mu. The stop is
    mu's (scikit-learn's test every 10 iterations, on the exact divergence of the current
    iterate), and so is the history. With a fixed factor (transform, --fix-H, --fix-W) the
    same runs on the free one.
    """
    max_iter, tol = options["max_iter"], options["tol"]
    l1_W, l1_H, l2_W, l2_H = reg
    free_W, free_H = options["fixed"] != "W", options["fixed"] != "H"
    W = eng.contiguous_copy(W) if free_W else W
    H = eng.contiguous_copy(H) if free_H else H
    run = FitLoop(resume, {"beta": mu.EMU_BETA_START, "beta_cap": 1.0, "bound": None},
                  callback, max_iter, start)
    _mu_start(eng, W, H, beta, reg, run)
    # The iterates before the current ones (the direction of the next step): the checkpoint's
    # on a resume. A fixed factor has no step: its "before" is itself, not a copy.
    saved = resume if resume is not None and resume.get("W_before") is not None else None
    W_before = (W if not free_W else eng.contiguous_copy(eng.asarray(saved["W_before"])) if saved
                else cd.copy_into(None, W))
    H_before = H if not free_H else eng.asarray(saved["H_before"]) if saved else cd.copy_into(None, H)
    slack = SLACK_ROUNDINGS * _emu_rounding(beta, eng.dtype, eng.shape, eng.sqnorm, eng.power_sum)
    best = _BestIterate(eng)
    gamma = mu.gamma_for(beta)
    cache = {}  # products of a fixed H (update_W's)
    measured = None  # (iteration, divergence there): the last test's, which _result reuses
    for n_iter in range(run.first, max_iter + 1):
        bound = run.state["bound"]
        plain = bound is None
        b = run.state["beta"]
        W_next = W if not free_W else cd.copy_into(W_before, W) if plain else mu.extrapolate(W, W_before, b)
        H_next = H if not free_H else cd.copy_into(H_before, H) if plain else mu.extrapolate(H, H_before, b)
        # The last update of the iteration gives the bound (its l1 term included); the l2 terms
        # are those of the point it starts from, and the other factor's penalties its own.
        if free_H:
            if free_W:
                mu.update_W(eng, W_next, H_next, beta, l1_W, l2_W, gamma, cache, False)
            penalties = cd.penalty(W_next, l1_W, l2_W) + cd.penalty(H_next, 0.0, l2_H)
            next_bound = mu.update_H(eng, W_next, H_next, beta, l1_H, l2_H, gamma, bound=True) + penalties
        else:
            penalties = cd.penalty(H_next, l1_H, l2_H) + cd.penalty(W_next, 0.0, l2_W)
            next_bound = mu.update_W(eng, W_next, H_next, beta, l1_W, l2_W, gamma, cache, True,
                                     bound=True) + penalties
        # plain mu never raises the bound (but for the L2 penalty, whose update is scikit-learn's
        # heuristic): a plain step is always kept, so a rejection cannot repeat forever
        if not plain and eng.decides_on_device:
            # As in _ehals_loop: chosen where the arrays live, without a read. The bound after a
            # rejection is inf there (None on the host): the step after it starts from
            # before = current, so its extrapolation leaves it plain mu, kept with β as it is.
            xp = eng.xp
            bound = xp.asarray(bound, dtype=xp.float64)
            after_rejection = xp.isinf(bound)
            kept = cd.step_kept_on_device(xp, run.state, next_bound, bound, slack, plain=after_rejection)
            if free_W:
                W_next[...] = xp.where(kept, W_next, W)
            if free_H:
                H_next[...] = xp.where(kept, H_next, H)
            new_bound = xp.where(kept, xp.minimum(next_bound, bound), xp.full_like(bound, math.inf))
            accepted = True
        else:
            accepted = cd.step_kept(run.state, plain, next_bound, bound, slack)
            new_bound = float(next_bound if plain else min(next_bound, bound)) if accepted else None
        if accepted:
            if free_W:
                W_before, W = W, W_next
            if free_H:
                H_before, H = H, H_next
        else:
            if free_W:
                W_before = cd.copy_into(W_next, W)
            if free_H:
                H_before = cd.copy_into(H_next, H)
        run.state["bound"] = new_bound
        tested, done = _mu_test(eng, W, H, beta, reg, run, n_iter, tol, every=options.get("history") == "all")
        measured = tested or measured
        if tested:
            best.offer(run.history[-1], W, H)

        def save(n_iter=n_iter, W=W, H=H, W_before=W_before, H_before=H_before):
            return _checkpoint(eng, n_iter, W, H, run, W_before=W_before, H_before=H_before)

        if run.end_iteration(eng, n_iter, done, W, H, save):
            break
    divergence = measured[1] if measured is not None and measured[0] == run.n_iter else None
    ckpt = _checkpoint(eng, run.n_iter, W, H, run, W_before=W_before, H_before=H_before)
    W_last = W
    W, H = best.better(eng, W, H, beta, reg)
    return _result(eng, W, H, run, options, beta, reg, start, ckpt, divergence if W is W_last else None)


def _emu_rounding(beta, dtype, shape, sqnorm, power_sum):
    """The expected rounding of emu's bound (mu.update_H), for X of ``dtype`` and ``shape``;
    ``sqnorm()`` is ‖X‖² and ``power_sum(β)`` ΣX^β (asked for only where needed).

    KL and Itakura-Saito: each of its float32 logs is off by about 2⁻²⁴, in no set
    direction, weighted by X's entry (KL) or 1 (Itakura-Saito), so the sum is off by about
    2⁻²⁴ times the weights' norm. (A slack of 2⁻²⁰·ΣX, the rounding's worst case, let steps
    through that raised the objective by more than late iterations gain: a transform stalled
    at tol 1e-8 above what mu reached.) Other β: two inner products in the fit's dtype,
    each near ΣX^β in a fitted model, weighted by |β−1| and |β| and divided by |β(β−1)|:
    the precision of that sum (of ΣX^β alongside, which the bound leaves out).
    """
    if beta == 1:
        return float(np.finfo(np.float32).eps) * math.sqrt(sqnorm())
    if beta == 0:
        return float(np.finfo(np.float32).eps) * math.sqrt(float(np.prod(shape)))
    weight = (1.0 + abs(beta) + abs(beta - 1.0)) / abs(beta * (beta - 1.0))
    return float(np.finfo(dtype).eps) * weight * power_sum(beta)


def _call(callback, n_iter, max_iter, history, start, W, H, checkpoint):
    """callback(IterationInfo); ``history``: the objectives as floats, or what gives them when asked."""
    floats = history if callable(history) else lambda: history
    return callback(IterationInfo(n_iter, max_iter, time.perf_counter() - start, W, H, checkpoint, floats))


def checkpoint(n_iter, W, H, run):
    """A resumable state: the factors (host arrays or, for a streamed W, None) and the loop's bookkeeping."""
    state, history, history_iter = run.checkpoint_parts()
    return {"iteration": int(n_iter), "W": W, "H": H, "solver_state": state,
            "history": history, "history_iter": history_iter}


def _checkpoint(eng, n_iter, W, H, run, **factors):
    """checkpoint() with host copies of the factors, and of any other factors a solver resumes from (ehals's)."""
    run.floats(eng)
    _state_to_host(eng, run.state)
    state = checkpoint(n_iter, _host_copy(eng, W), _host_copy(eng, H), run)
    state.update({name: _host_copy(eng, value) for name, value in factors.items()})
    return state


def _state_to_host(eng, state):
    """The loop's state as floats, in place: the values an engine that decides on the device
    keeps there (ehals's and emu's β, emu's bound, whose inf there is None here) come back in
    one transfer. The loop goes on from them as it would have from the device's."""
    pending = [key for key, value in state.items() if value is not None and not isinstance(value, (int, float))]
    if pending:
        values = eng.to_host(eng.xp.stack([eng.xp.asarray(state[key], dtype=eng.xp.float64) for key in pending]))
        for key, value in zip(pending, values.tolist()):
            state[key] = None if key == "bound" and math.isinf(value) else value


def _host_copy(eng, a):
    return np.array(eng.to_host(a), copy=True)


def _objective(eng, W, H, beta, reg, divergence=None):
    """Divergence plus penalties: the quantity the solvers decrease."""
    if divergence is None:
        divergence = beta_divergence(eng, W, H, beta)
    l1_W, l1_H, l2_W, l2_H = reg
    return float(float(divergence) + cd.penalty(W, l1_W, l2_W) + cd.penalty(H, l1_H, l2_H))


def _result(eng, W, H, run, options, beta, reg, start, ckpt, divergence=None):
    """The FitResult; ``divergence``: D(X ‖ WH) at these factors when the loop has just measured it."""
    errors = _error_metrics(eng, W, H, beta, divergence)
    metrics = {"objective": _objective(eng, W, H, beta, reg, errors["beta_divergence"]), **errors}
    W = eng.to_host(W)
    H = eng.to_host(H)
    return FitResult(
        W=W, H=H, n_iter=int(run.n_iter), converged=bool(run.converged), stop_reason=run.stop_reason,
        history=[float(v) for v in run.floats(eng)], history_iter=[int(i) for i in run.history_iter],
        metrics=metrics, options=options, time_s=time.perf_counter() - start, checkpoint=ckpt,
    )


def _error_metrics(eng, W, H, beta, divergence=None):
    """beta_divergence, reconstruction_error (√(2·D)) and relative_error (‖X − WH‖ / ‖X‖).

    ``divergence``: D at these factors, when already known. For Frobenius, D is
    ½‖X − WH‖² itself, so the relative error needs no second pass over X.
    """
    if eng.dtype != np.float64:
        # The reported numbers come from float64 factors: float32 terms of a divergence near
        # its minimum cancel (KL's were off by 3e-5 of it), whatever they are summed in.
        divergence = None
        W, H = eng.xp.astype(W, eng.xp.float64), eng.xp.astype(H, eng.xp.float64)
    if divergence is None:
        divergence = beta_divergence(eng, W, H, beta)
    squared = 2.0 * max(divergence, 0.0) if beta == 2 else squared_error(eng, W, H)
    norm_X = np.sqrt(eng.sqnorm())
    return {
        "beta_divergence": float(divergence),
        "reconstruction_error": reconstruction_error(divergence),
        "relative_error": float(np.sqrt(squared) / norm_X) if norm_X else 0.0,
    }


# --------------------------------------------------------------------------- transform & co


def transform(X, H, *, loss="frobenius", alpha_W=0.0, l1_ratio=0.0, dtype=None, engine="numpy",
              max_iter=1000, tol=1e-8, engine_options=None, progress=None, missing=None, weights=None,
              details=False):
    """W ≥ 0 (m×k) minimising the loss of X ≈ W·H for fixed components H (k×n).

    For the Frobenius loss this is an exact non-negative least-squares solve of
    every row (block principal pivoting), not a pseudo-inverse projection (which
    goes negative) and not an iterative solve stopped early. For other losses
    the multiplicative updates run with H fixed until the relative decrease is
    below ``tol`` (fit's "auto": mu for KL and Itakura-Saito, emu for other β).

    ``progress(done, total)``, if given, is called as the work goes: rows solved of X's
    rows (Frobenius), or iterations of ``max_iter`` (other losses).

    ``missing="nan"``: NaN entries of X are missing, as in fit: each row is fitted over its
    observed entries only (for the Frobenius loss, an exact solve of each row against the
    components at those entries), and W·H predicts the rest. Numpy engine, in memory.

    ``weights`` (m×n, ≥ 0): each row is fitted with its entries weighted, as in fit (for the
    Frobenius loss an exact weighted least-squares solve of each row); dense X, numpy engine.

    Every row of a Frobenius solve is certified by its KKT conditions (``metrics["kkt"]`` of
    the result). Returns W (m×k), or with ``details`` the whole :class:`FitResult` (its
    ``stop_reason`` is "uncertified" where a row could not be certified).
    """
    if engine == "numpy" and (engine_options or {}).get("chunk_rows") is not None:
        # Out-of-core numpy: row blocks read one at a time in this process (see fit).
        from nmfcli.engines.chunked import transform_blocks

        return transform_blocks(X, H, loss=loss, alpha_W=alpha_W, l1_ratio=l1_ratio, dtype=dtype,
                                max_iter=max_iter, tol=tol, progress=progress, details=details, **engine_options)
    if engine == "dask":
        from nmfcli.engines.dask import transform_dask

        return transform_dask(X, H, loss=loss, alpha_W=alpha_W, l1_ratio=l1_ratio, dtype=dtype,
                              max_iter=max_iter, tol=tol, progress=progress, details=details,
                              **(engine_options or {}))
    X = _as_matrix(X, dtype, missing=missing, weighted=weights is not None)
    H = np.asarray(H)
    if H.ndim != 2 or H.shape[1] != X.shape[1]:
        raise DataError(
            f"X has {X.shape[1]} columns but the components have "
            f"{H.shape[1] if H.ndim == 2 else 'no'} columns; they must match"
        )
    result = fit(X, H.shape[0], solver="auto", loss=loss, alpha_W=alpha_W, alpha_H=0.0,
                 l1_ratio=l1_ratio, fix_H=H, dtype=X.dtype, engine=engine,
                 max_iter=max_iter, tol=tol, callback=iteration_progress(progress), progress=progress,
                 missing=missing, weights=weights)
    return result if details else result.W


def iteration_progress(progress):
    """A fit callback that reports each iteration to progress(done, max_iter) and never stops
    the fit (transform's, for the losses that iterate); None for None."""
    if progress is None:
        return None

    def callback(info):
        progress(info.iteration, info.max_iter)
    return callback


def reconstruct(W, H):
    """W·H as a dense array."""
    W = np.asarray(W)
    H = np.asarray(H)
    if W.ndim != 2 or H.ndim != 2 or W.shape[1] != H.shape[0]:
        raise DataError(f"W ({_shape(W)}) and H ({_shape(H)}) do not chain: W's columns must equal H's rows")
    return W @ H


def _shape(A):
    return " x ".join(str(s) for s in A.shape)


def metrics(X, W, H, loss="frobenius", missing=None, weights=None):
    """Error metrics of X ≈ W·H: beta_divergence, reconstruction_error, relative_error.

    With ``missing="nan"``, X's NaN entries are left out of all three (as :func:`fit` leaves
    them out), and ``missing_entries`` counts them. With ``weights`` (m×n, ≥ 0), all three
    are weighted as :func:`fit` weighs them.
    """
    _, beta = _resolve_loss(loss)
    if missing is not None or weights is not None:
        _check_weighted(missing, weights)
    X = _as_matrix(X, None, missing=missing, weighted=weights is not None)
    W = np.asarray(W, dtype=X.dtype)
    H = np.asarray(H, dtype=X.dtype)
    if W.shape[0] != X.shape[0] or H.shape[1] != X.shape[1] or W.shape[1] != H.shape[0]:
        raise DataError(
            f"X ({_shape(X)}) does not match W ({_shape(W)}) times H ({_shape(H)})"
        )
    observed = _observed(X) if missing is not None else None
    weights = _weights_matrix(weights, X, observed)
    if observed is None and weights is None:
        eng = get_engine("numpy", X, X.dtype)
        result = {"beta": beta, **_error_metrics(eng, W, H, beta)}
    else:
        X0, XM, M = _weighted_data(X, observed, weights)
        divergence = masked.divergence(X0, XM, M, W, H, beta)
        result = {"beta": beta, **_masked_error_metrics(X0, XM, M, W, H, beta, divergence)}
    if missing is not None:
        result["missing_entries"] = _missing_count(observed)
    return result


@dataclass
class ComponentMatch:
    """How :func:`match_components` orders a fit's components like a reference's.

    Attributes
    ----------
    order : list of int
        The fit's component put at each position: W[:, order] and H[order] are the
        aligned factors.
    matched : list of int or None
        The reference component each position's component matched (its own position when
        both have the same k), or None for a component left over (more than the reference has).
    similarity : list of float or None
        The cosine between each position's component (its row of H) and the one it matched.
    """

    order: list
    matched: list
    similarity: list


def match_components(H, reference):
    """The order of H's components (rows) that best matches ``reference``'s rows.

    Components are compared by the cosine of their rows (NMF's components have no scale
    of their own), and paired one to one so that the summed cosine is largest (the
    assignment problem, scipy's ``linear_sum_assignment``). Paired components take the
    positions of their partners, in the reference's order; where H has more components
    than the reference, the rest follow in their own order. A refit aligned to the last
    model keeps its components in place even when the fit found them in another order.
    """
    from scipy.optimize import linear_sum_assignment

    H = np.asarray(H, dtype=np.float64)
    R = np.asarray(reference, dtype=np.float64)
    if H.ndim != 2 or R.ndim != 2 or H.shape[1] != R.shape[1]:
        raise DataError(f"the components ({_shape(H)}) and the reference's ({_shape(R)}) must have the same "
                        "number of columns")

    def unit(A):
        norms = np.linalg.norm(A, axis=1, keepdims=True)
        return A / np.where(norms > 0, norms, 1.0)  # a zero component resembles nothing (cosine 0)

    cosine = unit(H) @ unit(R).T
    rows, cols = linear_sum_assignment(cosine, maximize=True)  # cols ascending when H has at least as many rows
    paired = sorted(zip(cols.tolist(), rows.tolist()))
    rest = sorted(set(range(H.shape[0])) - set(rows.tolist()))
    order = [r for _, r in paired] + rest
    matched = [c for c, _ in paired] + [None] * len(rest)
    similarity = [float(cosine[r, c]) for c, r in paired] + [None] * len(rest)
    return ComponentMatch(order=order, matched=matched, similarity=similarity)


def versions():
    import scipy

    return {"nmfcli": __version__, "numpy": np.__version__, "scipy": scipy.__version__}
