"""Pure helpers behind `nmf inspect` and the CLI's checks: statistics, top features, labels.

Arrays and plain values in, plain dicts and lists out: no click, no rich, no files,
so the CLI itself does no arithmetic and these can be tested directly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from nmfcli import core


def matrix_stats(X, dtype=None) -> dict:
    """Shape, dtype, density and value statistics of a dense or sparse matrix.

    Parameters
    ----------
    X : ndarray (m, n) or scipy.sparse matrix
    dtype : numpy dtype, optional
        The stored dtype to report (when X was converted on reading); default X.dtype.

    Returns
    -------
    dict
        shape, dtype, sparse, nnz, density, min, max, mean (of the finite values;
        None when there are none), negative, nan, inf (counts), zero_rows, zero_cols
        (counts of rows/columns that are all zero).
    """
    m, n = X.shape
    size = m * n
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        values = X.data
        implicit_zeros = size - values.size  # the entries a sparse matrix does not store
        nonzero = X.copy()
        nonzero.data = (values != 0).astype(np.int8)
        nonzero.eliminate_zeros()
        row_nz = np.asarray(nonzero.sum(axis=1)).ravel()
        col_nz = np.asarray(nonzero.sum(axis=0)).ravel()
    else:
        X = np.asarray(X)
        values = X.ravel()
        implicit_zeros = 0
        mask = X != 0
        row_nz = mask.sum(axis=1)
        col_nz = mask.sum(axis=0)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    nnz = int(np.count_nonzero(values))
    count_finite = finite.size + implicit_zeros
    if count_finite:
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
        if implicit_zeros:
            low, high = min(low, 0.0), max(high, 0.0)
        mean = float(finite.sum(dtype=np.float64) / count_finite)
    else:
        low = high = mean = None
    return {
        "shape": [int(m), int(n)],
        "dtype": str(np.dtype(dtype) if dtype is not None else X.dtype),
        "sparse": bool(sp.issparse(X)),
        "nnz": nnz,
        "density": nnz / size if size else 0.0,
        "min": low,
        "max": high,
        "mean": mean,
        "negative": int(np.count_nonzero(values < 0)),
        "nan": int(np.count_nonzero(np.isnan(values))) if values.dtype.kind == "f" else 0,
        "inf": int(np.count_nonzero(np.isinf(values))) if values.dtype.kind == "f" else 0,
        "zero_rows": int(np.count_nonzero(row_nz == 0)),
        "zero_cols": int(np.count_nonzero(col_nz == 0)),
    }


def component_names(k: int) -> list[str]:
    """c0 .. c{k-1}: the names of the components in CSV headers and reports."""
    return [f"c{i}" for i in range(int(k))]


def top_features(A, labels=None, top: int = 10) -> list[list[tuple[str, float]]]:
    """For every row of A (k x n), its `top` largest entries as (label, weight), largest first.

    Ties keep the lower column first; zero weights are left out (a component that uses
    fewer than `top` features lists only those). Without labels, the column index is
    the label.
    """
    A = np.asarray(A)
    out = []
    for row in A:
        order = np.argsort(-row, kind="stable")[: max(int(top), 0)]
        out.append([
            (str(labels[j]) if labels is not None else str(int(j)), float(row[j]))
            for j in order
            if row[j] > 0
        ])
    return out


def first_label_mismatch(expected, got):
    """(1-based position, expected label, got label) of the first difference, or None.

    Only the common length is compared; the caller checks the counts.
    """
    if expected is None or got is None:
        return None
    for j, (a, b) in enumerate(zip(expected, got)):
        if str(a) != str(b):
            return j + 1, str(a), str(b)
    return None


def matrix_bytes(X) -> int:
    """Bytes X occupies in memory (a sparse matrix: its data, indices and pointers)."""
    if sp.issparse(X):
        X = sp.csr_matrix(X) if not sp.isspmatrix_csr(X) else X
        return int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)
    return int(np.prod(X.shape, dtype=np.int64)) * np.dtype(X.dtype).itemsize


def fit_memory(X, k: int, dtype=None, beta: float = 2.0, missing=None, weighted=False) -> int:
    """Bytes a fit needs: X (converted to the fit's dtype) plus core's estimate for the rest;
    with ``missing`` (dense X), four more arrays of X's size: X with zeros, the start's X, the
    mask and W·H; ``weighted``, with weights, four: the weights, M⊙X, W·H and the update's
    weighted block M⊙(W·H) (three with ``missing``, which counts W·H already). With either,
    under the Frobenius loss (solver anls, or the exact solve of a fixed factor), the products
    fⱼfⱼᵀ of the larger factor's rows, max(m, n)·k² float64s, and a block of Gram matrices."""
    dtype = np.dtype(dtype) if dtype is not None else np.dtype(X.dtype)
    x_bytes = matrix_bytes(X)
    if not sp.issparse(X) and np.dtype(X.dtype) != dtype:
        x_bytes += int(np.prod(X.shape, dtype=np.int64)) * dtype.itemsize  # the converted copy
    if missing and not sp.issparse(X):
        x_bytes += 4 * matrix_bytes(X)
    if weighted and not sp.issparse(X):
        x_bytes += (3 if missing else 4) * matrix_bytes(X)
    if (missing or weighted) and beta == 2 and not sp.issparse(X):
        x_bytes += (max(X.shape) * int(k) ** 2 + 2 * core.MASKED_GRAM_ENTRIES) * 8
    nnz = int(X.nnz) if sp.issparse(X) else None
    return x_bytes + int(core.estimate_fit_bytes(X.shape, int(k), dtype, nnz=nnz, beta=beta))


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def beta_of(loss) -> float | None:
    """beta for a --loss value (name or number); None when it is neither."""
    aliases = {"frobenius": 2.0, "kl": 1.0, "is": 0.0}
    if isinstance(loss, str) and loss in aliases:
        return aliases[loss]
    try:
        return float(loss)
    except (TypeError, ValueError):
        return None
