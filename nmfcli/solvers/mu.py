"""Multiplicative updates for the beta-divergence family (Lee & Seung 2001; Févotte & Idier 2011).

The same semantics as scikit-learn's ``solver="mu"``: its EPSILON clamps, the
exponent γ of the maximisation-minimisation step for β < 1 and β > 2, the
thresholding of tiny entries for β ≤ 1, and its stopping rule (every 10
iterations, stop when the decrease of √(2·D) relative to its initial value is
below tol).
"""

import numpy as np

from nmfcli.solvers.losses import EPSILON, power
from nmfcli.solvers.xp import in_dtype, namespace, scalar

CHECK_EVERY = 10
# emu's extrapolation (extrapolate): the first step's β, and the most an entry's last step
# (its ratio to the one before) is taken to have been, up or down. Measured on digits, faces
# and pydoc TF-IDF at k = 10-50 (iterations to scikit-learn's divergence, against mu's
# 50-200): without the limit, β₀ = 0.5 took 230 on digits k = 30 (mu 200), as entries
# falling fast were pushed towards zero, which multiplicative steps leave only slowly;
# limits of 10, 3, 2 and 1.5 gave 150, 110, 90 and 80 there, and 2 cost nothing elsewhere.
EMU_BETA_START = 0.3
EMU_MAX_RATIO = 2.0
FLOAT64_EPS = float(np.finfo(np.float64).eps)


def gamma_for(beta):
    """The MM exponent that makes each update non-increasing (Févotte & Idier 2011)."""
    if beta < 1:
        return 1.0 / (2.0 - beta)
    if beta > 2:
        return 1.0 / (beta - 1.0)
    return 1.0


def converged(state, error, tol):
    """scikit-learn's stop, tested every CHECK_EVERY iterations: the error √(2·D) fell by less than
    tol times its value at the initial factors since the last test (never when tol is 0).

    ``state`` holds "error_at_init" and "previous_error"; the latter is updated here. An
    error of 0 at the initial factors (they reproduce X exactly) has nothing left to fall:
    done (scikit-learn divides by it, gets NaN, and runs to max_iter).
    """
    if not tol > 0:
        return False
    at_init = state["error_at_init"]
    done = (state["previous_error"] - error) / at_init < tol if at_init > 0 else True
    state["previous_error"] = error
    return done


def update_W(engine, W, H, beta, l1, l2, gamma, cache, keep_cache, bound=False):
    """One multiplicative update of W (m×k), in place. ``cache`` holds products of a fixed H.

    ``bound``: as update_H's, for W (an upper bound of D + c + l1·ΣW at the updated W).
    """
    xp = namespace(W)
    result = None
    if beta == 2:
        XHt = cache.get("XHt")
        if XHt is None:
            XHt = engine.XHt(H)
        numerator = XHt
        HHt = cache.get("HHt")
        if HHt is None:
            HHt = H @ H.T
        if keep_cache:
            cache["XHt"], cache["HHt"] = XHt, HHt
        denominator = W @ HHt
    else:
        # with the divergence's terms where KL's and Itakura-Saito's bound reads them
        products = engine.mu_products(W, H, beta, "W", divergence=bound and beta in (0, 1))
        numerator, denominator = products[0], products[1]
        if beta == 1:
            H_sum = cache.get("H_sum")
            if H_sum is None:
                H_sum = xp.sum(H, axis=1)
            if keep_cache:
                cache["H_sum"] = H_sum
            denominator = H_sum[None, :]  # broadcast by the division
    step = _step(xp, W, numerator, denominator, l1, l2, gamma)
    if bound:
        result = _bound(xp, W, H, W, products[2:], numerator, denominator, step, beta, l1, l2)
    W *= step
    if beta < 1:
        W[...] = xp.where(W < FLOAT64_EPS, 0.0, W)
    return result


def update_H(engine, W, H, beta, l1, l2, gamma, bound=False):
    """One multiplicative update of H (k×n), in place.

    With ``bound`` (β ≠ 2), returns an upper bound of D(X ‖ WH) + c + l1·ΣH at the updated H,
    c = ΣX for KL, m·n for Itakura-Saito and −ΣX^β / (β(β − 1)) for other β: the
    divergence where the update started, measured on the arrays it forms anyway (for KL and
    Itakura-Saito their logs, in float32: engine.mu_products; for other β two inner
    products, which cost no pass over X), less what the step is sure to gain (_kl_gain,
    _is_gain, _beta_gain).
    """
    xp = namespace(H)
    result = None
    if beta == 2:
        numerator = engine.WtX(W)
        denominator = (W.T @ W) @ H  # the order numpy's multi_dot picks for k < m
    else:
        # with the divergence's terms where KL's and Itakura-Saito's bound reads them
        products = engine.mu_products(W, H, beta, "H", divergence=bound and beta in (0, 1))
        numerator, denominator = products[0], products[1]
        if beta == 1:
            W_sum = xp.sum(W, axis=0)
            W_sum = xp.where(W_sum == 0, 1.0, W_sum)
            denominator = W_sum[:, None]
    step = _step(xp, H, numerator, denominator, l1, l2, gamma)
    if bound:
        result = _bound(xp, W, H, H, products[2:], numerator, denominator, step, beta, l1, l2)
    H *= step
    if beta <= 1:
        H[...] = xp.where(H < FLOAT64_EPS, 0.0, H)
    return result


def _bound(xp, W, H, A, terms, numerator, denominator, step, beta, l1, l2):
    """update_W's and update_H's ``bound``, before their ``step`` on A (W or H, times step):
    D + c + l1·ΣA at (W, H), less what the step is sure to gain (nothing is sure under the L2
    penalty, whose update is a heuristic). ``terms``: for KL and Itakura-Saito a 1-tuple,
    the divergence's terms there (engine.mu_products); empty for other β."""
    result = l1 * scalar(xp, xp.sum(A, dtype=xp.float64))
    if beta == 1:  # D + ΣX = Σ X·log(X/WH) + ΣWH, and ΣWH = Σₜ (Σ W[:, t])·(Σ H[t, :])
        result += terms[0] + scalar(xp, xp.sum(xp.sum(W, axis=0) * xp.sum(H, axis=1), dtype=xp.float64))
    elif beta == 0:
        result += terms[0]
    else:
        # β(β−1)·D = ΣX^β + (β−1)·Σ(WH)^β − β·ΣX·(WH)^(β−1), and the two sums are inner products
        # of A with the update's products: WH is Σₜ A's entries times the other factor's, so
        # ⟨A, denominator⟩ = Σ (WH)^(β−1)·WH and ⟨A, numerator⟩ = Σ X·(WH)^(β−2)·WH (where WH is
        # at least EPSILON, below which scikit-learn's clamps make them differ negligibly).
        result += scalar(xp, (beta - 1) * xp.sum(A * denominator, dtype=xp.float64) - beta * xp.sum(A * numerator, dtype=xp.float64)) / (beta * (beta - 1))
    if not l2 > 0:
        if beta == 1:
            result -= _kl_gain(xp, A, numerator, denominator + l1, step)
        elif beta == 0:
            result -= _is_gain(xp, A, _guard(xp, denominator + l1), step)
        else:
            result -= _beta_gain(xp, A, numerator, denominator, step, beta, l1)
    return result


def _kl_gain(xp, A, numerator, denominator, delta):
    """What the KL multiplicative step A' = A·δ, δ = numerator / denominator, is sure to lower
    D(X ‖ WH) + l1·ΣA by, for A = H (denominator = Σ W[:, t] + l1, k×1) or W (likewise, 1×k):
    Σ denominator·A·(δ·log δ − δ + 1) ≥ 0.

    From Jensen's inequality, the majorisation the update minimises (Lee & Seung 2001), for H:
    D(H') ≤ D(H) − Σ H·(Wᵀ(X/WH))·log(H'/H) + Σ denominator·(H' − H), and H·(Wᵀ(X/WH)) is
    denominator·H' for this step; for W the same with the roles swapped. On the factor's
    entries only.
    """
    # = Σ A·numerator·log δ − Σ A·numerator + Σ denominator·A, in fewer passes; a zero of δ
    # is a zero of A·numerator, so raising δ to the smallest normal number changes nothing.
    weighted = A * numerator
    log_delta = xp.log(xp.maximum(delta, xp.finfo(A.dtype).smallest_normal))
    return scalar(xp, xp.sum(weighted * log_delta, dtype=xp.float64) - xp.sum(weighted, dtype=xp.float64) + xp.sum(denominator * A, dtype=xp.float64))


def _is_gain(xp, A, denominator, r):
    """What the Itakura-Saito multiplicative step A' = A·r, r = (numerator / denominator)^½, is
    sure to lower D(X ‖ WH) + l1·ΣA by, for A = H (denominator = Wᵀ(1/WH) + l1) or W (likewise):
    Σ denominator·A·(r − 1)².

    The majorisation the update minimises (Févotte & Idier 2011): Jensen's inequality on the
    convex part X/WH, the tangent on the concave part log WH, which give for H
    D(H') ≤ D(H) + Σ [H²·numerator/H' − H·numerator + (H' − H)·denominator]; with
    numerator = r²·denominator that is −Σ denominator·H·(r − 1)². On the factor's entries only.
    """
    return scalar(xp, xp.sum(denominator * A * (r - 1.0) ** 2, dtype=xp.float64))


def _beta_gain(xp, A, numerator, denominator, r, beta, l1):
    """What the multiplicative step A' = A·r, r = (numerator / (denominator + l1))^γ, is sure to
    lower D(X ‖ WH) + l1·ΣA by, for β other than 0, 1 and 2: Σ A·(g(1) − g(r)), where A·g(r)
    is the majorisation the update minimises (Févotte & Idier 2011) at A·r, on each entry.

    With p = denominator, q = numerator: Jensen's inequality on the convex parts, the tangent
    on the concave ones, give g(r) = (p + l1)·r − q·r^(β−1)/(β−1) for β < 1, p·r^β/β + l1·r −
    q·r^(β−1)/(β−1) for 1 < β < 2, and p·r^β/β + l1·r − q·r for β > 2. For β < 1 the step is
    g's minimiser (q = (p + l1)·r^(2−β)); for β > 1 with l1 it is not (scikit-learn's update),
    and the gain is g's at the step taken. On the factor's entries only.
    """
    if beta < 1:
        total = _guard(xp, denominator + l1)
        gain = (total * ((beta - 1) - (beta - 2) * r) - numerator) / (beta - 1)
    else:
        powered = power(xp, r, beta - 1)
        gain = denominator * (1.0 - powered * r) / beta + l1 * (1.0 - r)
        gain = gain - numerator * ((1.0 - powered) / (beta - 1) if beta < 2 else 1.0 - r)
    return scalar(xp, xp.sum(A * gain, dtype=xp.float64))


def _step(xp, A, numerator, denominator, l1, l2, gamma):
    """What A is multiplied by: (numerator / denominator)^γ, with scikit-learn's penalties and zero guard."""
    if l1 > 0:
        denominator = denominator + l1
    if l2 > 0:
        denominator = denominator + l2 * A
    delta = numerator / _guard(xp, denominator)
    if gamma != 1:
        delta = delta**gamma
    return delta


def _guard(xp, denominator):
    return xp.where(denominator == 0, EPSILON, denominator)


def extrapolate(A, before, beta):
    """A·r^β with r = A / before clipped to [1/EMU_MAX_RATIO, EMU_MAX_RATIO], written over
    ``before`` (returned): emu's extrapolation, along the last step in log coordinates, which
    is how a multiplicative update moves. Zeros stay zero, as under the updates themselves,
    and no entry becomes negative; where ``before`` is 0 the entry is kept (r = 1)."""
    if isinstance(A, np.ndarray):
        # In float32 (the extrapolated point needs no more precision), as exp(β·log): about
        # 6 ns an entry against 15 for float64's power. The other namespaces below do the same.
        ratio = np.empty(A.shape, np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(A, before, out=ratio, casting="same_kind")
            ratio[before == 0] = 1.0
            np.clip(ratio, np.float32(1 / EMU_MAX_RATIO), np.float32(EMU_MAX_RATIO), out=ratio)
            np.log(ratio, out=ratio)
            ratio *= np.float32(beta)  # a Python float or a 0-d array alike
            np.exp(ratio, out=ratio)
        return np.multiply(A, ratio, out=before)
    xp = namespace(A)
    positive = before > 0
    ratio = xp.astype(xp.where(positive, A / xp.where(positive, before, 1.0), 1.0), xp.float32)
    ratio = xp.exp(in_dtype(xp, beta, xp.float32) * xp.log(xp.clip(ratio, 1 / EMU_MAX_RATIO, EMU_MAX_RATIO)))
    before[...] = A * xp.astype(ratio, A.dtype)
    return before
