"""The Dask engine against the numpy engine: same iterates, stopping rule, history and results.

One LocalCluster of 2 worker processes (1 thread each) serves the module; X is cut
into 4 row blocks so every reduction really sums over blocks.
"""

from __future__ import annotations

import sys

import time

import numpy as np
import pytest

from nmfcli import core
from nmfcli.errors import DataError, UnavailableError
from conftest import low_rank
from conftest import assert_same_fit as shared_assert_same_fit

distributed = pytest.importorskip("distributed", reason="the dask engine needs dask.distributed")
h5py = pytest.importorskip("h5py")

pytestmark = pytest.mark.dask

TOL = 1e-6


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def X():
    return low_rank(300, 80, 5, seed=1)


def options(client, **extra):
    return {"scheduler": client, "chunk_rows": 75, **extra}


def assert_same_fit(a, b):
    shared_assert_same_fit(a, b, TOL, engine="dask")
    assert set(b.checkpoint) == set(a.checkpoint)


@pytest.mark.parametrize("kwargs", [
    dict(solver="hals"),
    dict(solver="cd", tol=1e-3),
    dict(solver="mu", loss="kl"),
    dict(solver="mu", loss=0.5, init="random"),
    dict(solver="hals", alpha_W=0.01, l1_ratio=0.5, init="random"),
    dict(solver="cd", alpha_W=0.02, alpha_H=0.01, l1_ratio=0.3, init="nndsvd"),
    dict(solver="emu", loss="kl", max_iter=30), dict(loss=1.5, max_iter=30), dict(max_iter=30),
], ids=["hals", "cd", "mu-kl", "mu-beta0.5", "hals-penalties", "cd-penalties-nndsvd", "emu-kl", "auto-beta1.5",
        "auto-ehals"])
def test_fit_equals_numpy_engine(client, X, kwargs):
    kwargs = {"max_iter": 8, **kwargs}
    a = core.fit(X, 5, **kwargs)
    b = core.fit(X, 5, engine="dask", engine_options=options(client), **kwargs)
    assert_same_fit(a, b)


def test_hals_inner_sweeps_stop_on_the_change_of_all_blocks(client):
    # A wide X makes the product with X dear enough for several inner sweeps per iteration.
    X = low_rank(120, 2000, 4, seed=2)
    a = core.fit(X, 4, solver="hals", max_iter=4)
    b = core.fit(X, 4, solver="hals", max_iter=4, engine="dask", engine_options=options(client, chunk_rows=30))
    assert_same_fit(a, b)


def test_sparse_input_equals_dense(client, X):
    import scipy.sparse as sp

    Xs = X.copy()
    Xs[Xs < 0.6] = 0
    a = core.fit(Xs, 4, solver="mu", loss="kl", max_iter=10)
    b = core.fit(sp.csr_matrix(Xs), 4, solver="mu", loss="kl", max_iter=10, engine="dask",
                 engine_options=options(client))
    assert_same_fit(a, b)


def test_fixed_factors(client, X):
    H = core.fit(X, 5, max_iter=20).H
    W = core.fit(X, 5, max_iter=20).W
    a = core.fit(X, 5, fix_H=H, alpha_W=0.01)
    b = core.fit(X, 5, fix_H=H, alpha_W=0.01, engine="dask", engine_options=options(client))
    assert b.stop_reason == "exact" and np.array_equal(b.H, H)
    assert a.options["solver"] == b.options["solver"] == "nnls"
    np.testing.assert_allclose(b.W, a.W, rtol=TOL, atol=TOL)
    a = core.fit(X, 5, fix_W=W)
    b = core.fit(X, 5, fix_W=W, engine="dask", engine_options=options(client))
    np.testing.assert_allclose(b.H, a.H, rtol=TOL, atol=TOL)
    a = core.fit(X, 5, fix_H=H, loss="kl", max_iter=20)
    b = core.fit(X, 5, fix_H=H, loss="kl", max_iter=20, engine="dask", engine_options=options(client))
    assert b.options["solver"] == "mu"
    assert_same_fit(a, b)
    a = core.fit(X, 5, fix_H=H, loss=1.5, max_iter=20)
    b = core.fit(X, 5, fix_H=H, loss=1.5, max_iter=20, engine="dask", engine_options=options(client))
    assert b.options["solver"] == "emu"
    assert_same_fit(a, b)


def test_transform_is_exact_block_by_block(client, X):
    from nmfcli.engines.dask import transform_dask

    H = core.fit(X, 5, max_iter=20).H
    np.testing.assert_allclose(transform_dask(X, H, **options(client)), core.transform(X, H),
                               rtol=TOL, atol=TOL)


def test_exact_solve_reports_the_blocks_as_the_cluster_finishes_them(client, X):
    from nmfcli.engines.dask import transform_dask

    H = core.fit(X, 5, max_iter=20).H
    seen = []
    W = transform_dask(X, H, progress=lambda done, total: seen.append((done, total)), **options(client))
    assert [d for d, _ in seen] == [75, 150, 225, 300] and {t for _, t in seen} == {300}
    np.testing.assert_allclose(W, core.transform(X, H), rtol=TOL, atol=TOL)


def test_hdf5_read_lazily_on_the_workers_and_W_written_in_blocks(client, X, tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data/X", data=X, chunks=(25, 80))
    a = core.fit(X, 5, max_iter=8)  # ehals, the default on the Dask engine too
    out = f"{tmp_path / 'w.h5'}::/W"
    b = core.fit(f"{path}::/data/X", 5, max_iter=8, engine="dask",
                 engine_options=options(client, persist=False, output=out))
    assert b.W == out
    with h5py.File(tmp_path / "w.h5", "r") as f:
        np.testing.assert_allclose(f["W"][...], a.W, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(b.H, a.H, rtol=TOL, atol=TOL)


def test_dask_array_and_npy_folder_inputs(client, X, tmp_path):
    import dask.array as da

    for i, start in enumerate(range(0, 300, 100)):
        np.save(tmp_path / f"part{i:02d}.npy", X[start:start + 100])
    a = core.fit(X, 5, solver="cd", max_iter=3)
    for source in (da.from_array(X, chunks=(60, 40)), str(tmp_path)):
        b = core.fit(source, 5, solver="cd", max_iter=3, engine="dask", engine_options={"scheduler": client})
        np.testing.assert_allclose(b.W, a.W, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("kwargs", [dict(solver="hals"), dict(solver="ehals"), dict(solver="emu", loss="kl")],
                         ids=["hals", "ehals", "emu"])
def test_task_graph_does_not_grow_over_iterations(client, X, kwargs):
    held = []

    def count(info):
        # The fewest tasks over a few polls: releases reach the scheduler asynchronously, so one
        # poll can catch tasks on their way out (a leak would hold them in every poll).
        seen = []
        for _ in range(5):
            seen.append(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))
            time.sleep(0.02)
        held.append(min(seen))

    result = core.fit(X, 5, max_iter=14, tol=0, callback=count, engine="dask", engine_options=options(client),
                      **kwargs)
    assert result.n_iter == 14
    # Old futures are released as new ones replace them: what the scheduler holds stays flat.
    assert max(held[8:]) <= max(held[2:8]) + 4, held


def test_callback_stops_and_checkpoint_resumes(client, X):
    def stop_at_5(info):
        assert np.asarray(info.W).shape == (300, 5)
        return "time" if info.iteration == 5 else None

    full = core.fit(X, 5, solver="cd", max_iter=7, tol=0, engine="dask", engine_options=options(client))
    part = core.fit(X, 5, solver="cd", max_iter=7, tol=0, callback=stop_at_5, engine="dask",
                    engine_options=options(client))
    assert (part.n_iter, part.stop_reason) == (5, "time")
    np.testing.assert_array_equal(part.checkpoint["W"], part.W)
    rest = core.fit(X, 5, solver="cd", max_iter=7, tol=0, resume=part.checkpoint, engine="dask",
                    engine_options=options(client))
    np.testing.assert_allclose(rest.W, full.W, rtol=1e-12, atol=1e-12)
    assert rest.history == pytest.approx(full.history, rel=1e-12)


def test_bad_data_is_refused_with_core_messages(client, X):
    bad = X.copy()
    bad[200, 3] = -1.0
    with pytest.raises(DataError, match=r"^X has 1 negative value; the first is -1 at row 201, column 4"):
        core.fit(bad, 3, engine="dask", engine_options=options(client))


def test_missing_dask_raises_unavailable(monkeypatch, X):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(UnavailableError) as excinfo:
        core.fit(X, 3, engine="dask")
    assert str(excinfo.value) == ("engine 'dask' needs dask.distributed; "
                                  "install it with: pip install 'nmfcli[dask]'")


def _peak_rss():
    """VmHWM of the worker (ru_maxrss would include the parent's peak, inherited across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def test_hdf5_larger_than_worker_memory(tmp_path):  # ~15 s: worth it in every CI run
    """A 320 MB float64 HDF5 matrix on workers limited to 250 MB each: X is streamed in blocks."""
    m, n, k = 40_000, 1_000, 8
    path = tmp_path / "big.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("X", shape=(m, n), dtype="f8", chunks=(1000, n))
        basis = rng.random((k, n))
        for s in range(0, m, 4000):
            d[s:s + 4000] = rng.random((4000, k)) @ basis
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="250MB",
                                       dashboard_address=None, silence_logs=50)
    with distributed.Client(cluster) as c:
        result = core.fit(f"{path}::X", k, init="random", max_iter=3, engine="dask",
                          engine_options={"scheduler": c, "output": str(tmp_path / "W.zarr")})
        peaks = c.run(_peak_rss)
    cluster.close()
    assert result.n_iter == 3 and result.metrics["relative_error"] < 0.5
    assert max(peaks.values()) < 250e6, peaks
