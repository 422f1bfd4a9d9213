"""Missing values (``missing="nan"``, ``nmf fit --missing nan``): NaN entries are left out of the fit.

The masked updates are checked against nmfcli's own mu (itself scikit-learn's to 1e-6) where
nothing is missing, against the weighted multiplicative updates written out here where
entries are missing, and against data of known low rank, whose missing entries a fit of the
observed ones must predict.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import nmfcli
from conftest import checkpoint_at, low_rank, one_error_line, run_nmf, weighted_mu, write_csv
from nmfcli import errors
from nmfcli.solvers import masked


def with_holes(X, fraction=0.15, seed=0):
    X = np.array(X, dtype=np.float64)
    X[np.random.default_rng(seed).random(X.shape) < fraction] = np.nan
    return X


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.0, 0.5, 1.5, 3.0])
def test_with_nothing_missing_the_updates_are_mus(beta):
    """With every entry observed (M all ones) the masked updates are scikit-learn's mu, as
    nmfcli's mu runs it, and the divergence is nmfcli.metrics's."""
    X = low_rank(30, 20, 4, seed=2) + (0.1 if beta <= 0 else 0.0)
    reference = nmfcli.fit(X, 4, solver="mu", loss=beta, max_iter=30, tol=0)
    W, H = _nndsvda(X, 4)
    M = np.ones_like(X)
    gamma = 1.0 / (2.0 - beta) if beta < 1 else 1.0 / (beta - 1.0) if beta > 2 else 1.0
    for _ in range(30):
        masked.update_W(X, M, W, H, beta, 0.0, 0.0, gamma)
        masked.update_H(X, M, W, H, beta, 0.0, 0.0, gamma)
    np.testing.assert_allclose(W, reference.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(H, reference.H, rtol=1e-9, atol=1e-12)
    expected = nmfcli.metrics(X, W, H, loss=beta)["beta_divergence"]
    assert masked.divergence(X, X, M, W, H, beta) == pytest.approx(expected, rel=1e-10)


def _nndsvda(X, k):
    from nmfcli.init import nndsvd_factors

    W, H = nndsvd_factors(X, k, "nndsvda", 0)
    return np.array(W, dtype=np.float64), np.array(H, dtype=np.float64)


@pytest.mark.parametrize("loss", ["frobenius", "kl"])
def test_a_fit_with_missing_values_is_the_weighted_updates(loss):
    X = with_holes(low_rank(30, 20, 4, seed=3))
    rng = np.random.default_rng(1)
    W0, H0 = rng.random((30, 4)) + 0.1, rng.random((4, 20)) + 0.1
    result = nmfcli.fit(X, 4, loss=loss, missing="nan", solver="mu", init="custom", W0=W0, H0=H0, max_iter=50,
                        tol=0)
    assert result.options["solver"] == "mu" and result.options["missing"] == "nan"
    assert result.metrics["missing_entries"] == int(np.isnan(X).sum()) > 0
    observed = ~np.isnan(X)
    W, H = weighted_mu(np.where(observed, X, 0.0), observed.astype(float), W0, H0,
                       2.0 if loss == "frobenius" else 1.0, 50)
    np.testing.assert_allclose(result.W, W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.H, H, rtol=1e-9, atol=1e-12)
    observed = ~np.isnan(X)
    residual = (X - result.W @ result.H)[observed]
    assert result.metrics["relative_error"] == pytest.approx(
        np.linalg.norm(residual) / np.linalg.norm(X[observed]), rel=1e-10)


@pytest.mark.parametrize("solver, iterations, bound", [("anls", 1000, 1e-8), ("mu", 10000, 1e-3)])
def test_the_missing_entries_of_low_rank_data_are_predicted(solver, iterations, bound):
    """anls (the default for the Frobenius loss) reaches 1e-10 here in 1000 iterations, mu 1.8e-4 in 10,000."""
    rng = np.random.default_rng(4)
    full = rng.random((40, 3)) @ rng.random((3, 30))
    X = with_holes(full, 0.2, seed=5)
    result = nmfcli.fit(X, 3, missing="nan", solver=solver, max_iter=iterations, tol=0)
    missing = np.isnan(X)
    predicted = (result.W @ result.H)[missing]
    assert result.options["solver"] == solver and result.metrics["relative_error"] < bound
    assert np.linalg.norm(predicted - full[missing]) / np.linalg.norm(full[missing]) < bound


@pytest.mark.parametrize("loss", ["frobenius", "kl"])
def test_the_observed_objective_never_rises(loss):
    X = with_holes(low_rank(30, 20, 4, seed=6) + 0.05 * np.random.default_rng(7).random((30, 20)))
    result = nmfcli.fit(X, 6, loss=loss, missing="nan", max_iter=300, tol=0, init="random")
    history = np.array(result.history)
    assert len(history) == 31 and np.all(np.diff(history) <= 1e-12 * history[:-1])


def test_engine_auto_runs_missing_values_on_numpy(monkeypatch):
    # Even where "auto" picks another engine (the GPU's: the array-API engine stands in for it).
    from nmfcli import engines

    monkeypatch.setattr(engines, "_auto_engine", lambda: "array-api-numpy")
    X = with_holes(low_rank(30, 20, 3, seed=12))
    a, b = nmfcli.fit(X, 3, missing="nan", engine="auto", max_iter=20), nmfcli.fit(X, 3, missing="nan", max_iter=20)
    assert a.options["engine"] == "numpy" and np.array_equal(a.W, b.W)


def test_without_nan_missing_nan_is_the_ordinary_fit():
    X = low_rank(30, 20, 4, seed=8)
    a, b = nmfcli.fit(X, 4, missing="nan"), nmfcli.fit(X, 4)
    assert np.array_equal(a.W, b.W) and a.options["solver"] == "ehals" and a.metrics["missing_entries"] == 0


def test_resume_with_missing_values_is_bit_identical():
    X = with_holes(low_rank(30, 20, 4, seed=9))
    full = nmfcli.fit(X, 4, loss="kl", missing="nan", max_iter=40, tol=0)
    saved, stop = checkpoint_at(17)
    nmfcli.fit(X, 4, loss="kl", missing="nan", max_iter=40, tol=0, callback=stop)
    rest = nmfcli.fit(X, 4, loss="kl", missing="nan", max_iter=40, tol=0, resume=saved)
    assert np.array_equal(rest.W, full.W) and np.array_equal(rest.H, full.H) and rest.history == full.history


@pytest.mark.parametrize("kwargs, error, message", [
    ({"missing": "zero"}, errors.UsageError, "missing must be None or 'nan'; got 'zero'"),
    ({"solver": "ehals"}, errors.UsageError, "with missing values (NaN in X) the solvers are anls (Frobenius) and mu; "
                                             "got 'ehals'"),
    ({"engine": "dask"}, errors.UsageError, "missing values (missing='nan') are fitted on the numpy engine in "
                                            "memory; got engine 'dask'"),
    ({"engine_options": {"chunk_rows": 10}}, errors.UsageError, "missing values (missing='nan') are fitted on "
                                                                "the numpy engine in memory; got chunk_rows"),
])
def test_refusals(kwargs, error, message):
    options = {"missing": "nan", **kwargs}
    with pytest.raises(error) as e:
        nmfcli.fit(with_holes(low_rank(30, 20, 3)), 3, **options)
    assert str(e.value) == message


def test_data_refusals():
    X = with_holes(low_rank(30, 20, 3))
    with pytest.raises(errors.DataError, match="NaN or infinite values; the first is nan at row .*; to leave NaN "
                                               r"entries out of the fit as missing values, use missing='nan' \(nmf "
                                               r"fit --missing nan\)"):
        nmfcli.fit(X, 3)
    X[0, 0] = np.inf
    with pytest.raises(errors.DataError, match="X has 1 infinite value; the first is inf at row 1, column 1"):
        nmfcli.fit(X, 3, missing="nan")
    with pytest.raises(errors.DataError, match="X has no observed entries: every entry is NaN"):
        nmfcli.fit(np.full((4, 3), np.nan), 2, missing="nan")
    with pytest.raises(errors.UsageError, match="missing='nan' needs dense X"):
        nmfcli.fit(sp.csr_matrix(low_rank(30, 20, 3)), 3, missing="nan")


def test_cli_fits_around_nan_in_a_csv(tmp_path):
    X = with_holes(low_rank(24, 10, 3, seed=10))
    write_csv(tmp_path / "x.csv", X)
    text = (tmp_path / "x.csv").read_text()
    assert "nan" in text
    proc = run_nmf("fit", tmp_path / "x.csv", "-k", 3, "-o", tmp_path / "o", "-q")
    assert proc.returncode == errors.EXIT_DATA
    assert one_error_line(proc).endswith("; to leave NaN entries out of the fit as missing values, use --missing nan")
    proc = run_nmf("fit", tmp_path / "x.csv", "-k", 3, "--missing", "nan", "-o", tmp_path / "o", check=0)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert f"over the observed entries ({int(np.isnan(X).sum())} missing)" in proc.stderr
    assert report["missing"] == "nan" and report["missing_entries"] == int(np.isnan(X).sum())
    api = nmfcli.fit(X, 3, missing="nan")
    np.testing.assert_allclose(np.load(tmp_path / "o" / "W.npy"), api.W, rtol=1e-12)
    assert report["relative_error"] == pytest.approx(api.metrics["relative_error"], rel=1e-12)


def test_rank_survey_with_missing_values():
    """nmf rank --missing nan: each fit leaves the NaN entries out; the runs are those fits."""
    from nmfcli.rank import survey_ranks

    X = with_holes(low_rank(30, 20, 3, seed=11))
    r, = survey_ranks(X, [3], runs=2, missing="nan", max_iter=30)
    alone = nmfcli.fit(X, 3, init="random", seed=1, missing="nan", max_iter=30)
    assert r.relative_errors[1] == alone.metrics["relative_error"] and r.stability is not None


def test_metrics_and_reconstruct_leave_the_missing_entries_out(tmp_path):
    """metrics(missing="nan") is the fit's own observed-entry metrics; nmf reconstruct --against
    --missing nan reports them."""
    X = with_holes(low_rank(24, 10, 3, seed=13))
    result = nmfcli.fit(X, 3, loss="kl", missing="nan", max_iter=50)
    got = nmfcli.metrics(X, result.W, result.H, loss="kl", missing="nan")
    for key in ("beta_divergence", "reconstruction_error", "relative_error", "missing_entries"):
        assert got[key] == pytest.approx(result.metrics[key], rel=1e-12), key
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "W.npy", result.W)
    np.save(tmp_path / "H.npy", result.H)
    proc = run_nmf("reconstruct", tmp_path / "W.npy", tmp_path / "H.npy", "--against", tmp_path / "X.npy",
                   "--loss", "kl", "--missing", "nan", "--json", check=0)
    report = json.loads(proc.stdout)
    assert report["relative_error"] == pytest.approx(got["relative_error"], rel=1e-12)
    assert report["missing_entries"] == got["missing_entries"] > 0
    proc = run_nmf("reconstruct", tmp_path / "W.npy", tmp_path / "H.npy", "--against", tmp_path / "X.npy")
    assert proc.returncode == errors.EXIT_DATA and one_error_line(proc).endswith("use --missing nan")


def test_transform_solves_each_row_exactly_over_its_observed_entries():
    """Frobenius with H fixed: each row is a non-negative least-squares problem of its own,
    against the components at its observed entries: scipy.optimize.nnls, row by row, is the
    oracle. A row with nothing observed, and a component that is 0 wherever a row is
    observed, get 0."""
    from scipy.optimize import nnls

    rng = np.random.default_rng(20)
    H = rng.random((5, 30))
    X = with_holes(rng.random((60, 5)) @ H + 0.05 * rng.random((60, 30)), fraction=0.3, seed=21)
    X[4] = np.nan  # nothing observed
    H[2, :10] = 0.0
    X[7, 10:] = np.nan  # component 2 is 0 wherever row 7 is observed
    W = nmfcli.transform(X, H, missing="nan")
    assert W.shape == (60, 5) and np.all(W >= 0)
    for i in range(60):
        seen = ~np.isnan(X[i])
        expected = nnls(H[:, seen].T, X[i, seen])[0] if seen.any() else np.zeros(5)
        cost = lambda w: np.sum((X[i, seen] - w @ H[:, seen]) ** 2)  # noqa: E731
        assert cost(W[i]) <= cost(expected) + 1e-12 * max(cost(expected), 1.0), i
        np.testing.assert_allclose(W[i], expected, rtol=1e-8, atol=1e-10)
    assert np.all(W[4] == 0) and W[7, 2] == 0


def test_fit_with_a_fixed_w_solves_each_column_over_its_observed_entries():
    from scipy.optimize import nnls

    rng = np.random.default_rng(22)
    W = rng.random((40, 4))
    X = with_holes(W @ rng.random((4, 25)), fraction=0.25, seed=23)
    result = nmfcli.fit(X, 4, fix_W=W, missing="nan")
    assert result.options["solver"] == "nnls" and result.converged and np.array_equal(result.W, W)
    for j in range(25):
        seen = ~np.isnan(X[:, j])
        np.testing.assert_allclose(result.H[:, j], nnls(W[seen], X[seen, j])[0], rtol=1e-8, atol=1e-10)
    assert result.metrics["missing_entries"] == int(np.isnan(X).sum())
    np.testing.assert_allclose(result.metrics["relative_error"], 0.0, atol=1e-7)  # exactly rank 4: the fit is exact
    measured = nmfcli.metrics(X, result.W, result.H, missing="nan")
    for key in ("beta_divergence", "reconstruction_error", "relative_error", "missing_entries"):
        assert result.metrics[key] == pytest.approx(measured[key], rel=1e-9, abs=1e-15), key


@pytest.mark.parametrize("loss, kwargs", [("frobenius", {}), ("frobenius", {"alpha_W": 0.05, "l1_ratio": 0.5}),
                                          ("kl", {"tol": 0, "max_iter": 60}), (1.5, {"tol": 0, "max_iter": 60})])
def test_transform_rows_without_holes_are_the_ordinary_transforms(loss, kwargs):
    """With H fixed the rows are independent problems: a row with nothing missing gets what
    the ordinary transform gives it (penalties included; other losses run the masked mu with
    H fixed, iteration for iteration the same as mu, which transform's "auto" runs for KL; for
    β = 1.5 it runs emu, so the reference asks for mu)."""
    rng = np.random.default_rng(24)
    H = rng.random((4, 20))
    X = rng.random((30, 4)) @ H + 0.05
    holed = X.copy()
    holed[::3, 5] = np.nan  # a hole in every third row
    got = nmfcli.transform(holed, H, loss=loss, missing="nan", **kwargs)
    full = (nmfcli.transform(X, H, loss=loss, **kwargs) if loss != 1.5
            else nmfcli.fit(X, 4, fix_H=H, loss=loss, solver="mu", **kwargs).W)
    whole = ~np.isnan(holed).any(axis=1)
    np.testing.assert_allclose(got[whole], full[whole], rtol=1e-9, atol=1e-12)
    assert not np.allclose(got[~whole], full[~whole], rtol=1e-6), "the holed rows leave column 5 out"


def test_cli_transforms_rows_with_missing_values(tmp_path):
    rng = np.random.default_rng(25)
    H = rng.random((3, 12))
    np.save(tmp_path / "H.npy", H)
    X = with_holes(rng.random((15, 3)) @ H, seed=26)
    write_csv(tmp_path / "x.csv", X)
    proc = run_nmf("transform", tmp_path / "x.csv", "--components", tmp_path / "H.npy", check=None)
    assert proc.returncode == errors.EXIT_DATA and one_error_line(proc).endswith("use --missing nan")
    proc = run_nmf("transform", tmp_path / "x.csv", "--components", tmp_path / "H.npy", "--missing", "nan",
                   "-o", tmp_path / "W.npy")
    np.testing.assert_allclose(np.load(tmp_path / "W.npy"), nmfcli.transform(X, H, missing="nan"), rtol=1e-12)
