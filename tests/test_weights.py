"""Weights (``weights=``, ``nmf fit --weights FILE``): the loss Σ wᵢⱼ·d_β(Xᵢⱼ | (WH)ᵢⱼ).

The weighted fit is checked against the weighted multiplicative updates written out here,
against data with rows or columns repeated (a weight of 2 is an entry counted twice), against
the missing-value fit (weights of 0 and 1 are a mask), and, with the components fixed, against
``scipy.optimize.nnls`` of each row scaled by √w.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import nnls

import nmfcli
from conftest import checkpoint_at, low_rank, one_error_line, run_nmf, weighted_mu, write_csv
from nmfcli import errors


def noisy(m, n, rank, seed):
    rng = np.random.default_rng(seed)
    return low_rank(m, n, rank, seed=seed) + 0.05 * rng.random((m, n))


def some_weights(shape, seed, zeros=0.1):
    """Weights in [0.2, 3), a fraction of them 0."""
    rng = np.random.default_rng(seed)
    weights = 0.2 + 2.8 * rng.random(shape)
    weights[rng.random(shape) < zeros] = 0.0
    return weights


def weighted_divergence(X, M, WH, beta):
    """Σ M⊙d_β(X | WH), closed forms (X > 0 here)."""
    if beta == 2:
        return 0.5 * np.sum(M * (X - WH) ** 2)
    if beta == 1:
        return np.sum(M * (X * np.log(X / WH) - X + WH))
    if beta == 0:
        return np.sum(M * (X / WH - np.log(X / WH) - 1))
    return np.sum(M * (X**beta + (beta - 1) * WH**beta - beta * X * WH ** (beta - 1))) / (beta * (beta - 1))


@pytest.mark.parametrize("loss", ["frobenius", "kl"])
def test_a_weighted_fit_is_the_weighted_updates(loss):
    X = noisy(30, 20, 4, seed=1)
    M = some_weights(X.shape, seed=2)
    rng = np.random.default_rng(3)
    W0, H0 = rng.random((30, 4)) + 0.1, rng.random((4, 20)) + 0.1
    result = nmfcli.fit(X, 4, loss=loss, weights=M, solver="mu", init="custom", W0=W0, H0=H0, max_iter=50, tol=0)
    assert result.options["solver"] == "mu" and result.options["weighted"] is True
    W, H = weighted_mu(X, M, W0, H0, 2.0 if loss == "frobenius" else 1.0, 50)
    np.testing.assert_allclose(result.W, W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.H, H, rtol=1e-9, atol=1e-12)
    beta = 2.0 if loss == "frobenius" else 1.0
    WH = result.W @ result.H
    assert result.metrics["beta_divergence"] == pytest.approx(weighted_divergence(X, M, WH, beta), rel=1e-10)
    assert result.metrics["relative_error"] == pytest.approx(
        np.sqrt(np.sum(M * (X - WH) ** 2) / np.sum(M * X**2)), rel=1e-10)


@pytest.mark.parametrize("loss", ["frobenius", "kl", "is", 0.5, 1.5, 3.0])
def test_metrics_are_the_weighted_divergence(loss):
    """metrics(weights=) against the closed forms of Σ w·d_β, every β."""
    X = noisy(25, 15, 3, seed=4) + 0.1
    M = some_weights(X.shape, seed=5)
    rng = np.random.default_rng(6)
    W, H = rng.random((25, 3)) + 0.1, rng.random((3, 15)) + 0.1
    beta = {"frobenius": 2.0, "kl": 1.0, "is": 0.0}.get(loss, loss)
    got = nmfcli.metrics(X, W, H, loss=loss, weights=M)
    expected = weighted_divergence(X, M, W @ H, beta)
    assert got["beta_divergence"] == pytest.approx(expected, rel=1e-10)
    assert got["reconstruction_error"] == pytest.approx(np.sqrt(2 * expected), rel=1e-10)


@pytest.mark.parametrize("loss", ["frobenius", "kl", 1.5])
def test_a_weight_of_two_counts_an_entry_twice(loss):
    """Row 0 weighing 2 and column 3 weighing 3 is X with row 0 repeated once and column 3
    twice: from a start whose repeated rows (of W) and columns (of H) are equal, the updates
    keep them equal, and the rest of the factors are the weighted fit's."""
    X = noisy(20, 12, 3, seed=7)
    M = np.ones_like(X)
    M[0] *= 2.0
    M[:, 3] *= 3.0
    rng = np.random.default_rng(8)
    W0, H0 = rng.random((20, 3)) + 0.1, rng.random((3, 12)) + 0.1
    rows, cols = [0, *range(20)], [3, 3, *range(12)]
    repeated = nmfcli.fit(X[np.ix_(rows, cols)], 3, loss=loss, solver="mu", init="custom",
                          W0=W0[rows], H0=H0[:, cols], max_iter=40, tol=0)
    weighted = nmfcli.fit(X, 3, loss=loss, weights=M, solver="mu", init="custom", W0=W0, H0=H0, max_iter=40, tol=0)
    np.testing.assert_allclose(weighted.W, repeated.W[1:], rtol=1e-8)
    np.testing.assert_allclose(weighted.H, repeated.H[:, 2:], rtol=1e-8)
    assert weighted.metrics["beta_divergence"] == pytest.approx(repeated.metrics["beta_divergence"], rel=1e-9)


def test_weights_of_zero_and_one_are_missing_values():
    """The entries of weight 0 take no part: whatever X holds there, the fit is the one that
    leaves them out as missing values (from the same start)."""
    X = noisy(30, 20, 3, seed=9)
    M = some_weights(X.shape, seed=10, zeros=0.2) > 0
    holed, garbage = X.copy(), X.copy()
    holed[~M] = np.nan
    garbage[~M] = 1e6
    rng = np.random.default_rng(11)
    start = dict(init="custom", W0=rng.random((30, 3)) + 0.1, H0=rng.random((3, 20)) + 0.1, max_iter=30, tol=0)
    for loss in ("frobenius", "kl"):
        weighted = nmfcli.fit(garbage, 3, loss=loss, weights=M.astype(float), **start)
        missing = nmfcli.fit(holed, 3, loss=loss, missing="nan", **start)
        np.testing.assert_allclose(weighted.W, missing.W, rtol=1e-12)
        np.testing.assert_allclose(weighted.H, missing.H, rtol=1e-12)
        for key in ("beta_divergence", "relative_error"):
            assert weighted.metrics[key] == pytest.approx(missing.metrics[key], rel=1e-12), key


def test_with_missing_values_the_missing_entries_weigh_nothing():
    X = noisy(30, 20, 3, seed=12)
    M = some_weights(X.shape, seed=13, zeros=0.0)
    holed = X.copy()
    holed[::4, 2] = np.nan
    zeroed = M.copy()
    zeroed[::4, 2] = 0.0
    rng = np.random.default_rng(14)
    start = dict(init="custom", W0=rng.random((30, 3)) + 0.1, H0=rng.random((3, 20)) + 0.1, max_iter=30, tol=0)
    both = nmfcli.fit(holed, 3, missing="nan", weights=M, **start)
    alone = nmfcli.fit(X, 3, weights=zeroed, **start)
    np.testing.assert_allclose(both.W, alone.W, rtol=1e-12)
    assert both.metrics["missing_entries"] == 8
    assert both.metrics["relative_error"] == pytest.approx(alone.metrics["relative_error"], rel=1e-12)


@pytest.mark.parametrize("loss", ["frobenius", "kl", 0.5])
def test_the_weighted_objective_never_rises(loss):
    X = noisy(30, 20, 4, seed=15) + 0.01
    result = nmfcli.fit(X, 6, loss=loss, weights=some_weights(X.shape, seed=16), max_iter=300, tol=0,
                        init="random")
    history = np.array(result.history)
    assert len(history) == 31 and np.all(np.diff(history) <= 1e-12 * history[:-1])
    assert history[-1] < 0.5 * history[0]


@pytest.mark.parametrize("solver, iterations, bound", [("anls", 1000, 1e-5), ("mu", 20000, 1e-3)])
def test_low_rank_data_is_recovered_whatever_the_weights(solver, iterations, bound):
    """Exactly low-rank X has an exact factorization, which every weighting makes optimal (anls,
    the default, reaches 3.5e-7 here in 1000 iterations; mu 3e-4 in 20,000, 1.3e-3 in 10,000)."""
    rng = np.random.default_rng(17)
    X = rng.random((40, 3)) @ rng.random((3, 30))
    result = nmfcli.fit(X, 3, weights=some_weights(X.shape, seed=18, zeros=0.3), solver=solver,
                        max_iter=iterations, tol=0)
    assert result.metrics["relative_error"] < bound
    assert np.linalg.norm(result.W @ result.H - X) / np.linalg.norm(X) < bound


def test_transform_is_the_weighted_least_squares_solve_of_each_row():
    """Frobenius with H fixed: row i minimises Σⱼ wᵢⱼ(xᵢⱼ − (wH)ⱼ)², which is the non-negative
    least-squares problem of Hᵀ and xᵢ with row j scaled by √wᵢⱼ: scipy.optimize.nnls is the
    oracle. A row that weighs 0 everywhere gets 0."""
    rng = np.random.default_rng(19)
    H = rng.random((5, 30))
    X = rng.random((50, 5)) @ H + 0.1 * rng.random((50, 30))
    M = some_weights(X.shape, seed=20, zeros=0.3)
    M[6] = 0.0
    W = nmfcli.transform(X, H, weights=M)
    assert W.shape == (50, 5) and np.all(W >= 0) and np.all(W[6] == 0)
    for i in range(50):
        root = np.sqrt(M[i])
        expected = nnls(H.T * root[:, None], X[i] * root)[0]
        np.testing.assert_allclose(W[i], expected, rtol=1e-8, atol=1e-10)
    unweighted = nmfcli.transform(X, H)
    assert not np.allclose(W, unweighted, rtol=1e-3)


def test_fit_with_a_fixed_w_and_weights_solves_each_column():
    rng = np.random.default_rng(21)
    W = rng.random((40, 4))
    X = W @ rng.random((4, 25)) + 0.1 * rng.random((40, 25))
    M = some_weights(X.shape, seed=22)
    result = nmfcli.fit(X, 4, fix_W=W, weights=M)
    assert result.options["solver"] == "nnls" and np.array_equal(result.W, W)
    for j in range(25):
        root = np.sqrt(M[:, j])
        np.testing.assert_allclose(result.H[:, j], nnls(W * root[:, None], X[:, j] * root)[0], rtol=1e-8, atol=1e-10)
    measured = nmfcli.metrics(X, result.W, result.H, weights=M)
    for key in ("beta_divergence", "reconstruction_error", "relative_error"):
        assert result.metrics[key] == pytest.approx(measured[key], rel=1e-9), key


def test_unit_weights_are_the_ordinary_mu():
    X = noisy(30, 20, 4, seed=23)
    for loss in ("frobenius", "kl", "is"):
        a = nmfcli.fit(X + 0.01, 4, loss=loss, weights=np.ones_like(X), solver="mu", max_iter=40, tol=0)
        b = nmfcli.fit(X + 0.01, 4, loss=loss, solver="mu", max_iter=40, tol=0)
        np.testing.assert_allclose(a.W, b.W, rtol=1e-9, atol=1e-12)
        assert a.metrics["relative_error"] == pytest.approx(b.metrics["relative_error"], rel=1e-9)


def test_float32_weights_stay_float32():
    X = noisy(20, 10, 2, seed=24).astype(np.float32)
    result = nmfcli.fit(X, 2, weights=some_weights(X.shape, seed=25), max_iter=20)
    assert result.W.dtype == np.float32 and result.options["dtype"] == "float32"


def test_a_boolean_mask_weighs_its_true_entries_one():
    X = noisy(20, 10, 2, seed=44)
    keep = some_weights(X.shape, seed=45, zeros=0.3) > 0
    rng = np.random.default_rng(46)
    start = dict(init="custom", W0=rng.random((20, 2)) + 0.1, H0=rng.random((2, 10)) + 0.1, max_iter=20, tol=0)
    a, b = nmfcli.fit(X, 2, weights=keep, **start), nmfcli.fit(X, 2, weights=keep.astype(float), **start)
    assert np.array_equal(a.W, b.W) and np.array_equal(a.H, b.H)
    assert nmfcli.metrics(X, a.W, a.H, weights=keep) == nmfcli.metrics(X, a.W, a.H, weights=keep.astype(float))


def test_sparse_weights_weigh_their_unstored_entries_zero():
    X = noisy(20, 10, 2, seed=26)
    M = some_weights(X.shape, seed=27, zeros=0.5)
    rng = np.random.default_rng(28)
    start = dict(init="custom", W0=rng.random((20, 2)) + 0.1, H0=rng.random((2, 10)) + 0.1, max_iter=20, tol=0)
    a, b = nmfcli.fit(X, 2, weights=sp.csr_matrix(M), **start), nmfcli.fit(X, 2, weights=M, **start)
    assert np.array_equal(a.W, b.W)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"solver": "hals"}, errors.UsageError, "with weights the solvers are anls (Frobenius) and mu; got 'hals'"),
    ({"engine": "dask"}, errors.UsageError, "a weighted fit runs on the numpy engine in memory; got engine 'dask'"),
    ({"engine_options": {"chunk_rows": 10}}, errors.UsageError,
     "a weighted fit runs on the numpy engine in memory; got chunk_rows"),
])
def test_refusals(kwargs, error, message):
    X = low_rank(30, 20, 3)
    with pytest.raises(error) as e:
        nmfcli.fit(X, 3, weights=np.ones_like(X), **kwargs)
    assert str(e.value) == message


def test_data_refusals():
    X = low_rank(30, 20, 3)
    with pytest.raises(errors.DataError, match=r"the weights are 30 x 19 but X is 30 x 20; they must have the same"):
        nmfcli.fit(X, 3, weights=np.ones((30, 19)))
    bad = np.ones_like(X)
    bad[2, 3] = -1.0
    with pytest.raises(errors.DataError, match=r"weights has 1 negative value; the first is -1 at row 3, column 4; "
                                               r"weights must be finite and non-negative$"):
        nmfcli.fit(X, 3, weights=bad)
    bad[2, 3] = np.nan
    with pytest.raises(errors.DataError, match=r"weights has 1 NaN or infinite value; the first is nan at row 3, "
                                               r"column 4; weights must be finite and non-negative$"):
        nmfcli.fit(X, 3, weights=bad)
    with pytest.raises(errors.DataError, match="every weight is 0: nothing is left to fit"):
        nmfcli.fit(X, 3, weights=np.zeros_like(X))
    holed = X.copy()
    holed[:, :10] = np.nan
    only_there = np.zeros_like(X)
    only_there[:, :10] = 1.0
    with pytest.raises(errors.DataError, match="every weight is 0 where X is observed"):
        nmfcli.fit(holed, 3, missing="nan", weights=only_there)
    with pytest.raises(errors.UsageError, match=r"X is sparse, but a weighted fit \(weights, or solver anls\) needs it "
                                                r"dense"):
        nmfcli.fit(sp.csr_matrix(X), 3, weights=np.ones_like(X))
    with pytest.raises(errors.DataError, match="the weights are 30 x 19 but X is 30 x 20"):
        nmfcli.metrics(X, np.ones((30, 3)), np.ones((3, 20)), weights=np.ones((30, 19)))


# --------------------------------------------------------------------------- the command line


def test_cli_fit_with_weights(tmp_path):
    X = noisy(24, 10, 3, seed=30)
    M = some_weights(X.shape, seed=31)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "w.npy", M)
    proc = run_nmf("fit", tmp_path / "X.npy", "-k", 3, "--weights", tmp_path / "w.npy", "-o", tmp_path / "o",
                   "--max-iter", 50, check=0)
    assert f"weighted by {tmp_path / 'w.npy'}" in proc.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["weights"]["path"] == str(tmp_path / "w.npy") and len(report["weights"]["sha256"]) == 64
    assert report["options"]["weighted"] is True and report["solver"] == "anls"
    api = nmfcli.fit(X, 3, weights=M, max_iter=50)
    np.testing.assert_allclose(np.load(tmp_path / "o" / "W.npy"), api.W, rtol=1e-12)
    assert report["relative_error"] == pytest.approx(api.metrics["relative_error"], rel=1e-12)


@pytest.mark.parametrize("make, message", [
    (lambda M: M[:, :9], "the weights are 24 x 9 but {X} is 24 x 10; they must have the same shape"),
    (lambda M: np.where(np.arange(10) == 4, -1.0, M), "weights has 24 negative values; the first is -1"),
    (lambda M: np.zeros_like(M), "every weight is 0: nothing is left to fit"),
])
def test_cli_refuses_bad_weights_naming_the_file(tmp_path, make, message):
    X = noisy(24, 10, 3, seed=32)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "w.npy", make(some_weights(X.shape, seed=33)))
    proc = run_nmf("fit", tmp_path / "X.npy", "-k", 3, "--weights", tmp_path / "w.npy", "-o", tmp_path / "o")
    line = one_error_line(proc)
    assert proc.returncode == errors.EXIT_DATA
    assert line.startswith(f"Error: {tmp_path / 'w.npy'}: " + message.format(X=tmp_path / "X.npy")), line
    assert not (tmp_path / "o").exists()


def test_cli_weights_with_labels_must_match_the_input(tmp_path):
    X = noisy(6, 4, 2, seed=34)
    rows, cols = [f"r{i}" for i in range(6)], ["a", "b", "c", "d"]
    write_csv(tmp_path / "x.csv", X, rows, cols)
    write_csv(tmp_path / "w.csv", np.ones_like(X), rows, ["a", "b", "d", "c"])
    proc = run_nmf("fit", tmp_path / "x.csv", "-k", 2, "--weights", tmp_path / "w.csv", "-o", tmp_path / "o")
    assert proc.returncode == errors.EXIT_DATA
    assert f"w.csv: column 3 is 'd' but {tmp_path / 'x.csv'}'s column 3 is 'c'" in one_error_line(proc)
    write_csv(tmp_path / "w.csv", np.ones_like(X), rows, cols)
    run_nmf("fit", tmp_path / "x.csv", "-k", 2, "--weights", tmp_path / "w.csv", "-o", tmp_path / "o", check=0)


def test_cli_resume_needs_the_same_weights(tmp_path):
    X = noisy(24, 10, 3, seed=35)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "w.npy", some_weights(X.shape, seed=36))
    np.save(tmp_path / "w2.npy", some_weights(X.shape, seed=37))
    common = ("fit", tmp_path / "X.npy", "-k", 3, "--tol", 0)
    run_nmf(*common, "--weights", tmp_path / "w.npy", "-o", tmp_path / "a", "--max-iter", 20,
            "--checkpoint-every", 20, check=0)
    proc = run_nmf(*common, "--weights", tmp_path / "w2.npy", "-o", tmp_path / "b", "--max-iter", 40,
                   "--resume", tmp_path / "a" / "checkpoint.h5")
    assert proc.returncode == errors.EXIT_USAGE and "weights" in one_error_line(proc)
    run_nmf(*common, "--weights", tmp_path / "w.npy", "-o", tmp_path / "b", "--max-iter", 40,
            "--resume", tmp_path / "a" / "checkpoint.h5", check=0)
    run_nmf(*common, "--weights", tmp_path / "w.npy", "-o", tmp_path / "c", "--max-iter", 40, check=0)
    assert np.array_equal(np.load(tmp_path / "b" / "W.npy"), np.load(tmp_path / "c" / "W.npy"))


def test_cli_transform_reconstruct_and_rank_with_weights(tmp_path):
    from nmfcli.rank import survey_ranks

    rng = np.random.default_rng(38)
    H = rng.random((3, 12))
    X = rng.random((15, 3)) @ H + 0.1 * rng.random((15, 12))
    M = some_weights(X.shape, seed=39)
    np.save(tmp_path / "H.npy", H)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "w.npy", M)
    run_nmf("transform", tmp_path / "X.npy", "--components", tmp_path / "H.npy", "--weights", tmp_path / "w.npy",
            "-o", tmp_path / "W.npy", check=0)
    W = np.load(tmp_path / "W.npy")
    np.testing.assert_allclose(W, nmfcli.transform(X, H, weights=M), rtol=1e-12)
    proc = run_nmf("reconstruct", tmp_path / "W.npy", tmp_path / "H.npy", "--against", tmp_path / "X.npy",
                   "--weights", tmp_path / "w.npy", "--json", check=0)
    report = json.loads(proc.stdout)
    assert report["relative_error"] == pytest.approx(nmfcli.metrics(X, W, H, weights=M)["relative_error"], rel=1e-12)
    assert report["weights"]["path"] == str(tmp_path / "w.npy")
    proc = run_nmf("reconstruct", tmp_path / "W.npy", tmp_path / "H.npy", "--weights", tmp_path / "w.npy")
    assert proc.returncode == errors.EXIT_USAGE and "need --against X_FILE" in one_error_line(proc)
    proc = run_nmf("rank", tmp_path / "X.npy", "-k", "2,3", "--runs", 2, "--max-iter", 30, "--weights",
                   tmp_path / "w.npy", "--json", check=0)
    report = json.loads(proc.stdout)
    api = survey_ranks(X, [2, 3], runs=2, max_iter=30, weights=M)
    assert [r["relative_errors"] for r in report["ranks"]] == [r.relative_errors for r in api]
    assert report["weights"]["path"] == str(tmp_path / "w.npy")


def test_the_memory_check_counts_the_weighted_arrays():
    """nmf fit and nmf rank refuse a fit beyond memory before it starts: with weights it holds
    four more arrays of X's size (the weights, M⊙X, W·H and M⊙(W·H); three more with missing
    values, which count W·H already); under the Frobenius loss (anls) also the products fⱼfⱼᵀ
    of the larger factor's rows and a block of Gram matrices."""
    from nmfcli import core, summary

    X = np.ones((300, 200))
    size = X.nbytes
    anls = (300 * 5 * 5 + 2 * core.MASKED_GRAM_ENTRIES) * 8
    for beta, extra in ((1.0, 0), (2.0, anls)):
        plain = summary.fit_memory(X, 5, beta=beta)
        assert summary.fit_memory(X, 5, beta=beta, weighted=True) - plain == 4 * size + extra
        holes = summary.fit_memory(X, 5, beta=beta, missing="nan")
        assert holes - plain == 4 * size + extra
        assert summary.fit_memory(X, 5, beta=beta, missing="nan", weighted=True) - holes == 3 * size


def test_cli_inspect_says_the_errors_are_weighted(tmp_path):
    X = noisy(20, 8, 2, seed=40)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "w.npy", some_weights(X.shape, seed=41))
    run_nmf("fit", tmp_path / "X.npy", "-k", 2, "--weights", tmp_path / "w.npy", "-o", tmp_path / "o", "-q", check=0)
    info = json.loads(run_nmf("inspect", tmp_path / "o", "--json", check=0).stdout)
    assert info["weights"] == str(tmp_path / "w.npy") and info["missing_entries"] is None
    for target in (tmp_path / "o", tmp_path / "o" / "report.json"):
        assert f"weights: {tmp_path / 'w.npy'} (the errors are weighted)" in run_nmf("inspect", target, check=0).stdout
    holed = X.copy()
    holed[3, 4] = np.nan
    np.save(tmp_path / "holed.npy", holed)
    run_nmf("fit", tmp_path / "holed.npy", "-k", 2, "--missing", "nan", "-o", tmp_path / "h", "-q", check=0)
    assert "missing_entries: 1 (left out of the errors)" in run_nmf("inspect", tmp_path / "h", check=0).stdout


def test_itakura_saito_needs_x_positive_only_where_it_weighs():
    """X's zeros are refused under β <= 0 only where their weight is positive: an entry of weight
    0 takes no part in the loss, so a zero there is no harm."""
    X = noisy(20, 10, 2, seed=42) + 0.1
    X[3, 4] = 0.0
    M = np.ones_like(X)
    with pytest.raises(errors.DataError, match="X contains zeros, where the is loss"):
        nmfcli.fit(X, 2, loss="is", weights=M, max_iter=5)
    M[3, 4] = 0.0
    result = nmfcli.fit(X, 2, loss="is", weights=M, max_iter=50)
    assert np.isfinite(result.metrics["beta_divergence"]) and np.all(result.W >= 0)


def test_cli_names_the_input_for_what_weights_cannot_go_with(tmp_path):
    X = noisy(20, 8, 2, seed=43)
    np.save(tmp_path / "X.npy", X)
    sp.save_npz(tmp_path / "X.npz", sp.csr_matrix(X))
    np.save(tmp_path / "w.npy", np.ones_like(X))
    proc = run_nmf("fit", tmp_path / "X.npz", "-k", 2, "--weights", tmp_path / "w.npy", "-o", tmp_path / "o")
    assert proc.returncode == errors.EXIT_USAGE
    assert one_error_line(proc) == (f"Error: {tmp_path / 'X.npz'}: X is sparse, but a weighted fit (weights, or "
                                    "solver anls) needs it dense: the weighted updates work on dense m x n arrays")
    proc = run_nmf("fit", tmp_path / "X.npy", "-k", 2, "--weights", tmp_path / "w.npy", "--chunk-rows", 5,
                   "-o", tmp_path / "o")
    assert proc.returncode == errors.EXIT_USAGE
    assert one_error_line(proc) == "Error: a weighted fit runs on the numpy engine in memory; got --chunk-rows"
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- anls


def test_anls_is_alternating_exact_solves():
    """Each anls iteration solves W exactly given H, then H given W: after the last one, H is
    the fixed-W solve of W (itself checked against scipy's nnls above), and the objective,
    minimised block by block, never rises."""
    X = noisy(30, 20, 3, seed=50)
    M = some_weights(X.shape, seed=51)
    result = nmfcli.fit(X, 4, weights=M, max_iter=30, tol=0)
    assert result.options["solver"] == "anls"
    again = nmfcli.fit(X, 4, fix_W=result.W, weights=M)
    np.testing.assert_allclose(result.H, again.H, rtol=1e-10, atol=1e-13)
    history = np.array(result.history)
    assert len(history) == 4 and np.all(np.diff(history) <= 1e-12 * history[:-1])


def test_anls_weighs_a_row_of_two_as_that_row_twice():
    X = noisy(20, 12, 3, seed=52)
    M = np.ones_like(X)
    M[0] *= 2.0
    rng = np.random.default_rng(53)
    W0, H0 = rng.random((20, 3)) + 0.1, rng.random((3, 12)) + 0.1
    rows = [0, *range(20)]
    repeated = nmfcli.fit(X[rows], 3, solver="anls", init="custom", W0=W0[rows], H0=H0, max_iter=20, tol=0)
    weighted = nmfcli.fit(X, 3, weights=M, init="custom", W0=W0, H0=H0, max_iter=20, tol=0)
    np.testing.assert_allclose(weighted.W, repeated.W[1:], rtol=1e-9)
    np.testing.assert_allclose(weighted.H, repeated.H, rtol=1e-9)


def test_anls_on_complete_data_is_the_alternating_ordinary_solves():
    """solver="anls" runs on complete, unweighted X too (every weight 1): its iterates are those
    of alternating the ordinary exact solves (nmfcli.fit with fix_H, then fix_W)."""
    X = noisy(30, 20, 3, seed=54)
    rng = np.random.default_rng(55)
    H = rng.random((3, 20)) + 0.1
    result = nmfcli.fit(X, 3, solver="anls", init="custom", W0=np.ones((30, 3)), H0=H, max_iter=5, tol=0)
    for _ in range(5):
        W = nmfcli.fit(X, 3, fix_H=H).W
        H = nmfcli.fit(X, 3, fix_W=W).H
    np.testing.assert_allclose(result.W, W, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(result.H, H, rtol=1e-8, atol=1e-12)


def test_anls_resumes_bit_identical():
    X = noisy(30, 20, 3, seed=56)
    M = some_weights(X.shape, seed=57)
    full = nmfcli.fit(X, 4, weights=M, max_iter=25, tol=0)
    saved, stop = checkpoint_at(12)
    nmfcli.fit(X, 4, weights=M, max_iter=25, tol=0, callback=stop)
    resumed = nmfcli.fit(X, 4, weights=M, max_iter=25, tol=0, resume=saved)
    assert np.array_equal(full.W, resumed.W) and np.array_equal(full.H, resumed.H)
    assert full.history == resumed.history


@pytest.mark.parametrize("kwargs, message", [
    ({"loss": "kl"}, "solver 'anls' minimises the Frobenius loss only; use solver 'mu' for loss 'kl'"),
    ({"engine": "dask"}, "solver 'anls' runs on the numpy engine in memory; got engine 'dask'"),
    ({"engine_options": {"chunk_rows": 10}}, "solver 'anls' runs on the numpy engine in memory; got chunk_rows"),
    ({"X": "sparse"}, "X is sparse, but a weighted fit (weights, or solver anls) needs it dense: the weighted "
                      "updates work on dense m x n arrays"),
])
def test_anls_refusals(kwargs, message):
    X = low_rank(30, 20, 3)
    if kwargs.pop("X", None) == "sparse":
        X = sp.csr_matrix(X)
    with pytest.raises(errors.UsageError) as e:
        nmfcli.fit(X, 3, solver="anls", **kwargs)
    assert str(e.value) == message
