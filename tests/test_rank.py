"""Choosing k (`nmfcli.rank.survey_ranks`, `nmf rank`): error and stability of several fits per k.

The stability is checked against a brute-force matching written here, the runs against
`nmfcli.fit` called with the same seeds, and the whole against data of known rank.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import nmfcli
from conftest import nmf_env, one_error_line, run_nmf, start_nmf
from nmfcli import errors
from nmfcli.rank import survey_ranks


def exactly_rank(m=40, n=30, k=3, seed=0):
    """X = W·H where each component owns a block of columns (H is zero elsewhere) and one row
    (W's first k rows are diagonal): both factors are separable, so the k components are unique
    up to order and scale (no other non-negative W·H of k components reproduces X)."""
    rng = np.random.default_rng(seed)
    H = np.zeros((k, n))
    for t, cols in enumerate(np.array_split(np.arange(n), k)):
        H[t, cols] = 1.0 + rng.random(cols.size)
    W = rng.random((m, k))
    W[:k] = np.diag(1.0 + rng.random(k))
    return W @ H


def brute_force_stability(Hs):
    """Mean over pairs of runs of the best mean cosine over every one-to-one pairing, and the
    lowest cosine of a pair in those pairings."""
    means, lowest = [], np.inf
    for A, B in itertools.combinations(Hs, 2):
        a = A / np.linalg.norm(A, axis=1, keepdims=True)
        b = B / np.linalg.norm(B, axis=1, keepdims=True)
        C = a @ b.T
        best = max(itertools.permutations(range(len(B))), key=lambda p: sum(C[i, p[i]] for i in range(len(A))))
        cosines = [C[i, best[i]] for i in range(len(A))]
        means.append(np.mean(cosines))
        lowest = min(lowest, min(cosines))
    return float(np.mean(means)), float(lowest)


def test_runs_are_the_fits_with_those_seeds_and_stability_is_the_best_matching():
    X = exactly_rank() + 0.05 * np.random.default_rng(1).random((40, 30))
    surveyed = survey_ranks(X, [4, 2], runs=3, seed=7, max_iter=60, keep_factors=True)
    assert [r.k for r in surveyed] == [2, 4]
    for r in surveyed:
        assert r.seeds == [7, 8, 9]
        for seed, result, error in zip(r.seeds, r.results, r.relative_errors):
            alone = nmfcli.fit(X, r.k, seed=seed, init="random", max_iter=60)
            assert np.array_equal(result.H, alone.H) and error == alone.metrics["relative_error"]
        assert r.best == int(np.argmin([f.metrics["objective"] for f in r.results]))
        assert r.relative_error == r.relative_errors[r.best]
        stability, lowest = brute_force_stability([f.H for f in r.results])
        assert r.stability == pytest.approx(stability, abs=1e-12)
        assert r.lowest_similarity == pytest.approx(lowest, abs=1e-12)


def test_the_true_rank_is_stable_and_fits_exactly():
    X = exactly_rank()
    surveyed = {r.k: r for r in survey_ranks(X, range(1, 6), runs=4, max_iter=2000, tol=1e-10)}
    assert surveyed[3].relative_error < 1e-10
    assert surveyed[3].stability > 0.9999 and surveyed[3].lowest_similarity > 0.9999
    # fewer components cannot fit it: every k below 3 errs by more than 10%
    assert surveyed[1].relative_error > surveyed[2].relative_error > 0.1
    # more fit it as well, but split its parts differently from run to run
    for k in (4, 5):
        assert surveyed[k].relative_error < 1e-6
        assert surveyed[k].lowest_similarity < 0.9 and surveyed[k].stability < surveyed[3].stability - 0.01


def test_every_k_is_checked_against_the_init_before_the_first_fit():
    fitted = []
    with pytest.raises(errors.UsageError, match="k=31 is larger than min"):
        survey_ranks(exactly_rank(), [2, 31], init="nndsvd", progress=lambda k, run, result: fitted.append(k))
    assert fitted == []


def test_one_run_has_no_stability():
    r, = survey_ranks(exactly_rank(), [3], runs=1, max_iter=20)
    assert r.stability is None and r.lowest_similarity is None and len(r.relative_errors) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"ks": []}, "give at least one k"),
    ({"ks": [0, 2]}, "k must be a positive integer; got 0"),
    ({"ks": [2], "runs": 0}, "runs must be a positive integer; got 0"),
    ({"ks": [2], "W0": np.ones((40, 2))}, "survey_ranks does not take W0"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(errors.UsageError, match=message):
        survey_ranks(exactly_rank(), **kwargs)


@pytest.mark.parametrize("jobs", [0, -1, True, 1.5])
def test_jobs_must_be_a_positive_integer(jobs):
    with pytest.raises(errors.UsageError, match="jobs must be a positive integer"):
        survey_ranks(exactly_rank(), [2], jobs=jobs)


def test_jobs_give_the_serial_survey_bit_for_bit():
    """Worker processes run the same fits (a small X's products are on one BLAS thread either
    way); progress hears of each fit once, in whatever order they end."""
    from nmfcli.rank import survey_ranks as survey

    X = exactly_rank() + 0.05 * np.random.default_rng(1).random((40, 30))
    heard = []
    parallel = survey(X, [2, 3, 4], runs=3, max_iter=40, keep_factors=True, jobs=2,
                      progress=lambda k, run, result: heard.append((k, run, result.n_iter)))
    serial = survey(X, [2, 3, 4], runs=3, max_iter=40, keep_factors=True)
    assert sorted(heard) == sorted((r.k, run, n) for r in serial for run, n in enumerate(r.n_iter))
    for a, b in zip(parallel, serial):
        assert (a.k, a.seeds, a.relative_errors, a.stability, a.best) == (b.k, b.seeds, b.relative_errors,
                                                                          b.stability, b.best)
        for fa, fb in zip(a.results, b.results):
            assert np.array_equal(fa.W, fb.W) and np.array_equal(fa.H, fb.H)


def test_jobs_stop_when_the_caller_stops_and_pass_errors_on():
    """An interrupt (here from the progress callback) or a fit's error ends the survey at once,
    with no worker left running; the error is the fit's own."""
    import multiprocessing
    import time

    X = exactly_rank() + 0.05 * np.random.default_rng(1).random((40, 30))

    def interrupt(k, run, result):
        raise KeyboardInterrupt

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        survey_ranks(X, list(range(2, 20)), runs=5, jobs=2, max_iter=5000, tol=0, progress=interrupt)
    assert time.perf_counter() - started < 30  # not the 90 fits of 5000 iterations
    assert multiprocessing.active_children() == []
    with pytest.raises(errors.UsageError, match="solver must be one of"):
        survey_ranks(X, [2, 3], runs=2, jobs=2, solver="newton")
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_is_reported_not_waited_for():
    import multiprocessing
    import os
    import signal

    X = exactly_rank() + 0.05 * np.random.default_rng(1).random((40, 30))

    def kill_a_worker(k, run, result):
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)

    with pytest.raises(errors.UnavailableError, match="a worker process of the survey stopped abruptly"):
        survey_ranks(X, list(range(2, 20)), runs=5, jobs=2, max_iter=5000, tol=0, progress=kill_a_worker)
    assert multiprocessing.active_children() == []


# --------------------------------------------------------------------------- nmf rank


@pytest.fixture
def X_file(tmp_path):
    path = tmp_path / "X.npy"
    np.save(path, exactly_rank() + 0.01 * np.random.default_rng(3).random((40, 30)))
    return path


def test_cli_json_matches_the_api_and_the_best_seed_refits(X_file, tmp_path):
    proc = run_nmf("rank", X_file, "-k", "2:4", "--runs", "3", "--seed", "5", "--max-iter", "50", "--json",
                   check=0)
    report = json.loads(proc.stdout)
    assert report["kind"] == "rank_survey" and report["shape"] == [40, 30] and report["runs"] == 3
    api = survey_ranks(np.load(X_file), [2, 3, 4], runs=3, seed=5, max_iter=50)
    assert [r["k"] for r in report["ranks"]] == [2, 3, 4]
    for got, want in zip(report["ranks"], api):
        assert got["relative_errors"] == want.relative_errors
        assert got["stability"] == want.stability and got["best_seed"] == want.seeds[want.best]
    # the help's promise: `nmf fit -k K --init random --seed S` refits the best run of k
    best = report["ranks"][1]
    run_nmf("fit", X_file, "-k", 3, "--init", "random", "--seed", best["best_seed"], "--max-iter", 50,
            "-o", tmp_path / "best", "-q", check=0)
    refit = json.loads((tmp_path / "best" / "report.json").read_text())
    assert refit["relative_error"] == best["relative_error"]


def test_cli_jobs_give_the_same_survey(X_file):
    args = ["rank", X_file, "-k", "2:4", "--runs", "3", "--max-iter", "50", "--json"]
    serial, parallel = (json.loads(run_nmf(*args, *jobs, check=0).stdout) for jobs in ([], ["--jobs", "2"]))
    for report in (serial, parallel):
        for r in report["ranks"]:
            del r["time_s"]
    assert (serial["jobs"], parallel["jobs"]) == (1, 2)
    assert serial["ranks"] == parallel["ranks"]


def test_cli_jobs_sigterm_stops_every_worker(X_file, tmp_path):
    """SIGTERM ends the survey with exit 143, as without workers, and takes the workers with it
    (a killed parent would leave each to finish its fit): no process of this run is left."""
    import os
    import signal
    import time

    marker = f"NMF_TEST_RUN={os.getpid()}-{time.monotonic_ns()}"
    env = dict(nmf_env(), **dict([marker.split("=")]))
    proc = start_nmf("rank", X_file, "-k", "2:25", "--runs", "5", "--max-iter", "5000", "--tol", "0",
                     "--jobs", "2", "-v", env=env)

    def ours():
        found = []
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker.encode() in f.read().split(b"\0"):
                        found.append(int(pid))
            except (OSError, ValueError):
                pass
        return found

    deadline = time.monotonic() + 60
    while len(ours()) < 3 and time.monotonic() < deadline:  # the parent and its two workers
        time.sleep(0.1)
    assert len(ours()) >= 3, "the workers did not start"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == errors.EXIT_SIGTERM
    deadline = time.monotonic() + 10
    while ours() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ours() == []


def test_cli_refuses_a_survey_larger_than_memory_before_fitting(X_file):
    """As nmf fit does: exit 69 with the estimate, before the first fit. With --jobs each worker
    holds its own X and working memory, so N fits that each fit in memory can be refused together."""
    import re

    from nmfcli import io as nio
    from nmfcli import summary

    line = one_error_line(run_nmf("rank", X_file, "-k", "2,100000000000", "--runs", "1", check=69))
    assert re.fullmatch(rf"Error: {re.escape(str(X_file))}: the fit needs about [\d.]+ [KMGTi]*B of memory \(40 x 30, "
                        r"k=100000000000\) but only [\d.]+ [KMGTi]*B is available; use a smaller k, --dtype float32 "
                        r"or sparse input \(\.npz, \.mtx or a sparse HDF5 group\)", line), line
    X = np.load(X_file)
    lo, hi = 1, 10**12  # the k at which one fit needs 60% of the memory available
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if summary.fit_memory(X, mid, X.dtype, 2.0) < 0.6 * nio.available_memory() else (lo, mid)
    line = one_error_line(run_nmf("rank", X_file, "-k", lo, "--runs", "2", "--jobs", "3", check=69))
    assert re.fullmatch(rf"Error: {re.escape(str(X_file))}: 2 fits at once need about [\d.]+ [KMGTi]*B of memory "
                        rf"\(40 x 30, k up to {lo}, each worker with its own copy of X\) but only [\d.]+ [KMGTi]*B "
                        r"is available; use fewer --jobs", line), line


def test_cli_table_and_report_file(X_file, tmp_path):
    proc = run_nmf("rank", X_file, "-k", "3,2", "--runs", "2", "--max-iter", "20", "--report", tmp_path / "r.json",
                   check=0)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{X_file}: 40 x 30, 2 runs per k (random starts, seeds 0..1), loss frobenius")
    assert lines[1].split() == ["k", "rel.", "error", "median", "stability", "lowest", "best", "seed",
                                "iterations", "converged"]
    report = json.loads((tmp_path / "r.json").read_text())
    for line, r in zip(lines[2:], report["ranks"]):
        cells = line.split()
        assert int(cells[0]) == r["k"] and float(cells[1]) == pytest.approx(r["relative_error"], rel=1e-4)
        assert cells[3] == f"{r['stability']:.3f}" and int(cells[5]) == r["best_seed"]
    assert len(lines) == 4


@pytest.mark.parametrize("ks, message", [
    ("2:x", "'2:x' is not a k, a range START:STOP or START:STOP:STEP of integers"),
    ("5:2", "'5:2': a range needs START <= STOP and STEP >= 1"),
    ("0,3", "every k must be at least 1; got '0,3'"),
    ("2,2:20000", "'2,2:20000' asks for more than 1000 values of k"),
])
def test_cli_bad_ks(X_file, ks, message):
    proc = run_nmf("rank", X_file, "-k", ks)
    assert proc.returncode == errors.EXIT_USAGE
    assert message in one_error_line(proc)


def test_cli_ranges_with_steps(X_file):
    proc = run_nmf("rank", X_file, "-k", "1:5:2,8", "--runs", "1", "--max-iter", "5", "--json", check=0)
    assert [r["k"] for r in json.loads(proc.stdout)["ranks"]] == [1, 3, 5, 8]


def test_cli_refuses_an_existing_report_before_fitting(X_file, tmp_path):
    (tmp_path / "r.json").write_text("keep me")
    proc = run_nmf("rank", X_file, "-k", "2:40", "--report", tmp_path / "r.json")
    assert proc.returncode == errors.EXIT_CANT_CREATE
    assert one_error_line(proc) == f"Error: {tmp_path / 'r.json'}: already exists; use --force to replace it"
    assert (tmp_path / "r.json").read_text() == "keep me"


def test_cli_names_the_file_when_k_is_too_large_for_nndsvd(X_file):
    proc = run_nmf("rank", X_file, "-k", "2,31", "--init", "nndsvd")
    assert proc.returncode == errors.EXIT_USAGE
    assert one_error_line(proc) == (f"Error: {X_file}: k=31 is larger than min(rows, columns) = 30, which init "
                                    "'nndsvd' needs; use a smaller k or init 'random'")


def test_cli_plot(X_file, tmp_path):
    pytest.importorskip("matplotlib")
    run_nmf("rank", X_file, "-k", "2:3", "--runs", "2", "--max-iter", "10", "--plot", tmp_path / "k.png",
            "-q", check=0)
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
