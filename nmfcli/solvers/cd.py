"""Coordinate descent (scikit-learn's ``cd``) and accelerated HALS, plain and extrapolated, for the Frobenius loss.

Both minimise ½‖X − WH‖² + l1_W‖W‖₁ + ½ l2_W‖W‖² + (the same for H) by exact
minimisation over one row of a factor at a time (Cichocki & Phan 2009). Row t of
Wᵀ depends only on Wᵀ, HHᵀ and HXᵀ, so one sweep over the k rows is the same
arithmetic as scikit-learn's Cython loop over (t, i), vectorised over i.

Factors are kept k-major (Wᵀ is k×m, H is k×n, both C-ordered) so each update
reads and writes a contiguous row.

The code is written once against the array API (numpy, CuPy, or a strict
stand-in): no ``out=`` arguments, no boolean-mask assignment, and no Python
branching on array values inside a sweep, so nothing waits for the GPU there.
"""

import numpy as np

from nmfcli.solvers.xp import in_dtype, namespace, scalar


def sweep(A, G, R, violation=True):
    """Update the rows of A (k×p) in place; return the ℓ1 norm of the projected gradient.

    Minimises ½ tr(AᵀGA) − tr(RᵀA) over A ≥ 0, one row at a time, in order.
    The returned "violation" is scikit-learn's: |grad| where a > 0, |min(grad, 0)| where a = 0
    (0.0 when ``violation`` is False, which saves three passes over the row). It is
    a 0-d array of A's namespace, so a GPU is not waited for here.
    """
    xp = namespace(A)
    hess = xp.linalg.diagonal(G)
    # A row whose Hessian is zero is left as it is (as scikit-learn does). numpy asks whether
    # there is one, once a sweep; elsewhere asking would wait for the device, so every row
    # takes the guarded form, which gives the same numbers.
    any_flat = bool(np.any(hess == 0)) if xp is np else True
    total = 0.0
    for t in range(A.shape[0]):
        a = A[t, :]
        grad = G[t, :] @ A - R[t, :]
        if violation:
            total = total + xp.sum(xp.abs(xp.where(a == 0, xp.minimum(grad, 0.0), grad)))
        if any_flat:
            h = hess[t]
            step = grad / xp.where(h != 0, h, 1.0)
            A[t, :] = xp.where(h != 0, xp.maximum(a - step, 0.0), a)
        else:
            A[t, :] = xp.maximum(a - grad / hess[t], 0.0)
    return total


def frobenius_objective(sqnorm_X, WtX, H, WtW, HHt):
    """½‖X − WH‖² from products already at hand: ½(‖X‖² − 2⟨WᵀX, H⟩ + ⟨WᵀW, HHᵀ⟩).

    A float for numpy arrays; for another namespace's (a GPU's), a 0-d float64 array,
    so the loop does not wait for the device every iteration (``float()`` reads it).
    """
    xp = namespace(H)
    value = 0.5 * (sqnorm_X - 2.0 * _sum64(xp, WtX * H) + _sum64(xp, WtW * HHt))
    return max(value, 0.0) if xp is np else xp.maximum(value, xp.zeros_like(value))


def penalty(A, l1, l2):
    """l1‖A‖₁ + ½ l2‖A‖² for a non-negative factor A (a float, or a 0-d float64 array as above)."""
    xp = namespace(A)
    value = 0.0
    if l1:
        value = value + l1 * _sum64(xp, A)
    if l2:
        value = value + 0.5 * l2 * _sum64(xp, A * A)
    return value


def _sum64(xp, a):
    """Σa accumulated in float64 whatever a's dtype, as a float (numpy), or as a 0-d float64
    array that nothing waits for."""
    return scalar(xp, xp.sum(a, dtype=xp.float64))


def cd_iteration(engine, Wt, H, reg, HHt=None):
    """One outer iteration of scikit-learn's coordinate descent (shuffle=False).

    Returns (violation, objective, HHt of the new H) — the last is reused next time.
    """
    l1_W, l1_H, l2_W, l2_H = reg
    if HHt is None:
        HHt = H @ H.T
    G, R = gram_and_cross_from(HHt, engine.HXt(H), l1_W, l2_W)
    violation = sweep(Wt, G, R)

    WtW = Wt @ Wt.T
    WtX = engine.WtX(Wt.T)
    G, R = gram_and_cross_from(WtW, WtX, l1_H, l2_H)
    violation += sweep(H, G, R)

    HHt = H @ H.T
    objective = frobenius_objective(engine.sqnorm(), WtX, H, WtW, HHt)
    objective += penalty(Wt, l1_W, l2_W) + penalty(H, l1_H, l2_H)
    return float(violation), objective, HHt


def gram_and_cross_from(G0, FXt, l1, l2):
    """Add the penalties to a Gram matrix and cross term computed elsewhere (new arrays, never in place).

    L2 adds to the diagonal of the Gram matrix (of each, for a stack of them), L1 subtracts
    from every cross term.
    """
    xp = namespace(G0)
    G = G0 + l2 * xp.eye(G0.shape[-1], dtype=G0.dtype) if l2 else G0
    R = FXt - l1 if l1 else FXt
    return G, R


# Rough costs on a current CPU: BLAS products run near 10 GFLOP/s, a sweep's
# elementwise work near 1 GFLOP/s, and each numpy call costs a few microseconds.
_PRODUCT_FLOPS_PER_S = 1e10
_SWEEP_FLOPS_PER_S = 1e9
_CALL_OVERHEAD_S = 5e-6
MAX_INNER = 100
# Never fewer than this many: measured on the bench cases (digits, faces, image
# patches), a floor of 5 cut the outer iterations to scikit-learn's error 2-5×
# (e.g. 147 -> 29 on 20000×64 patches, k=10) and the time by 10-45%; the inner
# stopping rule (delta) ends the sweeps early where they stop paying.
MIN_INNER = 5
# ...but with extrapolation (ehals) the floor falls where the sweeps cost more than the rest of
# an iteration: to 1 + EXTRAPOLATED_FLOOR_SLOPE·ρ₂, ρ₂ = (the two products + the iteration's
# other calls) / (a sweep of Wᵀ + a sweep of H), in the model below. There the outer
# iterations, each one extrapolated, buy more than the last inner sweeps: to scikit-learn's
# error, faces (100×625) k = 50 took 49 iterations of 3 + 3 sweeps against 42 of 5 + 5,
# 1.17-1.30× sooner; digits k = 50 1.27×, faces k = 40 (4 sweeps) 1.46×, image patches k = 50
# (3 sweeps of Wᵀ) 1.15×. Where ρ₂ is larger, 5 stays: 4 sweeps made faces k = 30 0.91× as
# fast, 3 made faces k = 10 take 55 iterations instead of 23, and on small data the other
# calls dominate. Plain hals keeps 5: with 3 it took 0.85-1.08× the time on the same cases.
EXTRAPOLATED_FLOOR_SLOPE = 5.0
_ITERATION_CALLS = 50  # an outer iteration's calls besides the sweeps: Grams, scalings, objective


def inner_sweep_limits(m, n, k, extrapolated=False):
    """How many sweeps of Wᵀ and of H one product with X buys (Gillis & Glineur 2012: 1 + α·ρ,
    α = 0.5), at least MIN_INNER (for ehals, ``extrapolated``: see EXTRAPOLATED_FLOOR_SLOPE).

    ρ is the ratio of the time of the product (2·m·n·k flops) to that of one sweep over the
    factor (k² flops an entry of its k-major rows, plus per-row call overhead, which
    dominates for small factors in numpy). Depends on the shape only.
    """
    t_product = 2.0 * m * n * k / _PRODUCT_FLOPS_PER_S
    t_sweeps = [k * (_CALL_OVERHEAD_S + rows * (k + 8) / _SWEEP_FLOPS_PER_S) for rows in (m, n)]
    floor = MIN_INNER
    if extrapolated:
        rest = 2.0 * t_product + _ITERATION_CALLS * _CALL_OVERHEAD_S
        floor = min(floor, 1 + EXTRAPOLATED_FLOOR_SLOPE * rest / sum(t_sweeps))
    return tuple(int(min(MAX_INNER, max(floor, 1 + 0.5 * t_product / t))) for t in t_sweeps)


def projected_gradient_norm(A, G, R):
    """‖P[∇]‖₁ of ½ tr(AᵀGA) − tr(RᵀA) at A ≥ 0: |∇| where a > 0, |min(∇, 0)| where a = 0."""
    xp = namespace(A)
    grad = G @ A - R
    return xp.sum(xp.abs(xp.where(A == 0, xp.minimum(grad, 0.0), grad)))


def block_sweeps(A, G, R, max_inner, delta, sweeps=None):
    """Sweep A until a sweep changes it by less than delta times the first change (Gillis & Glineur).

    The same minimisation as ``sweep``, in a form with fewer operations per row:
    with D the diagonal of G, row t becomes max(0, (D⁻¹R)ₜ − (D⁻¹G − I)ₜ·A), the
    identity moved out of the product (a row whose Hessian is zero keeps its value).
    ``sweeps(A, Gs, Rs, max_inner, delta)`` runs the loop (default ``inner_sweeps``); an
    engine may run it on its device, stopping there without a round trip per sweep.
    """
    Gs, Rs = _scaled(G, R)
    (sweeps or inner_sweeps)(A, Gs, Rs, max_inner, delta)


def inner_sweeps(A, Gs, Rs, max_inner, delta, sweep=None):
    """Up to max_inner scaled sweeps of A in place; stop after one that changes A by ≤ delta × the first change.

    ``sweep``: _sweeper(A, Gs, Rs), made already.
    """
    sweep = sweep or _sweeper(A, Gs, Rs)
    previous = None
    first_change = None
    for sweeps in range(1, max_inner + 1):
        if sweeps == max_inner:  # the last one needs no measure
            sweep()
            break
        previous = copy_into(previous, A)
        sweep()
        change = _squared_change(A, previous)  # the inner stopping rule's one scalar
        if first_change is None:
            first_change = change
        if change <= delta * delta * first_change or first_change == 0:
            break


def copy_into(buffer, A):
    """A copy of A, written into ``buffer`` (returned; no allocation per call), or a new array when buffer is None."""
    if buffer is None:
        return namespace(A).asarray(A, copy=True)
    if isinstance(A, np.ndarray):
        np.copyto(buffer, A)
    else:
        buffer[...] = A
    return buffer


def _squared_change(A, previous):
    """‖A − previous‖² as a Python float (numpy: computed in ``previous``, which it overwrites)."""
    if isinstance(A, np.ndarray):
        diff = np.subtract(A, previous, out=previous).ravel()
        return float(np.dot(diff, diff))
    diff = A - previous
    return float(namespace(A).sum(diff * diff))


def _scaled(G, R):
    """(D⁻¹G − I, D⁻¹R) for D = diag(G); a row with D = 0 gets −eₜ and 0, so its update keeps it.

    One form for every case, without asking whether a row is flat (on a GPU asking waits).
    """
    xp = namespace(G)
    inverse = _inverse_hessian(xp, G)
    return G * inverse - xp.eye(G.shape[0], dtype=G.dtype), R * inverse


def _inverse_hessian(xp, G):
    """D⁻¹ as a column (k×1), 0 where D = diag(G) is 0 or subnormal (its reciprocal would
    overflow, and the row's update become inf·0 = NaN: such a row is kept as it is)."""
    hess = xp.linalg.diagonal(G)
    flat = hess < float(xp.finfo(G.dtype).smallest_normal)
    return xp.where(flat, 0.0, 1.0 / xp.where(flat, 1.0, hess))[:, None]


class KeptSweeps:
    """block_sweeps for numpy factors swept again and again (a fit's), bit for bit: D⁻¹G − I and
    D⁻¹R are written into buffers kept for their shapes, and the row operands of each factor
    buffer's sweep (_sweeper) are made once, not every iteration. At k = 50 on a 100×625
    matrix those were a tenth of an ehals iteration (65 of 600 µs a factor's sweeps)."""

    # Factor buffers whose sweeps are kept (a fit has two per factor, ehals's iterate and the one before)
    MAX_KEPT = 8

    def __init__(self):
        self._scaled = {}  # (shapes, dtypes) -> (Gs, Rs)
        self._sweeps = {}  # id(A) -> (A, Gs, Rs, sweep)

    def __call__(self, A, G, R, max_inner, delta):
        inverse = _inverse_hessian(np, G)
        Gs, Rs = self._buffers(G, R, inverse)
        np.multiply(G, inverse, out=Gs)
        Gs.reshape(-1)[:: Gs.shape[0] + 1] -= 1  # − I: x − 0 is x, so the same bits as _scaled's
        np.multiply(R, inverse, out=Rs)
        kept = self._sweeps.get(id(A))
        if kept is None or kept[0] is not A or kept[1] is not Gs or kept[2] is not Rs:
            if len(self._sweeps) >= self.MAX_KEPT:
                self._sweeps.clear()
            kept = self._sweeps[id(A)] = (A, Gs, Rs, _sweeper(A, Gs, Rs))
        inner_sweeps(A, Gs, Rs, max_inner, delta, kept[3])

    def _buffers(self, G, R, inverse):
        shapes, dtypes = (G.shape, R.shape), (np.result_type(G, inverse), np.result_type(R, inverse))
        if (shapes, dtypes) not in self._scaled:
            self._scaled[shapes, dtypes] = tuple(map(np.empty, shapes, dtypes))
        return self._scaled[shapes, dtypes]


def _sweeper(A, Gs, Rs):
    """A function that sweeps A in place, row by row: A[t] ← max(0, Rs[t] − Gs[t]·A) (Gs with a
    zero diagonal but for flat rows). Made once for the inner sweeps that share A, Gs and Rs."""
    if not isinstance(A, np.ndarray):
        xp = namespace(A)

        def sweep():
            for t in range(A.shape[0]):
                A[t, :] = xp.maximum(Rs[t, :] - Gs[t, :] @ A, 0.0)
        return sweep
    # numpy, where a small factor's sweep costs its calls: in place, two calls a row besides
    # the product, whose operands (row views, the bound ndarray.dot, ~1 µs a call cheaper than
    # @ for the same gemv and bits) are made once for all the sweeps; and max against zeros of
    # A's dtype: a row of them for long rows (numpy's max against a scalar is not vectorised:
    # 2.7 against 0.9 µs for 3677 float32 entries), else a 0-d zero, which numpy takes without
    # converting a Python float on every call.
    rows = [(a, g.dot, r) for a, g, r in zip(A, Gs, Rs)]
    zero = np.zeros(A.shape[1] if A.shape[1] >= 512 else (), dtype=A.dtype)
    subtract, maximum = np.subtract, np.maximum

    def sweep():
        for a, dot, r in rows:
            subtract(r, dot(A), out=a)
            maximum(a, zero, out=a)
    return sweep


def cd_converged(state, violation, tol):
    """scikit-learn's cd stop: its sweep's violation / the first iteration's <= tol (``state`` keeps the first)."""
    if state["violation_init"] is None:
        state["violation_init"] = violation
    return state["violation_init"] == 0 or violation / state["violation_init"] <= tol


# hals measures its projected gradient (a pass as costly as a sweep over each
# factor) at iteration 2, the reference, then every CHECK_EVERY iterations, as
# scikit-learn's mu checks its error: measured every iteration it cost 30% of a
# fit on small data.
CHECK_EVERY = 10


def hals_check_due(n_iter, violation_init):
    """Does hals measure its projected gradient at the start of iteration n_iter?"""
    return n_iter >= 2 and (violation_init is None or n_iter % CHECK_EVERY == 0)


def hals_converged(state, violation, tol):
    """hals's stop: cd's test on the projected gradient, from iteration 2 on (None: not measured).

    The reference is taken after one iteration, not at the initial factors, whose
    scale (nndsvda's fill) would make the test stop far too early. ``state`` keeps
    the reference ("violation_init") and is updated here. A stop on the decrease
    of the objective would be cheaper, but ½‖X − WH‖² computed from Gram matrices
    cannot resolve errors below about √ε·‖X‖, so it could not reach a tight tol.
    """
    return violation is not None and cd_converged(state, violation, tol)


def hals_iteration(engine, Wt, H, reg, cache, inner, check=False, delta=0.1):
    """One outer iteration of accelerated HALS: one product with X per factor, several sweeps.

    Returns (violation, objective): when ``check``, the ℓ1 norm of the projected
    gradient of both factors at the point the iteration started from, from the
    products the iteration needs anyway (the previous iteration's WᵀX and WᵀW are
    those of the current W), else None; and the objective after the iteration.
    ``cache`` carries HHᵀ, WᵀW and WᵀX between iterations (empty after a resume,
    when a check computes the two it needs).
    """
    l1_W, l1_H, l2_W, l2_H = reg
    HHt = cache.get("HHt")
    if HHt is None:
        HHt = H @ H.T
    violation = None
    if check:
        if "WtX" not in cache:
            cache.update(WtW=Wt @ Wt.T, WtX=engine.WtX(Wt.T))
        G, R = gram_and_cross_from(cache["WtW"], cache["WtX"], l1_H, l2_H)
        violation = projected_gradient_norm(H, G, R)
    G, R = gram_and_cross_from(HHt, engine.HXt(H), l1_W, l2_W)
    if violation is not None:
        violation = float(violation + projected_gradient_norm(Wt, G, R))
    with engine.sweeping(Wt):
        engine.block_sweeps(Wt, G, R, inner[0], delta)

    WtW = Wt @ Wt.T
    WtX = engine.WtX(Wt.T)
    G, R = gram_and_cross_from(WtW, WtX, l1_H, l2_H)
    with engine.sweeping(H):
        engine.block_sweeps(H, G, R, inner[1], delta)

    HHt = H @ H.T
    cache.update(HHt=HHt, WtW=WtW, WtX=WtX)
    objective = frobenius_objective(engine.sqnorm(), WtX, H, WtW, HHt)
    return violation, objective + penalty(Wt, l1_W, l2_W) + penalty(H, l1_H, l2_H)


# ehals: HALS with extrapolation (Ang & Gillis 2019, "Accelerating nonnegative matrix
# factorization algorithms using extrapolation"). Each iteration starts from the
# last accepted factors pushed further along their last step, max(0, A + β(A − A_before)),
# and runs one HALS iteration from there; the result is kept only if the objective did
# not rise (beyond the rounding of its evaluation, ε‖X‖², core._ehals_loop), so the
# objective never rises beyond that. β grows by GAMMA after a kept step (up to a cap
# that grows by GAMMA_BAR, at most 1) and falls by ETA after a rejected one, whose
# cap becomes the β that failed. The iterations that measure the projected gradient
# (hals_check_due) are plain HALS, so the measure comes from the products they compute.
# Measured on the bench cases: half the outer iterations of plain hals to the same error.
BETA_START, GAMMA, GAMMA_BAR, ETA = 0.7, 1.05, 1.01, 1.5


def extrapolate(A, before, beta):
    """max(0, A + beta·(A − before)), written over ``before`` (returned).

    In place on every namespace, so a device factor keeps its two buffers (and
    the CuPy engine its recorded sweeps, which are kept per buffer).
    """
    if isinstance(before, np.ndarray):
        np.subtract(A, before, out=before)
        before *= A.dtype.type(beta)  # in A's dtype, as a Python float β would be
        before += A
        return np.maximum(before, 0.0, out=before)
    xp = namespace(A)
    beta = in_dtype(xp, beta, A.dtype)
    before[...] = xp.maximum(A + beta * (A - before), 0.0)
    return before


def step_kept(state, plain, value, reference, slack):
    """ehals's and emu's test of a step: a plain one is always kept (it never raises the
    objective or bound), an extrapolated one if ``value`` is at most ``reference`` + ``slack``,
    which also updates the extrapolation's β in ``state`` (ehals_beta)."""
    if plain:
        return True
    kept = bool(value <= reference + slack)
    ehals_beta(state, kept)
    return kept


def step_kept_on_device(xp, state, value, reference, slack, plain=None):
    """step_kept for an extrapolated step, decided where the arrays live: a 0-d bool array,
    which nothing waits for. ``state``'s β and its cap become 0-d float64 arrays (ehals_beta's
    arithmetic, the same bits). ``plain``: a 0-d bool array, true where the step was plain
    after all (emu's, after a rejection): kept, β left as it is."""
    beta, cap = (xp.asarray(state[key], dtype=xp.float64) for key in ("beta", "beta_cap"))
    kept = value <= reference + slack
    grown = xp.minimum(cap, GAMMA * beta), xp.minimum(GAMMA_BAR * cap, xp.ones_like(cap))  # (no copy from the host)
    shrunk = beta / ETA, beta
    new = [xp.where(kept, a, b) for a, b in zip(grown, shrunk)]
    if plain is not None:
        kept = kept | plain
        new = [xp.where(plain, old, value) for old, value in zip((beta, cap), new)]
    state["beta"], state["beta_cap"] = new
    return kept


def ehals_beta(state, accepted):
    """Update the extrapolation's β and its cap in ``state`` after a kept (accepted) or rejected step."""
    if accepted:
        state["beta"] = min(state["beta_cap"], GAMMA * state["beta"])
        state["beta_cap"] = min(1.0, GAMMA_BAR * state["beta_cap"])
    else:
        state["beta_cap"] = state["beta"]
        state["beta"] = state["beta"] / ETA
