"""The beta-divergence family, computed as scikit-learn's ``_beta_divergence`` does.

beta = 2 is half the squared Frobenius norm, 1 the generalised Kullback-Leibler
divergence, 0 Itakura-Saito. Entries of X at or below EPSILON are left out of
the log and ratio terms (0·log 0 = 0), exactly as in scikit-learn.
"""

import numpy as np

from nmfcli.solvers.xp import namespace

EPSILON = float(np.finfo(np.float32).eps)

# Row blocks keep the dense m×n temporaries of W·H to about this many entries.
BLOCK_ENTRIES = 1 << 18  # 2 MiB of float64: temporaries stay in cache

LOSSES = {"frobenius": 2.0, "kl": 1.0, "is": 0.0}
LOSS_ALIASES = {
    "frobenius": 2.0,
    "fro": 2.0,
    "kl": 1.0,
    "kullback-leibler": 1.0,
    "is": 0.0,
    "itakura-saito": 0.0,
}


def row_blocks(m, n, entries=BLOCK_ENTRIES):
    """Slices of rows such that a block of an m×n array has about ``entries`` entries (an
    engine's ``block_entries``: a GPU wants far larger blocks than a CPU's cache holds)."""
    step = max(1, entries // max(n, 1))
    for start in range(0, m, step):
        yield slice(start, min(start + step, m))


def power(xp, base, exponent):
    """base ** exponent, by square roots and products for the half-integers |exponent| ≤ 3 (the
    exponents β − 1 and β − 2 of the β people pick: 0.5, 1.5, 3), each a few roundings from
    the power: 1-2 ns an entry against 16-23 for numpy's float64 power. The numpy engine
    repeats these operations in place (engines.numpy.power_into)."""
    form = POWER_FORMS.get(float(exponent))
    if form is None:
        return base**exponent
    root, factors, reciprocal = form
    value = xp.sqrt(base) if root else None
    for _ in range(factors):
        value = base if value is None else value * base
    return 1.0 / value if reciprocal else value


# exponent: (from a square root, how many more factors of the base, reciprocal)
POWER_FORMS = {sign * (whole + half / 2): (bool(half), whole, sign < 0)
               for sign in (1, -1) for whole in range(4) for half in (0, 1) if 0 < whole + half / 2 <= 3}


def squared_error(engine, W, H):
    """‖X − WH‖² in float64 whatever X's dtype: row block by row block for dense X (no
    cancellation); for sparse X by the trace formula ‖X‖² − 2⟨XHᵀ, W⟩ + ⟨WᵀW, HHᵀ⟩ in float64,
    and again block by block (densified) where the trace formula cannot resolve the answer:
    below CANCELLATION·‖X‖² its rounding (ε‖X‖²) would be more than 1e-6 of it."""
    xp = namespace(W)
    W64, H64 = xp.astype(W, xp.float64), xp.astype(H, xp.float64)
    X = engine.X
    if engine.is_sparse:
        cross = float(xp.sum(engine.sparse_XV(H64.T) * W64, dtype=xp.float64))
        norm_WH = float(xp.sum((W64.T @ W64) * (H64 @ H64.T), dtype=xp.float64))
        total = engine.sqnorm() - 2.0 * cross + norm_WH
        if total > CANCELLATION * engine.sqnorm():
            return total
    total = 0.0
    for rows in row_blocks(*X.shape, engine.block_entries):
        block = X[rows, :].toarray() if engine.is_sparse else X[rows, :]
        D = xp.astype(xp.asarray(block), xp.float64) - W64[rows, :] @ H64
        total += float(xp.sum(D * D, dtype=xp.float64))
    return total


# Below this share of ‖X‖², the trace formula's rounding is too large a part of ‖X − WH‖².
CANCELLATION = 1e-6


def reconstruction_error(divergence):
    """scikit-learn's reconstruction error √(2·D) (its ``_beta_divergence(..., square_root=True)``)."""
    return float(np.sqrt(2 * max(divergence, 0.0)))


def beta_divergence(engine, W, H, beta):
    """D_beta(X ‖ WH), equal to scikit-learn's ``_beta_divergence``."""
    xp = namespace(W)
    beta = float(beta)
    if beta == 2:
        return squared_error(engine, W, H) / 2.0

    if engine.is_sparse:
        res = _divergence_terms(xp, engine.X.data, engine.WH_at_X(W, H), beta)
        if beta not in (0.0, 1.0):
            sum_WH_beta = 0.0
            for rows in row_blocks(W.shape[0], H.shape[1], engine.block_entries):
                sum_WH_beta += float(xp.sum(power(xp, W[rows, :] @ H, beta), dtype=xp.float64))
            res = _finish_beta(res, sum_WH_beta, beta)
    else:
        res, sum_WH_beta = engine.divergence_sums(W, H, beta)
        if beta not in (0.0, 1.0):
            res = _finish_beta(res, sum_WH_beta, beta)

    if beta == 1:
        res += float(xp.sum(xp.sum(W, axis=0) * xp.sum(H, axis=1), dtype=xp.float64))
    elif beta == 0:
        res -= float(np.prod(engine.shape))
    return res


def dense_divergence_sums(engine, W, H, beta):
    """(the entry terms of the divergence, Σ (WH)^β or 0.0 for β in {0, 1}) over dense X, by row blocks."""
    xp = namespace(W)
    X = engine.X
    res = 0.0
    sum_WH_beta = 0.0
    for rows in row_blocks(*X.shape, engine.block_entries):
        WH = W[rows, :] @ H
        if beta not in (0.0, 1.0):
            sum_WH_beta += float(xp.sum(power(xp, WH, beta), dtype=xp.float64))
        res += _divergence_terms(xp, X[rows, :], WH, beta)
    return res, sum_WH_beta


def _divergence_terms(xp, X, WH, beta):
    """The parts of the divergence that live on the entries of X above EPSILON.

    Entries at or below EPSILON are left out (0·log 0 = 0), as in scikit-learn;
    here by replacing them with neutral values rather than by a boolean selection,
    so the shape never depends on the data.
    """
    keep = X > EPSILON
    WH = xp.where(keep, xp.maximum(WH, EPSILON), 1.0)
    X_kept = xp.where(keep, X, 0.0)
    if beta == 1:
        # Σ X·log(X/WH) − Σ X; the Σ WH term is added once for the whole matrix.
        ratio = xp.where(keep, X, 1.0) / WH
        return float(xp.sum(X_kept * xp.log(ratio), dtype=xp.float64)) - float(xp.sum(X_kept, dtype=xp.float64))
    if beta == 0:
        div = xp.where(keep, X / WH, 1.0)
        n_left_out = float(xp.sum(xp.astype(~keep, X.dtype), dtype=xp.float64))
        return float(xp.sum(div, dtype=xp.float64)) - n_left_out - float(xp.sum(xp.log(div), dtype=xp.float64))
    # Partial sums of (Σ X^β − β Σ X·WH^(β−1)); the Σ WH^β term is added in _finish_beta.
    X_safe = xp.where(keep, X, 1.0)  # no 0 ** negative
    return float(xp.sum(xp.where(keep, power(xp, X_safe, beta), 0.0), dtype=xp.float64)) - beta * float(
        xp.sum(X_kept * power(xp, WH, beta - 1), dtype=xp.float64))


def _finish_beta(partial, sum_WH_beta, beta):
    return (partial + sum_WH_beta * (beta - 1)) / (beta * (beta - 1))


def parse_loss(loss):
    """(name, beta) for 'frobenius' | 'kl' | 'is' | their long names | a real number."""
    if isinstance(loss, (int, float, np.floating, np.integer)) and not isinstance(loss, bool):
        beta = float(loss)
    else:
        key = str(loss).strip().lower()
        if key in LOSS_ALIASES:
            beta = LOSS_ALIASES[key]
        else:
            try:
                beta = float(key)
            except ValueError:
                return None
    if not np.isfinite(beta):
        return None
    name = {2.0: "frobenius", 1.0: "kl", 0.0: "is"}.get(beta, f"beta={beta:g}")
    return name, beta
