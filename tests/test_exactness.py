"""Reported numbers are true, fits are scale-free, and nothing non-finite passes for an answer.

Each reported error is checked against a float64 recomputation written out here from the
returned factors; scales reach 1e±18 (float32) and 1e±20 to 1e±300 (float64).
"""

import math

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import nmfcli
from nmfcli import core
from nmfcli import io as nio
from nmfcli.errors import DataError

SOLVERS = ["ehals", "hals", "cd", "mu"]


def data(dtype=np.float64, m=60, n=40, seed=0):
    """A dense matrix whose largest entry is in [0.5, 2): exactly what a power-of-four scaling brings back."""
    X = np.random.default_rng(seed).random((m, n))
    return (X / X.max()).astype(dtype)


def true_relative_error(X, W, H, s=1.0):
    """‖sX − WH‖ / ‖sX‖ in float64, computed on X and the factors divided by √s (no overflow)."""
    root = math.sqrt(s)
    W64, H64 = np.asarray(W, dtype=np.float64) / root, np.asarray(H, dtype=np.float64) / root
    X64 = (X.toarray() if sp.issparse(X) else np.asarray(X)).astype(np.float64) / s
    return float(np.linalg.norm(X64 - W64 @ H64) / np.linalg.norm(X64))


# --------------------------------------------------------------------------- scale-free fits


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype,shift", [(np.float32, 30), (np.float32, -33), (np.float64, 40), (np.float64, -250),
                                         (np.float64, 480)])
def test_a_fit_of_X_times_a_power_of_four_is_the_fit_of_X_bit_for_bit(solver, dtype, shift):
    X = data(dtype)
    plain = nmfcli.fit(X, 4, solver=solver, max_iter=60)
    scaled = nmfcli.fit(X * dtype(4.0 ** shift), 4, solver=solver, max_iter=60)
    assert np.array_equal(scaled.W, plain.W * dtype(2.0 ** shift))
    assert np.array_equal(scaled.H, plain.H * dtype(2.0 ** shift))
    assert scaled.n_iter == plain.n_iter and scaled.stop_reason == plain.stop_reason
    assert scaled.metrics["relative_error"] == plain.metrics["relative_error"]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e18), (np.float32, 1e-18), (np.float32, 1e-30),
                                         (np.float64, 1e20), (np.float64, 1e-20), (np.float64, 1e-160),
                                         (np.float64, 1e300), (np.float64, 1e-300)])
def test_scaled_data_fits_to_the_unscaled_error_and_reports_the_true_one(solver, dtype, scale):
    """s·X fits like X, and the error it reports is the true one.

    Fitted to convergence, the errors agree to 1e-3: the scaled data is X times a factor in
    [0.5, 2), and scikit-learn's starts are not homogeneous (nndsvda fills with the mean, mu
    guards 0/0 with a constant), so the iterates differ by more than rounding."""
    X = data(dtype)
    reference = nmfcli.fit(X, 4, solver=solver, max_iter=2000).metrics["relative_error"]
    Xs = (X.astype(np.float64) * scale).astype(dtype)
    result = nmfcli.fit(Xs, 4, solver=solver, max_iter=2000)
    assert np.all(np.isfinite(result.W)) and np.all(np.isfinite(result.H))
    assert result.W.dtype == dtype
    assert result.metrics["relative_error"] == pytest.approx(reference, rel=1e-3)
    assert result.metrics["relative_error"] == pytest.approx(true_relative_error(Xs, result.W, result.H, scale),
                                                             rel=1e-6)


@pytest.mark.parametrize("solver", ["ehals", "cd", "mu"])
@pytest.mark.parametrize("l1_ratio", [0.0, 1.0])
def test_penalties_scale_with_the_data_bit_for_bit(solver, l1_ratio):
    """The penalised objective of s·X with the penalties scaled as the objective scales (½‖sX −
    WH‖² is s² times X's: an l1 weight times s^1.5, an l2 weight times s, W and H times √s) is
    X's, scaled: the scaled fit weighs its penalties by those same powers of four."""
    X = data()
    plain = nmfcli.fit(X, 3, solver=solver, max_iter=40, alpha_W=0.01, l1_ratio=l1_ratio)
    power = 1.5 if l1_ratio == 1.0 else 1.0
    scaled = nmfcli.fit(X * 4.0 ** -200, 3, solver=solver, max_iter=40, alpha_W=0.01 * 4.0 ** (-200 * power),
                        l1_ratio=l1_ratio)
    assert plain.W.any()
    assert np.array_equal(scaled.W, plain.W * 2.0 ** -200)
    assert np.array_equal(scaled.H, plain.H * 2.0 ** -200)


def test_hals_stays_finite_where_a_component_dies_to_a_subnormal_scale():
    """1/diag(HHᵀ) of a subnormal diagonal overflows; such a row is kept as it is, as cd keeps a zero one."""
    from nmfcli.solvers import cd

    G = np.diag([1.0, 1e-310, 4.0])
    inverse = cd._inverse_hessian(np, G)
    assert np.all(np.isfinite(inverse)) and inverse[1, 0] == 0.0
    Gs, Rs = cd._scaled(G, np.ones((3, 5)))
    assert np.all(np.isfinite(Gs)) and np.all(np.isfinite(Rs))


# --------------------------------------------------------------------------- reported numbers


def test_float32_error_at_1e18_is_the_true_one():
    X = (data(np.float64) * 1e18).astype(np.float32)
    result = nmfcli.fit(X, 3)
    assert 0.05 < result.metrics["relative_error"] < 1
    assert result.metrics["relative_error"] == pytest.approx(true_relative_error(X, result.W, result.H, 1e18), rel=1e-6)


def test_float32_1e_minus_30_is_fitted_not_declared_converged_at_zero():
    X = (data(np.float64) * 1e-30).astype(np.float32)
    result = nmfcli.fit(X, 3)
    assert result.n_iter > 2
    assert result.metrics["relative_error"] == pytest.approx(true_relative_error(X, result.W, result.H, 1e-30), rel=1e-6)
    assert result.metrics["relative_error"] < 0.9


def test_sparse_float32_near_exact_fit_reports_the_true_small_error():
    """The trace formula cancels when the fit is near exact; the report recomputes directly."""
    rng = np.random.default_rng(3)
    W0 = rng.random((300, 5)) * (rng.random((300, 5)) < 0.5)
    H0 = rng.random((5, 200)) * (rng.random((5, 200)) < 0.5)
    X = sp.csr_matrix((W0 @ H0).astype(np.float32))
    result = nmfcli.fit(X, 5, max_iter=400, tol=1e-8)
    true = true_relative_error(X.astype(np.float64), result.W, result.H)
    assert true < 1e-3
    assert result.metrics["relative_error"] == pytest.approx(true, rel=1e-6)


@pytest.mark.parametrize("loss", ["frobenius", "kl", "is", 0.5])
@pytest.mark.parametrize("sparse", [False, True])
def test_every_reported_number_is_a_float64_recomputation(loss, sparse):
    X = data(np.float32) + np.float32(0.01)
    X = sp.csr_matrix(X) if sparse and loss != "is" else X
    result = nmfcli.fit(X, 4, loss=loss, max_iter=50)
    dense = (X.toarray() if sp.issparse(X) else X).astype(np.float64)
    WH = result.W.astype(np.float64) @ result.H.astype(np.float64)
    beta = {"frobenius": 2.0, "kl": 1.0, "is": 0.0}.get(loss, loss)
    if beta == 2:
        D = 0.5 * np.sum((dense - WH) ** 2)
    elif beta == 1:
        D = np.sum(dense * np.log(dense / WH) - dense + WH)
    elif beta == 0:
        D = np.sum(dense / WH - np.log(dense / WH) - 1)
    else:
        D = np.sum((dense**beta + (beta - 1) * WH**beta - beta * dense * WH ** (beta - 1)) / (beta * (beta - 1)))
    assert result.metrics["beta_divergence"] == pytest.approx(D, rel=1e-6)
    assert result.metrics["relative_error"] == pytest.approx(true_relative_error(dense, result.W, result.H), rel=1e-6)


# --------------------------------------------------------------------------- anls never rises


def test_anls_with_missing_values_never_raises_its_objective():
    """200×30 data of rank 30 with 10% NaN, k = 30: each half-step is an exact solve, so the
    objective never rises (it rose 367× before the solves were certified)."""
    rng = np.random.default_rng(0)
    X = rng.random((200, 30)) @ rng.random((30, 30))
    X[rng.random(X.shape) < 0.1] = np.nan
    seen = []
    result = nmfcli.fit(X, 30, missing="nan", max_iter=60, tol=0, init="random",
                        callback=lambda info: seen.append(info.objective))
    history = result.history
    assert len(history) >= 6
    for before, after in zip(history, history[1:]):
        assert after <= before * (1 + 1e-9), (before, after)


# --------------------------------------------------------------------------- non-finite is never an answer


def test_a_beta_whose_powers_leave_float64_is_refused():
    with pytest.raises(DataError, match="float64 cannot hold"):
        nmfcli.fit(data() + 0.5, 2, loss=1e308)


def test_a_fit_that_produces_nan_is_an_error_not_an_answer(monkeypatch):
    from nmfcli.errors import NumericalError
    from nmfcli.solvers import cd

    real = cd.hals_iteration

    def poisoned(engine, Wt, H, *args, **kwargs):
        out = real(engine, Wt, H, *args, **kwargs)
        H[0, 0] = np.nan
        return out

    monkeypatch.setattr(cd, "hals_iteration", poisoned)
    with pytest.raises(NumericalError, match="NaN or infinite"):
        nmfcli.fit(data(), 2, solver="hals", max_iter=3)


@pytest.mark.parametrize("value", [np.nan, -1.0])
def test_models_and_checkpoints_with_nan_or_negative_factors_are_refused(tmp_path, value):
    result = nmfcli.fit(data(), 2, max_iter=5)
    H = result.H.copy()
    H[1, 2] = value
    model = tmp_path / "model.h5"
    nio.write_model(model, {"H": H, "k": 2})
    with pytest.raises(DataError, match=r"model\.h5: the model's H has 1 (NaN or infinite|negative) value \(the first "
                                        r"at row 2, column 3\)"):
        nio.read_model(model)
    state = dict(result.checkpoint)
    state["W"] = state["W"].copy()
    state["W"][0, 0] = value
    ckpt = tmp_path / "ckpt.h5"
    nio.write_checkpoint(ckpt, state)
    with pytest.raises(DataError, match=r"ckpt\.h5: the checkpoint's W has 1"):
        nio.read_checkpoint(ckpt)
    with h5py.File(ckpt, "r") as f:
        assert "W" in f  # the file is intact; reading it is what refuses


# --------------------------------------------------------------------------- the README's numerical refusals


def test_the_readme_numerical_refusals_exactly(tmp_path):
    """Each row of the README's table of numerical refusals, run as a real process."""
    from conftest import low_rank, one_error_line, run_nmf

    np.save(tmp_path / "good.npy", low_rank(12, 6))
    proc = run_nmf("fit", "good.npy", "-k", "2", "--loss", "1e308", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 65
    assert one_error_line(proc) == (
        "Error: good.npy: X holds entries from 0.301945 to 1.70273, whose powers under the beta=1e+308 loss float64 "
        "cannot hold; use a beta between -10 and 10, or frobenius, kl or is")
    assert not (tmp_path / "out").exists()

    assert run_nmf("fit", "good.npy", "-k", "2", "-o", "bad.nmf", cwd=tmp_path).returncode == 0
    with h5py.File(tmp_path / "bad.nmf" / "model.h5", "r+") as f:
        H = f["H"][...]
        H[1, 2] = np.nan
        f["H"][...] = H
    proc = run_nmf("transform", "good.npy", "--model", "bad.nmf/model.h5", cwd=tmp_path)
    assert proc.returncode == 65 and proc.stdout == ""
    assert one_error_line(proc) == ("Error: bad.nmf/model.h5: the model's H has 1 NaN or infinite value (the first at "
                                    "row 2, column 3); a fit never writes them: the file is damaged")

    np.save(tmp_path / "huge.npy", low_rank(12, 6) * 1e200)
    proc = run_nmf("fit", "huge.npy", "-k", "2", "--chunk-rows", "4", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 65
    assert one_error_line(proc) == (
        "Error: huge.npy: X has entries up to 1.70273e+200, whose squares leave float64's range in the row-block "
        "products; fit it in memory (without --engine dask or --chunk-rows), which rescales such data exactly, or "
        "scale X by a power of ten first")

    result = nmfcli.fit(low_rank(12, 6), 2, max_iter=3)
    state = {**result.checkpoint, "options": {"k": 2}, "k": 2}
    state["W"] = state["W"].copy()
    state["W"][0, 0] = -1.0
    nio.write_checkpoint(tmp_path / "ckpt.h5", state)
    proc = run_nmf("fit", "good.npy", "-k", "2", "--resume", "ckpt.h5", "-o", "again", cwd=tmp_path)
    assert proc.returncode == 65
    assert one_error_line(proc) == ("Error: ckpt.h5: the checkpoint's W has 1 negative value (the first at row 1, "
                                    "column 1); a fit never writes them: the file is damaged")


@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e-20), (np.float32, 1e18), (np.float64, 1e-160),
                                         (np.float64, 1e200)])
def test_the_row_block_engines_refuse_data_whose_squares_leave_the_dtype(dtype, scale):
    """They take X as stored (no rescaling): data whose products would overflow or vanish is
    refused with a way out, never fitted into NaN."""
    X = (data() * scale).astype(dtype)
    with pytest.raises(DataError, match="whose squares leave .*'s range in the row-block products; fit it in memory"):
        nmfcli.fit(X, 3, max_iter=5, engine_options={"chunk_rows": 16})
    assert np.all(np.isfinite(nmfcli.fit(X, 3, max_iter=5).W))  # in memory it is fitted


def test_the_row_block_engines_report_float64_sums_of_float32_data():
    X = (data() * 1e15).astype(np.float32)  # ‖X‖² ≈ 1e33: past float32's sums of squares, within its range
    result = nmfcli.fit(X, 3, max_iter=30, engine_options={"chunk_rows": 16})
    assert result.metrics["relative_error"] == pytest.approx(true_relative_error(X, result.W, result.H, 1e15),
                                                             rel=1e-5)


def test_a_callback_sees_the_fit_of_data_at_the_edges_of_float64():
    """The objective the callback reads is scaled back like the result's (inf where ½‖X‖² is
    past float64), and data whose largest entry is subnormal is scaled without a factor that
    would itself overflow."""
    seen = []
    huge = nmfcli.fit(data() * 1e300, 3, max_iter=5, callback=lambda info: seen.append(info.objective))
    assert seen and all(v == math.inf for v in seen) and np.all(np.isfinite(huge.W))
    X = np.ldexp(data(), -1060)  # largest entry below 2^-1022: subnormal
    result = nmfcli.fit(X, 3, max_iter=60)
    reference = nmfcli.fit(data(), 3, max_iter=60)
    assert np.all(np.isfinite(result.W)) and result.W.any()
    assert result.metrics["relative_error"] == pytest.approx(reference.metrics["relative_error"], rel=1e-3)
